"""The running platform for browser tests and the dashboard benchmark: the lab service as
`smartlab lab serve` in its own process, twins, standalone Voilà servers with a user's
environment, and headless Chromium (Debian's, through Playwright with `executable_path`).

The hub integration (per-user servers at /user/<name>/voila/render/...) can reuse `VoilaServer`
for its own single-user servers' environment and `launch_chromium` for the browser.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from hardware_kits.broker import Broker
from labs.board import DASHBOARDS, voila_command, voila_env
from labs.client import LabService
from site_config.runtime import free_port

REPO = Path(__file__).resolve().parents[2]
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
ARTIFACTS = REPO / "test-artifacts" / "dashboards"

SERVICE_CONFIG = """
c.LabServiceApp.users = {users!r}
c.LabServiceApp.db_url = {db_url!r}
c.LabServiceApp.tick_seconds = 0.1
c.SharingPolicy.safe_confirm_timeout_seconds = 5.0
c.SharingPolicy.booking_lead_seconds = 2.0
c.SharingPolicy.booking_granularity_seconds = 1.0
c.SharingPolicy.booking_min_seconds = 1.0
c.SharingPolicy.min_walk_in_seconds = 1.0
"""


def token(who: str) -> str:
    return f"dash-token-{who}-0123456789"


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


class ServiceProcess:
    """`python -m hub_config.cli lab serve` with a token identity for `users`."""

    def __init__(
        self,
        broker: Broker,
        state_root: Path,
        users: dict[str, dict[str, Any]],
        name: str = "dash-lab",
    ) -> None:
        self.dir = state_root / name
        self.dir.mkdir(exist_ok=True)
        self.config = self.dir / "lab_service_config.py"
        self.config.write_text(
            SERVICE_CONFIG.format(
                users={token(who): spec for who, spec in users.items()},
                db_url=f"sqlite:///{self.dir / 'lab.sqlite'}",
            )
        )
        self.broker = broker
        self.state_root = state_root
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = self.dir / "service.log"
        self.process: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        with self.log.open("a") as out:
            # The app's own entry (what `smartlab lab serve` runs), so that the tests do not
            # depend on every other command group the `smartlab` dispatcher loads.
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lab_service.app",
                    f"--config={self.config}",
                    f"--state-dir={self.state_root}",
                    f"--mqtt-port={self.broker.port}",
                    f"--port={self.port}",
                ],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        wait_listening(self.port, self.process, 30, "the lab service", self.log)
        return self

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        stop(self.process)

    def client(self, who: str) -> LabService:
        return LabService(self.url, token(who))


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


class TwinProcess:
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

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

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
