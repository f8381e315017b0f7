"""Randomised concurrency: 210 students of 3 universities share 5 real twins for 2 simulated hours.

Students queue, heartbeat, vanish and release; each university's instructor books three slots
for their course, and members come to them. Some students submit experiment jobs instead; the
test is their runner (claim, heartbeat, finish, or a controller that crashes or overruns) and
commands the kits with each job's own MQTT credential. The lab service runs in-process on an
accelerated clock; rights go through the real broker's dynamic-security plugin, commands travel
over MQTT to real twins, and an observer records every acknowledgement the kits send (i.e. every
command they received). Mid-run the broker is killed with SIGKILL and restarted. The invariants
of kit sharing are then checked from what the kits saw and what the database recorded, and,
while it runs, that a job's broker account exists (with its kit's command right) exactly while
its session holds the kit.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import random
import statistics
import time
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pytest
from sqlalchemy import select

from hardware_kits import protocol as P
from hardware_kits.dynsec import DynSecError
from hardware_kits.kit_runner import KitRunner
from hardware_kits.mqtt import ConnectError, Credentials, command_properties, connect_client
from hardware_kits.twins.base import twin_class
from lab_service.gateway import MqttKitGateway
from lab_service.jobs import JobBook
from lab_service.policy import HOUR, MINUTE, SharingPolicy
from lab_service.rights import BrokerRights, is_job_account
from lab_service.service import KitSharing, SharingError, User
from lab_service.store import RELEASED, JobRow, SessionRow, SharingStore
from labs.client import CommandError, connect
from site_config.platform_accounts import SERVICE_ACCOUNT
from tests.kit_examples import example_value, prerequisites

pytestmark = pytest.mark.broker

SPEED = 60.0  # simulated seconds per wall second: 2 simulated hours in two wall minutes
SIM_SECONDS = 2 * HOUR
KITS = {
    "cc-light-1": "street-lighting",
    "cc-light-2": "street-lighting",
    "cc-crossing": "intersection",
    "cc-env": "environment-station",
    "cc-parking": "smart-parking",
}
INSTITUTIONS = ("univ-a", "univ-b", "univ-c")
STUDENTS_PER_INSTITUTION = 70
BOOKED_KITS = ("cc-crossing", "cc-env", "cc-parking")
BOOKING_STARTS = (30 * MINUTE, 60 * MINUTE, 90 * MINUTE)  # after the start, 15 min each
JOB_STUDENT_EVERY = 5  # student i of every institution submits jobs when i % 5 == 0
RUNNER = User("job-runner", "", job_runner=True)


def course_of(institution: str) -> str:
    return f"smart-city-{institution}"


class SimClock:
    def __init__(self) -> None:
        self.wall0 = time.time()
        self.sim0 = 1_767_254_400.0

    def __call__(self) -> float:
        return self.sim0 + (time.time() - self.wall0) * SPEED

    def sim_of_wall(self, wall: float) -> float:
        return self.sim0 + (wall - self.wall0) * SPEED


@dataclass
class Student:
    user: User
    rng: random.Random
    next_action: float = 0.0
    session: dict | None = None
    vanished: bool = False
    back_at: float = 0.0  # a vanished student opens the laptop again then
    control: object | None = None  # labs.client.Lab on the control account while holding
    commands: int = 0
    former: list[tuple[str, object]] = field(default_factory=list)
    submits_jobs: bool = False


@dataclass
class RunningJob:
    """A claimed job as the runner drives it: its connection with the job's credential."""

    id: int
    account: str
    kit_id: str
    session_id: int
    client: object  # paho client on the job's account
    ends_at: float  # when the runner reports its end (simulated time)
    fate: str  # completed, crashed (early), overran (never reports)
    commands: int = 0
    next_command: float = 0.0
    next_heartbeat: float = 0.0


