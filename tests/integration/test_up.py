"""`smartlab up`, the README's run command: comes up with demo content, stops cleanly, reruns."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from hardware_kits.broker import free_port
from hardware_kits.fleet import load_kits
from labs.client import LabService, connect
from tests.conftest import REPO, wait_until

pytestmark = pytest.mark.broker
DEMO_KITS = [k.id for k in load_kits(REPO / "hub_config" / "demo-site.yaml")]


class Up:
    def __init__(self, state: Path) -> None:
        self.state, self.mqtt_port, self.lab_port = state, free_port(), free_port()
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, "-m", "hub_config.cli", "up", "--state-dir", str(state),
             "--mqtt-port", str(self.mqtt_port), "--lab-port", str(self.lab_port)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"})
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def wait_up(self) -> str:
        wait_until(lambda: any("Smart City Lab is up" in x for x in self.lines)
                   or self.process.poll() is not None, timeout=90)
        assert self.process.poll() is None, "\n".join(self.lines)
        wait_until(lambda: any("Ctrl-C stops everything" in x for x in self.lines), timeout=10)
        return "\n".join(self.lines)

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        return self.process.wait(30)


def leftovers(state: Path) -> list[str]:
    """Processes still running that belong to this platform instance."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            except OSError:
                continue
            if str(state).encode() in cmdline:
                found.append(cmdline.decode(errors="replace"))
    return found


def test_up_runs_the_demo_stops_cleanly_and_reuses_state(state_root):
    state = state_root / "up-state"
    first = Up(state)
    try:
        banner = first.wait_up()
        url = f"http://127.0.0.1:{first.lab_port}"
        tokens = json.loads((state / "demo-tokens.json").read_text())
        assert (state / "demo-tokens.json").stat().st_mode & 0o077 == 0
        assert all(token in banner for token in tokens.values())
        kits = LabService(url, tokens["lara"]).kits()
        assert sorted(k["id"] for k in kits) == sorted(DEMO_KITS)
        assert all(k["online"] for k in kits)

        observer_url = re.search(r"mqtt://demo-observer:\S+", banner).group(0)
        with connect(observer_url, client_id="up-test-observer") as lab:
            kit = lab.kit("envstation-1", timeout=10)
            wait_until(lambda: kit.received >= 2, timeout=10)  # values change over time
        with LabService(url, tokens["anna"]).session("parking-1", progress=None) as held:
            assert held.set("gate", "open").value == "open"
    finally:
        assert first.stop(signal.SIGINT) == 0, "\n".join(first.lines[-20:])
    assert first.lines[-1] == "stopped."
    wait_until(lambda: not leftovers(state), timeout=10)

    second = Up(state)  # a second run reuses the state folder
    try:
        second.wait_up()
        tokens_again = json.loads((state / "demo-tokens.json").read_text())
        assert tokens_again == tokens
        url = f"http://127.0.0.1:{second.lab_port}"
        sessions = LabService(url, tokens["anna"]).sessions()
        assert [s["kit"] for s in sessions] == ["parking-1"]  # the database survived
    finally:
        assert second.stop(signal.SIGTERM) == 0
    wait_until(lambda: not leftovers(state), timeout=10)
