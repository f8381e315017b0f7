"""The history recorder's camera frames: kept at a reduced rate, bad frames dropped and counted,
read back by time, deleted after their retention (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hardware_kits import protocol as P
from hardware_kits.descriptor import load_models
from hardware_kits.mqtt import Credentials
from hardware_kits.twins.base import twin_class
from hardware_kits.twins.camera import jpeg, render
from lab_service import history as H
from lab_service.store import SharingStore

KIT = "cam-1"
T0 = 1_767_225_600.0
FULL = P.camera_topic(KIT, P.STREAM_FULL)


@pytest.fixture()
def store(database_url: str) -> Iterator[SharingStore]:
    db = SharingStore(database_url)
    yield db
    db.close()


@pytest.fixture(scope="module")
def picture() -> bytes:
    model = twin_class("street-lighting")(load_models()["street-lighting"], seed=1)
    return jpeg(render(model))


def recorder(store: SharingStore, **options: Any) -> H.TelemetryRecorder:
    """Not started: frames go in through `take_frame`, as paho's thread would put them."""
    return H.TelemetryRecorder(store, "127.0.0.1", 1, Credentials("observer", "x"), **options)


def props(ts: float, seq: int, frame: int = 1) -> dict[str, str]:
    return dict(P.frame_properties(round(ts * 1000), seq, frame))


def test_frames_are_kept_at_the_record_rate_and_read_back_in_order(store, picture):
    rec = recorder(store, frame_record_fps=1.0)
    kept = [rec.take_frame(FULL, picture, props(T0 + i / 10, seq=i // 5)) for i in range(35)]
    assert sum(kept) == 4  # 3.5 s of frames at 10/s: one a second
    rec.flush()
    rows = H.frames(store, KIT, T0, T0 + 10)
    assert [r.ts for r in rows] == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert [r.seq for r in rows] == [0, 2, 4, 6]
    assert rows[0].jpeg == picture
    assert H.frames(store, KIT, T0 + 1, T0 + 3) == rows[1:3]  # half-open range
    assert H.frames(store, "other-kit", T0, T0 + 10) == []


def test_oversize_non_jpeg_and_badly_stamped_frames_are_dropped_and_counted(store, picture):
    rec = recorder(store)
    assert not rec.take_frame(FULL, b"\xff\xd8" + bytes(P.MAX_FRAME_BYTES), props(T0, 1))
    assert not rec.take_frame(FULL, b"GIF89a....", props(T0, 1))
    assert not rec.take_frame(FULL, picture, {"ts": "soon", "seq": "1", "frame": "1"})
    assert rec.dropped_frames == {KIT: 3}
    assert rec.take_frame(FULL, picture, props(T0, 1))
    rec.flush()
    assert len(H.frames(store, KIT, T0, T0 + 1)) == 1


def test_retention_deletes_old_frames_only(store, picture):
    rec = recorder(store, frame_retention_s=3600.0)
    for hours in (0, 2, 5):
        rec.take_frame(FULL, picture, props(T0 + hours * 3600, hours))
    rec.flush()
    rec.prune(now=T0 + 5.5 * 3600)
    assert [r.seq for r in H.frames(store, KIT, 0, T0 + 10 * 3600)] == [5]


def test_frame_recording_can_be_switched_off(store, picture):
    rec = recorder(store, frame_record_fps=None)
    assert not rec.take_frame(FULL, picture, props(T0, 1))
    assert [t for t, _qos in rec._subscriptions()] == [P.all_kits("$telemetry")]
    with pytest.raises(ValueError, match="frame_record_fps"):
        recorder(store, frame_record_fps=0)
