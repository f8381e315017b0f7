"""SQLite gradebooks under several grading processes at once.

nbgrader's gradebook is SQLite unless configured otherwise. In its default rollback-journal
mode every reader blocks the writers, and SQLite's busy handler makes a blocked process sleep
(up to 100 ms a try), so parallel graders spend their time waiting. In WAL mode readers never
block the writer and a commit appends to the log; `synchronous=NORMAL` (safe in WAL mode: a
power cut can lose the last commits, never corrupt the file) skips an fsync per commit.

`parallel_mode(db_url)` switches the file to WAL for a run and back to its previous mode after
(which also folds the log back into the file), so the formgrader finds the gradebook as it was.
`tune_connections()` sets the per-connection pragmas on every SQLAlchemy engine this process
creates, nbgrader's included.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import time
from collections.abc import Iterator

from sqlalchemy import event
from sqlalchemy.engine import Engine

BUSY_TIMEOUT_MS = 60_000
log = logging.getLogger("smartlab.grade")
_tuned = False


def sqlite_path(db_url: str) -> str | None:
    prefix = "sqlite:///"
    if db_url.startswith(prefix) and db_url[len(prefix) :] not in ("", ":memory:"):
        return db_url[len(prefix) :]
    return None


def _pragmas(dbapi_connection: object, _record: object) -> None:
    if isinstance(dbapi_connection, sqlite3.Connection):
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


def tune_connections() -> None:
    global _tuned
    if not _tuned:
        event.listen(Engine, "connect", _pragmas)
        _tuned = True


@contextlib.contextmanager
def parallel_mode(db_url: str) -> Iterator[None]:
    path = sqlite_path(db_url)
    if path is None:
        yield
        return
    with contextlib.closing(sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000)) as db:
        previous = db.execute("PRAGMA journal_mode").fetchone()[0]
        if previous.lower() != "wal":
            db.execute("PRAGMA journal_mode=WAL")
    try:
        yield
    finally:
        if previous.lower() != "wal":
            _restore(path, previous)


def _restore(path: str, mode: str) -> None:
    """Back to `mode`; needs the file to itself, so give up (WAL is harmless) if someone else,
    a formgrader, has it open."""
    deadline = time.monotonic() + 10
    while True:
        try:
            with contextlib.closing(sqlite3.connect(path, timeout=1)) as db:
                db.execute(f"PRAGMA journal_mode={mode}")
            return
        except sqlite3.OperationalError as err:
            if time.monotonic() > deadline:
                log.warning("gradebook %s stays in WAL mode (%s)", path, err)
                return
            time.sleep(0.2)
