"""Which lab service process decides: one at a time, chosen through the database.

On PostgreSQL two (or more) `smartlab lab serve` processes may share one database. Each holds a
dedicated connection and asks for a session-level advisory lock on it (`pg_try_advisory_lock`),
again every `retry_seconds` until it gets it. The lock lives exactly as long as that connection:
PostgreSQL drops it when the holder's process dies (`kill -9` included) or its connection is
cut, and the next standby takes it within a second.

The holder checks its connection every `check_seconds` from a thread of its own (independent
of the event loop that decides). If the check fails, the lock may already be another process's:
the holder fails closed — it ends its own process at once, in the middle of whatever it was
doing, rather than decide once more. The process's supervisor (systemd, Kubernetes) restarts it
and it comes back as a standby.

SQLite is one process's database: leadership is then that process's from the start.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import NullPool

log = logging.getLogger(__name__)

# One fixed 64-bit key: the lab service's database has one leader. Derived from a name so that
# it does not collide by chance with another application's small integer keys.
LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"smartlab lab service leader").digest()[:8], "big", signed=True
)
LOST_EXIT_CODE = 3
# A dead peer or a cut network is noticed by the kernel within seconds, not the default hours:
# libpq's keepalives and TCP user timeout on the lock connection (psycopg and psycopg2 alike).
LOCK_CONNECTION_ARGS = {
    "keepalives": 1,
    "keepalives_idle": 2,
    "keepalives_interval": 1,
    "keepalives_count": 2,
    "tcp_user_timeout": 3000,
    "connect_timeout": 3,
}


class Leadership:
    """The advisory lock of one process. `wait()` blocks until this process leads; `watch()`
    then ends the process as soon as the lock's connection fails."""

    def __init__(
        self,
        db_url: str,
        retry_seconds: float = 1.0,
        check_seconds: float = 0.25,
        on_lost: Callable[[str], None] | None = None,
    ) -> None:
        self.shared = not db_url.startswith("sqlite")
        self.retry_seconds = retry_seconds
        self.check_seconds = check_seconds
        self.on_lost = on_lost or fail_closed
        self.waited = False  # True once another process was seen leading
        self._engine: Engine | None = None
        self._connection: Connection | None = None
        self._stop = threading.Event()
        if self.shared:
            self._engine = create_engine(
                db_url, poolclass=NullPool, connect_args=LOCK_CONNECTION_ARGS
            )

    def try_acquire(self) -> bool:
        """One attempt: True if this process leads now (and keeps leading until it dies)."""
        if not self.shared:
            return True
        try:
            if self._connection is None:
                self._connection = self._engine.connect()  # type: ignore[union-attr]
            query = text("SELECT pg_try_advisory_lock(:key)")
            got = bool(self._connection.execute(query, {"key": LOCK_KEY}).scalar())
            self._connection.commit()  # no transaction left open beside the session's lock
        except Exception as err:  # the database is down or restarting: try again later
            log.warning("leadership: cannot ask the database: %s", " ".join(str(err).split()))
            self._drop()
            return False
        return got

    def wait(self, say: Callable[[str], None] = print) -> None:
        """Block until this process leads, asking every `retry_seconds`."""
        while not self.try_acquire():
            if not self.waited:
                say("standby: another lab service process leads; waiting to take over")
                self.waited = True
            time.sleep(self.retry_seconds)

    def takeover_margin(self) -> float:
        """How long a new leader lets pass before its first decision: a former leader whose
        connection was cut (not killed) needs up to one check to notice and stop."""
        return 2 * self.check_seconds if self.waited else 0.0

    def watch(self) -> None:
        """Check the lock's connection every `check_seconds` from a daemon thread."""
        if self.shared:
            threading.Thread(target=self._watch, name="leadership", daemon=True).start()

    def _watch(self) -> None:
        while not self._stop.wait(self.check_seconds):
            try:
                self._connection.execute(text("SELECT 1")).scalar()  # type: ignore[union-attr]
                self._connection.commit()  # type: ignore[union-attr]
            except Exception as err:
                if not self._stop.is_set():
                    self.on_lost(" ".join(str(err).split()) or type(err).__name__)
                return

    def close(self) -> None:
        """Give leadership up (a clean stop): the lock goes with its connection."""
        self._stop.set()
        self._drop()
        if self._engine is not None:
            self._engine.dispose()

    def _drop(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):  # already broken: nothing more to close
                connection.close()


def fail_closed(reason: str) -> None:
    """The lock's connection failed: another process may lead now. Stop deciding this instant —
    end the process (its HTTP front ends die with it) without running any more of its code."""
    sys.stderr.write(f"lab service: lost leadership ({reason}); exiting\n")
    sys.stderr.flush()
    os._exit(LOST_EXIT_CODE)
