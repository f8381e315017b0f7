"""The camera path on a real Mosquitto: a twin's synthetic camera and the camera companion of a
real board publish stamped frames; viewers get only the stream they subscribe to; the
companion's account can do nothing else; bad frames are dropped and counted by the receiver."""

from __future__ import annotations

import json
import threading
import time
import uuid
from pathlib import Path

import pytest

from hardware_kits import protocol as P
from hardware_kits.firmware.camera_companion import CameraCompanion, folder_frames
from hardware_kits.kit_runner import KitRunner
from hardware_kits.mqtt import command_properties, connect_client, user_properties
from hardware_kits.twins.base import twin_class
from hardware_kits.twins.camera import jpeg, render
from lab_service.history import TelemetryRecorder, frames
from lab_service.store import SharingStore, sqlite_url
from tests.conftest import wait_until
from tests.integration.test_broker_acl import NOT_AUTHORIZED, publish_as

pytestmark = pytest.mark.broker


class Viewer:
    """An observer account's connection: every message of the given filters, decoded."""

    def __init__(self, broker, filters: list[str]) -> None:
        self.frames: list[dict] = []
        self.dropped = 0
        self.telemetry: list[tuple[float, dict]] = []  # (arrival, sample)
        self.other: dict[str, bytes] = {}
        self._lock = threading.Lock()
        creds = broker.provision_user(f"viewer-{uuid.uuid4().hex[:6]}")
        self.client = connect_client(
            broker.host,
            broker.port,
            creds,
            f"viewer-{uuid.uuid4().hex[:6]}",
            on_message=self._on_message,
            subscribe=[(f, 0) for f in filters],
        )

    def _on_message(self, _c, _u, msg) -> None:
        _kit, rest = P.split_topic(msg.topic)
        with self._lock:
            if rest == "$telemetry":
                self.telemetry.append((time.time(), P.decode_telemetry(msg.payload)))
            elif rest.startswith(P.CAMERA_PROPERTY + "/"):
                try:
                    frame = P.decode_frame(msg.topic, msg.payload, user_properties(msg.properties))
                except P.ProtocolError:
                    self.dropped += 1
                    return
                frame["arrival"] = time.time()
                self.frames.append(frame)
            else:
                self.other[rest] = msg.payload

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture()
def lamp(broker, models):
    """A street-lighting twin with its synthetic camera; yields (kit id, runner)."""
    kit_id = f"cam-{uuid.uuid4().hex[:6]}"
    creds = broker.provision_kits([kit_id])
    twin = twin_class("street-lighting")(models["street-lighting"], seed=2)
    with KitRunner(kit_id, twin, broker.address(creds[kit_id].username), rate_hz=5) as runner:
        yield kit_id, runner


def test_a_twins_camera_publishes_both_streams_stamped_with_the_telemetry_seq(broker, lamp):
    kit_id, _runner = lamp
    viewer = Viewer(broker, [P.camera_info_topic(kit_id) + "/#", P.camera_info_topic(kit_id)])
    viewer.client.subscribe(P.telemetry_topic(kit_id), 1)
    try:
        wait_until(lambda: sum(f["stream"] == "thumb" for f in viewer.frames) >= 2, timeout=10)
        info = json.loads(viewer.other["$camera"])
        assert info == {"source": "synthetic", "streams": P.CAMERA_STREAMS}
        full = [f for f in viewer.frames if f["stream"] == "full"]
        assert len(full) >= 10
        counters = [f["frame"] for f in full]
        assert counters == sorted(counters)
        seqs_sent = {s["seq"]: s["ts"] for _t, s in viewer.telemetry}
        for f in full:
            assert abs(f["ts"] - f["arrival"]) < 1.0  # the kit's clock, now
            if f["seq"] in seqs_sent:  # the state it shows was sampled before it was taken
                assert seqs_sent[f["seq"]] <= f["ts"] + 0.001
        assert viewer.dropped == 0
    finally:
        viewer.close()


def test_a_thumbnail_viewer_receives_no_full_frames(broker, lamp):
    kit_id, _runner = lamp
    viewer = Viewer(broker, [P.camera_topic(kit_id, P.STREAM_THUMB)])
    try:
        time.sleep(2.5)
        streams = {f["stream"] for f in viewer.frames}
        assert streams == {"thumb"}
        assert 1 <= len(viewer.frames) <= 4  # 1 frame/s
    finally:
        viewer.close()


