"""One harness for a running stack, for the integration, browser and end-to-end tests and for
every benchmark: the lab service in its own process (`ServiceProcess`), twins in their own
processes (`TwinProcess`), standalone Voilà servers with a user's environment (`VoilaServer`),
headless Chromium (Debian's, through Playwright with `executable_path`), and the whole
platform as `smartlab up` runs it (`Up`). The broker is `hardware_kits.broker.Broker` itself.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hardware_kits.broker import Broker
from labs.board import DASHBOARDS, voila_command, voila_env
from labs.client import LabService
from site_config.runtime import Runtime, free_port
from tests.conftest import REPO, ChildProcess, wait_until

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
# Many pages open at once (the benchmark) must not be throttled as background tabs.
UNTHROTTLED = [
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
    "--disable-backgrounding-occluded-windows",
]
# Test artifacts (screenshots, accessibility reports): git-ignored, kept after the run.
ARTIFACTS_ROOT = Path(os.environ.get("SMARTLAB_ARTIFACTS") or REPO / "test-artifacts")
ARTIFACTS = ARTIFACTS_ROOT / "dashboards"

# Seconds instead of minutes, so that tests see ticks, handovers and bookings happen quickly.
FAST_POLICY = """
c.LabServiceApp.tick_seconds = 0.1
c.SharingPolicy.safe_confirm_timeout_seconds = 5.0
c.SharingPolicy.booking_lead_seconds = 2.0
c.SharingPolicy.booking_granularity_seconds = 1.0
c.SharingPolicy.booking_min_seconds = 1.0
c.SharingPolicy.min_walk_in_seconds = 1.0
"""


def token(who: str) -> str:
    """The test token of user `who`."""
    return f"test-token-{who}-0123456789"


def call_api(
    port: int,
    method: str,
    path: str,
    token: str | None = None,
    body: Any = None,
    raw: bytes | None = None,
    timeout: float = 30.0,
    lang: str | None = None,
) -> tuple[int, Any]:
    """One HTTP request to the lab service on `port`: (status, decoded JSON or text). `raw`
    is sent as it is (no content type); `body` as JSON; `lang` as Accept-Language."""
    headers = {"Authorization": f"token {token}"} if token else {}
    if lang:
        headers["Accept-Language"] = lang
    data = raw
    if raw is None and body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=data, headers=headers)
        answer = conn.getresponse()
        text = answer.read().decode()
        kind = answer.getheader("Content-Type", "")
    finally:
        conn.close()
    return answer.status, json.loads(text) if kind.startswith("application/json") else text


def with_tokens(users: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`ServiceProcess`'s users (token -> user) from users by short name (`token(name)`)."""
    return {token(who): spec for who, spec in users.items()}


