"""`smartlab up` as a child process on free ports: for the tests of the running platform."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

from site_config.runtime import Runtime, free_port
from tests.conftest import REPO, wait_until


class Up:
    """The README's run command, on its own ports and state folder.

    Platforms of one test session share `home_root` (a Unix account has one home at a time;
    see hub_config/accounts.py)."""

    def __init__(self, state: Path, home_root: Path, *extra: str) -> None:
        self.state = state
        self.mqtt_port, self.lab_port, self.hub_port = free_port(), free_port(), free_port()
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "hub_config.cli",
                "up",
                "--state-dir",
                str(state),
                "--mqtt-port",
                str(self.mqtt_port),
                "--lab-port",
                str(self.lab_port),
                "--hub-port",
                str(self.hub_port),
                "--home-root",
                str(home_root),
                *extra,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        threading.Thread(target=self._read, daemon=True).start()

    @property
    def hub_url(self) -> str:
        return f"http://127.0.0.1:{self.hub_port}"

    @property
    def lab_url(self) -> str:
        return f"http://127.0.0.1:{self.lab_port}"

    @property
    def runtime(self) -> Runtime:
        return Runtime.load(self.state / "hub" / "runtime.json")

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line.rstrip())

    def wait_up(self, timeout: float = 180) -> str:
        wait_until(
            lambda: (
                any("Smart City Lab is up" in x for x in self.lines)
                or self.process.poll() is not None
            ),
            timeout=timeout,
        )
        assert self.process.poll() is None, "\n".join(self.lines[-30:] + self.hub_log_tail())
        wait_until(lambda: any("Ctrl-C stops everything" in x for x in self.lines), timeout=10)
        return "\n".join(self.lines)

    def hub_log_tail(self, lines: int = 40) -> list[str]:
        """The end of JupyterHub's log: why it exited, kept in the failure message because
        the state folder is deleted with the test session."""
        log = self.state / "hub" / "jupyterhub.log"
        if not log.exists():
            return []
        return ["--- jupyterhub.log ---", *log.read_text(errors="replace").splitlines()[-lines:]]

    def stop(self, sig: int) -> int:
        self.process.send_signal(sig)
        return self.process.wait(60)


def leftovers(up: Up) -> list[str]:
    """Processes still running that belong to this platform instance: those naming its state
    folder or its ports, and the hub's children (servers, services, proxy)."""
    marks = [str(up.state).encode(), f":{up.hub_port}".encode(), f"--port {up.hub_port}".encode()]
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            environ = Path(f"/proc/{pid}/environ").read_bytes()
        except OSError:
            continue
        if any(m in cmdline for m in marks) or str(up.state).encode() in environ:
            found.append(cmdline.decode(errors="replace"))
    return found


def lab_token(up: Up, username: str) -> str:
    """A hub API token of a demo person that opens the lab service, made as a person makes one
    on the hub's token page (logged in, scoped to the lab service only)."""
    from tests.e2e.hubclient import Browser, json_of

    browser = Browser(up.hub_url, username)
    browser.login(f"demo-{username}")
    made = json_of(
        browser.post(
            f"/hub/api/users/{username}/tokens",
            json={"note": "test", "scopes": ["access:services!service=lab"]},
        )
    )
    return made["token"]
