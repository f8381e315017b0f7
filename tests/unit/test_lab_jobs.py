"""Experiment jobs' state machine on the lab service's queue and sessions, with a clock the test
moves (rights and kits are the stand-ins of test_lab_service; the broker side is tested in
tests/integration/test_lab_jobs.py)."""

from __future__ import annotations

import pytest

from lab_service import records, replay
from lab_service.jobs import OUTCOMES, STATES, JobBook
from lab_service.messages import CATALOGUE, Words
from lab_service.policy import SharingPolicy
from lab_service.service import Conflict, Forbidden, KitSharing, NotFound, SharingError, User
from lab_service.store import GRANTED, RELEASED, SharingStore
from tests.unit.test_lab_service import ADMIN, ALICE, BOB, Clock, Kits, advance

RUNNER = User("job-runner", "", job_runner=True)
TEACHER = User("teach", "univ-a", instructor_of=frozenset({"iot"}))
SAM = User("sam", "univ-b", courses=frozenset({"iot"}))
SOURCE = "def go(readings, t, **inputs):\n    return {'lamp': 0.5}\n"


class Rights:
    """Holders as the broker would have them; job accounts get a password on claim."""

    def __init__(self) -> None:
        self.held: dict[str, str] = {}
        self.log: list[tuple[str, str, str]] = []
        self.passwords: dict[str, str] = {}

    def grant(self, user: str, kit_id: str) -> None:
        assert kit_id not in self.held, "granted a kit that someone still holds"
        self.held[kit_id] = user
        self.log.append(("grant", user, kit_id))

    def revoke(self, user: str, kit_id: str) -> None:
        self.held.pop(kit_id, None)
        self.log.append(("revoke", user, kit_id))

    def job_password(self, account: str) -> str:
        self.passwords[account] = f"pw-{account}-{len(self.passwords)}"
        return self.passwords[account]


@pytest.fixture
def lab(database_url):
    clock, rights, kits = Clock(), Rights(), Kits()
    store = SharingStore(database_url)
    service = KitSharing(store, SharingPolicy(), rights, kits, clock=clock)
    jobs = JobBook(service, rights)
    for kit_id in ("k1", "k2"):
        service.register_kit(ADMIN, kit_id, "street-lighting")
    yield service, jobs, clock, rights, kits
    store.close()


def submit(jobs: JobBook, user: User = ALICE, **kw) -> dict:
    args = {"kit_id": "k1", "model": None, "duration_s": 30.0, "inputs": {"gain": 2}}
    args.update(kw)
    return jobs.submit(user, source=SOURCE, entry="go", **args)


def test_a_job_on_a_free_kit_runs_as_a_session_held_by_its_own_account(lab):
    service, jobs, _clock, rights, _ = lab
    job = submit(jobs)
    assert job["state"] == "running" and job["kit"] == "k1" and job["session_id"]
    assert rights.held == {"k1": f"job-{job['id']}"}  # not the owner's account
    (session,) = service.sessions(ADMIN, live_only=True)
    assert session["job"] == job["id"] and session["owner"] == "alice"
    # duration plus the runner's grace, not a walk-in slot
    assert session["ends_at"] - session["granted_at"] == pytest.approx(30 + 20)
    kit = next(k for k in service.kits() if k["id"] == "k1")
    assert kit["job"] == job["id"] and kit["job_owner"] == "alice"
    assert kit["job_time_left_s"] == pytest.approx(50)  # observers see how long it keeps the kit


def test_the_runner_claims_heartbeats_and_finishes_then_the_kit_goes_to_the_next(lab):
    service, jobs, clock, rights, kits = lab
    first = submit(jobs)
    second = submit(jobs, BOB)
    assert second["state"] == "queued" and second["position"] == 1
    assert second["estimated_start"] is not None
    claim = jobs.claim(RUNNER)
    assert claim["job"]["id"] == first["id"] and claim["kit"] == "k1"
    assert claim["mqtt"]["username"] == f"job-{first['id']}"
    assert claim["mqtt"]["password"] == rights.passwords[f"job-{first['id']}"]
    assert claim["source"] == SOURCE and claim["inputs"] == {"gain": 2}
    assert jobs.claim(RUNNER) is None  # claimed once only
    clock.now += 10
    jobs.heartbeat(RUNNER, first["id"])
    done = jobs.finish(RUNNER, first["id"], "completed", "ran 30 s")
    assert done["state"] == "finished" and done["outcome"] == "completed"
    assert ("revoke", f"job-{first['id']}", "k1") in rights.log
    assert "k1" in kits.sent  # safe state commanded
    advance(service, clock, 5)
    assert jobs.job(BOB, second["id"])["state"] == "running"
    assert rights.held == {"k1": f"job-{second['id']}"}
    scored = jobs.score(RUNNER, first["id"], score=0.8, twin_score=0.9)
    assert (scored["score"], scored["twin_score"]) == (0.8, 0.9)


