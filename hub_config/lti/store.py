"""What the LTI tool remembers, through SQLAlchemy: a SQLite file of the LTI state folder by
default, PostgreSQL by URL (`LtiAuthenticator.db_url`).

- login states and nonces: each launch's state is used once; each platform nonce once;
- LTI users (hub name ↔ platform and LMS user id) and their enrolments, per LMS context, so a
  launch from one course keeps the courses of earlier launches;
- LMS contexts with their Assignment and Grade Services endpoints, for grade passback;
- line items and every score sent (or not) to an LMS: re-pushing sends only what is missing.

The hub and `smartlab grades push` share the database. The schema is the newest Alembic
revision of hub_config/lti/migrations, also for a file made before the migrations.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import (
    REAL,
    Column,
    Connection,
    Float,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    UniqueConstraint,
    create_engine,
    event,
    text,
)

from site_config.migrations import upgrade_to_head

DB_FILE = "lti.sqlite"
STATE_LIFETIME = 600.0  # seconds between login initiation and launch
KEEP_USED = 3600.0  # how long used states and nonces are remembered (≥ any id_token lifetime)

# SQLite files made by the plain-SQL store say REAL; a double on PostgreSQL (time.time()).
REAL_NUMBER = Float().with_variant(REAL(), "sqlite")

# The tables as the plain-SQL store made them (the first migration), so old files stay valid.
METADATA = MetaData()
Table(
    "login_states",
    METADATA,
    Column("state", Text, primary_key=True),
    Column("nonce", Text, nullable=False),
    Column("issuer", Text, nullable=False),
    Column("client_id", Text, nullable=False),
    Column("target_link_uri", Text, nullable=False),
    Column("expires", REAL_NUMBER, nullable=False),
    Column("used", Integer, nullable=False, server_default="0"),
)
Table(
    "used_nonces",
    METADATA,
    Column("issuer", Text, nullable=False),
    Column("nonce", Text, nullable=False),
    Column("expires", REAL_NUMBER, nullable=False),
    PrimaryKeyConstraint("issuer", "nonce"),
)
Table(
    "users",
    METADATA,
    Column("username", Text, primary_key=True),
    Column("platform", Text, nullable=False),
    Column("sub", Text, nullable=False),
    Column("name", Text),
    Column("email", Text),
    Column("updated", REAL_NUMBER, nullable=False),
    UniqueConstraint("platform", "sub"),
)
Table(
    "enrolments",
    METADATA,
    Column("username", Text, nullable=False),
    Column("platform", Text, nullable=False),
    Column("context_id", Text, nullable=False),
    Column("course", Text, nullable=False),
    Column("role", Text, nullable=False),
    Column("updated", REAL_NUMBER, nullable=False),
    PrimaryKeyConstraint("username", "platform", "context_id", "role"),
)
Table(
    "contexts",
    METADATA,
    Column("platform", Text, nullable=False),
    Column("context_id", Text, nullable=False),
    Column("course", Text, nullable=False),
    Column("client_id", Text, nullable=False),
    Column("title", Text),
    Column("lineitems", Text),
    Column("scopes", Text, nullable=False, server_default="[]"),
    Column("updated", REAL_NUMBER, nullable=False),
    PrimaryKeyConstraint("platform", "context_id"),
)
Table(
    "lineitems",
    METADATA,
    Column("platform", Text, nullable=False),
    Column("context_id", Text, nullable=False),
    Column("assignment", Text, nullable=False),
    Column("url", Text, nullable=False),
    PrimaryKeyConstraint("platform", "context_id", "assignment"),
)
Table(
    "scores",
    METADATA,
    Column("platform", Text, nullable=False),
    Column("context_id", Text, nullable=False),
    Column("assignment", Text, nullable=False),
    Column("username", Text, nullable=False),
    Column("score", REAL_NUMBER, nullable=False),
    Column("max_score", REAL_NUMBER, nullable=False),
    Column("status", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("last_error", Text),
    Column("updated", REAL_NUMBER, nullable=False),
    PrimaryKeyConstraint("platform", "context_id", "assignment", "username"),
)


def _sqlite_waits(dbapi_connection: Any, _record: Any) -> None:
    dbapi_connection.execute("PRAGMA busy_timeout=15000")  # the hub and a push share the file


class StateError(Exception):
    """A launch's login state is unknown, expired or already used."""


@dataclass(frozen=True)
class LoginState:
    nonce: str
    issuer: str
    client_id: str
    target_link_uri: str


@dataclass(frozen=True)
class Enrolment:
    username: str
    platform: str
    context_id: str
    course: str
    role: str


@dataclass(frozen=True)
class Context:
    platform: str
    context_id: str
    course: str
    client_id: str
    title: str | None
    lineitems: str | None
    scopes: list[str]


@dataclass(frozen=True)
class SentScore:
    score: float
    max_score: float
    status: str  # "sent" or "failed"
    attempts: int
    last_error: str | None


