"""Fixtures of the browser tests: the platform (real broker, twins, `smartlab lab serve`),
standalone Voilà servers per user, and headless Chromium through Playwright.

Screenshots of every view go to test-artifacts/dashboards/ (git-ignored).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hardware_kits import protocol as P
from hardware_kits.kit_runner import KitRunner
from hardware_kits.mqtt import connect_client, frame_publish_properties
from hardware_kits.twins.base import twin_class
from hardware_kits.twins.camera import SyntheticCamera
from labs.client import Lab, LabService, connect
from tests.conftest import wait_until
from tests.stack import (
    ARTIFACTS,
    ServiceProcess,
    TwinProcess,
    VoilaServer,
    launch_chromium,
    token,
    with_tokens,
)

COURSE = "iot101"
USERS: dict[str, dict[str, Any]] = {
    "admin": {"name": "lab-admin", "institution": "centre", "lab_admin": True},
    "alice": {"name": "alice", "institution": "univ-a", "courses": [COURSE]},
    "bob": {"name": "bob", "institution": "univ-b"},
    "carol": {"name": "carol", "institution": "univ-a", "instructor_of": [COURSE]},
    "board": {"name": "status-board", "institution": "centre"},
}
LAMP, LAMP2, CROSS, ENV, PARK = (
    "dash-lamp-1",
    "dash-lamp-2",
    "dash-cross-1",
    "dash-env-1",
    "dash-park-1",
)
IN_PROCESS = {
    LAMP: "street-lighting",
    LAMP2: "street-lighting",
    CROSS: "intersection",
    ENV: "environment-station",
}
KITS = {**IN_PROCESS, PARK: "smart-parking"}  # the parking twin runs as its own process
# LAMP2's picture comes from a camera companion of its own (as beside a real board), which a
# test can stop and start while the kit goes on; the other twins draw their own.
COMPANION_KIT = LAMP2


class CameraCompanion:
    """A kit's camera as a separate publisher with the camera account (`provision_camera`):
    the twin's synthetic picture at the protocol's rates, stamped with the kit's last seq."""

    def __init__(self, broker, runner: KitRunner) -> None:
        self.runner = runner
        self.kit_id = runner.kit_id
        self.camera = SyntheticCamera(runner.model)
        self.address = broker.address(broker.provision_camera(self.kit_id).username)
        self.client = connect_client(
            self.address.host, self.address.port, self.address.credentials, f"cam-{self.kit_id}"
        )
        self.client.publish(
            P.camera_info_topic(self.kit_id), P.camera_info("device"), qos=1, retain=True
        ).wait_for_publish(5)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_ts_ms: int | None = None  # the newest frame's stamp
        self.frames = 0

    def start(self) -> CameraCompanion:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"cam-{self.kit_id}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)

    def close(self) -> None:
        self.stop()
        self.client.disconnect()
        self.client.loop_stop()

    def _run(self) -> None:
        period = 1.0 / P.CAMERA_STREAMS[P.STREAM_FULL]["fps"]
        while not self._stop.is_set():
            with self.runner._lock:  # the twin's model and seq, as its own camera reads them
                scene = self.camera.scene(time.time())
                seq, ts_ms = self.runner.core.seq, int(time.time() * 1000)
            full, thumb = self.camera.frames(scene)
            self.frames += 1
            for stream, jpeg in ((P.STREAM_FULL, full), (P.STREAM_THUMB, thumb)):
                if stream == P.STREAM_THUMB and self.frames % 10 != 1:
                    continue
                self.client.publish(
                    P.camera_topic(self.kit_id, stream),
                    jpeg,
                    qos=0,
                    properties=frame_publish_properties(ts_ms, seq, self.frames),
                )
            self.last_ts_ms = ts_ms
            self._stop.wait(period)


class Platform:
    def __init__(self, broker, service: ServiceProcess, root: Path) -> None:
        self.broker = broker
        self.service = service
        self.root = root
        self.voilas: dict[str, VoilaServer] = {}
        self.park: TwinProcess | None = None
        self.observer: Lab | None = None
        self.camera: CameraCompanion | None = None  # COMPANION_KIT's camera

    def client(self, who: str) -> LabService:
        return self.service.client(token(who))

    def voila(
        self,
        who: str,
        *,
        preheat: dict[str, int] | None = None,
        extra_env: dict[str, str] | None = None,
        key: str | None = None,
    ) -> VoilaServer:
        """The Voilà server of a user (started on first use, then shared)."""
        key = key or who
        if key not in self.voilas:
            env = {
                "SMARTLAB_LAB_URL": self.service.url,
                "SMARTLAB_TOKEN": token(who),
                **(extra_env or {}),
            }
            self.voilas[key] = VoilaServer(key, self.root, env, preheat=preheat).start()
        return self.voilas[key]

    def restart_park(self) -> None:
        assert self.park is not None
        self.park.start()


@pytest.fixture(scope="package")
def platform(broker, models, state_root) -> Iterator[Platform]:
    # Package scope, not session: its twins draw camera frames, and its Voilà servers keep a
    # kernel per dashboard polling; held to the end of the run they took most of a core from
    # every later test.
    service = ServiceProcess(broker, state_root, with_tokens(USERS), name="dash-lab").start()
    plat = Platform(broker, service, state_root)
    runners: list[KitRunner] = []
    admin = service.client(token("admin"))
    try:
        for kit_id, model in KITS.items():
            admin.register_kit(kit_id, model, f"{model} ({kit_id})")
        for kit_id, model in IN_PROCESS.items():
            runners.append(
                KitRunner(
                    kit_id,
                    twin_class(model)(models[model], seed=5),
                    broker.address(f"kit-{kit_id}"),
                    camera=kit_id != COMPANION_KIT,
                ).start()
            )
            if kit_id == COMPANION_KIT:
                plat.camera = CameraCompanion(broker, runners[-1]).start()
        plat.park = TwinProcess(PARK, KITS[PARK], broker.address(f"kit-{PARK}").url()).start()
        wait_until(lambda: all(k["online"] for k in admin.kits()), timeout=20)
        plat.observer = connect(
            broker.address(broker.provision_user("dash-test-observer").username).url(),
            client_id="dash-test-observer",
        )
        yield plat
    finally:
        for server in plat.voilas.values():
            server.stop()
        if plat.observer is not None:
            plat.observer.close()
        if plat.camera is not None:
            plat.camera.close()
        service.stop()
        if plat.park is not None:
            plat.park.stop()
        for runner in runners:
            runner.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    # Module scope: Playwright's sync API keeps an event loop running in this thread while it
    # is open, which would break asyncio.run() in tests collected after the browser tests.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def open_page(browser):
    """open_page(url, locale="en-GB", **context_options) -> a Playwright page (a desktop
    viewport unless the options say otherwise); closed after the test."""
    contexts = []

    def opener(url: str, locale: str = "en-GB", timeout_s: float = 30.0, **context_options):
        options = {"viewport": {"width": 1280, "height": 1000}, **context_options}
        context = browser.new_context(locale=locale, **options)
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(timeout_s * 1000)
        page.goto(url)
        return page

    yield opener
    for context in contexts:
        with contextlib.suppress(Exception):
            context.close()


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def eventually(check, timeout: float = 10.0, interval: float = 0.1):
    """Like wait_until, for checks that raise AssertionError until they pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return check()
        except AssertionError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(interval)
