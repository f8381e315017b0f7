"""What the LTI tool remembers, in one SQLite file of the LTI state folder.

- login states and nonces: each launch's state is used once; each platform nonce once;
- LTI users (hub name ↔ platform and LMS user id) and their enrolments, per LMS context, so a
  launch from one course keeps the courses of earlier launches;
- LMS contexts with their Assignment and Grade Services endpoints, for grade passback;
- line items and every score sent (or not) to an LMS: re-pushing sends only what is missing.

The hub and `smartlab grades push` share the file; each call opens its own connection.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DB_FILE = "lti.sqlite"
STATE_LIFETIME = 600.0  # seconds between login initiation and launch
KEEP_USED = 3600.0  # how long used states and nonces are remembered (≥ any id_token lifetime)

SCHEMA = """
CREATE TABLE IF NOT EXISTS login_states (
    state TEXT PRIMARY KEY, nonce TEXT NOT NULL, issuer TEXT NOT NULL, client_id TEXT NOT NULL,
    target_link_uri TEXT NOT NULL, expires REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS used_nonces (
    issuer TEXT NOT NULL, nonce TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (issuer, nonce));
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY, platform TEXT NOT NULL, sub TEXT NOT NULL, name TEXT,
    email TEXT, updated REAL NOT NULL, UNIQUE (platform, sub));
CREATE TABLE IF NOT EXISTS enrolments (
    username TEXT NOT NULL, platform TEXT NOT NULL, context_id TEXT NOT NULL,
    course TEXT NOT NULL, role TEXT NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (username, platform, context_id, role));
CREATE TABLE IF NOT EXISTS contexts (
    platform TEXT NOT NULL, context_id TEXT NOT NULL, course TEXT NOT NULL,
    client_id TEXT NOT NULL, title TEXT, lineitems TEXT, scopes TEXT NOT NULL DEFAULT '[]',
    updated REAL NOT NULL, PRIMARY KEY (platform, context_id));
CREATE TABLE IF NOT EXISTS lineitems (
    platform TEXT NOT NULL, context_id TEXT NOT NULL, assignment TEXT NOT NULL,
    url TEXT NOT NULL, PRIMARY KEY (platform, context_id, assignment));
CREATE TABLE IF NOT EXISTS scores (
    platform TEXT NOT NULL, context_id TEXT NOT NULL, assignment TEXT NOT NULL,
    username TEXT NOT NULL, score REAL NOT NULL, max_score REAL NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL, last_error TEXT, updated REAL NOT NULL,
    PRIMARY KEY (platform, context_id, assignment, username));