class LtiStore:
    def __init__(self, folder: Path, url: str = "") -> None:
        """`url`: a SQLAlchemy URL; empty: lti.sqlite in `folder`."""
        # Launch states, nonces, people's LMS links and scores: the hub's alone.
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if not url:
            self.path = folder / DB_FILE
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            os.close(os.open(self.path, flags, 0o600))  # SQLite's journal files take its mode
            url = f"sqlite:///{self.path}"
        self.url = url
        self.engine = create_engine(url)
        if self.engine.dialect.name == "sqlite":
            event.listen(self.engine, "connect", _sqlite_waits)
        upgrade_to_head(self.engine, "hub_config.lti", "login_states")

    @contextmanager
    def _db(self) -> Iterator[Connection]:
        """One transaction: committed on success, rolled back on any error."""
        with self.engine.begin() as db:
            yield db

    def close(self) -> None:
        self.engine.dispose()

    # ---------------------------------------------------------------- login states, nonces

    def add_state(self, state: str, login: LoginState) -> None:
        now = time.time()
        with self._db() as db:
            db.execute(text("DELETE FROM login_states WHERE expires < :t"), {"t": now - KEEP_USED})
            db.execute(text("DELETE FROM used_nonces WHERE expires < :t"), {"t": now})
            db.execute(
                text(
                    "INSERT INTO login_states VALUES (:state, :nonce, :issuer, :client_id, "
                    ":target_link_uri, :expires, 0)"
                ),
                {
                    "state": state,
                    "nonce": login.nonce,
                    "issuer": login.issuer,
                    "client_id": login.client_id,
                    "target_link_uri": login.target_link_uri,
                    "expires": now + STATE_LIFETIME,
                },
            )

    def use_state(self, state: str) -> LoginState:
        """The login state of a launch, marked used; StateError if it cannot be used."""
        with self._db() as db:
            row = (
                db.execute(text("SELECT * FROM login_states WHERE state = :s"), {"s": state})
                .mappings()
                .first()
            )
            if row is None:
                raise StateError("unknown login state: start again from the LMS")
            taken = db.execute(
                text("UPDATE login_states SET used = 1 WHERE state = :s AND used = 0"),
                {"s": state},
            ).rowcount
        if not taken:
            raise StateError("replayed launch: this login state was already used")
        if row["expires"] < time.time():
            raise StateError(
                "expired login state: the launch took longer than "
                f"{STATE_LIFETIME:.0f} s; start again from the LMS"
            )
        return LoginState(row["nonce"], row["issuer"], row["client_id"], row["target_link_uri"])

    def use_nonce(self, issuer: str, nonce: str, expires: float) -> bool:
        """Record a platform nonce; False if it was seen before (a replayed id_token)."""
        with self._db() as db:
            added = db.execute(
                text(
                    "INSERT INTO used_nonces VALUES (:issuer, :nonce, :expires) "
                    "ON CONFLICT (issuer, nonce) DO NOTHING"
                ),
                {
                    "issuer": issuer,
                    "nonce": nonce,
                    "expires": max(expires, time.time() + KEEP_USED),
                },
            ).rowcount
        return added == 1

    # ---------------------------------------------------------------- users, enrolments

    def record_launch(
        self,
        username: str,
        platform: str,
        sub: str,
        name: str | None,
        email: str | None,
        context: Context,
        roles: set[str],
    ) -> None:
        """Remember the user, the context and the user's roles in it (replacing older ones)."""
        now = time.time()
        where = {"username": username, "platform": platform, "context_id": context.context_id}
        with self._db() as db:
            db.execute(
                text(
                    "INSERT INTO users VALUES (:username, :platform, :sub, :name, :email, :now) "
                    "ON CONFLICT (username) DO UPDATE SET name = excluded.name, "
                    "email = excluded.email, updated = excluded.updated"
                ),
                {**where, "sub": sub, "name": name, "email": email, "now": now},
            )
            db.execute(
                text(
                    "DELETE FROM enrolments WHERE username = :username AND platform = :platform "
                    "AND context_id = :context_id"
                ),
                where,
            )
            if roles:
                db.execute(
                    text(
                        "INSERT INTO enrolments VALUES (:username, :platform, :context_id, "
                        ":course, :role, :now)"
                    ),
                    [
                        {**where, "course": context.course, "role": role, "now": now}
                        for role in sorted(roles)
                    ],
                )
            # A launch without the AGS claim keeps the endpoints learned from earlier ones.
            db.execute(
                text(
                    "INSERT INTO contexts VALUES (:platform, :context_id, :course, :client_id, "
                    ":title, :lineitems, :scopes, :now) "
                    "ON CONFLICT (platform, context_id) DO UPDATE SET course = excluded.course, "
                    "client_id = excluded.client_id, title = excluded.title, "
                    "lineitems = coalesce(excluded.lineitems, contexts.lineitems), "
                    "scopes = CASE WHEN excluded.lineitems IS NULL THEN contexts.scopes "
                    "ELSE excluded.scopes END, updated = excluded.updated"
                ),
                {
                    "platform": platform,
                    "context_id": context.context_id,
                    "course": context.course,
                    "client_id": context.client_id,
                    "title": context.title,
                    "lineitems": context.lineitems,
                    "scopes": json.dumps(context.scopes),
                    "now": now,
                },
            )

    def enrolments(
        self,
        username: str | None = None,
        course: str | None = None,
    ) -> list[Enrolment]:
        query, args = "SELECT * FROM enrolments WHERE 1 = 1", {}
        if username is not None:
            query, args = query + " AND username = :username", {**args, "username": username}
        if course is not None:
            query, args = query + " AND course = :course", {**args, "course": course}
        with self._db() as db:
            rows = db.execute(
                text(query + " ORDER BY username, platform, context_id, role"), args
            ).mappings()
            return [
                Enrolment(r["username"], r["platform"], r["context_id"], r["course"], r["role"])
                for r in rows
            ]

    def user(self, username: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = (
                db.execute(text("SELECT * FROM users WHERE username = :u"), {"u": username})
                .mappings()
                .first()
            )
            return dict(row) if row else None

    def contexts(self, course: str) -> list[Context]:
        with self._db() as db:
            rows = db.execute(
                text("SELECT * FROM contexts WHERE course = :c ORDER BY platform, context_id"),
                {"c": course},
            ).mappings()
            return [
                Context(
                    r["platform"],
                    r["context_id"],
                    r["course"],
                    r["client_id"],
                    r["title"],
                    r["lineitems"],
                    json.loads(r["scopes"]),
                )
                for r in rows
            ]

    # ---------------------------------------------------------------- passback records

    def lineitem(self, platform: str, context_id: str, assignment: str) -> str | None:
        with self._db() as db:
            return db.execute(
                text(
                    "SELECT url FROM lineitems WHERE platform = :platform AND "
                    "context_id = :context_id AND assignment = :assignment"
                ),
                {"platform": platform, "context_id": context_id, "assignment": assignment},
            ).scalar()

    def set_lineitem(self, platform: str, context_id: str, assignment: str, url: str) -> None:
        with self._db() as db:
            db.execute(
                text(
                    "INSERT INTO lineitems VALUES (:platform, :context_id, :assignment, :url) "
                    "ON CONFLICT (platform, context_id, assignment) DO UPDATE SET "
                    "url = excluded.url"
                ),
                {
                    "platform": platform,
                    "context_id": context_id,
                    "assignment": assignment,
                    "url": url,
                },
            )

    def forget_lineitem(self, platform: str, context_id: str, assignment: str) -> None:
        with self._db() as db:
            db.execute(
                text(
                    "DELETE FROM lineitems WHERE platform = :platform AND "
                    "context_id = :context_id AND assignment = :assignment"
                ),
                {"platform": platform, "context_id": context_id, "assignment": assignment},
            )

    def sent_score(
        self, platform: str, context_id: str, assignment: str, username: str
    ) -> SentScore | None:
        with self._db() as db:
            row = (
                db.execute(
                    text(
                        "SELECT * FROM scores WHERE platform = :platform AND "
                        "context_id = :context_id AND assignment = :assignment AND "
                        "username = :username"
                    ),
                    {
                        "platform": platform,
                        "context_id": context_id,
                        "assignment": assignment,
                        "username": username,
                    },
                )
                .mappings()
                .first()
            )
        if row is None:
            return None
        return SentScore(
            row["score"], row["max_score"], row["status"], row["attempts"], row["last_error"]
        )

    def record_score(
        self,
        platform: str,
        context_id: str,
        assignment: str,
        username: str,
        score: float,
        max_score: float,
        status: str,
        attempts: int,
        error: str | None,
    ) -> None:
        with self._db() as db:
            db.execute(
                text(
                    "INSERT INTO scores VALUES (:platform, :context_id, :assignment, :username, "
                    ":score, :max_score, :status, :attempts, :error, :now) "
                    "ON CONFLICT (platform, context_id, assignment, username) DO UPDATE SET "
                    "score = excluded.score, max_score = excluded.max_score, "
                    "status = excluded.status, attempts = excluded.attempts, "
                    "last_error = excluded.last_error, updated = excluded.updated"
                ),
                {
                    "platform": platform,
                    "context_id": context_id,
                    "assignment": assignment,
                    "username": username,
                    "score": score,
                    "max_score": max_score,
                    "status": status,
                    "attempts": attempts,
                    "error": error,
                    "now": time.time(),
                },
            )

    def scores(self, assignment: str | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM scores", {}
        if assignment is not None:
            query, args = query + " WHERE assignment = :assignment", {"assignment": assignment}
        with self._db() as db:
            rows = db.execute(
                text(query + " ORDER BY platform, context_id, assignment, username"), args
            ).mappings()
            return [dict(r) for r in rows]