def command_one(student: Student, kit_id: str) -> None:
    """Send one valid command as the holder; ids carry the sender for the audit."""
    kit = student.control.kit(kit_id, timeout=5)
    actuator = next(a for a in kit.descriptor["actuators"] if not prerequisites(kit.descriptor, a))
    spec = kit.descriptor["actuators"][actuator]
    student.commands += 1
    command_id = f"{student.user.name}.{student.commands}.{uuid.uuid4().hex[:6]}"
    # Refused when the session ended under us: the audit checks what the kit side saw.
    with contextlib.suppress(CommandError):
        kit.send_raw(
            actuator, P.encode_value(spec, example_value(spec)), command_id=command_id, timeout=2
        )


def test_two_hundred_students_share_five_kits(broker, models, state_root):
    creds = broker.provision_kits(list(KITS))
    runners = [
        KitRunner(
            k, twin_class(m)(models[m], seed=i), broker.address(creds[k].username), rate_hz=2
        ).start()
        for i, (k, m) in enumerate(KITS.items())
    ]
    broker.provision_supervisor(SERVICE_ACCOUNT)
    clock = SimClock()
    policy = SharingPolicy(
        slot_seconds=5 * 60,
        heartbeat_timeout_seconds=60,
        safe_confirm_timeout_seconds=120,
        min_walk_in_seconds=300,
        booking_lead_seconds=10 * MINUTE,
    )
    store = SharingStore(f"sqlite:///{state_root / 'concurrency.db'}")
    rights = BrokerRights(broker.admin, broker.credentials)
    gateway = MqttKitGateway(broker.address(SERVICE_ACCOUNT))
    service = KitSharing(store, policy, rights, gateway, clock=clock)
    jobs = JobBook(service, rights)
    admin = User("lab-admin", "centre", lab_admin=True)
    for kit_id, model in KITS.items():
        service.register_kit(admin, kit_id, model)
    bookings = book_slots(service, clock)

    # The audit: every acknowledgement the kits send, with the wall time it was seen (a user
    # reads only the acks of their own commands; all of them is the supervisor's right).
    seen_acks: list[tuple[float, str, dict]] = []
    auditor_creds = broker.provision_supervisor("cc-auditor")
    auditor = connect_client(
        broker.host,
        broker.port,
        auditor_creds,
        "cc-auditor",
        on_message=lambda c, u, m: seen_acks.append(
            (time.time(), P.split_topic(m.topic)[0], P.decode_ack(m.payload))
        ),
        subscribe=[(P.all_kits("$ack/#"), 1)],
    )
    observer = connect(broker.address(auditor_creds.username).url(), client_id="cc-observer")
    observer.wait_for_kits(list(KITS), timeout=15)

    # Equal demand: student i of every institution behaves exactly alike (same random stream,
    # same start), so any difference in waits is the scheduler's doing, not the dice's.
    students = [
        Student(
            User(f"{inst}-s{i}", inst, frozenset({course_of(inst)})),
            random.Random(20261124 + i),
            submits_jobs=i % JOB_STUDENT_EVERY == 0,
        )
        for i in range(STUDENTS_PER_INSTITUTION)
        for inst in INSTITUTIONS
    ]
    by_name = {s.user.name: s for s in students}
    for s in students:
        s.next_action = clock() + s.rng.uniform(0, 10 * 60)
    order = random.Random(7)
    pool = ThreadPoolExecutor(max_workers=8)
    former_attempts = 0
    broker_killed = False
    running: dict[int, RunningJob] = {}
    fates: dict[int, tuple[str, float]] = {}  # job -> (fate, duration), from its owner's dice
    rights_checks, next_rights_check = 0, 0.0
    try:
        while clock() < clock.sim0 + SIM_SECONDS:
            now = clock()
            service.tick()
            if not broker_killed and now > clock.sim0 + SIM_SECONDS / 2:
                broker.kill()  # SIGKILL mid-run; the same state folder comes back
                broker.start()
                broker_killed = True
            # Clients poll for their grant (the session helper does, about once a second).
            live = {
                x["user"]: x
                for x in service.sessions(admin, live_only=True)
                if x["state"] in ("granted", "active")
            }
            for name, session in live.items():
                student = by_name.get(name)
                if student is not None and student.session is None and not student.vanished:
                    take_session(student, session, service, broker, rights)
            former_attempts += run_jobs(jobs, running, fates, live, broker, models, pool, now)
            if time.monotonic() >= next_rights_check:
                rights_checks += check_job_rights(service, rights)
                next_rights_check = time.monotonic() + 1.0
            order.shuffle(students)  # simultaneous arrivals come in no fixed order
            for s in students:
                if s.session is not None and s.session["user"] not in live:
                    former_attempts += lose_session(s, pool)
                elif now >= s.next_action:
                    act(s, service, now, bookings, jobs, fates)
            time.sleep(0.01)
    finally:
        pool.shutdown(wait=True)
        for job in running.values():
            job.client.disconnect()
            job.client.loop_stop()
        for s in students:
            if s.control is not None:
                s.control.close()
        observer.close()
        auditor.disconnect()
        auditor.loop_stop()
        gateway.close()
        rights.close()
        for runner in runners:
            runner.stop()

    with store.transaction() as db:
        sessions = db.scalars(select(SessionRow).order_by(SessionRow.id)).all()
        job_rows = db.scalars(select(JobRow)).all()
    audit(sessions, seen_acks, clock, students)
    audit_bookings(sessions, bookings)
    audit_jobs(sessions, job_rows, rights_checks)
    assert former_attempts > 0, "no former holder tried to command: the test proved nothing"
    assert len(sessions) > 40
    store.close()


