"""Replay of a kit's recorded time range: telemetry, the commands sent (who, what, applied or
rejected) and the index of recorded camera frames, read from the history (never the live kit).

Who may replay what (checked here, for every request, from the store):
- lab admins: any range of any kit;
- everyone: the ranges of their own sessions on the kit (grant until released), and the booked
  slots of their courses (as students or instructors) on the kit;
- instructors also: every session on the kit held for a course they teach.

A requested range is cut to those windows: only rows inside one are answered, and `start`/`end`
of the answer are the part of the request that is covered (so a shared link that asks for more
than the viewer may see shows the viewer's part). A range that meets none of them is a 403.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from hardware_kits import protocol as P
from lab_service import history
from lab_service.service import Forbidden, NotFound, SharingError, User
from lab_service.store import (
    BookingRow,
    CameraFrameRow,
    CommandRow,
    KitRow,
    QueueEntryRow,
    SessionRow,
    SharingStore,
    sessions_of,
)
from site_config.platform_accounts import CONTROL_PREFIX, SERVICE_ACCOUNT

MAX_REPLAY_S = 3 * 3600.0  # longest range of one request: 108,000 rows at 10 Hz
MAX_ROWS = 200_000
FRAME_MATCH_S = 0.0005  # a frame's URL carries its ts; floats round-trip within this
FRAMES = CameraFrameRow.__table__  # kept by the history recorder (lab_service/history.py)

Window = tuple[float, float]


def replay_windows(store: SharingStore, user: User, kit_id: str, now: float) -> list[Window] | None:
    """The time windows of `kit_id` that `user` may replay, sorted; None: everything."""
    if user.lab_admin:
        return None
    courses = user.courses | user.instructor_of
    windows: list[Window] = []
    with store.transaction() as db:
        sessions = (
            select(SessionRow, QueueEntryRow.courses, BookingRow.course)
            .outerjoin(QueueEntryRow, QueueEntryRow.id == SessionRow.queue_entry_id)
            .outerjoin(BookingRow, BookingRow.id == SessionRow.booking_id)
            .where(SessionRow.kit_id == kit_id)
        )
        own = set(
            db.scalars(
                select(SessionRow.id).where(SessionRow.kit_id == kit_id, sessions_of(user.name))
            )
        )
        for session, entry_courses, booked in db.execute(sessions):
            # Course membership is a JSON list on the entry: filtered here, as service.sessions
            # does, the same on SQLite and PostgreSQL.
            taught = booked in user.instructor_of or bool(
                user.instructor_of & set(entry_courses or ())
            )
            if session.id in own or taught:
                windows.append((session.granted_at, _session_end(session, now)))
        if courses:
            slots = select(BookingRow.starts_at, BookingRow.ends_at).where(
                BookingRow.kit_id == kit_id,
                ~BookingRow.cancelled,
                BookingRow.course.in_(courses),
            )
            windows.extend((float(a), float(b)) for a, b in db.execute(slots))
    return _merged(windows)


def _session_end(session: SessionRow, now: float) -> float:
    """Until the session's end was settled (released; rights revoked), else until now."""
    ends = [t for t in (session.released_at, session.ending_at) if t is not None]
    return max(ends) if ends else now


def _merged(windows: Sequence[Window]) -> list[Window]:
    out: list[Window] = []
    for start, end in sorted(windows):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def covered(windows: list[Window] | None, start: float, end: float) -> list[Window]:
    """The parts of [start, end) inside `windows` (None: all of it)."""
    if windows is None:
        return [(start, end)]
    return [(max(a, start), min(b, end)) for a, b in windows if a < end and b > start]


def _inside(ts: float, parts: list[Window]) -> bool:
    return any(a <= ts < b for a, b in parts)


def check_range(start: float, end: float) -> None:
    if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
        raise SharingError("replay-range", start=start, end=end)
    if end - start > MAX_REPLAY_S:
        raise SharingError("replay-too-long", hours=round(MAX_REPLAY_S / 3600))