"""


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
    def __init__(self, folder: Path) -> None:
        # Launch states, nonces, people's LMS links and scores: the hub's alone.
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path = folder / DB_FILE
        flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
        os.close(os.open(self.path, flags, 0o600))  # SQLite's journal files take its mode
        with self._db() as db:
            db.executescript(SCHEMA)

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        with closing(sqlite3.connect(self.path, timeout=15.0)) as db, db:
            db.row_factory = sqlite3.Row
            yield db

    # ---------------------------------------------------------------- login states, nonces

    def add_state(self, state: str, login: LoginState) -> None:
        now = time.time()
        with self._db() as db:
            db.execute("DELETE FROM login_states WHERE expires < ?", (now - KEEP_USED,))
            db.execute("DELETE FROM used_nonces WHERE expires < ?", (now,))
            db.execute(
                "INSERT INTO login_states VALUES (?, ?, ?, ?, ?, ?, 0)",
                (
                    state,
                    login.nonce,
                    login.issuer,
                    login.client_id,
                    login.target_link_uri,
                    now + STATE_LIFETIME,
                ),
            )

    def use_state(self, state: str) -> LoginState:
        """The login state of a launch, marked used; StateError if it cannot be used."""
        with self._db() as db:
            row = db.execute("SELECT * FROM login_states WHERE state = ?", (state,)).fetchone()
            if row is None:
                raise StateError("unknown login state: start again from the LMS")
            taken = db.execute(
                "UPDATE login_states SET used = 1 WHERE state = ? AND used = 0", (state,)
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
            try:
                db.execute(
                    "INSERT INTO used_nonces VALUES (?, ?, ?)",
                    (issuer, nonce, max(expires, time.time() + KEEP_USED)),
                )
            except sqlite3.IntegrityError:
                return False
        return True

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
        with self._db() as db:
            db.execute(
                "INSERT INTO users VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (username) DO "
                "UPDATE SET name = excluded.name, email = excluded.email, "
                "updated = excluded.updated",
                (username, platform, sub, name, email, now),
            )
            db.execute(
                "DELETE FROM enrolments WHERE username = ? AND platform = ? AND context_id = ?",
                (username, platform, context.context_id),
            )
            db.executemany(
                "INSERT INTO enrolments VALUES (?, ?, ?, ?, ?, ?)",
                [
                    (username, platform, context.context_id, context.course, role, now)
                    for role in sorted(roles)
                ],
            )
            # A launch without the AGS claim keeps the endpoints learned from earlier ones.
            db.execute(
                "INSERT INTO contexts VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (platform, context_id) DO UPDATE SET course = excluded.course, "
                "client_id = excluded.client_id, title = excluded.title, "
                "lineitems = coalesce(excluded.lineitems, lineitems), "
                "scopes = CASE WHEN excluded.lineitems IS NULL THEN scopes "
                "ELSE excluded.scopes END, updated = excluded.updated",
                (
                    platform,
                    context.context_id,
                    context.course,
                    context.client_id,
                    context.title,
                    context.lineitems,
                    json.dumps(context.scopes),
                    now,
                ),
            )

    def enrolments(
        self,
        username: str | None = None,
        course: str | None = None,
    ) -> list[Enrolment]:
        query, args = "SELECT * FROM enrolments WHERE 1", []
        if username is not None:
            query, args = query + " AND username = ?", [*args, username]
        if course is not None:
            query, args = query + " AND course = ?", [*args, course]
        with self._db() as db:
            rows = db.execute(query + " ORDER BY username, platform, context_id, role", args)
            return [
                Enrolment(r["username"], r["platform"], r["context_id"], r["course"], r["role"])
                for r in rows
            ]

    def user(self, username: str) -> dict[str, Any] | None:
        with self._db() as db:
            row = db.execute("SELECT * FROM users WHERE username = ?", (username,)).fetchone()
            return dict(row) if row else None

    def contexts(self, course: str) -> list[Context]:
        with self._db() as db:
            rows = db.execute(
                "SELECT * FROM contexts WHERE course = ? ORDER BY platform, context_id", (course,)
            )
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
            row = db.execute(
                "SELECT url FROM lineitems WHERE platform = ? AND context_id = ? "
                "AND assignment = ?",
                (platform, context_id, assignment),
            ).fetchone()
            return row["url"] if row else None

    def set_lineitem(self, platform: str, context_id: str, assignment: str, url: str) -> None:
        with self._db() as db:
            db.execute(
                "INSERT OR REPLACE INTO lineitems VALUES (?, ?, ?, ?)",
                (platform, context_id, assignment, url),
            )

    def forget_lineitem(self, platform: str, context_id: str, assignment: str) -> None:
        with self._db() as db:
            db.execute(
                "DELETE FROM lineitems WHERE platform = ? AND context_id = ? AND assignment = ?",
                (platform, context_id, assignment),
            )

    def sent_score(
        self, platform: str, context_id: str, assignment: str, username: str
    ) -> SentScore | None:
        with self._db() as db:
            row = db.execute(
                "SELECT * FROM scores WHERE platform = ? AND context_id = ? AND "
                "assignment = ? AND username = ?",
                (platform, context_id, assignment, username),
            ).fetchone()
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
                "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    platform,
                    context_id,
                    assignment,
                    username,
                    score,
                    max_score,
                    status,
                    attempts,
                    error,
                    time.time(),
                ),
            )

    def scores(self, assignment: str | None = None) -> list[dict[str, Any]]:
        query, args = "SELECT * FROM scores", []
        if assignment is not None:
            query, args = query + " WHERE assignment = ?", [assignment]
        with self._db() as db:
            rows = db.execute(query + " ORDER BY platform, context_id, assignment, username", args)
            return [dict(r) for r in rows]
