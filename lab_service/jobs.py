"""Experiment jobs: a student's controller queued like anyone and run on a kit by the runner.

A job is a queue entry like any other (same fair share, priorities and booked slots), whose
holder is the job itself: the entry's and the session's user is the job's account `job-<id>`
(rights.job_account), so the broker right goes to that account and not to the owner's.

    queued ──kit granted──▶ running ──runner's finish──▶ finished | failed
       │                       ├──session ends otherwise (time up, silent runner, kit lost)──▶
       │                       │      failed
       └──cancel (owner, admin)┴──▶ cancelled

A running job's session lasts its duration plus `job_start_grace_seconds`; the runner claims it
(getting the account's password), heartbeats it, and reports its end (`finish`), which ends the
session with the usual handover: right revoked (the account deleted), safe state, next holder.
A job for a kit out of the pool waits, as its queue entry does; one for a model takes any working
kit of the model. The result is read back from the service's own records of the session.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.orm import Session as DB

from lab_service import history, replay
from lab_service.messages import Words, message
from lab_service.rights import is_job_account, job_account
from lab_service.service import (
    BOOKED_SLOT,
    ENDED_BY_ADMIN,
    JOB_CANCELLED,
    JOB_FINISHED,
    KIT_OFFLINE,
    NO_HEARTBEAT,
    RETIRING,
    TIME_UP,
    Conflict,
    Forbidden,
    KitSharing,
    NotFound,
    SharingError,
    User,
)
from lab_service.store import (
    ACTIVE,
    GRANTED,
    LEFT,
    RETIRED,
    WAITING,
    JobRow,
    KitRow,
    QueueEntryRow,
    SessionRow,
)

QUEUED, RUNNING, FINISHED, FAILED = "queued", "running", "finished", "failed"
CANCELLED = "cancelled"
STATES = (QUEUED, RUNNING, FINISHED, FAILED, CANCELLED)
OUTCOMES = (
    "completed",
    "crashed",
    "overran",
    "flooded",
    "memory",
    "invalid",
    "kit-unsafe",
    "cancelled",
    "platform-error",  # the platform could not run it (the sandbox did not start): not the student
)
MIN_DURATION_S, MAX_DURATION_S = 5.0, 600.0
MAX_INPUTS_BYTES = 16 * 1024
MAX_SOURCE_CHARS = 64 * 1024
MAX_DETAIL_CHARS = 300
MAX_OPEN_JOBS = 20  # queued or running, per owner: a loop in a notebook cannot fill the queue

# A session that ends without the runner's word: the job failed, and why.
_ENDED_BY = {
    TIME_UP: ("overran", "the run did not end within its duration and grace"),
    # The runner is the platform's: a runner that stops is not the student's fault.
    NO_HEARTBEAT: ("platform-error", "the job runner stopped reporting on the job"),
    KIT_OFFLINE: ("kit-unsafe", "the kit went offline or did not confirm its safe state"),
    RETIRING: ("kit-unsafe", "the kit was retired"),
    ENDED_BY_ADMIN: ("cancelled", "a lab admin ended the job's session"),
    BOOKED_SLOT: ("cancelled", "a booked slot began on the kit"),
}


class JobAccounts(Protocol):
    """rights.BrokerRights: the password the runner gets for the job's account."""

    def job_password(self, account: str) -> str: ...


def job_of(holder: str) -> int | None:
    """The job id of a session holder, or None for a person."""
    return int(holder.removeprefix("job-")) if is_job_account(holder) else None