def book_slots(service: KitSharing, clock: SimClock) -> list[dict]:
    """Each instructor books each of three kits once, in rotation: equal booked time for all."""
    bookings = []
    for j, inst in enumerate(INSTITUTIONS):
        teacher = User(f"{inst}-teacher", inst, instructor_of=frozenset({course_of(inst)}))
        for k, start in enumerate(BOOKING_STARTS):
            kit_id = BOOKED_KITS[(j + k) % len(BOOKED_KITS)]
            starts_at = clock.sim0 + start
            bookings.append(
                service.book(teacher, kit_id, course_of(inst), starts_at, starts_at + 15 * MINUTE)
            )
    return bookings


def take_session(
    s: Student, session: dict, service: KitSharing, broker, rights: BrokerRights
) -> None:
    s.session = session
    s.control = connect(
        broker.address(rights.control_account(s.user.name).username).url(),
        client_id=f"ctl-{s.user.name}-{uuid.uuid4().hex[:4]}",
    )
    service.heartbeat(s.user, session["id"])
    command_one(s, session["kit"])
    s.next_action = service.clock() + s.rng.uniform(15, 30)


def lose_session(s: Student, pool: ThreadPoolExecutor) -> int:
    """The session ended under us: the former holder tries once more; the broker refuses.

    On a pool: the refusal comes only after paho reconnects the kicked connection (~1 s)."""
    control, kit_id = s.control, s.session["kit"]
    s.control, s.session = None, None

    def try_once() -> None:
        s.control = control
        command_one(s, kit_id)
        control.close()

    pool.submit(try_once)
    return 1


