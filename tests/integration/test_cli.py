"""The `smartlab` command: user errors end in one line and a non-zero exit, nothing started."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

from hardware_kits.descriptor import MODELS_DIR
from site_config.runtime import free_port

REPO = Path(__file__).resolve().parents[2]


def smartlab(*args: str, cwd: Path = REPO, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hub_config.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_validate_accepts_shipped_files():
    files = [str(p) for p in sorted(MODELS_DIR.glob("*.yaml"))]
    result = smartlab("kits", "validate", *files, "site_config/demo-site.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": valid") == len(files) + 1


def test_invalid_descriptor_is_one_line_naming_file_field_reason(tmp_path):
    data = yaml.safe_load((MODELS_DIR / "smart-parking.yaml").read_text())
    data["actuators"]["display"]["max_length"] = -3
    bad = tmp_path / "smart-parking.yaml"
    bad.write_text(yaml.safe_dump(data))
    result = smartlab("kits", "validate", str(bad))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"smartlab: {bad}: actuators.display.max_length:")
    assert "Traceback" not in result.stderr


def test_up_with_invalid_site_starts_nothing(tmp_path):
    site = tmp_path / "site.yaml"
    site.write_text(yaml.safe_dump({"kits": [{"id": "k1", "model": "hovercraft"}]}))
    port = free_port()
    result = smartlab(
        "up", "--site", str(site), "--state-dir", str(tmp_path / "state"), "--mqtt-port", str(port)
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"smartlab: {site}: kits.0.model: no kit model 'hovercraft' "
        "(known: environment-station, intersection, smart-parking, "
        "street-lighting)"
    )
    assert not (tmp_path / "state").exists()


def test_up_on_a_taken_port_says_so(tmp_path):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = smartlab("up", "--state-dir", str(tmp_path / "state"), "--mqtt-port", str(port))
    assert result.returncode == 2
    assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_models_lists_every_model():
    result = smartlab("kits", "models")
    assert result.returncode == 0
    for path in MODELS_DIR.glob("*.yaml"):
        assert f"{path.stem}:" in result.stdout
