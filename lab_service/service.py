"""The lab service: queue, bookings and sessions of the shared kits, with safe handover.

Session lifecycle (an explicit state machine, every step recorded):

    granted ──first heartbeat──▶ active ──time up / release / no heartbeat / admin / kit lost──▶
    ending (rights revoked, safe state commanded) ──kit confirms──▶ safe ──▶ released
                                 └──no confirmation in time──▶ released, kit needs attention

A kit that nobody holds and nobody is granted runs its own automatic operation: the service
sends it the state at rest (`$at-rest`, the descriptor's `at_rest` values) once it is free, in
the pool, online and reports no fault. A kit granted from rest is put into its safe state as it
is granted (before the holder's right exists); if it does not confirm in time, it needs
attention and the session ends, as in a handover that fails.
Kits out of the pool (maintenance, needs attention, retired) are kept in their safe state.

Every method runs one database transaction, and the service is driven from one thread (the web
server's event loop calls both the API methods and `tick`), so granting a kit is one atomic step;
the database's unique index on live sessions is the last line of defence.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session as DB
from sqlalchemy.orm import object_session

from hardware_kits import protocol as P
from lab_service import scheduler as S
from lab_service.messages import Coded, message
from lab_service.policy import WEEK, SharingPolicy
from lab_service.store import (
    ACTIVE,
    ENDING,
    GRANTED,
    IN_POOL,
    LEFT,
    LIVE_STATES,
    MAINTENANCE,
    NEEDS_ATTENTION,
    RELEASED,
    RETIRED,
    SAFE,
    SERVED,
    WAITING,
    BookingRow,
    CommandRow,
    EventRow,
    KitRow,
    QueueEntryRow,
    SessionRow,
    SharingStore,
    sessions_of,
)

# Why a session ended.
TIME_UP, RELEASED_BY_USER, NO_HEARTBEAT, ENDED_BY_ADMIN, KIT_OFFLINE, BOOKED_SLOT, RETIRING = (
    "time-up",
    "released",
    "no-heartbeat",
    "ended-by-admin",
    "kit-offline",
    "booked-slot",
    "kit-retired",
)
JOB_FINISHED, JOB_CANCELLED = "job-finished", "job-cancelled"  # experiment jobs (jobs.py)


@dataclass(frozen=True)
class User:
    """Who is calling, as the hub (or a test identity) says."""

    name: str
    institution: str
    courses: frozenset[str] = field(default_factory=frozenset)
    instructor_of: frozenset[str] = field(default_factory=frozenset)
    lab_admin: bool = False
    priority: int = 0
    job_runner: bool = False  # the experiment jobs' runner (claims jobs, reports their end)


class SharingError(Coded):
    """A request the service refuses: `status` is the HTTP status; the message code and fields
    (messages.py) are rendered in the caller's language at the HTTP edge; str() is English."""

    status = 400


class NotFound(SharingError):
    status = 404


class Forbidden(SharingError):
    status = 403


class Conflict(SharingError):
    status = 409


class Rights(Protocol):
    """Broker rights (lab_service.rights.BrokerRights)."""

    def grant(self, user: str, kit_id: str) -> None: ...
    def revoke(self, user: str, kit_id: str) -> None: ...


class KitGateway(Protocol):
    """What the service needs from the kits over MQTT."""

    def online(self, kit_id: str) -> bool: ...
    def send_safe_state(self, kit_id: str) -> str: ...  # returns the command id
    def confirmed_safe(self, kit_id: str, command_id: str) -> bool: ...
    def drain_acks(self) -> list[dict[str, Any]]: ...  # acknowledgements seen since last call
    def send_at_rest(self, kit_id: str) -> str: ...  # returns the command id
    def answer(self, kit_id: str, command_id: str) -> str | None: ...  # applied / rejected
    # The kit's own word on its state (`safe`, `at_rest`, `fault`); None if it says nothing.
    def report(self, kit_id: str) -> dict[str, Any] | None: ...


class SessionHooks(Protocol):
    """What another part of the service (lab_service/jobs.py) does as sessions come and go,
    inside the same transaction."""

    def granted(self, db: DB, session: SessionRow, now: float) -> None: ...
    def ending(self, db: DB, session: SessionRow, reason: str, now: float) -> None: ...
    # {"job": id, "owner": name} of a session whose holder is not a person; None otherwise.
    def holder(self, db: DB, holder: str) -> dict[str, Any] | None: ...
    def tick(self, db: DB, now: float) -> None: ...


# A kit that has not reported itself at rest this long after being asked is asked again (a kit
# whose firmware predates the state at rest never answers: once a minute is little traffic).
REST_RETRY_SECONDS = 60.0


def week_start(t: float) -> float:
    day = dt.datetime.fromtimestamp(t, dt.UTC).date()
    monday = day - dt.timedelta(days=day.weekday())
    return dt.datetime.combine(monday, dt.time(), dt.UTC).timestamp()