def test_a_job_whose_runner_never_finishes_fails_as_overran_and_the_kit_is_released(lab):
    service, jobs, clock, rights, _ = lab
    job = submit(jobs, duration_s=10)
    jobs.claim(RUNNER)
    for _ in range(7):  # heartbeats go on, but the time is up after 10 s + 20 s grace
        clock.now += 5
        jobs.heartbeat(RUNNER, job["id"])
    advance(service, clock, 10)
    view = jobs.job(ALICE, job["id"])
    assert view["state"] == "failed" and view["outcome"] == "overran"
    assert rights.held == {}
    assert service.sessions(ADMIN)[0]["state"] == RELEASED


def test_a_job_nobody_claims_fails_as_the_platforms_error_when_its_heartbeat_times_out(lab):
    service, jobs, clock, rights, _ = lab
    job = submit(jobs, duration_s=600)
    advance(service, clock, 70)
    view = jobs.job(ALICE, job["id"])
    assert view["state"] == "failed" and view["outcome"] == "platform-error"
    assert view["detail"] == "no job runner took the job in time"
    assert rights.held == {}


def test_a_person_and_a_job_wait_for_each_other_and_never_hold_one_kit_together(lab):
    service, jobs, clock, rights, _ = lab
    person = service.request(BOB, kit_id="k1")
    assert person["session"]["state"] == GRANTED
    job = submit(jobs)
    assert job["state"] == "queued"
    assert rights.held == {"k1": "bob"}
    service.release(BOB, person["session"]["id"])
    advance(service, clock, 5)
    assert jobs.job(ALICE, job["id"])["state"] == "running"
    assert rights.held == {"k1": f"job-{job['id']}"}
    later = service.request(BOB, kit_id="k1")
    assert later["state"] == "waiting"


def test_a_job_for_a_model_takes_any_working_kit_and_skips_one_in_maintenance(lab):
    service, jobs, _clock, _rights, _ = lab
    service.set_maintenance(ADMIN, "k1", True, "lamp replaced")
    job = submit(jobs, kit_id=None, model="street-lighting")
    assert job["state"] == "running" and job["kit"] == "k2"
    waiting = submit(jobs, BOB, kit_id="k1")
    assert waiting["state"] == "queued"  # its kit is in maintenance: it waits


def test_a_job_whose_kit_goes_to_maintenance_before_it_started_waits_or_moves(lab):
    service, jobs, clock, rights, _ = lab
    on_kit = submit(jobs)  # k1, not claimed yet
    on_model = submit(jobs, BOB, kit_id=None, model="street-lighting")  # k2
    assert jobs.job(BOB, on_model["id"])["kit"] == "k2"
    service.set_maintenance(ADMIN, "k1", True)
    waiting = jobs.job(ALICE, on_kit["id"])
    assert waiting["state"] == "queued" and waiting["session_id"] is None
    assert rights.held == {"k2": f"job-{on_model['id']}"}
    service.set_maintenance(ADMIN, "k2", True)
    moved = jobs.job(BOB, on_model["id"])
    assert moved["state"] == "queued"  # no working kit of the model now
    service.set_maintenance(ADMIN, "k1", False)
    advance(service, clock, 1)
    again = jobs.job(ALICE, on_kit["id"])
    assert again["state"] == "running" and again["kit"] == "k1"  # first in line, as it was


def test_maintenance_during_a_started_job_ends_it_and_says_why(lab):
    service, jobs, _clock, rights, _ = lab
    job = submit(jobs)
    jobs.claim(RUNNER)
    service.set_maintenance(ADMIN, "k1", True)
    view = jobs.job(ALICE, job["id"])
    assert view["state"] == "cancelled" and view["outcome"] == "cancelled"
    assert "admin" in view["detail"]
    assert rights.held == {}


def test_cancel_by_owner_or_admin_only_and_a_cancelled_job_cannot_be_cancelled_again(lab):
    _service, jobs, _clock, rights, _ = lab
    running = submit(jobs, SAM, course="iot")
    queued = submit(jobs, ALICE)
    with pytest.raises(Forbidden):
        jobs.cancel(TEACHER, running["id"])  # may read it, may not cancel it
    with pytest.raises(NotFound):
        jobs.cancel(BOB, running["id"])  # may not even know of it
    assert jobs.cancel(ADMIN, running["id"])["state"] == "cancelled"
    assert rights.held == {}
    cancelled = jobs.cancel(ALICE, queued["id"])
    assert cancelled["state"] == "cancelled" and cancelled["outcome"] == "cancelled"
    with pytest.raises(Conflict) as err:
        jobs.cancel(ALICE, queued["id"])
    assert "already ended" in str(err.value) and "уже закончено" in err.value.text("ru")


def test_who_reads_which_jobs(lab):
    _service, jobs, _clock, _rights, _ = lab
    mine = submit(jobs, SAM, course="iot")
    submit(jobs, ALICE, kit_id="k2")
    assert [j["id"] for j in jobs.jobs(SAM)] == [mine["id"]]
    assert [j["id"] for j in jobs.jobs(TEACHER, course="iot")] == [mine["id"]]
    assert jobs.job(TEACHER, mine["id"])["owner"] == "sam"
    with pytest.raises(Forbidden):
        jobs.jobs(SAM, course="iot")
    with pytest.raises(Forbidden):
        jobs.jobs(SAM, everyone=True)
    assert len(jobs.jobs(ADMIN, everyone=True)) == 2
    with pytest.raises(NotFound):
        jobs.job(BOB, mine["id"])