def act(
    s: Student,
    service: KitSharing,
    now: float,
    bookings: list[dict],
    jobs: JobBook,
    fates: dict[int, tuple[str, float]],
) -> None:
    """One random step of a student."""
    if s.vanished:
        if now < s.back_at or s.session is not None:
            return
        # Back after a while (the session ended without them), with the same appetite: so every
        # institution's demand stays alike however many of its students vanished, and when.
        s.vanished = False
    try:
        if s.session is not None:  # holding: heartbeat and work, release, or vanish
            s.next_action = now + s.rng.uniform(15, 30)
            roll = s.rng.random()
            if roll < 0.03:
                s.vanished = True  # closes the laptop: no heartbeat, no release
                s.back_at = now + s.rng.uniform(10 * 60, 30 * 60)
            elif roll < 0.15:
                service.release(s.user, s.session["id"])
            else:
                service.heartbeat(s.user, s.session["id"])
                command_one(s, s.session["kit"])
            return
        s.next_action = now + s.rng.uniform(60, 300)
        if s.submits_jobs:
            submit_job(s, jobs, now, bookings, fates)
            return
        waiting = service.my_queue(s.user)
        if waiting:
            if s.rng.random() < 0.05:
                service.leave(s.user, waiting[0]["id"])
        elif s.rng.random() < 0.5:
            booked = [
                b["kit"]
                for b in bookings
                if b["course"] in s.user.courses and b["starts_at"] <= now < b["ends_at"]
            ]
            if booked:  # a member comes to the course's booked slot
                service.request(s.user, kit_id=booked[0])
            elif s.rng.random() < 0.5:
                service.request(s.user, kit_id=s.rng.choice(list(KITS)))
            else:
                service.request(s.user, model=s.rng.choice(sorted(set(KITS.values()))))
    except SharingError:
        pass  # e.g. the session ended between the poll and the heartbeat


def submit_job(
    s: Student,
    jobs: JobBook,
    now: float,
    bookings: list[dict],
    fates: dict[int, tuple[str, float]],
) -> None:
    """A job student with no job open submits one (half the time): for the course's booked
    slot if one is on, else for a kit or a model; its fate is drawn from the student's dice."""
    if any(j["state"] in ("queued", "running") for j in jobs.jobs(s.user)):
        if s.rng.random() < 0.05:
            mine = [j for j in jobs.jobs(s.user) if j["state"] == "queued"]
            if mine:
                jobs.cancel(s.user, mine[0]["id"])
        return
    if s.rng.random() >= 0.5:
        return
    duration = s.rng.uniform(60, 240)
    roll = s.rng.random()
    fate = "completed" if roll < 0.8 else "crashed" if roll < 0.9 else "overran"
    booked = [
        b["kit"]
        for b in bookings
        if b["course"] in s.user.courses and b["starts_at"] <= now < b["ends_at"]
    ]
    target: dict = {"kit_id": None, "model": None, "course": None}
    if booked:
        target.update(kit_id=booked[0], course=course_of(s.user.institution))
    elif s.rng.random() < 0.5:
        target["kit_id"] = s.rng.choice(list(KITS))
    else:
        target["model"] = s.rng.choice(sorted(set(KITS.values())))
    job = jobs.submit(
        s.user,
        duration_s=duration,
        inputs={"student": s.user.name},
        source="def go(readings, t):\n    return None\n",
        entry="go",
        **target,
    )
    fates[job["id"]] = (fate, duration)


def run_jobs(
    jobs: JobBook,
    running: dict[int, RunningJob],
    fates: dict[int, tuple[str, float]],
    live: dict[str, dict],
    broker,
    models: dict,
    pool: ThreadPoolExecutor,
    now: float,
) -> int:
    """The runner's part: claim granted jobs, command and heartbeat them, report their end.
    A job whose session has ended tries once more with its credential (the broker refuses).
    Returns how many such attempts it made."""
    while (claim := jobs.claim(RUNNER)) is not None:
        job_id = claim["job"]["id"]
        fate, duration = fates[job_id]
        account = claim["mqtt"]["username"]
        client = connect_client(
            broker.host,
            broker.port,
            Credentials(account, claim["mqtt"]["password"]),
            f"{account}-{uuid.uuid4().hex[:4]}",
        )
        ends = now + (duration / 2 if fate == "crashed" else duration)
        running[job_id] = RunningJob(
            job_id, account, claim["kit"], claim["session_id"], client, ends, fate
        )
    attempts = 0
    for job_id, job in list(running.items()):
        if job.account not in live:  # its session ended: finished, timed out, or taken away
            del running[job_id]
            pool.submit(job_command_after_end, job, models)
            attempts += 1
            continue
        try:
            if now >= job.ends_at and job.fate != "overran":
                jobs.finish(RUNNER, job_id, job.fate, f"{job.fate} in the concurrency test")
                continue
            if now >= job.next_heartbeat:
                jobs.heartbeat(RUNNER, job_id)
                job.next_heartbeat = now + 20
        except SharingError:
            continue  # ended between the poll and the call: seen as ended on the next pass
        if now >= job.next_command:
            job_command(job, models)
            job.next_command = now + 20
    return attempts