class KitSharing:
    def __init__(
        self,
        store: SharingStore,
        policy: SharingPolicy,
        rights: Rights,
        gateway: KitGateway,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.policy = policy
        self.rights = rights
        self.gateway = gateway
        self.clock = clock
        self._offline_since: dict[str, float] = {}  # kit -> when a session first saw it offline
        # Whole-kit commands in flight, kit -> (command id, sent at): the state at rest (or the
        # safe state for a kit out of the pool) for idle kits, the safe state before a grant.
        self._idle_command: dict[str, tuple[str, float]] = {}
        self._waking: dict[str, tuple[str, float]] = {}
        self.hooks: SessionHooks | None = None  # set by jobs.JobBook

    # ------------------------------------------------------------ kits (lab admins)

    def register_kit(self, admin: User, kit_id: str, model: str, name: str = "") -> dict:
        _require_admin(admin)
        with self.store.transaction() as db:
            kit = db.get(KitRow, kit_id)
            if kit is not None and kit.pool_state != RETIRED:
                raise Conflict("kit-registered", kit=kit_id)
            if kit is None:
                kit = KitRow(id=kit_id, model=model, name=name, registered_at=self.clock())
                db.add(kit)
            kit.model, kit.name, kit.pool_state, kit.reason = model, name, IN_POOL, ""
            return self._kit_view(db, kit)

    def retire_kit(self, admin: User, kit_id: str) -> dict:
        _require_admin(admin)
        with self.store.transaction() as db:
            kit = self._kit(db, kit_id)
            self._end_live_session(db, kit_id, RETIRING)
            kit.pool_state, kit.reason = RETIRED, f"retired by {admin.name}"
            for entry in db.scalars(
                select(QueueEntryRow).where(
                    QueueEntryRow.kit_id == kit_id, QueueEntryRow.state == WAITING
                )
            ):
                entry.state, entry.left_at = LEFT, self.clock()
            return self._kit_view(db, kit)

    def set_maintenance(self, admin: User, kit_id: str, on: bool, reason: str = "") -> dict:
        """Maintenance takes a kit out of the pool (its holder's session ends); observers still
        see it. Turning maintenance off also clears needs-attention: an admin has looked."""
        _require_admin(admin)
        with self.store.transaction() as db:
            kit = self._kit(db, kit_id)
            if kit.pool_state == RETIRED:
                raise Conflict("kit-retired", kit=kit_id)
            if on:
                self._end_live_session(db, kit_id, ENDED_BY_ADMIN)
                kit.pool_state, kit.reason = MAINTENANCE, reason or f"maintenance by {admin.name}"
            else:
                kit.pool_state, kit.reason = IN_POOL, ""
            self._event(
                db, "maintenance-on" if on else "back-in-pool", kit_id, admin.name, kit.reason
            )
            return self._kit_view(db, kit)

    def kits(self) -> list[dict]:
        with self.store.transaction() as db:
            rows = db.scalars(
                select(KitRow).where(KitRow.pool_state != RETIRED).order_by(KitRow.id)
            ).all()
            return [self._kit_view(db, kit) for kit in rows]

    # ------------------------------------------------------------ queue (students)

    def request(self, user: User, kit_id: str | None = None, model: str | None = None) -> dict:
        """Join the queue for a kit, or for any working kit of a model; granted at once if free."""
        (result,) = self.request_many([(user, kit_id, model)])
        if isinstance(result, SharingError):
            raise result
        return result

    def request_many(
        self, requests: list[tuple[User, str | None, str | None]]
    ) -> list[dict | SharingError]:
        """Queue requests decided together: one transaction, one grant pass, one estimate pass.

        A burst of simultaneous requests then costs the queue-wide work once instead of once
        per request: the new entries go in with one multi-row INSERT (no ORM objects), and the
        answers are built from that data, the grants and one estimate pass. Each result is the
        entry's view, or the SharingError that refused it."""
        now = self.clock()
        names = {user.name for user, _, _ in requests}
        with self.store.transaction() as db:
            kits = {
                kit_id: (model, pool)
                for kit_id, model, pool in db.execute(
                    select(KitRow.id, KitRow.model, KitRow.pool_state)
                )
            }
            # What the requesting users already hold or wait for (not the whole queue).
            holding = {
                (user, kits[kit_id][0], kit_id)
                for user, kit_id in db.execute(
                    select(SessionRow.user, SessionRow.kit_id).where(
                        SessionRow.state.in_((GRANTED, ACTIVE)), SessionRow.user.in_(names)
                    )
                )
            }
            waiting = {
                (u, k, m): i
                for u, k, m, i in db.execute(
                    select(
                        QueueEntryRow.user,
                        QueueEntryRow.kit_id,
                        QueueEntryRow.model,
                        QueueEntryRow.id,
                    ).where(QueueEntryRow.state == WAITING, QueueEntryRow.user.in_(names))
                )
            }
            results: list[dict | SharingError] = []
            rows: list[dict[str, Any]] = []  # the accepted requests' entries, in order
            for user, kit_id, model in requests:
                try:
                    _check_request(kits, holding, waiting, user, kit_id, model)
                except SharingError as err:
                    results.append(err)
                    continue
                row = {
                    "user": user.name,
                    "institution": user.institution,
                    "kit_id": kit_id,
                    "model": model,
                    "priority": user.priority,
                    "courses": sorted(user.courses),
                    "enqueued_at": now,
                    "state": WAITING,
                }
                rows.append(row)
                results.append(row)  # replaced by its view below
                waiting[(user.name, kit_id, model)] = 0  # a repeat in the same batch is refused
            if not rows:
                return results
            # RETURNING's row order is not guaranteed: (user, kit, model) is unique in a batch.
            q = QueueEntryRow
            ids = {
                (u, k, m): i
                for i, u, k, m in db.execute(
                    insert(q).returning(q.id, q.user, q.kit_id, q.model), rows
                )
            }
            for row in rows:
                row["id"] = ids[(row["user"], row["kit_id"], row["model"])]
            sessions = self._assign(db, now)
            estimates = (
                self._estimates(db, now) if any(row["id"] not in sessions for row in rows) else {}
            )
            return [
                r
                if isinstance(r, SharingError)
                else _new_entry_view(r, sessions.get(r["id"]), self._session_view, now, estimates)
                for r in results
            ]

    def leave(self, user: User, entry_id: int) -> dict:
        now = self.clock()
        with self.store.transaction() as db:
            entry = db.get(QueueEntryRow, entry_id)
            if entry is None or (entry.user != user.name and not user.lab_admin):
                raise NotFound("no-queue-entry", entry=entry_id)
            if entry.state != WAITING:
                raise Conflict(
                    "entry-not-waiting",
                    entry=entry_id,
                    state=message(f"state-{entry.state}", text=entry.state),
                )
            entry.state, entry.left_at = LEFT, now
            return self._entry_view(db, entry, now)

    def queue_entry(self, user: User, entry_id: int) -> dict:
        now = self.clock()
        with self.store.transaction() as db:
            entry = db.get(QueueEntryRow, entry_id)
            if entry is None or (entry.user != user.name and not user.lab_admin):
                raise NotFound("no-queue-entry", entry=entry_id)
            return self._entry_view(db, entry, now)

    def my_queue(self, user: User) -> list[dict]:
        now = self.clock()
        with self.store.transaction() as db:
            rows = db.scalars(
                select(QueueEntryRow).where(
                    QueueEntryRow.user == user.name, QueueEntryRow.state == WAITING
                )
            ).all()
            estimates = self._estimates(db, now) if rows else {}
            return [self._entry_view(db, e, now, estimates) for e in rows]

    # ------------------------------------------------------------ sessions

    def heartbeat(self, user: User, session_id: int) -> dict:
        now = self.clock()
        with self.store.transaction() as db:
            session = self._own_session(db, user, session_id)
            if session.state not in (GRANTED, ACTIVE):
                raise Conflict(
                    "session-ended",
                    session=session_id,
                    reason=message(f"reason-{session.end_reason}", text=session.end_reason),
                )
            session.last_heartbeat = now
            session.state = ACTIVE
            return self._session_view(session, now)

    def release(self, user: User, session_id: int) -> dict:
        now = self.clock()
        with self.store.transaction() as db:
            session = self._own_session(db, user, session_id)
            if session.state in (GRANTED, ACTIVE):
                self._begin_end(db, session, RELEASED_BY_USER, now)
            return self._session_view(session, now)

    def end_session(self, admin: User, session_id: int) -> dict:
        _require_admin(admin)
        now = self.clock()
        with self.store.transaction() as db:
            session = db.get(SessionRow, session_id)
            if session is None:
                raise NotFound("no-session", session=session_id)
            if session.state in (GRANTED, ACTIVE):
                self._begin_end(db, session, ENDED_BY_ADMIN, now)
            return self._session_view(session, now)

    def sessions(
        self, user: User, live_only: bool = False, course: str | None = None
    ) -> list[dict]:
        """Own sessions; lab admins see all. With `course`: the sessions held for that course
        (its students queued as members of it, or used its booked slot), for its instructors
        and lab admins."""
        if course is not None and course not in user.instructor_of and not user.lab_admin:
            raise Forbidden("course-sessions-forbidden", course=course)
        now = self.clock()
        with self.store.transaction() as db:
            query = select(SessionRow).order_by(SessionRow.id)
            if course is not None:
                query = (
                    query.outerjoin(QueueEntryRow, QueueEntryRow.id == SessionRow.queue_entry_id)
                    .outerjoin(BookingRow, BookingRow.id == SessionRow.booking_id)
                    .add_columns(QueueEntryRow.courses, BookingRow.course)
                )
            elif not user.lab_admin:
                query = query.where(sessions_of(user.name))  # their jobs' sessions too
            if live_only:
                query = query.where(SessionRow.state.in_(LIVE_STATES))
            if course is None:
                return [self._session_view(s, now) for s in db.scalars(query)]
            # Course membership is a JSON list on the entry: filtered here, the same on SQLite
            # and PostgreSQL.
            return [
                self._session_view(s, now)
                for s, courses, booked in db.execute(query)
                if booked == course or course in (courses or ())
            ]

    # ------------------------------------------------------------ bookings (instructors)

    def book(
        self,
        user: User,
        kit_id: str,
        course: str,
        starts_at: float,
        ends_at: float,
        group: str | None = None,
    ) -> dict:
        if course not in user.instructor_of:
            raise Forbidden("booking-not-instructor", course=course)
        now = self.clock()
        self._check_booking_window(starts_at, ends_at, now)
        with self.store.transaction() as db:
            kit = self._kit(db, kit_id)
            if kit.pool_state == RETIRED:
                raise NotFound("no-kit", kit=kit_id)
            clash = db.scalar(
                select(BookingRow).where(
                    BookingRow.kit_id == kit_id,
                    ~BookingRow.cancelled,
                    BookingRow.starts_at < ends_at,
                    BookingRow.ends_at > starts_at,
                )
            )
            if clash is not None:
                raise Conflict(
                    "booking-clash",
                    kit=kit_id,
                    starts=_iso(clash.starts_at),
                    ends=_iso(clash.ends_at),
                    booking=clash.id,
                )
            self._check_quotas(db, user, starts_at, ends_at)
            booking = BookingRow(
                kit_id=kit_id,
                course=course,
                group=group,
                booked_by=user.name,
                institution=user.institution,
                starts_at=starts_at,
                ends_at=ends_at,
                created_at=now,
            )
            db.add(booking)
            db.flush()
            return _booking_view(booking)

    def cancel_booking(self, user: User, booking_id: int) -> dict:
        with self.store.transaction() as db:
            booking = db.get(BookingRow, booking_id)
            if booking is None or booking.cancelled:
                raise NotFound("no-booking", booking=booking_id)
            if (
                booking.booked_by != user.name
                and booking.course not in user.instructor_of
                and not user.lab_admin
            ):
                raise Forbidden("booking-not-yours", booking=booking_id)
            booking.cancelled = True
            return _booking_view(booking)

    def bookings(self, user: User) -> list[dict]:
        """Bookings from now on that concern the user's courses (all, for lab admins)."""
        now = self.clock()
        with self.store.transaction() as db:
            query = select(BookingRow).where(~BookingRow.cancelled, BookingRow.ends_at > now)
            if not user.lab_admin:
                query = query.where(BookingRow.course.in_(user.courses | user.instructor_of))
            return [_booking_view(b) for b in db.scalars(query.order_by(BookingRow.starts_at))]

    def _check_booking_window(self, starts_at: float, ends_at: float, now: float) -> None:
        p = self.policy
        length = ends_at - starts_at
        if starts_at < now:
            raise SharingError("booking-in-past")
        if starts_at < now + p.booking_lead_seconds:
            raise SharingError("booking-too-soon", minutes=f"{p.booking_lead_seconds / 60:.0f}")
        if starts_at > now + p.booking_ahead_max_seconds:
            raise SharingError("booking-too-far", days=f"{p.booking_ahead_max_seconds / 86400:.0f}")
        if not p.booking_min_seconds <= length <= p.booking_max_seconds:
            raise SharingError(
                "booking-length",
                min_minutes=f"{p.booking_min_seconds / 60:.0f}",
                max_minutes=f"{p.booking_max_seconds / 60:.0f}",
            )
        grain = p.booking_granularity_seconds
        if starts_at % grain or ends_at % grain:
            raise SharingError("booking-grain", minutes=f"{grain / 60:.0f}")

    def _check_quotas(self, db: DB, user: User, starts_at: float, ends_at: float) -> None:
        week = week_start(starts_at)
        booked = select(
            func.coalesce(func.sum(BookingRow.ends_at - BookingRow.starts_at), 0.0)
        ).where(
            ~BookingRow.cancelled, BookingRow.starts_at >= week, BookingRow.starts_at < week + WEEK
        )
        length = ends_at - starts_at
        mine = db.scalar(booked.where(BookingRow.booked_by == user.name))
        if mine + length > self.policy.booking_quota_user_week_seconds:
            raise Conflict(
                "quota-user", hours=f"{self.policy.booking_quota_user_week_seconds / 3600:g}"
            )
        ours = db.scalar(booked.where(BookingRow.institution == user.institution))
        if ours + length > self.policy.booking_quota_institution_week_seconds:
            raise Conflict(
                "quota-institution",
                institution=user.institution,
                hours=f"{self.policy.booking_quota_institution_week_seconds / 3600:g}",
            )

    # ------------------------------------------------------------ the engine

    def tick(self) -> None:
        """End sessions whose time is up, carry ending sessions to a safe handover, grant kits."""
        acks = self.gateway.drain_acks()
        if acks:  # their own transaction: a failure below must not lose the records
            with self.store.transaction() as db:
                self._record_commands(db, acks)
        now = self.clock()
        with self.store.transaction() as db:
            for session in db.scalars(
                select(SessionRow).where(SessionRow.state.in_(LIVE_STATES))
            ).all():
                self._advance(db, session, now)
            self._assign(db, now)
            self._watch_waking(db, now)
            self._settle_idle(db, now)
            if self.hooks is not None:
                self.hooks.tick(db, now)

    def _record_commands(self, db: DB, acks: list[dict[str, Any]]) -> None:
        """Every acknowledged command, attributed to the kit's latest session: only its holder
        (and the service's safe-state handover) can command a kit, the broker sees to that.

        Records count commands, not messages: the kit answers a duplicate (an id it has seen)
        from its memory, marked `duplicate`, without applying it again; that only counts up the
        command's `duplicates`."""
        latest: dict[str, int | None] = {}
        for ack in acks:
            kit_id = ack["kit"]
            if ack.get("duplicate") is True and self._count_duplicate(db, kit_id, ack):
                continue
            if kit_id not in latest:
                latest[kit_id] = db.scalar(
                    select(func.max(SessionRow.id)).where(SessionRow.kit_id == kit_id)
                )
            db.add(
                CommandRow(
                    session_id=latest[kit_id],
                    kit_id=kit_id,
                    requester=ack["requester"],
                    command_id=str(ack.get("id")),
                    target=str(ack.get("target")),
                    status=ack["status"],
                    value=ack.get("value"),
                    reason=ack.get("reason"),
                    ts=float(ack.get("ts") or 0.0),
                    # The original's acknowledgement was lost: this row stands for the command.
                    duplicates=1 if ack.get("duplicate") is True else 0,
                )
            )
            db.flush()  # a duplicate later in this batch finds the row

    def _count_duplicate(self, db: DB, kit_id: str, ack: dict[str, Any]) -> bool:
        """Count a duplicate against its command's row; False if there is none."""
        row = db.scalars(
            select(CommandRow)
            .where(CommandRow.kit_id == kit_id, CommandRow.command_id == str(ack.get("id")))
            .order_by(CommandRow.id.desc())
            .limit(1)
        ).first()
        if row is None:
            return False
        row.duplicates = (row.duplicates or 0) + 1
        return True

    def recover(self) -> list[str]:
        """After a restart: resend every pending safe-state command and forgive heartbeats
        missed while the service was down. Returns what it did, one line each."""
        now = self.clock()
        done = []
        with self.store.transaction() as db:
            for session in db.scalars(
                select(SessionRow).where(SessionRow.state.in_(LIVE_STATES))
            ).all():
                if session.state in (GRANTED, ACTIVE):
                    session.last_heartbeat = max(session.last_heartbeat, now)
                elif session.state == ENDING:
                    session.safe_command_id, session.ending_at = None, now
                    done.append(f"session {session.id}: safe state of {session.kit_id} asked again")
        return done

    def holders(self) -> dict[str, str]:
        """kit -> user for sessions that currently carry command rights."""
        with self.store.transaction() as db:
            return {
                s.kit_id: s.user
                for s in db.scalars(
                    select(SessionRow).where(SessionRow.state.in_((GRANTED, ACTIVE)))
                )
            }

    def _advance(self, db: DB, session: SessionRow, now: float) -> None:
        if session.state in (GRANTED, ACTIVE):
            reason = self._end_reason(db, session, now)
            if reason is not None:
                self._begin_end(db, session, reason, now)
        if session.state == ENDING:
            self._handover(db, session, now)
        if session.state == SAFE:
            session.state, session.released_at = RELEASED, now

    def _end_reason(self, db: DB, session: SessionRow, now: float) -> str | None:
        if now >= session.ends_at:
            booked = S.booking_at(session.kit_id, now, self._booked_slots(db, now))
            return BOOKED_SLOT if booked is not None and session.booking_id is None else TIME_UP
        if now - session.last_heartbeat > self.policy.heartbeat_timeout_seconds:
            return NO_HEARTBEAT
        if self.gateway.online(session.kit_id):
            self._offline_since.pop(session.kit_id, None)
        else:  # a kit reconnecting for a moment keeps its session
            since = self._offline_since.setdefault(session.kit_id, now)
            if now - since >= self.policy.offline_grace_seconds:
                return KIT_OFFLINE
        return None

    def _begin_end(self, db: DB, session: SessionRow, reason: str, now: float) -> None:
        session.state, session.end_reason, session.ending_at = ENDING, reason, now
        if self.hooks is not None:
            self.hooks.ending(db, session, reason, now)
        self._handover(db, session, now)

    # What jobs.JobBook drives inside its own transactions.
    def end_within(self, db: DB, session: SessionRow, reason: str, now: float) -> None:
        """Begin ending a live session (rights revoked, safe state, handover)."""
        if session.state in (GRANTED, ACTIVE):
            self._begin_end(db, session, reason, now)

    def assign_within(self, db: DB, now: float) -> dict[int, SessionRow]:
        return self._assign(db, now)

    def estimates_within(self, db: DB, now: float) -> dict[int, tuple[int, float]]:
        return self._estimates(db, now)

    def session_view(self, session: SessionRow, now: float) -> dict:
        return self._session_view(session, now)

    def _handover(self, db: DB, session: SessionRow, now: float) -> None:
        """Revoke rights, command the safe state, and release the kit only once it confirms."""
        if session.safe_command_id is None:
            try:
                self.rights.revoke(session.user, session.kit_id)
                session.safe_command_id = self.gateway.send_safe_state(session.kit_id)
            except Exception as err:  # broker down: keep the kit held, try again next tick
                self._event(db, "handover-retry", session.kit_id, session.user, str(err))
                return
        if self.gateway.confirmed_safe(session.kit_id, session.safe_command_id):
            session.state, session.safe_at = SAFE, now
        elif now - session.ending_at > self.policy.safe_confirm_timeout_seconds:
            kit = db.get(KitRow, session.kit_id)
            if kit.pool_state == NEEDS_ATTENTION:  # flagged already: keep the first cause
                session.state, session.released_at = RELEASED, now
                return
            kit.pool_state = NEEDS_ATTENTION
            kit.reason = (
                f"did not confirm its safe state within "
                f"{self.policy.safe_confirm_timeout_seconds:g} s after session "
                f"{session.id} ended ({session.end_reason})"
            )
            session.state, session.released_at = RELEASED, now
            self._event(db, "needs-attention", kit.id, session.user, kit.reason)

    def _end_live_session(self, db: DB, kit_id: str, reason: str) -> None:
        session = db.scalar(
            select(SessionRow).where(
                SessionRow.kit_id == kit_id, SessionRow.state.in_((GRANTED, ACTIVE))
            )
        )
        if session is not None:
            self._begin_end(db, session, reason, self.clock())

    def _assign(self, db: DB, now: float) -> dict[int, SessionRow]:
        """Grant free kits to waiting entries; returns the new sessions by queue entry id."""
        # Free kits first: usually there are none, and then the queue need not be read at all.
        busy = set(db.scalars(select(SessionRow.kit_id).where(SessionRow.state.in_(LIVE_STATES))))
        free = [
            S.KitSlot(kit_id, model, now)
            for kit_id, model in db.execute(
                select(KitRow.id, KitRow.model).where(KitRow.pool_state == IN_POOL)
            )
            if kit_id not in busy and self.gateway.online(kit_id)
        ]
        if not free:
            return {}
        waiting = _load_waiting(db)
        if not waiting:
            return {}
        sessions = {}
        for grant in S.assign(
            waiting,
            free,
            self._booked_slots(db, now),
            self._recent_use(db, now),
            now,
            self.policy.slot_seconds,
            self.policy.min_walk_in_seconds,
        ):
            session = self._grant(db, grant, now)
            if session is not None:
                sessions[grant.entry.id] = session
        return sessions

    def _grant(self, db: DB, grant: S.Grant, now: float) -> SessionRow | None:
        """The session of a grant; None if the broker could not give the right (no session
        without the right: the entry keeps waiting)."""
        entry = db.get(QueueEntryRow, grant.entry.id)
        entry.state = SERVED
        booking_id = None
        if grant.booking is not None:
            booking_id = db.scalar(
                select(BookingRow.id).where(
                    BookingRow.kit_id == grant.kit_id,
                    ~BookingRow.cancelled,
                    BookingRow.starts_at == grant.booking.starts_at,
                )
            )
        session = SessionRow(
            kit_id=grant.kit_id,
            user=entry.user,
            institution=entry.institution,
            state=GRANTED,
            queue_entry_id=entry.id,
            booking_id=booking_id,
            requested_at=entry.enqueued_at,
            granted_at=now,
            ends_at=grant.ends_at,
            last_heartbeat=now,
        )
        db.add(session)
        db.flush()  # the unique index refuses a second live session here, before any right
        try:
            self._wake(grant.kit_id, now)  # before the right: the kit hears it first
            self.rights.grant(entry.user, grant.kit_id)
        except Exception as err:  # broker unreachable: no session without rights
            db.delete(session)
            entry.state = WAITING
            db.flush()
            self._event(db, "grant-failed", grant.kit_id, entry.user, str(err))
            return None
        if self.hooks is not None:
            self.hooks.granted(db, session, now)
        return session

    # ------------------------------------------------------------ kits at rest

    def _wake(self, kit_id: str, now: float) -> None:
        """A kit granted from rest (it says it is not safe, or was just asked to rest) is first
        put into its safe state, so every session starts there. The command is published before
        the holder's right is granted (a round trip to the broker), and the holder hears of the
        grant only after that, so the kit has it before any command of the holder's;
        `_watch_waking` checks that the kit confirms."""
        report = self.gateway.report(kit_id)
        resting = self._idle_command.pop(kit_id, None) is not None
        if resting or (report is not None and report.get("safe") is False):
            self._waking[kit_id] = (self.gateway.send_safe_state(kit_id), now)

    def _watch_waking(self, db: DB, now: float) -> None:
        """A kit woken for a session that does not confirm its safe state in time (or refuses
        it) needs attention, and the session ends, as in a handover that fails."""
        for kit_id, (command_id, sent_at) in list(self._waking.items()):
            answer = self.gateway.answer(kit_id, command_id)
            if answer == P.APPLIED:
                del self._waking[kit_id]
                continue
            if answer is None and now - sent_at <= self.policy.safe_confirm_timeout_seconds:
                continue
            del self._waking[kit_id]
            kit = db.get(KitRow, kit_id)
            kit.pool_state = NEEDS_ATTENTION
            kit.reason = (
                f"did not confirm its safe state within "
                f"{self.policy.safe_confirm_timeout_seconds:g} s when it was granted"
            )
            self._event(db, "needs-attention", kit_id, None, kit.reason)
            self._end_live_session(db, kit_id, KIT_OFFLINE)

    def _settle_idle(self, db: DB, now: float) -> None:
        """Free kits in the pool go to rest (their automatic operation); kits out of the pool
        stay safe. Only kits that report their state are touched, and none with a fault."""
        busy = set(db.scalars(select(SessionRow.kit_id).where(SessionRow.state.in_(LIVE_STATES))))
        for kit_id, pool_state in db.execute(select(KitRow.id, KitRow.pool_state)).all():
            if kit_id in busy or kit_id in self._waking or not self.gateway.online(kit_id):
                self._idle_command.pop(kit_id, None)
                continue
            report = self.gateway.report(kit_id)
            if report is None or report.get("at_rest") is None or report.get("fault"):
                continue  # firmware that cannot rest, or a fault: the kit stays as it is (safe)
            resting = pool_state == IN_POOL
            if bool(report["at_rest"]) == resting or (not resting and report.get("safe")):
                self._idle_command.pop(kit_id, None)
                continue
            pending = self._idle_command.get(kit_id)
            if pending is not None and now - pending[1] < REST_RETRY_SECONDS:
                continue  # asked already: wait for the kit's report
            try:
                send = self.gateway.send_at_rest if resting else self.gateway.send_safe_state
                self._idle_command[kit_id] = (send(kit_id), now)
            except Exception:  # broker down: nothing is at stake, the next tick asks again
                continue

    def _booked_slots(self, db: DB, now: float) -> list[S.BookedSlot]:
        return [
            S.BookedSlot(b.kit_id, b.course, b.starts_at, b.ends_at)
            for b in db.scalars(
                select(BookingRow).where(~BookingRow.cancelled, BookingRow.ends_at > now)
            )
        ]

    def _recent_use(self, db: DB, now: float) -> dict[str, int]:
        """Walk-in sessions per institution in the fair-share window. Booked slots do not
        count: bookings have quotas of their own and take no one's place in the queue."""
        since = now - self.policy.fair_share_window_seconds
        return dict(
            db.execute(
                select(SessionRow.institution, func.count())
                .where(SessionRow.granted_at > since, SessionRow.booking_id.is_(None))
                .group_by(SessionRow.institution)
            ).all()
        )

    # ------------------------------------------------------------ views and helpers

    def _kit(self, db: DB, kit_id: str) -> KitRow:
        kit = db.get(KitRow, kit_id)
        if kit is None:
            raise NotFound("no-kit", kit=kit_id)
        return kit

    def _own_session(self, db: DB, user: User, session_id: int) -> SessionRow:
        session = db.get(SessionRow, session_id)
        if session is None or session.user != user.name:
            raise NotFound("no-session-of-yours", session=session_id)
        return session

    def _event(self, db: DB, kind: str, kit_id: str | None, user: str | None, detail: str) -> None:
        db.add(EventRow(ts=self.clock(), kind=kind, kit_id=kit_id, user=user, detail=detail))

    def _entry_view(
        self,
        db: DB,
        entry: QueueEntryRow,
        now: float,
        estimates: dict[int, tuple[int, float]] | None = None,
    ) -> dict:
        view: dict[str, Any] = {
            "id": entry.id,
            "user": entry.user,
            "kit": entry.kit_id,
            "model": entry.model,
            "state": entry.state,
            "enqueued_at": entry.enqueued_at,
        }
        if entry.state == WAITING:
            if estimates is None:
                estimates = self._estimates(db, now)
            position, wait = estimates.get(entry.id, (0, float("inf")))
            view.update(
                position=position, estimated_wait_s=None if wait == float("inf") else round(wait, 1)
            )
        elif entry.state == SERVED:
            session = db.scalar(select(SessionRow).where(SessionRow.queue_entry_id == entry.id))
            view["session"] = self._session_view(session, now) if session else None
        return view

    def _estimates(self, db: DB, now: float) -> dict[int, tuple[int, float]]:
        waiting = _load_waiting(db, courses=False)  # the estimate ignores bookings
        held = dict(
            db.execute(
                select(SessionRow.kit_id, SessionRow.ends_at).where(
                    SessionRow.state.in_(LIVE_STATES)
                )
            ).all()
        )
        kits = [
            S.KitSlot(kit_id, model, held.get(kit_id, now))
            for kit_id, model in db.execute(
                select(KitRow.id, KitRow.model).where(KitRow.pool_state == IN_POOL)
            )
        ]
        return S.estimate(waiting, kits, self._recent_use(db, now), now, self.policy.slot_seconds)

    def _session_view(self, session: SessionRow, now: float) -> dict:
        return {
            "id": session.id,
            "kit": session.kit_id,
            "user": session.user,
            "institution": session.institution,
            "state": session.state,
            "granted_at": session.granted_at,
            "ends_at": session.ends_at,
            "time_left_s": round(max(0.0, session.ends_at - now), 1)
            if session.state in (GRANTED, ACTIVE)
            else 0.0,
            "queue_wait_s": round(session.queue_wait_s, 3),
            "end_reason": session.end_reason,
            "released_at": session.released_at,
            **self._holder(session),
        }

    def _holder(self, session: SessionRow) -> dict[str, Any]:
        """Who answers for a session: the job and its owner, or the person holding it."""
        db = object_session(session)
        job = self.hooks.holder(db, session.user) if self.hooks and db is not None else None
        return job or {"job": None, "owner": session.user}

    def _kit_view(self, db: DB, kit: KitRow) -> dict:
        holder = db.scalar(
            select(SessionRow).where(SessionRow.kit_id == kit.id, SessionRow.state.in_(LIVE_STATES))
        )
        queued = db.scalar(
            select(func.count())
            .select_from(QueueEntryRow)
            .where(
                QueueEntryRow.state == WAITING,
                (QueueEntryRow.kit_id == kit.id) | (QueueEntryRow.model == kit.model),
            )
        )
        return {
            "id": kit.id,
            "model": kit.model,
            "name": kit.name,
            "pool": kit.pool_state,
            "reason": kit.reason,
            "online": self.gateway.online(kit.id),
            "holder_institution": holder.institution if holder else None,
            "session_state": holder.state if holder else None,
            # A job holding the kit is shown with its owner ("job of <owner>"); a person is not.
            **_job_holder(self._holder(holder) if holder else None, holder, self.clock()),
            "queue_length": queued,
        }


def _job_holder(
    holder: dict[str, Any] | None, session: SessionRow | None, now: float
) -> dict[str, Any]:
    if holder is None or holder["job"] is None or session is None:
        return {"job": None, "job_owner": None, "job_time_left_s": None}
    # Observers see how long the job keeps the kit (the person-held case shows no such line).
    left = round(max(0.0, session.ends_at - now), 1)
    return {"job": holder["job"], "job_owner": holder["owner"], "job_time_left_s": left}


def _check_request(
    kits: dict[str, tuple[str, str]],
    holding: set[tuple[str, str, str]],
    waiting: dict[tuple[str, str | None, str | None], int],
    user: User,
    kit_id: str | None,
    model: str | None,
) -> None:
    """Refuse a queue request that names no kit, an unknown one, or repeats what the user has."""
    if (kit_id is None) == (model is None):
        raise SharingError("kit-or-model")
    if kit_id is not None and kits.get(kit_id, ("", RETIRED))[1] == RETIRED:
        raise NotFound("no-kit", kit=kit_id)
    if model is not None and not any(m == model and pool != RETIRED for m, pool in kits.values()):
        raise NotFound("no-kit-of-model", model=model)
    if any(u == user.name and (k == kit_id if kit_id else m == model) for u, m, k in holding):
        raise Conflict("already-holding")
    duplicate = waiting.get((user.name, kit_id, model))
    if duplicate is not None:
        if duplicate:
            raise Conflict("already-waiting-entry", entry=duplicate)
        raise Conflict("already-waiting")


def _new_entry_view(
    row: dict[str, Any],
    session: SessionRow | None,
    session_view: Callable[[SessionRow, float], dict],
    now: float,
    estimates: dict[int, tuple[int, float]],
) -> dict:
    """The view of an entry just inserted (as `KitSharing._entry_view` gives), from its row."""
    view: dict[str, Any] = {
        "id": row["id"],
        "user": row["user"],
        "kit": row["kit_id"],
        "model": row["model"],
        "state": WAITING,
        "enqueued_at": row["enqueued_at"],
    }
    if session is not None:
        view.update(state=SERVED, session=session_view(session, now))
    else:
        position, wait = estimates.get(row["id"], (0, float("inf")))
        view.update(
            position=position, estimated_wait_s=None if wait == float("inf") else round(wait, 1)
        )
    return view


def _load_waiting(db: DB, courses: bool = True) -> list[S.Waiting]:
    """Waiting entries as plain tuples: far cheaper than ORM objects on every request.
    `courses=False` leaves out the members' courses (a JSON column to decode per row)."""
    q = QueueEntryRow
    columns = [q.id, q.user, q.institution, q.kit_id, q.model, q.priority, q.enqueued_at]
    rows = db.execute(select(*columns, *([q.courses] if courses else [])).where(q.state == WAITING))
    if not courses:
        return [S.Waiting(*row) for row in rows]
    return [S.Waiting(*row[:7], frozenset(row[7] or ())) for row in rows]


def _booking_view(b: BookingRow) -> dict:
    return {
        "id": b.id,
        "kit": b.kit_id,
        "course": b.course,
        "group": b.group,
        "booked_by": b.booked_by,
        "institution": b.institution,
        "starts_at": b.starts_at,
        "ends_at": b.ends_at,
        "cancelled": b.cancelled,
    }


def _require_admin(user: User) -> None:
    if not user.lab_admin:
        raise Forbidden("lab-admin-only")


def _iso(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
