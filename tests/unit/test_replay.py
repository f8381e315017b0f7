"""Replay of recorded kit ranges: who may see which range, what a range holds, and the REST
routes (the real tornado application over HTTP, on SQLite and on PostgreSQL)."""

from __future__ import annotations

import asyncio
import http.client
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from tornado.httpserver import HTTPServer

from lab_service import replay as R
from lab_service.api_http import Operations, make_app
from lab_service.api_identity import TokenIdentity
from lab_service.api_routes import ApiContext
from lab_service.history import insert_rows
from lab_service.policy import SharingPolicy
from lab_service.service import Forbidden, KitSharing, User
from lab_service.store import (
    BookingRow,
    CameraFrameRow,
    CommandRow,
    KitRow,
    QueueEntryRow,
    SessionRow,
    SharingStore,
)
from tests.stack import call_api, token, with_tokens

KIT = "replay-lamp-1"
T0 = 1_714_564_800.0  # 2024-05-01T12:00:00Z
NOW = T0 + 7200
COURSE = "iot101"
JPEG = b"\xff\xd8\xff\xe0fake-jpeg\xff\xd9"
USERS = {
    "admin": {"name": "lara", "institution": "centre", "lab_admin": True},
    "anna": {"name": "anna", "institution": "univ-a", "courses": [COURSE]},
    "boris": {"name": "boris", "institution": "univ-b"},  # another institution, no course
    "bella": {"name": "bella", "institution": "univ-a", "courses": [COURSE]},
    "irina": {"name": "irina", "institution": "univ-a", "instructor_of": [COURSE]},
}


def user(who: str) -> User:
    spec = USERS[who]
    return User(
        spec["name"],
        spec["institution"],
        frozenset(spec.get("courses", [])),
        frozenset(spec.get("instructor_of", [])),
        spec.get("lab_admin", False),
    )


@pytest.fixture()
def store(database_url: str) -> Iterator[SharingStore]:
    """A kit with one hour of 10 Hz telemetry from T0; anna's session T0+600..T0+900 (walk-in,
    queued as a member of the course), boris's T0+1200..T0+1500, the course's booked slot
    T0+1800..T0+2700, commands in each, and a recorded frame a second."""
    db = SharingStore(database_url)
    with db.transaction() as s:
        s.add(KitRow(id=KIT, model="street-lighting", registered_at=T0 - 10))
        s.add(KitRow(id="other-kit", model="street-lighting", registered_at=T0 - 10))
        s.flush()  # no ORM relationships: the rows referring to these go in after them
        s.add(
            QueueEntryRow(
                id=1,
                user="anna",
                institution="univ-a",
                kit_id=KIT,
                courses=[COURSE],
                enqueued_at=T0 + 590,
                state="served",
            )
        )
        s.add(
            BookingRow(
                id=1,
                kit_id=KIT,
                course=COURSE,
                booked_by="irina",
                institution="univ-a",
                starts_at=T0 + 1800,
                ends_at=T0 + 2700,
                created_at=T0 - 86400,
            )
        )
        s.flush()
        for sid, who, inst, a, b, entry, booking in (
            (1, "anna", "univ-a", 600, 900, 1, None),
            (2, "boris", "univ-b", 1200, 1500, None, None),
            (3, "bella", "univ-a", 1800, 2100, None, 1),
        ):
            s.add(
                SessionRow(
                    id=sid,
                    kit_id=KIT,
                    user=who,
                    institution=inst,
                    state="released",
                    queue_entry_id=entry,
                    booking_id=booking,
                    requested_at=T0 + a,
                    granted_at=T0 + a,
                    ends_at=T0 + b,
                    last_heartbeat=T0 + b,
                    ending_at=T0 + b,
                    released_at=T0 + b + 1,
                )
            )
        s.flush()
        for n, (sid, who, at, status) in enumerate(
            (
                (1, "ctl-anna", 700, "applied"),
                (1, "ctl-anna", 800, "rejected"),
                (2, "ctl-boris", 1300, "applied"),
                (2, "lab-service", 1500.5, "applied"),
                (3, "ctl-bella", 1900, "applied"),
            )
        ):
            s.add(
                CommandRow(
                    session_id=sid,
                    kit_id=KIT,
                    requester=who,
                    command_id=f"c{n}",
                    target="dimming",
                    status=status,
                    value=10 * n,
                    reason="out-of-range" if status == "rejected" else None,
                    ts=T0 + at,
                )
            )
    insert_rows(
        db,
        [
            {"kit_id": KIT, "seq": i, "ts": T0 + i / 10, "values": {"lamp-power": float(i % 100)}}
            for i in range(36_000)
        ],
    )
    with db.transaction() as s:  # the recorder keeps about a frame a second
        s.add_all(
            CameraFrameRow(kit_id=KIT, ts=T0 + i + 0.05, seq=10 * i, stream="full", jpeg=JPEG)
            for i in range(3600)
        )
    yield db
    db.close()