def job_command(job: RunningJob, models: dict) -> None:
    """One valid command on the job's kit with the job's credential; its id names the job."""
    descriptor = models[KITS[job.kit_id]]
    actuator = next(a for a in descriptor["actuators"] if not prerequisites(descriptor, a))
    spec = descriptor["actuators"][actuator]
    job.commands += 1
    command_id = f"{job.account}.{job.commands}.{uuid.uuid4().hex[:6]}"
    job.client.publish(
        P.set_topic(job.kit_id, actuator),
        P.encode_value(spec, example_value(spec)),
        qos=1,
        properties=command_properties(
            command_id, P.ack_topic(job.kit_id, job.account), time.time() + 5
        ),
    )


def job_command_after_end(job: RunningJob, models: dict) -> None:
    """The controller of an ended job tries once more; its account is gone by now."""
    try:
        time.sleep(0.2)
        job_command(job, models)
        time.sleep(0.5)
    finally:
        job.client.disconnect()
        job.client.loop_stop()


def check_job_rights(service: KitSharing, rights: BrokerRights) -> int:
    """The broker has a job's account, holding its kit's command right, exactly while the job's
    session holds the kit. Returns 1 if it could look (not while the broker restarts)."""
    try:
        accounts = rights.job_accounts()
        roles = {a: rights._client_roles(a) for a in accounts}
    except (DynSecError, ConnectError, ConnectionError, TimeoutError):
        return 0
    holders = {user: kit for kit, user in service.holders().items() if is_job_account(user)}
    assert accounts == set(holders), f"job accounts {accounts} but job holders {holders}"
    for account, kit_id in holders.items():
        commands = {r for r in roles[account] if r.startswith("command-")}
        assert commands == {f"command-{kit_id}"}, f"{account} holds {commands}, not {kit_id}"
    return 1


def audit_jobs(sessions, job_rows, rights_checks: int) -> None:
    """6. Jobs ran as sessions of their own and ended in a state that says why."""
    job_sessions = [s for s in sessions if is_job_account(s.user)]
    assert len(job_sessions) >= 10, "too few jobs ran for the test to mean anything"
    assert rights_checks >= 30, "the job accounts were hardly ever compared with the holders"
    outcomes = defaultdict(int)
    for job in job_rows:
        if job.session_id is None:
            continue
        session = next(s for s in sessions if s.id == job.session_id)
        assert session.user == f"job-{job.id}" and session.institution == job.institution
        if session.state == RELEASED:
            assert job.state in ("finished", "failed", "cancelled"), f"job {job.id}: {job.state}"
            outcomes[job.outcome] += 1
    print(f"jobs: {len(job_sessions)} sessions, outcomes {dict(outcomes)}")
    assert outcomes["completed"] > 0 and outcomes["crashed"] + outcomes["overran"] > 0


