"""`smartlab up`, the README's run command: comes up with demo content, stops cleanly, reruns."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from labs.client import LabService, connect
from site_config.kits import load_kits
from site_config.paths import DEMO_SITE
from tests.conftest import REPO, wait_until
from tests.stack import Up, lab_token, leftovers

pytestmark = pytest.mark.broker
DEMO_KITS = [k.id for k in load_kits(DEMO_SITE)]


def test_up_runs_the_demo_stops_cleanly_and_reuses_state(state_root, home_root):
    state = state_root / "up-state"
    first = Up(state, home_root)
    try:
        banner = first.wait_up()
        url = f"http://127.0.0.1:{first.lab_port}"
        assert f"Smart City Lab is up: {first.hub_url}/" in banner
        assert "log in as (password demo-<username>)" in banner
        with urllib.request.urlopen(first.hub_url + "/hub/api/", timeout=10) as answer:
            assert "version" in json.loads(answer.read())  # the hub, through its proxy
        tokens = {name: lab_token(first, name) for name in ("lara", "anna")}
        kits = LabService(url, tokens["lara"]).kits()  # the site's kits, registered by itself
        assert sorted(k["id"] for k in kits) == sorted(DEMO_KITS)
        assert all(k["online"] for k in kits)

        observer_url = re.search(r"mqtt://demo-observer:\S+", banner).group(0)
        with connect(observer_url, client_id="up-test-observer") as lab:
            kit = lab.kit("envstation-1", timeout=10)
            wait_until(lambda: kit.received >= 2, timeout=10)  # values change over time
        with LabService(url, tokens["anna"]).session("parking-1", progress=None) as held:
            assert held.set("gate", "open").value == "open"
        # The job runner: a hub service beside the lab service, root (it forks the sandbox).
        runner = [line for line in leftovers(first) if " jobs run " in line]
        assert len(runner) == 1, leftovers(first)
        hub_log = "\n".join(first.hub_log_tail(100_000))
        assert f"claiming jobs from {url}" in hub_log, hub_log[-3000:]
        assert "claiming a job:" not in hub_log, hub_log[-3000:]  # the lab service knows it
    finally:
        assert first.stop(signal.SIGINT) == 0, "\n".join(first.lines[-20:])
    assert first.lines[-1] == "stopped."
    wait_until(lambda: not leftovers(first), timeout=30)

    second = Up(state, home_root)  # a second run reuses the state folder
    try:
        second.wait_up()
        url = f"http://127.0.0.1:{second.lab_port}"
        sessions = LabService(url, lab_token(second, "anna")).sessions()
        assert [s["kit"] for s in sessions] == ["parking-1"]  # the database survived
    finally:
        assert second.stop(signal.SIGTERM) == 0
    wait_until(lambda: not leftovers(second), timeout=30)


def test_up_refuses_a_taken_port_before_starting_anything(state_root):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        state = state_root / "up-taken"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "hub_config.cli",
                "up",
                "--state-dir",
                str(state),
                "--hub-port",
                str(port),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode == 2
    assert done.stderr.strip() == (
        f"smartlab: the hub's port {port} on 127.0.0.1 is already in use; choose another "
        "with --hub-port, --mqtt-port or --lab-port"
    )
    assert not state.exists()  # nothing started, nothing written