class JobBook:
    """Jobs on top of KitSharing's queue and sessions (registers itself as its hooks)."""

    def __init__(self, sharing: KitSharing, accounts: JobAccounts) -> None:
        self.sharing = sharing
        self.accounts = accounts
        sharing.hooks = self

    @property
    def clock(self) -> Any:
        return self.sharing.clock

    # ------------------------------------------------------------ students

    def submit(
        self,
        user: User,
        *,
        kit_id: str | None,
        model: str | None,
        duration_s: float,
        inputs: dict[str, Any],
        source: str,
        entry: str,
        course: str | None = None,
        assignment: str | None = None,
        owner: str | None = None,
    ) -> dict:
        """Queue a job; granted at once if a kit it may use is free. `owner`: a student the
        job is for, set by an instructor of `course` (confirming graded work on a kit)."""
        _check_job(kit_id, model, duration_s, inputs, source, entry)
        if course is not None and course not in user.courses | user.instructor_of:
            raise Forbidden("job-course-not-yours", course=course)
        courses = sorted(user.courses)
        if owner is not None and owner != user.name:
            if course is None or course not in user.instructor_of:
                raise Forbidden("job-owner-forbidden", course=course or "-")
            if is_job_account(owner) or not owner.strip():
                raise SharingError("job-owner", owner=owner[:40])
            courses = [course]
        now = self.clock()
        with self.sharing.store.transaction() as db:
            kits = db.execute(select(KitRow.id, KitRow.model, KitRow.pool_state)).all()
            if kit_id is not None and not any(k == kit_id and p != RETIRED for k, _, p in kits):
                raise NotFound("no-kit", kit=kit_id)
            if model is not None and not any(m == model and p != RETIRED for _, m, p in kits):
                raise NotFound("no-kit-of-model", model=model)
            open_jobs = db.scalars(
                select(JobRow.id).where(JobRow.owner == user.name, JobRow.state.in_(_OPEN))
            ).all()
            if len(open_jobs) >= MAX_OPEN_JOBS:
                raise Conflict("job-too-many", n=MAX_OPEN_JOBS)
            job = JobRow(
                owner=owner or user.name,
                institution=user.institution,
                courses=courses,
                course=course,
                assignment=assignment,
                kit_id=kit_id,
                model=model if kit_id is None else _model_of(kits, kit_id),
                duration_s=float(duration_s),
                inputs=inputs,
                source=source,
                entry=entry,
                state=QUEUED,
                created_at=now,
            )
            db.add(job)
            db.flush()
            # A job counts as its course's member (for the course's booked slot) and no other.
            waiting = QueueEntryRow(
                user=job_account(job.id),
                institution=user.institution,
                kit_id=kit_id,
                model=None if kit_id else model,
                priority=user.priority,
                courses=[course] if course else [],
                enqueued_at=now,
                state=WAITING,
            )
            db.add(waiting)
            db.flush()
            job.queue_entry_id = waiting.id
            self.sharing.assign_within(db, now)  # the grant hook below may start it now
            return self._view(db, job, now)

    def job(self, user: User, job_id: int) -> dict:
        now = self.clock()
        with self.sharing.store.transaction() as db:
            return self._view(db, self._readable(db, user, job_id), now)

    def jobs(self, user: User, course: str | None = None, everyone: bool = False) -> list[dict]:
        """Mine; with `course`, its jobs (its instructors, lab admins); `everyone`: lab admins."""
        if everyone and not user.lab_admin:
            raise Forbidden("lab-admin-only")
        if course is not None and course not in user.instructor_of and not user.lab_admin:
            raise Forbidden("job-course-forbidden", course=course)
        now = self.clock()
        with self.sharing.store.transaction() as db:
            query = select(JobRow).order_by(JobRow.id)
            if course is not None:
                query = query.where(JobRow.course == course)
            elif not everyone:
                query = query.where(JobRow.owner == user.name)
            rows = db.scalars(query).all()
            queued = any(j.state == QUEUED for j in rows)
            estimates = self.sharing.estimates_within(db, now) if queued else {}
            return [self._view(db, j, now, estimates) for j in rows]

    def cancel(self, user: User, job_id: int) -> dict:
        """Cancel a queued or running job (its owner or a lab admin)."""
        now = self.clock()
        with self.sharing.store.transaction() as db:
            job = self._readable(db, user, job_id)
            if job.owner != user.name and not user.lab_admin:
                raise Forbidden("job-cancel-forbidden", job=job_id)
            if job.state not in _OPEN:
                raise Conflict("job-ended", job=job_id, state=message(f"job-state-{job.state}"))
            self._end(job, CANCELLED, "cancelled", f"cancelled by {user.name}", now)
            if job.session_id is not None:
                session = db.get(SessionRow, job.session_id)
                self.sharing.end_within(db, session, JOB_CANCELLED, now)
            else:
                entry = db.get(QueueEntryRow, job.queue_entry_id)
                if entry is not None and entry.state == WAITING:
                    entry.state, entry.left_at = LEFT, now
            return self._view(db, job, now)

    def result(self, user: User, job_id: int) -> dict:
        """The job's view and the replay of its session window from the service's records."""
        now = self.clock()
        store = self.sharing.store
        with store.transaction() as db:
            job = self._readable(db, user, job_id)
            view = self._view(db, job, now)
            session = db.get(SessionRow, job.session_id) if job.session_id else None
            window = None
            if session is not None:
                ends = [t for t in (session.released_at, session.ending_at) if t is not None]
                window = (session.kit_id, session.granted_at, min(ends, default=now))
        if window is None:
            return {"job": view, "telemetry": [], "commands": [], "frames": []}
        kit_id, start, end = window
        end = max(end, start + 1e-6)
        return {
            "job": view,
            "telemetry": history.history(store, kit_id, start, end, limit=replay.MAX_ROWS),
            "commands": replay.commands(store, kit_id, start, end),
            "frames": [
                {"ts": ts, "seq": seq, "url": replay.frame_path(kit_id, ts)}
                for ts, seq in replay.frame_index(store, kit_id, start, end)
            ],
        }

    # ------------------------------------------------------------ the runner

    def claim(self, runner: User) -> dict | None:
        """The oldest granted job nobody has claimed, with its account's fresh password."""
        _require_runner(runner)
        now = self.clock()
        with self.sharing.store.transaction() as db:
            found = db.execute(
                select(JobRow, SessionRow)
                .join(SessionRow, SessionRow.id == JobRow.session_id)
                .where(
                    JobRow.state == RUNNING,
                    JobRow.claimed_at.is_(None),
                    SessionRow.state.in_((GRANTED, ACTIVE)),
                )
                .order_by(SessionRow.granted_at, JobRow.id)
                .limit(1)
            ).first()
            if found is None:
                return None
            job, session = found
            password = self.accounts.job_password(job_account(job.id))
            job.claimed_at, job.runner = now, runner.name
            session.state, session.last_heartbeat = ACTIVE, now
            return {
                "job": self._view(db, job, now),
                "source": job.source,
                "entry": job.entry,
                "inputs": job.inputs,
                "kit": session.kit_id,
                "model": job.model,
                "duration_s": job.duration_s,
                "session_id": session.id,
                "mqtt": {"username": job_account(job.id), "password": password},
            }

    def heartbeat(self, runner: User, job_id: int) -> dict:
        _require_runner(runner)
        now = self.clock()
        with self.sharing.store.transaction() as db:
            job, session = self._running(db, job_id)
            session.state, session.last_heartbeat = ACTIVE, now
            return self._view(db, job, now)

    def finish(self, runner: User, job_id: int, outcome: str, detail: str = "") -> dict:
        """The runner's word on how the run ended: the session ends (handover as always)."""
        _require_runner(runner)
        if outcome not in OUTCOMES:
            known = ", ".join(OUTCOMES)
            raise SharingError("job-outcome-unknown", outcome=outcome[:40], known=known)
        now = self.clock()
        with self.sharing.store.transaction() as db:
            job, session = self._running(db, job_id)
            state = {"completed": FINISHED, "cancelled": CANCELLED}.get(outcome, FAILED)
            self._end(job, state, outcome, detail, now)
            self.sharing.end_within(db, session, JOB_FINISHED, now)
            return self._view(db, job, now)

    def score(self, user: User, job_id: int, **scores: float | None) -> dict:
        """Attach scores to an ended job; only those given change. The runner sets `score`
        (the kit's run), the job's course's instructors `twin_score` (the autograder's)."""
        unknown = set(scores) - {"score", "twin_score"}
        if unknown:
            raise SharingError("job-score-field", field=sorted(unknown)[0])
        now = self.clock()
        with self.sharing.store.transaction() as db:
            job = db.get(JobRow, job_id)
            if job is None:
                raise NotFound("no-job", job=job_id)
            teaches = job.course is not None and job.course in user.instructor_of
            if not user.job_runner and not (teaches and set(scores) <= {"twin_score"}):
                raise Forbidden("job-runner-only")
            if job.state in _OPEN:
                raise Conflict("job-not-ended", job=job_id)
            for name, value in scores.items():
                setattr(job, name, value)
            return self._view(db, job, now)

    # ------------------------------------------------------------ session hooks (KitSharing)

    def granted(self, db: DB, session: SessionRow, now: float) -> None:
        job_id = job_of(session.user)
        if job_id is None:
            return
        job = db.get(JobRow, job_id)
        job.state, job.started_at = RUNNING, now
        job.session_id, job.kit_id = session.id, session.kit_id
        # The job's time, not a walk-in slot: its duration and the runner's grace; never past
        # the window the scheduler gave (a booked slot of another course that comes first).
        wanted = now + job.duration_s + self.sharing.policy.job_start_grace_seconds
        session.ends_at = min(session.ends_at, wanted)

    def ending(self, db: DB, session: SessionRow, reason: str, now: float) -> None:
        job_id = job_of(session.user)
        if job_id is None:
            return
        job = db.get(JobRow, job_id)
        unstarted = job is not None and job.state == RUNNING and job.claimed_at is None
        if unstarted and reason in _KIT_TAKEN_AWAY:  # nothing ran yet: wait again, in place
            self._requeue(db, job)
            return
        if job is not None and job.state == RUNNING:  # not by finish or cancel: it failed
            outcome, detail = _ENDED_BY.get(reason, ("kit-unsafe", reason))
            if reason == NO_HEARTBEAT and job.claimed_at is None:
                detail = "no job runner took the job in time"
            self._end(job, CANCELLED if outcome == "cancelled" else FAILED, outcome, detail, now)

    def holder(self, db: DB, holder: str) -> dict[str, Any] | None:
        job_id = job_of(holder)
        if job_id is None:
            return None
        owner = db.scalar(select(JobRow.owner).where(JobRow.id == job_id))
        return {"job": job_id, "owner": owner}

    def tick(self, db: DB, now: float) -> None:
        """Queued jobs whose entry the service took away (their kit retired) fail."""
        for job in db.scalars(
            select(JobRow)
            .join(QueueEntryRow, QueueEntryRow.id == JobRow.queue_entry_id)
            .where(JobRow.state == QUEUED, QueueEntryRow.state == LEFT)
        ):
            self._end(job, FAILED, "kit-unsafe", "the kit was retired", now)

    # ------------------------------------------------------------ helpers

    def _requeue(self, db: DB, job: JobRow) -> None:
        """Back into the queue with the first entry's target and time: a job for a kit waits
        for it, one for a model goes to another working kit of the model."""
        first = db.get(QueueEntryRow, job.queue_entry_id)
        entry = QueueEntryRow(
            user=first.user,
            institution=first.institution,
            kit_id=first.kit_id,
            model=first.model,
            priority=first.priority,
            courses=first.courses,
            enqueued_at=first.enqueued_at,
            state=WAITING,
        )
        db.add(entry)
        db.flush()
        job.state, job.queue_entry_id = QUEUED, entry.id
        job.session_id = job.started_at = None
        job.kit_id = first.kit_id

    def _readable(self, db: DB, user: User, job_id: int) -> JobRow:
        """The job if `user` may read it (owner, the course's instructors, lab admins, the
        runner: it scores the recorded run)."""
        job = db.get(JobRow, job_id)
        if job is None or not (
            job.owner == user.name
            or user.lab_admin
            or user.job_runner
            or (job.course is not None and job.course in user.instructor_of)
        ):
            raise NotFound("no-job", job=job_id)
        return job

    def _running(self, db: DB, job_id: int) -> tuple[JobRow, SessionRow]:
        job = db.get(JobRow, job_id)
        if job is None:
            raise NotFound("no-job", job=job_id)
        session = db.get(SessionRow, job.session_id) if job.session_id else None
        if job.state != RUNNING or session is None or session.state not in (GRANTED, ACTIVE):
            raise Conflict("job-not-running", job=job_id, state=message(f"job-state-{job.state}"))
        return job, session

    @staticmethod
    def _end(job: JobRow, state: str, outcome: str, detail: str, now: float) -> None:
        job.state, job.outcome, job.ended_at = state, outcome, now
        job.detail = " ".join(detail.split())[:MAX_DETAIL_CHARS] or None

    def _view(
        self,
        db: DB,
        job: JobRow,
        now: float,
        estimates: dict[int, tuple[int, float]] | None = None,
    ) -> dict:
        position = wait = None
        if job.state == QUEUED:
            if estimates is None:
                estimates = self.sharing.estimates_within(db, now)
            pos, secs = estimates.get(job.queue_entry_id or 0, (0, float("inf")))
            position = pos or None
            wait = None if secs == float("inf") else round(secs, 1)
        return {
            "id": job.id,
            "owner": job.owner,
            "institution": job.institution,
            "kit": job.kit_id,
            "model": job.model,
            "state": job.state,
            "state_text": _state_word(job.state),
            "position": position,
            "estimated_start": _iso(now + wait) if wait is not None else None,
            "wait_seconds": wait,
            "duration_s": job.duration_s,
            "inputs": job.inputs,
            "entry": job.entry,
            "course": job.course,
            "assignment": job.assignment,
            "created_at": _iso(job.created_at),
            "started_at": _iso(job.started_at),
            "ended_at": _iso(job.ended_at),
            "session_id": job.session_id,
            "outcome": job.outcome,
            "outcome_text": _outcome_word(job.outcome),
            "detail": job.detail,
            "score": job.score,
            "twin_score": job.twin_score,
        }


