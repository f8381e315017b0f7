"""Who gets which kit next, and how long everyone waits: pure functions over snapshots.

Fairness is fair share, as batch schedulers do it (age plus recent usage): entries are served
oldest first, except that every walk-in session an institution had in the recent window counts as
if its entries had arrived one slot later than those of the least-served institution waiting.
With equal demand that is first come, first served, so every institution waits alike; a
university queueing many students gets its share and its surplus waits, so it cannot starve
another. Within an institution it is first come, first served. A booked slot reserves its kit for
the booking course's members; walk-in sessions of others end before the slot starts.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Waiting:
    id: int
    user: str
    institution: str
    kit_id: str | None
    model: str | None
    priority: int
    enqueued_at: float
    courses: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class KitSlot:
    kit_id: str
    model: str
    free_at: float  # now when free; when the holder's time is up otherwise


@dataclass(frozen=True)
class BookedSlot:
    kit_id: str
    course: str
    starts_at: float
    ends_at: float


@dataclass(frozen=True)
class Grant:
    entry: Waiting
    kit_id: str
    ends_at: float
    booking: BookedSlot | None


def wants(entry: Waiting, kit: KitSlot) -> bool:
    return entry.kit_id == kit.kit_id if entry.kit_id else entry.model == kit.model


def booking_at(kit_id: str, t: float, bookings: Iterable[BookedSlot]) -> BookedSlot | None:
    return next((b for b in bookings if b.kit_id == kit_id and b.starts_at <= t < b.ends_at), None)


def next_foreign_booking(
    entry: Waiting, kit_id: str, after: float, bookings: Iterable[BookedSlot]
) -> float | None:
    """Start of the next booked slot on the kit that this user is not a member of."""
    starts = [
        b.starts_at
        for b in bookings
        if b.kit_id == kit_id and b.starts_at > after and b.course not in entry.courses
    ]
    return min(starts, default=None)


def session_window(
    entry: Waiting,
    kit: KitSlot,
    now: float,
    slot: float,
    min_walk_in: float,
    bookings: list[BookedSlot],
) -> tuple[float, BookedSlot | None] | None:
    """When a session of `entry` on `kit` starting now would end, or None if it may not start."""
    booked = booking_at(kit.kit_id, now, bookings)
    if booked is not None:
        if booked.course not in entry.courses:
            return None
        return min(now + slot, booked.ends_at), booked
    ends = now + slot
    foreign = next_foreign_booking(entry, kit.kit_id, now, bookings)
    if foreign is not None:
        if foreign - now < min_walk_in:
            return None
        ends = min(ends, foreign)
    return ends, None


def fair_order(entries: Iterable[Waiting], recent: dict[str, int], penalty: float) -> list[Waiting]:
    """Entries in the order they will be served: priority first, then fair share.

    `recent` counts each institution's walk-in sessions in the fair-share window; each one puts
    the institution's entries `penalty` seconds behind the least-served institution waiting.
    Ordering an entry counts as a session, so one pass orders a whole backlog."""
    ordered: list[Waiting] = []
    by_priority: dict[int, dict[str, deque[Waiting]]] = {}
    for entry in sorted(entries, key=lambda e: (e.enqueued_at, e.id)):
        by_priority.setdefault(entry.priority, {}).setdefault(entry.institution, deque()).append(
            entry
        )
    used = dict(recent)
    for priority in sorted(by_priority, reverse=True):
        queues = by_priority[priority]
        while queues:
            # Relative to the least-served institution that is waiting: an absent one's low
            # usage must not push everyone else back alike.
            floor = min(used.get(i, 0) for i in queues)
            institution = min(
                queues,
                key=lambda i: (
                    queues[i][0].enqueued_at + penalty * (used.get(i, 0) - floor),
                    queues[i][0].id,
                ),
            )
            ordered.append(queues[institution].popleft())
            used[institution] = used.get(institution, 0) + 1
            if not queues[institution]:
                del queues[institution]
    return ordered


def assign(
    entries: list[Waiting],
    free_kits: list[KitSlot],
    bookings: list[BookedSlot],
    recent: dict[str, int],
    now: float,
    slot: float,
    min_walk_in: float,
) -> list[Grant]:
    """Grants to make now: entries in fair order each take a free kit they may use.

    An entry waiting for a busy kit does not hold up the entries behind it. The fair-share
    penalty of a session is one slot: the time it kept others from the kit."""
    free = sorted(free_kits, key=lambda k: k.kit_id)
    grants: list[Grant] = []
    for entry in fair_order(entries, recent, slot):
        if not free:
            break
        for kit in free:
            if not wants(entry, kit):
                continue
            window = session_window(entry, kit, now, slot, min_walk_in, bookings)
            if window is not None:
                grants.append(Grant(entry, kit.kit_id, *window))
                free.remove(kit)
                break
    return grants


def estimate(
    entries: list[Waiting], kits: list[KitSlot], recent: dict[str, int], now: float, slot: float
) -> dict[int, tuple[int, float]]:
    """Position (1 = next) and estimated wait in seconds for every waiting entry.

    Replays the fair order against the times the kits become free, each session lasting a
    slot: the estimate iLab and the Smart Device spec give, from holders' remaining time."""
    free_at = {k.kit_id: max(k.free_at, now) for k in kits}
    result: dict[int, tuple[int, float]] = {}
    competitors: dict[str, int] = {}
    for entry in fair_order(entries, recent, slot):
        candidates = [k for k in kits if wants(entry, k)]
        if not candidates:
            result[entry.id] = (0, float("inf"))
            continue
        key = entry.kit_id or f"model:{entry.model}"
        competitors[key] = competitors.get(key, 0) + 1
        soonest = min(candidates, key=lambda k: (free_at[k.kit_id], k.kit_id))
        start = free_at[soonest.kit_id]
        free_at[soonest.kit_id] = start + slot
        result[entry.id] = (competitors[key], start - now)
    return result
