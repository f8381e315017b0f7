"""Firmware bundles: the files a lab technician copies onto a kit's ESP32, ready to run.

A bundle is a flat folder: protocol.py and kitcore.py (the very modules the twins use),
umqtt5.py, board.py, main.py from hardware_kits/firmware, and a config.json with the kit's
identity, descriptor, broker address and credentials. `mpremote cp` puts it on the board
(hardware_kits/firmware/README.md); `run_under_cpython` runs the same folder on a PC with a
simulated `machine` module, which is how tests put the real firmware code against a broker.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from hardware_kits.descriptor import HOMIE_ID, MODELS_DIR, load_descriptor, validate_descriptor

PACKAGE_DIR = Path(__file__).parent
FIRMWARE_DIR = PACKAGE_DIR / "firmware"
SIM_DIR = FIRMWARE_DIR / "sim"  # CPython stand-in for MicroPython's `machine`
SHARED_MODULES = (PACKAGE_DIR / "protocol.py", PACKAGE_DIR / "kitcore.py")
FIRMWARE_MODULES = tuple(FIRMWARE_DIR / name for name in ("umqtt5.py", "board.py", "main.py"))
BUNDLE_FILES = (*(p.name for p in SHARED_MODULES + FIRMWARE_MODULES), "config.json")


def _resolve_descriptor(descriptor: dict[str, Any] | str | Path) -> dict[str, Any]:
    """A descriptor dict (validated), a kit model name, or a descriptor YAML file."""
    if isinstance(descriptor, dict):
        return validate_descriptor(descriptor)
    path = Path(descriptor)
    if path.suffix not in (".yaml", ".yml"):
        path = MODELS_DIR / f"{descriptor}.yaml"
    return load_descriptor(path)


def build_bundle(
    out_dir: str | Path,
    kit_id: str,
    descriptor: dict[str, Any] | str | Path,
    host: str,
    port: int,
    username: str,
    password: str,
    wifi_ssid: str | None = None,
    wifi_password: str | None = None,
    ntp: str | bool | None = None,
    ca: str | Path | None = None,
) -> Path:
    """Write a flashable firmware bundle for one kit into `out_dir` and return its path.

    `ntp` is an NTP server name (default: MicroPython's pool), or False to keep the board's RTC.
    `ca`: connect with TLS (`port` is then the broker's mqtts port) and verify the broker against
    this CA certificate, copied into the bundle as ca.crt.
    """
    if not HOMIE_ID.match(kit_id):
        raise ValueError(f"kit id {kit_id!r} is not a Homie id (lowercase a-z, 0-9, -)")
    wire = _resolve_descriptor(descriptor)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    for source in SHARED_MODULES + FIRMWARE_MODULES:
        shutil.copyfile(source, out / source.name)
    config: dict[str, Any] = {
        "kit_id": kit_id,
        "descriptor": wire,
        "host": host,
        "port": int(port),
        "username": username,
        "password": password,
    }
    if wifi_ssid is not None:
        config["wifi_ssid"] = wifi_ssid
        config["wifi_password"] = wifi_password or ""
    if ntp is not None:
        config["ntp"] = ntp
    if ca is not None:
        shutil.copyfile(ca, out / "ca.crt")
        config["ca"] = "ca.crt"
    config_path = out / "config.json"
    config_path.write_text(json.dumps(config, indent=1) + "\n", encoding="utf-8")
    config_path.chmod(0o600)  # it holds the kit's broker password
    return out


def run_under_cpython(
    bundle_dir: str | Path,
    python: str | None = None,
    env: dict[str, str] | None = None,
    **popen_kwargs: Any,
) -> subprocess.Popen:
    """Start the bundle's main.py under CPython with the simulated `machine` module.

    The interpreter runs with -S (no site-packages), so the firmware sees exactly what a board
    has: the bundle's own files plus the standard library, and `machine` from sim/. `env` adds
    variables (e.g. SMARTLAB_SIM_ADC, SMARTLAB_SIM_MOTION); `popen_kwargs` go to Popen (stdout,
    stderr, ...). SIGTERM stops the kit cleanly (`$state` disconnected), SIGKILL leaves its
    will (`$state` lost)."""
    bundle = Path(bundle_dir)
    if not (bundle / "main.py").is_file() or not (bundle / "config.json").is_file():
        raise FileNotFoundError(f"{bundle} is not a firmware bundle (main.py, config.json)")
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["PYTHONPATH"] = str(SIM_DIR)  # nothing else: hardware_kits must not leak in
    child_env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [python or sys.executable, "-S", "main.py"], cwd=bundle, env=child_env, **popen_kwargs
    )


def run_under_micropython(
    bundle_dir: str | Path,
    micropython: str | list[str] = "micropython",
    env: dict[str, str] | None = None,
    **popen_kwargs: Any,
) -> subprocess.Popen:
    """Start the bundle's main.py under MicroPython's Unix port with the simulated `machine`.

    `micropython` is the interpreter command (a path, or a list for a wrapper). This runs the
    firmware on the real MicroPython runtime, short of the board's hardware and Wi-Fi."""
    bundle = Path(bundle_dir)
    command = [micropython] if isinstance(micropython, str) else list(micropython)
    child_env = dict(os.environ)
    child_env.update(env or {})
    child_env["MICROPYPATH"] = ".frozen:.:" + str(SIM_DIR)
    return subprocess.Popen([*command, "main.py"], cwd=bundle, env=child_env, **popen_kwargs)
