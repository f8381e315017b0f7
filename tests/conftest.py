"""Fixtures shared by the whole suite: a real Mosquitto with dynamic security, kit processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from hardware_kits.broker import Broker
from hardware_kits.descriptor import load_models
from hub_config.launcher import stop_process
from site_config.runtime import broker_socket_path, free_port
from tests.postgres import PostgresServer

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def models() -> dict[str, dict]:
    return load_models()


@pytest.fixture(scope="session")
def state_root() -> Iterator[Path]:
    # Not pytest's tmp_path: its 0700 parents would lock out the broker's `mosquitto` account.
    root = Path(tempfile.mkdtemp(prefix="smartlab-test-"))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def home_root(state_root: Path) -> Path:
    """The users' homes of every platform this session starts (`smartlab up --home-root`)."""
    return state_root / "home"


@pytest.fixture(scope="session")
def broker(state_root: Path) -> Iterator[Broker]:
    """One broker for the session (each test uses its own kit ids and accounts)."""
    socket_path = broker_socket_path(state_root)
    with Broker(state_root / "broker", port=free_port(), socket_path=socket_path) as running:
        yield running


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (Debian's; a cluster of its own)."""
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """The SQLAlchemy URL of an empty PostgreSQL database of this test's own."""
    return postgres.new_database()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each engine the stores run on: a SQLite file, then a database of
    the session's PostgreSQL server (started only when a test asks for this engine)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.sqlite'}"
    return request.getfixturevalue("postgres_url")


class ChildProcess:
    """A kit implementation in its own process, so that a test can SIGKILL it."""

    process: subprocess.Popen | None = None

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        if self.process is not None:
            stop_process(self.process)


class KitProcess(ChildProcess):
    """A twin running as `smartlab kits run`."""

    def __init__(self, broker: Broker, state_root: Path, entry: dict) -> None:
        self.broker = broker
        self.entry = entry
        self.kit_id = entry["id"]
        self.site = state_root / f"site-{self.kit_id}.yaml"
        self.site.write_text(yaml.safe_dump({"kits": [entry]}))

    def start(self) -> KitProcess:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub_config.cli",
                "kits",
                "run",
                "--site",
                str(self.site),
                "--state-dir",
                str(self.broker.state_dir.parent),
                "--mqtt-port",
                str(self.broker.port),
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        return self


def wait_until(predicate, timeout: float = 10.0, interval: float = 0.02):
    """Poll until predicate() is truthy; return its value or fail the test with a clear message."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    pytest.fail(f"condition not met within {timeout} s: {getattr(predicate, '__doc__', '')}")