def wait_listening(
    port: int, process: subprocess.Popen, timeout: float, what: str, log: Path
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited ({process.returncode}):\n{_tail(log)}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within {timeout} s:\n{_tail(log)}")


def _tail(log: Path, lines: int = 40) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def stop(process: subprocess.Popen | None, timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL of the process group it leads (voila's kernels included)."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class ServiceProcess(ChildProcess):
    """The lab service in its own process: `python -m lab_service.app` (what `smartlab lab
    serve` runs), with a token identity for `users` (token -> user) and `settings` added to its
    configuration file. `extra_args` go to the service, `launcher` before it (`-m cProfile …`)."""

    def __init__(
        self,
        broker: Broker,
        state_root: Path,
        users: dict[str, dict[str, Any]],
        name: str = "lab",
        settings: str = FAST_POLICY,
        extra_args: tuple[str, ...] = (),
        launcher: tuple[str, ...] = (),
        startup_timeout: float = 60.0,  # a loaded CI machine took over 20 s to import it
    ) -> None:
        self.dir = state_root / name
        self.dir.mkdir(exist_ok=True)
        self.config = self.dir / "lab_service_config.py"
        db_url = f"sqlite:///{self.dir / 'lab.sqlite'}"
        self.config.write_text(
            f"c.LabServiceApp.users = {users!r}\nc.LabServiceApp.db_url = {db_url!r}\n{settings}"
        )
        self.broker = broker
        self.state_root = state_root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "service.log"
        self.command = [
            sys.executable,
            *launcher,
            "-m",
            "lab_service.app",
            f"--config={self.config}",
            f"--state-dir={state_root}",
            f"--mqtt-port={broker.port}",
            f"--port={self.port}",
            *extra_args,
        ]
        self.startup_timeout = startup_timeout
        self.process: subprocess.Popen | None = None

    def start(self, listening: bool = True) -> ServiceProcess:
        """Start it; wait until it listens (a standby, `listening=False`, does not)."""
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        if listening:
            wait_listening(
                self.port, self.process, self.startup_timeout, "the lab service", self.log
            )
        return self

    def output(self, lines: int = 0) -> str:
        """What the service logged (the last `lines` lines; 0: all)."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) if lines else text

    def stop(self) -> None:
        stop(self.process)

    def client(self, token: str) -> LabService:
        return LabService(self.url, token)


TWIN_SCRIPT = """
import signal, sys, threading
from hardware_kits.descriptor import load_models
from hardware_kits.kit_runner import KitRunner
from hardware_kits.mqtt import BrokerAddress
from hardware_kits.twins.base import twin_class
kit_id, model, url, seed = sys.argv[1:5]
descriptor = load_models()[model]
runner = KitRunner(kit_id, twin_class(model)(descriptor, seed=int(seed)),
                   BrokerAddress.from_url(url)).start()
print("running", flush=True)
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *_: stop.set())
stop.wait()
runner.stop()
"""


class TwinProcess(ChildProcess):
    """A twin in its own process, so that a test can SIGKILL it (the broker then publishes its
    will: `lost`)."""

    def __init__(self, kit_id: str, model: str, url: str, seed: int = 5) -> None:
        self.args = [sys.executable, "-c", TWIN_SCRIPT, kit_id, model, url, str(seed)]
        self.process: subprocess.Popen | None = None

    def start(self) -> TwinProcess:
        self.process = subprocess.Popen(
            self.args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        line = self.process.stdout.readline() if self.process.stdout else ""
        if "running" not in line:
            raise RuntimeError(f"the twin did not start: {line}")
        return self

    def stop(self) -> None:
        stop(self.process)


class VoilaServer:
    """A standalone Voilà serving labs/dashboards (or one notebook) with a user's environment:
    the lab service URL and token, and optionally a broker URL (else /api/me/mqtt's watch)."""

    def __init__(
        self,
        name: str,
        workdir: Path,
        env: dict[str, str],
        *,
        target: Path = DASHBOARDS,
        preheat: dict[str, int] | None = None,
    ) -> None:
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.single = target.suffix == ".ipynb"
        self.log = workdir / f"voila-{name}.log"
        self.command = voila_command(target, port=self.port, preheat=preheat)
        # The kernels import the repository's packages; no user config from ~/.jupyter.
        self.env = voila_env(
            {
                **os.environ,
                **env,
                "PYTHONUNBUFFERED": "1",
                "JUPYTER_CONFIG_DIR": str(workdir / "jupyter-config"),
                "JUPYTER_RUNTIME_DIR": str(workdir / f"jupyter-runtime-{name}"),
            }
        )
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> VoilaServer:
        with self.log.open("a") as out:
            self.process = subprocess.Popen(
                self.command,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
        wait_listening(self.port, self.process, timeout, f"voila ({self.name})", self.log)
        return self

    def page(self, notebook: str, **query: str) -> str:
        """The URL of a dashboard (`kit.ipynb`) with a query string."""
        qs = "&".join(f"{k}={v}" for k, v in query.items())
        path = "/" if self.single else f"/voila/render/{notebook}"
        return f"{self.url}{path}" + (f"?{qs}" if qs else "")

    def kernel_pids(self) -> set[int]:
        import psutil

        if self.process is None:
            return set()
        try:
            children = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return set()
        pids = set()
        for child in children:
            try:
                if child.status() != psutil.STATUS_ZOMBIE and "ipykernel" in " ".join(
                    child.cmdline()
                ):
                    pids.add(child.pid)
            except psutil.Error:  # gone meanwhile
                continue
        return pids

    def pool_ready(self, notebook: str, size: int) -> bool:
        """The log says the preheated pool of `notebook` is full."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"Kernel pool of {notebook} is filled with {size} kernel(s)" in text

    def pool_fills(self, notebook: str) -> int:
        """How often the preheated pool of `notebook` has been (re)filled, from the log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return text.count(f"Kernel pool of {notebook} is filled with")

    def stop(self) -> None:
        stop(self.process)

    def output(self) -> str:
        return _tail(self.log, 80)


def launch_chromium(playwright: Any, *, unthrottled: bool = False) -> Any:
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=CHROMIUM_ARGS + (UNTHROTTLED if unthrottled else []),
    )


def http_json(url: str, who_token: str | None = None) -> Any:
    headers = {"Authorization": f"token {who_token}"} if who_token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
        return json.loads(r.read())


# ---------------------------------------------------------------- the whole platform


class Up:
    """The README's run command, on its own ports and state folder.

    Platforms run one after another; each may have its own `home_root` (a Unix account has
    one home at a time, and a spawn moves it there: hub_config/accounts.py)."""

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

    def wait_up(self, timeout: float = 300) -> str:  # a cold start on a loaded 2-core machine
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
        return self.process.wait(120)  # the launcher gives the hub a minute to stop its servers


@contextlib.contextmanager
def running(up: Up) -> Iterator[Up]:
    """The platform, up for the body; then stopped as Ctrl-C would, none of its processes
    left, and a clean exit status."""
    try:
        up.wait_up()
        yield up
    finally:
        status = up.stop(signal.SIGTERM)
        # a loaded 2-core machine may need a while to reap every user's server and kernel
        wait_until(lambda: not leftovers(up), timeout=60)
    assert status == 0, "\n".join(up.lines[-20:])


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
