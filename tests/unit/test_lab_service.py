"""The lab service's rules and state machine, with a clock the test moves.

Rights and kits are stand-ins of the service's own interfaces here; the same rules are tested
against a real broker and real twins in tests/integration."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from hardware_kits import protocol as P
from hardware_kits.kitcore import KitCore
from lab_service import records
from lab_service.policy import HOUR, MINUTE, SharingPolicy
from lab_service.service import Conflict, Forbidden, KitSharing, NotFound, SharingError, User
from lab_service.store import (
    ACTIVE,
    GRANTED,
    NEEDS_ATTENTION,
    RELEASED,
    CommandRow,
    EventRow,
    SessionRow,
    SharingStore,
)

T0 = 1_767_225_600.0  # 2026-01-01 00:00 UTC, a Thursday
ADMIN = User("root", "centre", lab_admin=True)
ALICE = User("alice", "univ-a")
BOB = User("bob", "univ-b")
CAROL = User("carol", "univ-a")
TEACHER = User("teach", "univ-a", instructor_of=frozenset({"iot"}))
STUDENT_IOT = User("sam", "univ-b", courses=frozenset({"iot"}))


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


class Rights:
    def __init__(self) -> None:
        self.held: dict[str, str] = {}  # kit -> user
        self.log: list[tuple[str, str, str]] = []
        self.fail = False

    def grant(self, user: str, kit_id: str) -> None:
        if self.fail:
            raise ConnectionError("broker unreachable")
        assert kit_id not in self.held, "granted a kit that someone still holds"
        self.held[kit_id] = user
        self.log.append(("grant", user, kit_id))

    def revoke(self, user: str, kit_id: str) -> None:
        self.held.pop(kit_id, None)
        self.log.append(("revoke", user, kit_id))


class Kits:
    def __init__(self) -> None:
        self.offline: set[str] = set()
        self.stuck: set[str] = set()  # never confirm their safe state
        self.sent: list[str] = []
        self.acks: list[dict] = []

    def online(self, kit_id: str) -> bool:
        return kit_id not in self.offline

    def send_safe_state(self, kit_id: str) -> str:
        self.sent.append(kit_id)
        return f"safe-{len(self.sent)}"

    def confirmed_safe(self, kit_id: str, command_id: str) -> bool:
        return kit_id not in self.stuck and kit_id not in self.offline

    def drain_acks(self) -> list[dict]:
        acks, self.acks = self.acks, []
        return acks

    def send_at_rest(self, kit_id: str) -> str:
        self.sent.append(kit_id)
        return f"rest-{len(self.sent)}"

    def answer(self, kit_id: str, command_id: str) -> str | None:
        return "applied" if self.confirmed_safe(kit_id, command_id) else None

    def report(self, kit_id: str) -> dict | None:
        return None  # these kits do not say whether they rest: the service leaves them be


@pytest.fixture
def lab(database_url):
    clock, rights, kits = Clock(), Rights(), Kits()
    store = SharingStore(database_url)
    service = KitSharing(store, SharingPolicy(), rights, kits, clock=clock)
    for kit_id in ("k1", "k2"):
        service.register_kit(ADMIN, kit_id, "street-lighting")
    yield service, clock, rights, kits
    store.close()


def advance(service: KitSharing, clock: Clock, seconds: float, step: float = 5.0) -> None:
    end = clock.now + seconds
    while clock.now < end:
        clock.now = min(end, clock.now + step)
        service.tick()


def test_free_kit_is_granted_at_once_and_the_next_waits_with_an_estimate(lab):
    service, _clock, rights, _ = lab
    first = service.request(ALICE, kit_id="k1")
    assert first["state"] == "served" and first["session"]["state"] == GRANTED
    assert rights.held == {"k1": "alice"}
    second = service.request(BOB, kit_id="k1")
    assert second["state"] == "waiting" and second["position"] == 1
    assert second["estimated_wait_s"] == pytest.approx(15 * MINUTE)


def test_release_hands_over_only_after_safe_state(lab):
    service, _clock, rights, kits = lab
    session = service.request(ALICE, kit_id="k1")["session"]
    service.request(BOB, kit_id="k1")
    ended = service.release(ALICE, session["id"])
    assert ended["state"] == "safe"  # the stand-in kit confirms at once
    assert kits.sent == ["k1"]
    service.tick()
    assert rights.held == {"k1": "bob"}
    assert [e[0] for e in rights.log] == ["grant", "revoke", "grant"]


def test_session_lifecycle_is_recorded(lab):
    service, clock, _, _ = lab
    session = service.request(ALICE, kit_id="k1")["session"]
    clock.now += 10
    assert service.heartbeat(ALICE, session["id"])["state"] == ACTIVE
    clock.now += 10
    service.release(ALICE, session["id"])
    service.tick()
    (row,) = service.sessions(ALICE)
    assert row["state"] == RELEASED and row["end_reason"] == "released"
    assert row["released_at"] == T0 + 20


def test_instructors_see_their_courses_sessions_only(lab):
    service, _clock, _, _ = lab
    mine = service.request(STUDENT_IOT, kit_id="k1")["session"]  # sam takes iot
    service.request(ALICE, kit_id="k2")  # alice takes no course
    assert [s["id"] for s in service.sessions(TEACHER, course="iot")] == [mine["id"]]
    assert [s["user"] for s in service.sessions(ADMIN, course="iot")] == ["sam"]
    assert service.sessions(TEACHER, course="iot", live_only=True)[0]["state"] == GRANTED
    assert [s["user"] for s in service.sessions(TEACHER)] == []  # without course: own only
    for who, course in ((STUDENT_IOT, "iot"), (TEACHER, "other"), (ALICE, "iot")):
        with pytest.raises(Forbidden, match="only instructors of"):
            service.sessions(who, course=course)


@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (lambda s, c, k: None, "no-heartbeat"),
        (lambda s, c, k: k.offline.add("k1"), "kit-offline"),
    ],
)
def test_sessions_end_on_silence_or_a_lost_kit(lab, setup, reason):
    service, clock, rights, kits = lab
    service.request(ALICE, kit_id="k1")
    setup(service, clock, kits)
    advance(service, clock, 65)
    (row,) = service.sessions(ALICE)
    assert row["end_reason"] == reason
    assert "k1" not in rights.held


def test_time_up_ends_a_session_that_heartbeats(lab):
    service, clock, _, _ = lab
    session = service.request(ALICE, kit_id="k1")["session"]
    for _ in range(20):
        advance(service, clock, 50)
        if service.sessions(ALICE)[0]["state"] not in (GRANTED, ACTIVE):
            break
        service.heartbeat(ALICE, session["id"])
    assert service.sessions(ALICE)[0]["end_reason"] == "time-up"


def test_kit_that_never_confirms_safe_state_needs_attention_and_is_not_granted(lab):
    service, clock, rights, kits = lab
    kits.stuck.add("k1")
    session = service.request(ALICE, kit_id="k1")["session"]
    service.request(BOB, kit_id="k1")
    service.release(ALICE, session["id"])
    advance(service, clock, 30)
    kit = next(k for k in service.kits() if k["id"] == "k1")
    assert kit["pool"] == NEEDS_ATTENTION and "safe state" in kit["reason"]
    assert "k1" not in rights.held  # bob was not handed an unsafe kit
    events = service.store.transaction
    with events() as db:
        assert db.scalar(select(EventRow.kind).where(EventRow.kit_id == "k1")) == "needs-attention"
    kits.stuck.clear()
    service.set_maintenance(ADMIN, "k1", on=False)  # an admin has looked at it
    service.tick()
    assert rights.held == {"k1": "bob"}


def test_maintenance_ends_the_session_and_keeps_the_kit_visible(lab):
    service, _clock, rights, _ = lab
    service.request(ALICE, kit_id="k1")
    service.set_maintenance(ADMIN, "k1", on=True, reason="lamp replaced")
    assert "k1" not in rights.held
    kit = next(k for k in service.kits() if k["id"] == "k1")
    assert (kit["pool"], kit["reason"]) == ("maintenance", "lamp replaced")
    service.request(BOB, kit_id="k1")
    service.tick()
    assert "k1" not in rights.held


def test_model_queue_and_fairness_between_institutions(lab):
    service, _clock, rights, _ = lab
    service.request(ALICE, model="street-lighting")
    service.request(CAROL, model="street-lighting")
    service.request(User("dave", "univ-a"), model="street-lighting")
    service.request(BOB, model="street-lighting")
    assert sorted(rights.held.values()) == ["alice", "carol"]
    queue = {e["user"]: e for e in service.my_queue(BOB) + service.my_queue(User("dave", "x"))}
    assert queue["bob"]["position"] == 1  # univ-b goes before univ-a's third student


def test_bad_requests_change_nothing(lab):
    service, _clock, rights, _ = lab
    session = service.request(ALICE, kit_id="k1")["session"]
    with pytest.raises(NotFound):
        service.request(ALICE, kit_id="nope")
    with pytest.raises(Conflict):
        service.request(ALICE, kit_id="k1")
    service.request(BOB, kit_id="k1")
    with pytest.raises(Conflict):
        service.request(BOB, kit_id="k1")
    with pytest.raises(NotFound):
        service.release(BOB, session["id"])
    with pytest.raises(SharingError):
        service.request(ALICE)
    with pytest.raises(Forbidden):
        service.set_maintenance(ALICE, "k1", on=True)
    assert rights.held == {"k1": "alice"}
    assert len(service.my_queue(BOB)) == 1


def test_grant_failure_keeps_the_user_waiting(lab):
    service, _clock, rights, _ = lab
    rights.fail = True
    entry = service.request(ALICE, kit_id="k1")
    assert entry["state"] == "waiting"
    rights.fail = False
    service.tick()
    assert rights.held == {"k1": "alice"}


def test_database_refuses_two_live_sessions_on_one_kit(lab):
    service, _clock, _, _ = lab
    service.request(ALICE, kit_id="k1")
    with pytest.raises(IntegrityError), service.store.transaction() as db:
        db.add(
            SessionRow(
                kit_id="k1",
                user="mallory",
                institution="x",
                state=ACTIVE,
                requested_at=T0,
                granted_at=T0,
                ends_at=T0 + 60,
                last_heartbeat=T0,
            )
        )


def book(service, user, start_h: float, hours: float, kit="k1", course="iot"):
    start = T0 + start_h * HOUR
    return service.book(user, kit, course, start, start + hours * HOUR)


def test_booking_rules(lab):
    service, _clock, _, _ = lab
    assert book(service, TEACHER, 2, 1)["course"] == "iot"
    with pytest.raises(Conflict, match="already booked"):
        book(service, TEACHER, 2.5, 1)
    with pytest.raises(SharingError, match="past"):
        book(service, TEACHER, -1, 1)
    with pytest.raises(SharingError, match="ahead"):
        book(service, TEACHER, 0.5, 1)  # inside the one-hour horizon: use the queue
    with pytest.raises(SharingError, match="minutes"):
        book(service, TEACHER, 5, 3)
    with pytest.raises(SharingError, match="boundaries"):
        service.book(TEACHER, "k1", "iot", T0 + 5 * HOUR + 7, T0 + 6 * HOUR)
    with pytest.raises(Forbidden):
        book(service, ALICE, 10, 1)
    for start, hours in ((4, 2), (6, 2), (8, 1)):  # 1 h + 5 h: the 6 h weekly quota is full
        book(service, TEACHER, start, hours, kit="k2")
    with pytest.raises(Conflict, match="your weekly booking quota"):
        book(service, TEACHER, 20, 1)


def test_institution_quota(tmp_path):
    store = SharingStore(f"sqlite:///{tmp_path / 'q.db'}")
    policy = SharingPolicy(booking_quota_institution_week_seconds=2 * HOUR)
    service = KitSharing(store, policy, Rights(), Kits(), clock=Clock())
    service.register_kit(ADMIN, "k1", "street-lighting")
    book(service, TEACHER, 2, 2)
    colleague = User("other", "univ-a", instructor_of=frozenset({"iot"}))
    with pytest.raises(Conflict, match="quota of univ-a"):
        book(service, colleague, 5, 1)
    outsider = User("prof", "univ-b", instructor_of=frozenset({"iot"}))
    assert book(service, outsider, 5, 1)["institution"] == "univ-b"
    store.close()


def test_booked_slot_takes_precedence_over_the_queue(lab):
    service, clock, rights, _ = lab
    book(service, TEACHER, 2, 1)
    clock.now = T0 + 2 * HOUR - 10 * MINUTE
    walk_in = service.request(ALICE, kit_id="k1")["session"]
    assert walk_in["ends_at"] == T0 + 2 * HOUR  # cut short by the booking
    service.request(STUDENT_IOT, kit_id="k1")
    service.request(CAROL, kit_id="k1")
    for _ in range(12):
        advance(service, clock, 55)
        for s in service.sessions(ALICE, live_only=True) + service.sessions(
            STUDENT_IOT, live_only=True
        ):
            if s["state"] in (GRANTED, ACTIVE):
                service.heartbeat(User(s["user"], s["institution"]), s["id"])
    assert service.sessions(ALICE)[0]["end_reason"] == "booked-slot"
    assert rights.held == {"k1": "sam"}  # the course member, not carol who queued earlier


def test_commands_are_recorded_against_the_session(lab):
    service, _clock, _, kits = lab
    session = service.request(ALICE, kit_id="k1")["session"]
    kits.acks.append(
        {
            "kit": "k1",
            "requester": "ctl-alice",
            "id": "c1",
            "target": "mode",
            "status": "applied",
            "value": "manual",
            "ts": T0,
        }
    )
    service.tick()
    with service.store.transaction() as db:
        row = db.scalar(select(CommandRow))
        assert (row.session_id, row.target, row.value) == (session["id"], "mode", "manual")


def test_duplicates_of_a_command_are_counted_on_its_one_record(lab, models):
    """The kit answers a command id it has seen from its memory (`duplicate`), without applying
    it again: the records show one applied command and how often it was repeated, not one
    "applied" row per message (the issue's 1,000 rows for one id applied once)."""
    service, _clock, _, kits = lab
    session = service.request(ALICE, kit_id="k1")["session"]
    core = KitCore("k1", models["street-lighting"], clock=lambda: T0)
    topic = P.set_topic("k1", "mode")
    deadline = str(int((T0 + 60) * 1000))

    def sent(times: int, command_id: str = "c1") -> None:
        for _ in range(times):
            ack = core.handle_command(topic, "manual", command_id, deadline)
            kits.acks.append({"kit": "k1", "requester": "ctl-alice", **ack})

    sent(600)  # one tick's worth: the original and 599 copies
    service.tick()
    sent(400)  # copies arriving after the original was recorded
    sent(1, "c2")
    service.tick()
    assert core.applied == 2 and core.duplicates == 999
    with service.store.transaction() as db:
        rows = db.scalars(select(CommandRow).order_by(CommandRow.id)).all()
        recorded = [(r.command_id, r.status, r.duplicates, r.session_id) for r in rows]
    assert recorded == [("c1", "applied", 999, session["id"]), ("c2", "applied", 0, session["id"])]
    lines = records.commands_csv(service.store, ADMIN).splitlines()
    assert len(lines) == 3 and lines[0].endswith(",duplicates") and lines[1].endswith(",999")


def test_recover_forgives_heartbeats_missed_while_down(lab):
    service, clock, rights, _ = lab
    service.request(ALICE, kit_id="k1")
    clock.now += 600  # the service was down for ten minutes
    service.recover()
    service.tick()
    assert rights.held == {"k1": "alice"}
    assert service.holders() == {"k1": "alice"}


def test_a_kit_reconnecting_for_a_moment_keeps_its_session(lab):
    service, clock, rights, kits = lab
    session = service.request(ALICE, kit_id="k1")["session"]
    kits.offline.add("k1")
    advance(service, clock, 5, step=1)  # under the 10 s grace
    kits.offline.clear()
    advance(service, clock, 20, step=1)
    assert service.heartbeat(ALICE, session["id"])["state"] == ACTIVE
    assert rights.held == {"k1": "alice"}


def test_retiring_a_kit_closes_its_queue(lab):
    service, _clock, rights, _ = lab
    service.request(ALICE, kit_id="k1")
    entry = service.request(BOB, kit_id="k1")
    service.retire_kit(ADMIN, "k1")
    assert service.queue_entry(BOB, entry["id"])["state"] == "left"
    assert "k1" not in rights.held
    with pytest.raises(NotFound):
        service.queue_entry(CAROL, entry["id"])


def test_a_burst_of_requests_is_decided_together(lab):
    service, _, rights, _ = lab
    users = [User(f"a{i}", "univ-a") for i in range(4)] + [
        User(f"b{i}", "univ-b") for i in range(3)
    ]
    burst = [(u, "k1", None) for u in users] + [
        (users[0], "k1", None),
        (ALICE, "nope", None),
        (BOB, None, None),
    ]
    results = service.request_many(burst)
    assert isinstance(results[-3], Conflict)  # a repeat within the same burst
    assert isinstance(results[-2], NotFound)
    assert isinstance(results[-1], SharingError)
    views = results[:7]
    assert [v["state"] for v in views].count("served") == 1
    assert rights.held == {"k1": "a0"}
    waiting = sorted((v["position"], v["user"]) for v in views if v["state"] == "waiting")
    assert [p for p, _ in waiting] == list(range(1, 7))
    assert [u for _, u in waiting][:2] == ["b0", "a1"]  # a0's session puts univ-a a slot back
    assert len(service.my_queue(users[1])) == 1


def test_the_public_board_route_tells_anyone_availability_institution_and_queue(lab):
    """GET /api/board: no identity needed; in use by which institution, queue length,
    maintenance; never a person's name nor the admin's reason."""
    from lab_service.api_routes import ROUTES, ApiContext, Call
    from lab_service.api_schemas import BoardKit

    service, *_ = lab
    service.register_kit(ADMIN, "k3", "street-lighting")
    service.request(ALICE, kit_id="k1")
    service.request(BOB, kit_id="k1")
    service.set_maintenance(ADMIN, "k2", on=True, reason="lamp replaced by carol")
    route = next(r for r in ROUTES if r.key == "GET /api/board")
    assert route.public and not route.admin and route.response == [BoardKit]
    ctx = ApiContext(service, accounts=None, mqtt_url=str, provision_kits=list)  # type: ignore[arg-type]
    answer = route.op(Call(ctx, user=None, args={}, query={}, body=None))
    for kit in answer:
        BoardKit.model_validate(kit)  # exactly the documented fields
    by_id = {k["id"]: k for k in answer}
    assert (by_id["k1"]["availability"], by_id["k1"]["holder_institution"]) == ("in-use", "univ-a")
    assert by_id["k1"]["queue_length"] == 1
    assert by_id["k2"]["availability"] == "maintenance"
    assert by_id["k3"] == {
        "id": "k3",
        "model": "street-lighting",
        "name": "",
        "availability": "available",
        "online": True,
        "holder_institution": None,
        "queue_length": 0,
    }
    shown = repr(answer)
    assert "alice" not in shown and "bob" not in shown and "carol" not in shown
