"""Persistent state of kit sharing, through SQLAlchemy: SQLite by default, PostgreSQL by URL.

The database itself refuses a second live session on one kit (a partial unique index), so even a
bug in the scheduler cannot give a kit two controllers. Times are epoch seconds (floats): the
service runs on a clock it is given, which tests speed up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
    inspect,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, sessionmaker
from sqlalchemy.sql.elements import ColumnElement

from site_config.migrations import upgrade_to_head

# Session states, in the order a session goes through them.
GRANTED, ACTIVE, ENDING, SAFE, RELEASED = "granted", "active", "ending", "safe", "released"
LIVE_STATES = (GRANTED, ACTIVE, ENDING, SAFE)  # the kit is not free in any of these

# Kit pool states.
IN_POOL, MAINTENANCE, NEEDS_ATTENTION, RETIRED = (
    "in-pool",
    "maintenance",
    "needs-attention",
    "retired",
)

# Queue entry states.
WAITING, SERVED, LEFT = "waiting", "served", "left"


class Base(DeclarativeBase):
    pass


class KitRow(Base):
    __tablename__ = "kits"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    model: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(200), default="")
    pool_state: Mapped[str] = mapped_column(String(20), default=IN_POOL)
    reason: Mapped[str] = mapped_column(Text, default="")  # why maintenance / needs attention
    registered_at: Mapped[float] = mapped_column(Float)


class QueueEntryRow(Base):
    __tablename__ = "queue_entries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user: Mapped[str] = mapped_column(String(128), index=True)
    institution: Mapped[str] = mapped_column(String(64))
    kit_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # a kit, or …
    model: Mapped[str | None] = mapped_column(String(64), nullable=True)  # … any of a model
    priority: Mapped[int] = mapped_column(Integer, default=0)  # higher is served first
    courses: Mapped[list[str]] = mapped_column(JSON, default=list)  # for booked slots
    enqueued_at: Mapped[float] = mapped_column(Float)
    state: Mapped[str] = mapped_column(String(12), default=WAITING, index=True)
    left_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class BookingRow(Base):
    __tablename__ = "bookings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kit_id: Mapped[str] = mapped_column(ForeignKey("kits.id"), index=True)
    course: Mapped[str] = mapped_column(String(64))
    group: Mapped[str | None] = mapped_column(String(64), nullable=True)
    booked_by: Mapped[str] = mapped_column(String(128))
    institution: Mapped[str] = mapped_column(String(64))
    starts_at: Mapped[float] = mapped_column(Float)
    ends_at: Mapped[float] = mapped_column(Float)
    created_at: Mapped[float] = mapped_column(Float)
    cancelled: Mapped[bool] = mapped_column(Boolean, default=False)


class SessionRow(Base):
    __tablename__ = "sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kit_id: Mapped[str] = mapped_column(ForeignKey("kits.id"), index=True)
    user: Mapped[str] = mapped_column(String(128), index=True)
    institution: Mapped[str] = mapped_column(String(64), index=True)
    state: Mapped[str] = mapped_column(String(12), index=True)
    queue_entry_id: Mapped[int | None] = mapped_column(
        ForeignKey("queue_entries.id"), nullable=True
    )
    booking_id: Mapped[int | None] = mapped_column(ForeignKey("bookings.id"), nullable=True)
    requested_at: Mapped[float] = mapped_column(Float)
    granted_at: Mapped[float] = mapped_column(Float, index=True)  # fair share looks back
    ends_at: Mapped[float] = mapped_column(Float)  # when its time is up
    last_heartbeat: Mapped[float] = mapped_column(Float)
    ending_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    safe_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    released_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    end_reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    safe_command_id: Mapped[str | None] = mapped_column(String(64), nullable=True)

    __table_args__ = (
        # At most one live session per kit, enforced by the database.
        Index(
            "one_live_session_per_kit",
            "kit_id",
            unique=True,
            sqlite_where=text("state IN ('granted', 'active', 'ending', 'safe')"),
            postgresql_where=text("state IN ('granted', 'active', 'ending', 'safe')"),
        ),
    )

    @property
    def queue_wait_s(self) -> float:
        return self.granted_at - self.requested_at


class CommandRow(Base):
    """A command a kit acknowledged (applied or rejected), attributed to the session of the time.
    One row per command: the kit's acknowledgements of its duplicates (the same id sent again,
    answered from the kit's memory, not applied again) only count up `duplicates`."""

    __tablename__ = "commands"
    __table_args__ = (Index("commands_by_kit_command", "kit_id", "command_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    session_id: Mapped[int | None] = mapped_column(
        ForeignKey("sessions.id"), nullable=True, index=True
    )
    kit_id: Mapped[str] = mapped_column(String(64), index=True)
    requester: Mapped[str] = mapped_column(String(128))
    command_id: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(10))
    value: Mapped[Any] = mapped_column(JSON, nullable=True)
    reason: Mapped[str | None] = mapped_column(String(40), nullable=True)
    ts: Mapped[float] = mapped_column(Float, index=True)
    duplicates: Mapped[int] = mapped_column(Integer, default=0, server_default="0")