def test_a_student_replays_their_own_session_with_its_commands_and_frames(store):
    got = R.replay(store, user("anna"), KIT, T0 + 600, T0 + 900, NOW)
    assert (got["start"], got["end"]) == (T0 + 600, T0 + 900)
    assert len(got["telemetry"]) == 3000
    assert got["telemetry"][0] == {"ts": T0 + 600, "seq": 6000, "values": {"lamp-power": 0.0}}
    assert [(c["who"], c["outcome"], c["reason"]) for c in got["commands"]] == [
        ("anna", "applied", None),
        ("anna", "rejected", "out-of-range"),
    ]
    assert got["commands"][0]["what"] == "dimming" and got["commands"][0]["value"] == 0
    assert len(got["frames"]) == 300
    assert got["frames"][0]["url"] == f"/api/kits/{KIT}/frames/{T0 + 600.05!r}"


def test_a_student_of_another_institution_cannot_replay_someone_elses_session(store):
    with pytest.raises(Forbidden) as refused:
        R.replay(store, user("boris"), KIT, T0 + 600, T0 + 900, NOW)
    assert refused.value.status == 403
    assert "anna" not in str(refused.value)
    with pytest.raises(Forbidden):  # nor a frame of it
        R.frame(store, user("boris"), KIT, T0 + 700.05, NOW)


def test_a_range_wider_than_ones_session_is_cut_to_it(store):
    got = R.replay(store, user("boris"), KIT, T0, T0 + 3600, NOW)
    assert (got["start"], got["end"]) == (T0 + 1200, T0 + 1501)
    assert {round(r["ts"]) for r in got["telemetry"]} <= set(range(int(T0 + 1200), int(T0 + 1502)))
    # boris's own command and the service's safe state at his session's end; not anna's
    assert [c["who"] for c in got["commands"]] == ["boris", "lab-service"]


def test_a_students_windows_skip_other_peoples_time_between_them(store):
    got = R.replay(store, user("anna"), KIT, T0, T0 + 3600, NOW)
    times = [r["ts"] for r in got["telemetry"]]
    assert not any(T0 + 1200 <= t < T0 + 1500 for t in times)  # boris's session
    assert any(T0 + 1900 <= t < T0 + 2000 for t in times)  # the course's booked slot
    assert [c["who"] for c in got["commands"]] == ["anna", "anna", "bella"]


def test_instructors_replay_their_courses_sessions_and_slots_not_others(store):
    got = R.replay(store, user("irina"), KIT, T0, T0 + 3600, NOW)
    assert [c["who"] for c in got["commands"]] == ["anna", "anna", "bella"]
    with pytest.raises(Forbidden):
        R.replay(store, user("irina"), KIT, T0 + 1200, T0 + 1500, NOW)


def test_lab_admins_replay_any_range(store):
    got = R.replay(store, user("admin"), KIT, T0, T0 + 3600, NOW)
    assert len(got["telemetry"]) == 36_000 and len(got["commands"]) == 5
    assert R.frame(store, user("admin"), KIT, T0 + 1300.05, NOW) == JPEG


def test_bad_ranges_are_refused(store):
    for start, end in ((T0 + 10, T0), (T0, T0), (float("nan"), T0)):
        with pytest.raises(R.SharingError) as bad:
            R.replay(store, user("admin"), KIT, start, end, NOW)
        assert bad.value.status == 400
    with pytest.raises(R.SharingError, match="at most 3 hours"):
        R.replay(store, user("admin"), KIT, T0, T0 + 4 * 3600, NOW)


def test_a_kit_without_recorded_frames_has_an_empty_frame_list(tmp_path):
    db = SharingStore(f"sqlite:///{tmp_path / 'plain.sqlite'}")
    with db.transaction() as s:
        s.add(KitRow(id=KIT, model="street-lighting", registered_at=T0))
    assert R.replay(db, user("admin"), KIT, T0, T0 + 60, NOW)["frames"] == []
    db.close()


# ---------------------------------------------------------------- over HTTP


class _Gateway:
    def online(self, kit_id: str) -> bool:
        return False


@pytest.fixture()
def port(store) -> Iterator[int]:
    """The lab service's real HTTP application on the store, in a thread of its own."""
    service = KitSharing(store, SharingPolicy(), None, _Gateway(), clock=lambda: NOW)  # type: ignore[arg-type]
    ctx = ApiContext(service, None, lambda c: "", lambda kits: None)  # type: ignore[arg-type]
    app = make_app(TokenIdentity(with_tokens(USERS)), Operations(ctx).invoke)
    ready, loop_box = threading.Event(), {}

    def serve() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        server = HTTPServer(app)
        server.listen(0, "127.0.0.1")
        loop_box.update(loop=loop, port=next(iter(server._sockets.values())).getsockname()[1])
        ready.set()
        loop.run_forever()
        server.stop()
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(10)
    yield loop_box["port"]
    loop_box["loop"].call_soon_threadsafe(loop_box["loop"].stop)
    thread.join(10)