@pytest.fixture()
def board_with_companion(broker, models, tmp_path: Path):
    """A street-lighting kit without a synthetic camera (as a real board) and its companion's
    account; yields (kit id, companion credentials, folder of recorded frames)."""
    kit_id = f"board-{uuid.uuid4().hex[:6]}"
    creds = broker.provision_kits([kit_id])
    twin = twin_class("street-lighting")(models["street-lighting"], seed=4)
    folder = tmp_path / "recorded"
    folder.mkdir()
    for level in range(5):
        twin.apply("mode", "manual")
        twin.level = 20.0 * level
        (folder / f"frame-{level:02d}.jpg").write_bytes(jpeg(render(twin)))
    with KitRunner(kit_id, twin, broker.address(creds[kit_id].username), rate_hz=5, camera=False):
        yield kit_id, broker.provision_camera(kit_id), folder


def test_the_companion_publishes_recorded_frames_with_the_kits_stamps(broker, board_with_companion):
    kit_id, camera_creds, folder = board_with_companion
    viewer = Viewer(broker, [P.camera_info_topic(kit_id) + "/#", P.camera_info_topic(kit_id)])
    viewer.client.subscribe(P.telemetry_topic(kit_id), 1)
    recorded = [p.read_bytes() for p in sorted(folder.glob("*.jpg"))]
    try:
        wait_until(lambda: viewer.telemetry, timeout=10)
        address = broker.address(camera_creds.username)
        with CameraCompanion(kit_id, address) as companion:
            wait_until(lambda: companion.seq > 0, timeout=5)
            companion.run(folder_frames(folder))
            wait_until(lambda: len(viewer.frames) >= 6, timeout=5)
            assert json.loads(viewer.other["$camera"])["source"] == "device"
        full = [f for f in viewer.frames if f["stream"] == "full"]
        assert [f["jpeg"] for f in full] == recorded
        assert [f["frame"] for f in full] == [1, 2, 3, 4, 5]
        assert any(f["stream"] == "thumb" for f in viewer.frames)
        telemetry = {s["seq"]: s["ts"] for _t, s in viewer.telemetry}
        for f in full:
            assert f["seq"] in telemetry  # the seq of a sample the kit really sent
            assert 0 <= f["ts"] - telemetry[f["seq"]] < 1.0  # kit clock, after that sample
        wait_until(lambda: viewer.other.get("$camera") == P.EMPTY_STRING.encode(), timeout=5)
    finally:
        viewer.close()


def test_the_companions_account_cannot_publish_telemetry_commands_or_state(
    broker, board_with_companion
):
    kit_id, camera_creds, _folder = board_with_companion
    assert publish_as(broker, camera_creds, P.telemetry_topic(kit_id), "{}") == NOT_AUTHORIZED
    assert publish_as(broker, camera_creds, P.state_topic(kit_id), "lost") == NOT_AUTHORIZED
    props = command_properties(uuid.uuid4().hex, P.ack_topic(kit_id, "cam"), time.time() + 5)
    command = P.set_topic(kit_id, "dimming")
    assert publish_as(broker, camera_creds, command, "0", props) == NOT_AUTHORIZED
    other = P.camera_topic("some-other-kit", P.STREAM_FULL)
    assert publish_as(broker, camera_creds, other, b"\xff\xd8") == NOT_AUTHORIZED
    own = publish_as(broker, camera_creds, P.camera_topic(kit_id, "full"), b"\xff\xd8")
    assert own in (0, 16)  # success; 16: success, no subscriber


def test_oversize_and_non_jpeg_frames_are_dropped_and_counted_by_the_receiver(
    broker, board_with_companion, tmp_path: Path
):
    kit_id, camera_creds, folder = board_with_companion
    (folder / "frame-05.jpg").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(1000))  # not a JPEG
    (folder / "frame-06.jpg").write_bytes(b"\xff\xd8" + bytes(P.MAX_FRAME_BYTES))  # oversize
    (folder / "frame-07.jpg").write_bytes((folder / "frame-00.jpg").read_bytes())
    store = SharingStore(sqlite_url(str(tmp_path / "frames.db")))
    observer = broker.provision_user(f"recorder-{uuid.uuid4().hex[:6]}")
    recorder = TelemetryRecorder(
        store, broker.host, broker.port, observer, frame_record_fps=100.0
    ).start()
    try:
        with CameraCompanion(kit_id, broker.address(camera_creds.username)) as companion:
            companion.run(folder_frames(folder))
            assert companion.client is not None and companion.client.is_connected()
        wait_until(lambda: recorder.dropped_frames.get(kit_id) == 2, timeout=5)
        recorder.flush()
        kept = frames(store, kit_id, 0, time.time() + 60)
        assert len(kept) == 6  # the five good ones and the last
        assert all(r.jpeg[:2] == P.JPEG_MAGIC for r in kept)
    finally:
        recorder.stop()
        store.close()