class TelemetryRow(Base):
    __tablename__ = "telemetry"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kit_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(Integer)
    ts: Mapped[float] = mapped_column(Float)
    values: Mapped[dict[str, Any]] = mapped_column(JSON)

    __table_args__ = (Index("telemetry_by_kit_time", "kit_id", "ts"),)


class CameraFrameRow(Base):
    """A kit's picture at a reduced rate (lab_service/history.py records them)."""

    __tablename__ = "camera_frames"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kit_id: Mapped[str] = mapped_column(String(64))
    ts: Mapped[float] = mapped_column(Float)  # the kit's clock, epoch seconds
    seq: Mapped[int] = mapped_column(Integer)  # the telemetry sample the frame follows
    stream: Mapped[str] = mapped_column(String(16))
    jpeg: Mapped[bytes] = mapped_column(LargeBinary)

    __table_args__ = (Index("camera_frames_by_kit_time", "kit_id", "ts"),)


class JobRow(Base):
    """An experiment job: a student's controller run on a kit as a session held by the job
    (lab_service/jobs.py). Its queue entry and session are ordinary ones of the tables above."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner: Mapped[str] = mapped_column(String(128), index=True)
    institution: Mapped[str] = mapped_column(String(64))
    courses: Mapped[list[str]] = mapped_column(JSON, default=list)  # the owner's, at submission
    course: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    assignment: Mapped[str | None] = mapped_column(String(128), nullable=True)
    kit_id: Mapped[str | None] = mapped_column(String(64), nullable=True)  # target or assigned
    model: Mapped[str | None] = mapped_column(String(64), nullable=True)
    duration_s: Mapped[float] = mapped_column(Float)
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    source: Mapped[str] = mapped_column(Text)
    entry: Mapped[str] = mapped_column(String(128))
    state: Mapped[str] = mapped_column(String(12), index=True)
    outcome: Mapped[str | None] = mapped_column(String(20), nullable=True)
    detail: Mapped[str | None] = mapped_column(String(400), nullable=True)
    score: Mapped[float | None] = mapped_column(Float, nullable=True)
    twin_score: Mapped[float | None] = mapped_column(Float, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    ended_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    queue_entry_id: Mapped[int | None] = mapped_column(
        ForeignKey("queue_entries.id"), nullable=True
    )
    session_id: Mapped[int | None] = mapped_column(ForeignKey("sessions.id"), nullable=True)
    claimed_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    runner: Mapped[str | None] = mapped_column(String(128), nullable=True)


class EventRow(Base):
    """What lab admins should see: needs-attention, rejected requests, errors."""

    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    ts: Mapped[float] = mapped_column(Float, index=True)
    kind: Mapped[str] = mapped_column(String(40))
    kit_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    user: Mapped[str | None] = mapped_column(String(128), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")


def sessions_of(name: str) -> ColumnElement[bool]:
    """Sessions a person answers for: held by them, or by one of their experiment jobs."""
    jobs = select(JobRow.session_id).where(JobRow.owner == name, JobRow.session_id.is_not(None))
    return or_(SessionRow.user == name, SessionRow.id.in_(jobs))


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")  # readers do not block the writer
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=5000")
    cursor.close()


class SharingStore:
    """The database: engine, schema and transactions."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = create_engine(url, future=True)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_pragmas)
        # The schema is the newest Alembic revision (lab_service/migrations), also for a
        # database made by create_all before the migrations.
        upgrade_to_head(self.engine, "lab_service", "kits", _add_duplicates_column)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[Session]:
        """One atomic unit of work: committed on success, rolled back on any error."""
        with self._sessions() as db, db.begin():
            yield db

    def close(self) -> None:
        self.engine.dispose()


def _add_duplicates_column(db: Connection) -> None:
    """Databases made before commands counted their duplicates (and before the migrations) get
    the column and its index, which the first revision has."""
    columns = {c["name"] for c in inspect(db).get_columns("commands")}
    if "duplicates" in columns:
        return
    db.execute(text("ALTER TABLE commands ADD COLUMN duplicates INTEGER NOT NULL DEFAULT 0"))
    db.execute(
        text("CREATE INDEX IF NOT EXISTS commands_by_kit_command ON commands (kit_id, command_id)")
    )


def sqlite_url(path: str) -> str:
    return f"sqlite:///{path}"