def get(port: int, path: str, who: str, lang: str | None = None) -> tuple[int, Any]:
    return call_api(port, "GET", path, token(who), lang=lang)


def test_replay_route_answers_the_timeline_and_refuses_in_the_callers_language(port):
    status, body = get(port, f"/api/kits/{KIT}/replay?start={T0 + 600}&end={T0 + 900}", "anna")
    assert status == 200
    assert set(body) == {"kit", "start", "end", "telemetry", "commands", "frames"}
    assert len(body["telemetry"]) == 3000 and len(body["commands"]) == 2
    path = f"/api/kits/{KIT}/replay?start={T0 + 600}&end={T0 + 900}"
    status, body = get(port, path, "boris", lang="ru")
    assert status == 403
    assert body["code"] == "replay-forbidden" and "\n" not in body["error"]
    assert "нельзя" in body["error"] and "telemetry" not in body
    status, body = get(port, path, "boris")
    assert status == 403 and "you may not replay" in body["error"]


def test_replay_route_names_the_bad_field(port):
    status, body = get(port, f"/api/kits/{KIT}/replay?start={T0}", "admin")
    assert status == 400 and "end" in body["error"]
    status, body = get(port, f"/api/kits/{KIT}/replay?start=soon&end={T0}", "admin")
    assert status == 400 and "start" in body["error"]
    status, body = get(port, f"/api/kits/no-kit/replay?start={T0}&end={T0 + 1}", "admin")
    assert status == 404


def test_frame_route_serves_a_recorded_jpeg_within_rights_only(port):
    _, body = get(port, f"/api/kits/{KIT}/replay?start={T0 + 600}&end={T0 + 610}", "anna")
    url = body["frames"][0]["url"]

    def fetch(who: str) -> tuple[int, bytes, str]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", url, headers={"Authorization": f"token {token(who)}"})
        answer = conn.getresponse()
        result = answer.status, answer.read(), answer.getheader("Content-Type", "")
        conn.close()
        return result

    assert fetch("anna") == (200, JPEG, "image/jpeg")
    status, _, kind = fetch("boris")
    assert status == 403 and kind.startswith("application/json")
    status, _ = get(port, f"/api/kits/{KIT}/frames/not-a-time", "admin")
    assert status == 400


# ---------------------------------------------------------------- client and replay mode


def test_client_replay_gives_the_timeline_as_numpy_series(port):
    from labs.client import LabService, fetch_replay

    service = LabService(f"http://127.0.0.1:{port}", token("anna"))
    rec = fetch_replay(service, KIT, T0 + 600, T0 + 900)
    t, power = rec.series("lamp-power")
    assert t.dtype == power.dtype == np.float64 and len(t) == 3000
    assert power[:3].tolist() == [0.0, 1.0, 2.0]
    assert rec.at(T0 + 600.25) == {"lamp-power": 2.0}
    assert [c["outcome"] for c in rec.commands_until(T0 + 850)] == ["applied", "rejected"]
    assert rec.frame_at(T0 + 600.5)["seq"] == 6000
    assert service.frame_jpeg(rec.frames[0]["url"]) == JPEG
    from labs.client import Kit

    lab = type("LabStub", (), {"_cond": threading.Condition(), "lab_service": lambda _s: service})()
    kit = Kit(lab, KIT)  # type: ignore[arg-type]
    assert kit.replay(T0 + 600, T0 + 601, service=service).telemetry[0]["seq"] == 6000
    assert len(kit.replay(T0 + 600, T0 + 601).telemetry) == 10


def test_replay_mode_scrubs_to_the_recorded_values_and_shows_commands(port):
    from hardware_kits.descriptor import load_models
    from labs.client import LabService
    from labs.i18n import Texts
    from labs.pages import error_box
    from labs.widgets.replay import ReplayView, replay_view

    service = LabService(f"http://127.0.0.1:{port}", token("anna"))
    descriptor = load_models()["street-lighting"]
    view = ReplayView(service, KIT, T0 + 600, T0 + 900, Texts("en"), descriptor)
    view.slider.value = 1234  # 123.4 s in: sample seq 7234, lamp-power 34
    assert "data-seq='7234'" in view.position.value
    assert ">34" in view.readings.widget.value
    assert "applied" in view.commands.value and "rejected" not in view.commands.value
    assert view.picture.value == JPEG
    view.speed.value = 8
    assert view.play.step == 8
    texts = Texts("ru")
    refused = replay_view(
        LabService(f"http://127.0.0.1:{port}", token("boris"), lang="ru"),
        KIT,
        str(T0 + 600),
        str(T0 + 900),
        texts,
        descriptor,
        error_box,
    )
    assert "нельзя" in refused.value and "lamp-power" not in refused.value