def replay(
    store: SharingStore,
    user: User,
    kit_id: str,
    start: float,
    end: float,
    now: float,
    descriptor: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The timeline of [start, end) of a kit as `user` may see it (see the module's rules)."""
    check_range(start, end)
    _require_kit(store, kit_id)
    parts = covered(replay_windows(store, user, kit_id, now), start, end)
    if not parts:
        raise Forbidden("replay-forbidden", kit=kit_id)
    lo, hi = parts[0][0], parts[-1][1]
    rows = history.history(store, kit_id, lo, hi, limit=MAX_ROWS, descriptor=descriptor)
    if len(parts) > 1:  # another person's time between two of the user's windows stays out
        rows = [r for r in rows if _inside(r["ts"], parts)]
    return {
        "kit": kit_id,
        "start": lo,
        "end": hi,
        "telemetry": rows,
        "commands": [c for c in commands(store, kit_id, lo, hi) if _inside(c["ts"], parts)],
        "frames": [
            {"ts": ts, "seq": seq, "url": frame_path(kit_id, ts)}
            for ts, seq in frame_index(store, kit_id, lo, hi)
            if _inside(ts, parts)
        ],
    }


def _require_kit(store: SharingStore, kit_id: str) -> None:
    with store.transaction() as db:
        if db.get(KitRow, kit_id) is None:
            raise NotFound("no-kit", kit=kit_id)


def commands(store: SharingStore, kit_id: str, start: float, end: float) -> list[dict[str, Any]]:
    """Acknowledged commands of a kit in [start, end): who sent it, what, and the outcome."""
    query = (
        select(CommandRow, SessionRow.user)
        .outerjoin(SessionRow, SessionRow.id == CommandRow.session_id)
        .where(CommandRow.kit_id == kit_id, CommandRow.ts >= start, CommandRow.ts < end)
        .order_by(CommandRow.ts, CommandRow.id)
    )
    with store.transaction() as db:
        return [
            {
                "ts": c.ts,
                "who": who(c.requester, holder),
                "what": c.target,
                "value": c.value,
                "outcome": "applied" if c.status == "applied" else "rejected",
                "reason": c.reason,
            }
            for c, holder in db.execute(query)
        ]


def who(requester: str, holder: str | None) -> str:
    """A person's name for a command's MQTT requester; the service's own: `lab-service`."""
    if requester == SERVICE_ACCOUNT:
        return SERVICE_ACCOUNT
    if holder is not None and requester == CONTROL_PREFIX + holder:
        return holder
    return requester.removeprefix(CONTROL_PREFIX)


# ---------------------------------------------------------------- recorded frames


def frame_path(kit_id: str, ts: float) -> str:
    return f"/api/kits/{kit_id}/frames/{ts!r}"


def frame_index(store: SharingStore, kit_id: str, start: float, end: float) -> list[Window]:
    """(ts, seq) of the kit's recorded full-size frames in [start, end), oldest first (not
    their JPEGs: an hour's index is a few kilobytes, its pictures megabytes)."""
    table = FRAMES
    query = (
        select(table.c.ts, table.c.seq)
        .where(table.c.kit_id == kit_id, table.c.ts >= start, table.c.ts < end)
        .where(table.c.stream == P.STREAM_FULL)
        .order_by(table.c.ts, table.c.id)
    )
    with store.transaction() as db:
        return [(float(ts), seq) for ts, seq in db.execute(query)]


def recorded_frames(
    store: SharingStore, user: User, kit_id: str, start: float, end: float, now: float, limit: int
) -> list[history.RecordedFrame]:
    """The kit's recorded frames in [start, end) that `user` may replay, oldest first, at most
    `limit`. A camera may show people in the lab: recorded pictures follow the replay rights,
    not the live view's (everyone watches the kit now, not anyone's past)."""
    windows = replay_windows(store, user, kit_id, now)
    if windows == []:
        raise Forbidden("replay-forbidden", kit=kit_id)
    rows: list[history.RecordedFrame] = []
    parts = covered(windows, start, end)  # none: past the last window, an empty page
    for lo, hi in parts:  # page by page within each window: pages never stop at a gap
        rows += history.frames(store, kit_id, lo, hi, limit=limit - len(rows))
        if len(rows) >= limit:
            break
    return rows


def frame(store: SharingStore, user: User, kit_id: str, ts: float, now: float) -> bytes:
    """One recorded JPEG, if `user` may replay its time."""
    if not math.isfinite(ts):
        raise SharingError("frame-ts", value=str(ts)[:40])
    _require_kit(store, kit_id)
    if not covered(replay_windows(store, user, kit_id, now), ts, ts + FRAME_MATCH_S):
        raise Forbidden("replay-forbidden", kit=kit_id)
    table = FRAMES
    query = (
        select(table.c.jpeg)
        .where(
            table.c.kit_id == kit_id,
            table.c.ts >= ts - FRAME_MATCH_S,
            table.c.ts <= ts + FRAME_MATCH_S,
        )
        .order_by(table.c.id)
        .limit(1)
    )
    with store.transaction() as db:
        jpeg = db.scalar(query)
    if jpeg is None:
        raise NotFound("no-frame", kit=kit_id, ts=ts)
    return bytes(jpeg)
