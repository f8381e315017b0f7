"""The lab service's HTTP front-end processes (frontend.py): a dead front end is replaced while
the other keeps answering, and none outlives the service process (the port is free at once).

`smartlab lab serve` with its default 2 front ends, a token identity, the session's broker.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from site_config.runtime import free_port
from tests.conftest import REPO, wait_until

pytestmark = pytest.mark.broker

TOKEN = "front-end-test-token-0123"
CONFIG = """
c.LabServiceApp.users = {{{token!r}: {{"name": "fred", "institution": "univ-f"}}}}
c.LabServiceApp.db_url = "sqlite:///{folder}/lab.sqlite"
"""


def processes() -> list[tuple[int, int, bytes]]:
    """(pid, parent pid, command line) of every process."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        found.append((int(stat.parent.name), parent, cmdline))
    return found


def front_ends(service_pid: int) -> set[int]:
    """Pids of the service's front-end processes: the children of its multiprocessing fork
    server (itself a child of the service)."""
    everyone = processes()
    servers = {p for p, parent, cmd in everyone if parent == service_pid and b"forkserver" in cmd}
    return {p for p, parent, _ in everyone if parent in servers}


def me(port: int) -> dict:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/me", headers={"Authorization": f"token {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as answer:
        return json.loads(answer.read())


def port_free(port: int) -> bool:
    """A new service could listen on `port` (SO_REUSEADDR, as it binds: closed connections
    of the old one may linger in TIME_WAIT, a listening socket may not)."""
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
            sock.listen()
        except OSError:
            return False
        return True


@pytest.fixture
def service(broker, state_root, tmp_path) -> Iterator[tuple[subprocess.Popen, int, Path]]:
    tmp_path.chmod(0o755)
    config = tmp_path / "lab_service_config.py"
    config.write_text(CONFIG.format(token=TOKEN, folder=tmp_path))
    port, log = free_port(), tmp_path / "service.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub_config.cli",
                "lab",
                "serve",
                "--config",
                str(config),
                "--state-dir",
                str(state_root),
                "--mqtt-port",
                str(broker.port),
                "--port",
                str(port),
            ],
            cwd=REPO,
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )

    def answers() -> bool:
        assert process.poll() is None, log.read_text()
        try:
            return me(port)["name"] == "fred"
        except OSError:
            return False

    wait_until(answers, timeout=30, interval=0.1)
    yield process, port, log
    if process.poll() is None:
        process.terminate()
        process.wait(15)


def test_a_dead_front_end_is_replaced_while_the_other_answers(service):
    process, port, log = service
    pids = front_ends(process.pid)
    assert len(pids) == 2, pids
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    assert [me(port)["name"] for _ in range(20)] == ["fred"] * 20
    wait_until(lambda: len(front_ends(process.pid) - {victim}) == 2, timeout=20)
    assert "HTTP front end" in log.read_text() and "starting another" in log.read_text()
    assert process.poll() is None


def test_no_front_end_outlives_the_service(service):
    process, port, _ = service
    pids = front_ends(process.pid)
    assert len(pids) == 2
    process.send_signal(signal.SIGKILL)
    process.wait()

    def gone() -> bool:
        return not any(
            Path(f"/proc/{pid}").exists()
            and "Z" not in Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1][:3]
            for pid in pids
        )

    wait_until(gone, timeout=5)

    def released() -> bool:
        """the port is free for a restarted service"""
        return port_free(port)

    wait_until(released, timeout=10)  # the kernel closes a dead process's sockets promptly


def test_a_stopped_service_stops_its_front_ends(service):
    process, port, _ = service
    pids = front_ends(process.pid)
    process.terminate()
    assert process.wait(15) == 0
    assert not any(Path(f"/proc/{pid}").exists() for pid in pids)
    assert port_free(port)