_OPEN = (QUEUED, RUNNING)
# The kit was taken from a job before its runner started it: maintenance (an admin), the kit
# offline or not confirming its safe state, retired.
_KIT_TAKEN_AWAY = (ENDED_BY_ADMIN, KIT_OFFLINE, RETIRING)


def _check_job(
    kit_id: str | None,
    model: str | None,
    duration_s: float,
    inputs: dict[str, Any],
    source: str,
    entry: str,
) -> None:
    """What the HTTP body's schema checks, again for callers of the service itself."""
    if (kit_id is None) == (model is None):
        raise SharingError("kit-or-model")
    if not MIN_DURATION_S <= duration_s <= MAX_DURATION_S:
        raise SharingError("job-duration", low=f"{MIN_DURATION_S:g}", high=f"{MAX_DURATION_S:g}")
    if not isinstance(inputs, dict) or len(json.dumps(inputs)) > MAX_INPUTS_BYTES:
        raise SharingError("job-inputs", kb=MAX_INPUTS_BYTES // 1024)
    if len(source) > MAX_SOURCE_CHARS:
        raise SharingError("job-source", kb=MAX_SOURCE_CHARS // 1024)
    if not entry.isidentifier():
        raise SharingError("job-entry", entry=entry[:40])


def _require_runner(user: User) -> None:
    if not user.job_runner:
        raise Forbidden("job-runner-only")


def _model_of(kits: list[Any], kit_id: str) -> str | None:
    return next((m for k, m, _ in kits if k == kit_id), None)


def _state_word(state: str) -> Words:
    return Words(f"job-state-{state}", text=state)


def _outcome_word(outcome: str | None) -> Words | None:
    return None if outcome is None else Words(f"job-outcome-{outcome}", text=outcome)


def _iso(t: float | None) -> str | None:
    return None if t is None else dt.datetime.fromtimestamp(t, dt.UTC).isoformat()
