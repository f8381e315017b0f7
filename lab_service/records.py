"""Read-only records of kit use: session and command exports (CSV) and utilisation figures.

Queries only; the rules that create these rows live in `service.LabService`. A command is one
row however often it was sent: `duplicates` counts the copies the kit answered without applying.
Lab admins see every row; everyone else sees their own sessions and the commands recorded under
them.
Utilisation is aggregate (per kit, per institution) and names nobody, so everyone may read it.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
from typing import Any

from sqlalchemy import Select, func, select

from lab_service.rights import is_job_account
from lab_service.service import User
from lab_service.store import CommandRow, SessionRow, SharingStore, sessions_of

SESSION_COLUMNS = (
    "id",
    "kit",
    "user",
    "institution",
    "state",
    "requested_at",
    "granted_at",
    "ends_at",
    "ending_at",
    "released_at",
    "end_reason",
    "queue_wait_s",
    "booking_id",
    "job",  # the experiment job that held the session, if one did
)
COMMAND_COLUMNS = (
    "id",
    "session_id",
    "kit",
    "requester",
    "command_id",
    "target",
    "status",
    "value",
    "reason",
    "ts",
    "duplicates",
)


def iso(t: float | None) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds; empty for no time (CSV's null)."""
    if t is None:
        return ""
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="milliseconds")


def _visible_sessions(user: User) -> Select:
    query = select(SessionRow).order_by(SessionRow.id)
    return query if user.lab_admin else query.where(sessions_of(user.name))


def _csv(header: tuple[str, ...], rows: list[list[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def sessions_csv(store: SharingStore, user: User) -> str:
    with store.transaction() as db:
        rows = [
            [
                s.id,
                s.kit_id,
                s.user,
                s.institution,
                s.state,
                iso(s.requested_at),
                iso(s.granted_at),
                iso(s.ends_at),
                iso(s.ending_at),
                iso(s.released_at),
                s.end_reason or "",
                round(s.queue_wait_s, 3),
                "" if s.booking_id is None else s.booking_id,
                s.user.removeprefix("job-") if is_job_account(s.user) else "",
            ]
            for s in db.scalars(_visible_sessions(user))
        ]
    return _csv(SESSION_COLUMNS, rows)


def commands_csv(store: SharingStore, user: User) -> str:
    query = select(CommandRow).order_by(CommandRow.ts, CommandRow.id)
    if not user.lab_admin:
        # Commands recorded under the user's own sessions (the kit's holder at the time).
        query = query.where(
            CommandRow.session_id.in_(select(SessionRow.id).where(sessions_of(user.name)))
        )
    with store.transaction() as db:
        rows = [
            [
                c.id,
                "" if c.session_id is None else c.session_id,
                c.kit_id,
                c.requester,
                c.command_id,
                c.target,
                c.status,
                json.dumps(c.value),
                c.reason or "",
                iso(c.ts),
                c.duplicates or 0,
            ]
            for c in db.scalars(query)
        ]
    return _csv(COMMAND_COLUMNS, rows)


def usage(store: SharingStore, now: float) -> dict[str, Any]:
    """Per kit and per institution: seconds of sessions, number of sessions, mean queue wait.

    A session counts from its grant until its rights were revoked (`ending_at`), or until `now`
    while it still runs."""
    seconds = func.sum(func.coalesce(SessionRow.ending_at, now) - SessionRow.granted_at)
    waited = func.avg(SessionRow.granted_at - SessionRow.requested_at)
    count = func.count(SessionRow.id)

    def grouped(column: Any) -> list[dict[str, Any]]:
        with store.transaction() as db:
            result = db.execute(
                select(column, count, seconds, waited).group_by(column).order_by(column)
            ).all()
        return [
            {
                "name": name,
                "sessions": n,
                "session_seconds": round(total or 0.0, 3),
                "mean_queue_wait_s": round(wait or 0.0, 3),
            }
            for name, n, total, wait in result
        ]

    by_kit = [{"kit": row.pop("name"), **row} for row in grouped(SessionRow.kit_id)]
    by_institution = [
        {"institution": row.pop("name"), **row} for row in grouped(SessionRow.institution)
    ]
    return {"generated_at": now, "kits": by_kit, "institutions": by_institution}