def audit_bookings(sessions, bookings: list[dict]) -> None:
    """5. A booked slot serves its course's members only; walk-ins end before it starts."""
    tolerance = 0.5 * SPEED  # one pass of the test's loop
    members_served = 0
    for b in bookings:
        for s in sessions:
            if s.kit_id != b["kit"] or s.granted_at >= b["ends_at"]:
                continue
            if s.booking_id == b["id"]:
                assert s.institution == b["institution"]
                assert b["starts_at"] <= s.granted_at and s.ends_at <= b["ends_at"]
                members_served += 1
            elif s.granted_at < b["starts_at"]:
                if s.institution == b["institution"]:
                    continue  # a member's walk-in may run on into the course's own slot
                assert s.ends_at <= b["starts_at"], f"walk-in {s.id} planned into {b}"
                assert (s.ending_at or s.granted_at) <= b["starts_at"] + tolerance, (
                    f"walk-in {s.id} still held {b['kit']} into booking {b['id']}"
                )
            else:
                raise AssertionError(f"session {s.id} of {s.user} granted in booking {b['id']}")
    assert members_served >= len(bookings), "members did not use their booked slots"


def audit(sessions, seen_acks, clock: SimClock, students) -> None:
    by_kit: dict[str, list[SessionRow]] = defaultdict(list)
    for session in sessions:
        by_kit[session.kit_id].append(session)
    # 1. Never two controllers of one kit, and 3. every handover through a confirmed safe state.
    for kit_id, runs in by_kit.items():
        for before, after in itertools.pairwise(runs):
            assert before.state == RELEASED, f"{kit_id}: session {before.id} still live"
            assert before.safe_at is not None, (
                f"{kit_id}: session {after.id} granted after {before.id} without a safe state"
            )
            assert before.safe_at <= after.granted_at
    # 2. Every command a kit received came from that kit's controller of that moment.
    tolerance = 0.5 * SPEED  # a command in flight while its revocation is being applied
    applied = job_applied = 0
    for wall, kit_id, ack in seen_acks:
        sender = str(ack["id"]).split(".")[0]
        person_or_job = "-s" in sender or is_job_account(sender)
        if ack["target"] == P.SAFE_STATE_PROPERTY or not person_or_job:
            continue  # the service's own handover
        t = clock.sim_of_wall(wall)
        holder = [
            s
            for s in by_kit[kit_id]
            if s.user == sender
            and s.granted_at - tolerance <= t <= (s.ending_at or float("inf")) + tolerance
        ]
        assert holder, f"{kit_id} received a command from {sender}, who did not hold it"
        applied += ack["status"] == P.APPLIED
        job_applied += ack["status"] == P.APPLIED and is_job_account(sender)
    assert job_applied > 0, "no job's command reached a kit: the jobs' part proved nothing"
    assert applied > 50, "too few commands reached the kits for the audit to mean anything"
    # 4. With equal demand, no institution's mean wait exceeds another's by more than 25 %, up
    # to sampling noise: each mean is of some 85 waits and has a standard error of about 9 %,
    # so three perfectly fairly served institutions still lie more than 25 % apart in about
    # one run in ten. A gap counts past 25 % plus 1.5 standard errors of the difference: a fair
    # run fails about once in 600, and a gap of 60 % is still caught about 9 times in 10.
    waits: dict[str, list[float]] = defaultdict(list)
    for session in sessions:
        waits[session.institution].append(session.granted_at - session.requested_at)
    means = {inst: statistics.fmean(w) for inst, w in waits.items()}
    errors = {inst: statistics.stdev(w) / math.sqrt(len(w)) for inst, w in waits.items()}
    summary = {
        inst: f"{len(w)} sessions, mean wait {means[inst]:.0f} s ± {errors[inst]:.0f} s"
        for inst, w in waits.items()
    }
    print(f"fairness: {summary}")
    assert set(means) == set(INSTITUTIONS)
    for low, high in itertools.permutations(INSTITUTIONS, 2):
        noise = 1.5 * math.hypot(errors[low], errors[high])
        assert means[high] - means[low] <= 0.25 * means[low] + noise, (
            f"institutions' mean waits more than 25 % apart beyond sampling noise: {summary}"
        )