def test_only_the_runner_claims_and_reports(lab):
    _service, jobs, _clock, _rights, _ = lab
    job = submit(jobs)
    for call in (
        lambda: jobs.claim(ALICE),
        lambda: jobs.heartbeat(ALICE, job["id"]),
        lambda: jobs.finish(ADMIN, job["id"], "completed"),
        lambda: jobs.score(ALICE, job["id"], score=1.0),
    ):
        with pytest.raises(Forbidden):
            call()
    with pytest.raises(SharingError):
        jobs.finish(RUNNER, job["id"], "exploded")
    with pytest.raises(Conflict):
        jobs.score(RUNNER, job["id"], score=1.0)  # not ended yet


def test_bad_submissions_are_refused_with_one_line_and_nothing_is_queued(lab):
    _service, jobs, _clock, _rights, _ = lab
    for kw, words in (
        ({"kit_id": None}, "either a kit"),
        ({"kit_id": "nope"}, "no kit nope"),
        ({"duration_s": 1.0}, "duration_s"),
        ({"inputs": {"x": "y" * 20_000}}, "inputs"),
        ({"course": "iot"}, "course iot"),  # alice does not take it
    ):
        with pytest.raises(SharingError) as err:
            submit(jobs, **kw)
        assert words in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(SharingError):
        jobs.submit(
            ALICE, kit_id="k1", model=None, duration_s=30, inputs={}, source="x", entry="not a name"
        )
    assert jobs.jobs(ALICE) == []


def test_states_and_outcomes_have_words_in_both_languages(lab):
    _service, jobs, _clock, _rights, _ = lab
    job = jobs.cancel(ALICE, submit(jobs)["id"])
    assert isinstance(job["state_text"], Words)
    assert job["state_text"].text("en") == "cancelled"
    assert job["state_text"].text("ru") == "отменено"
    for code in [f"job-state-{s}" for s in STATES] + [f"job-outcome-{o}" for o in OUTCOMES]:
        en, ru = CATALOGUE[code]
        assert en and ru and en != ru


def test_the_owner_sees_the_jobs_session_in_sessions_records_and_replay(lab):
    service, jobs, clock, _rights, _ = lab
    job = submit(jobs)
    jobs.claim(RUNNER)
    clock.now += 5
    jobs.finish(RUNNER, job["id"], "completed")
    advance(service, clock, 5)
    (mine,) = service.sessions(ALICE)
    assert mine["id"] == job["session_id"] and mine["job"] == job["id"]
    assert service.sessions(BOB) == []
    text = records.sessions_csv(service.store, ALICE)
    header, row = text.splitlines()
    assert header.endswith(",job") and row.endswith(f",{job['id']}")
    windows = replay.replay_windows(service.store, ALICE, "k1", clock.now)
    assert windows and windows[0][0] == mine["granted_at"]
    assert replay.replay_windows(service.store, BOB, "k1", clock.now) == []


def test_an_instructor_submits_a_students_job_for_the_course_and_attaches_its_twin_score(lab):
    _service, jobs, _clock, _rights, _ = lab
    job = submit(jobs, TEACHER, course="iot", assignment="a1", owner="sam")
    assert job["owner"] == "sam" and job["course"] == "iot"
    assert [j["id"] for j in jobs.jobs(SAM)] == [job["id"]]  # the student sees it as theirs
    jobs.finish(RUNNER, job["id"], "completed")
    jobs.score(RUNNER, job["id"], score=0.5)
    view = jobs.score(TEACHER, job["id"], twin_score=0.9)  # the runner's score is kept
    assert (view["score"], view["twin_score"]) == (0.5, 0.9)
    assert jobs.score(RUNNER, job["id"], score=0.6)["twin_score"] == 0.9
    with pytest.raises(Forbidden):  # the kit's score is the runner's word only
        jobs.score(TEACHER, job["id"], score=1.0)
    with pytest.raises(Forbidden):  # nor is a twin score anyone else's
        jobs.score(SAM, job["id"], twin_score=1.0)


def test_nobody_but_the_courses_instructors_submits_a_job_for_someone_else(lab):
    _service, jobs, _clock, _rights, _ = lab
    for who, kw in (
        (SAM, {"course": "iot", "owner": "alice"}),  # a student, for another student
        (TEACHER, {"owner": "sam"}),  # no course: not graded work
        (ALICE, {"owner": "sam"}),
    ):
        with pytest.raises(Forbidden):
            submit(jobs, who, **kw)
    with pytest.raises(SharingError):
        submit(jobs, TEACHER, course="iot", owner="job-7")  # a platform account
    assert jobs.jobs(ADMIN, everyone=True) == []
