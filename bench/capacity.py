"""Capacity model: a term week of kit sharing simulated on the lab service's own scheduler.

The lab service (`lab_service.service.KitSharing`, its fair-share scheduler and its SQLAlchemy
store on in-memory SQLite) runs unchanged on a virtual clock: the service already takes its
clock as an argument, and this model moves that clock from event to event (arrivals, releases,
time up, booked slots starting and ending) and calls the service's own `request_many`,
`release`, `book` and `tick` there. Nothing sleeps; a week runs in seconds.

The term (seeded, so every run draws the same week):
- 2,000 students of 10 institutions of unequal size (450 down to 50), in courses of at most
  40, each course on one kit model (the intersection and the parking lot are the popular
  labs); 50 kits of the 4 models of `hardware_kits/models` at 4 sites (the bridged sites make
  one pool, so the site is only a label here);
- bookings: each course's weekly 90-minute lab class booked on 2 kits of its model by its
  instructor through `KitSharing.book` (the service's quotas and clash check refuse what they
  refuse); 80 % of the course's students come, arriving over the class's first hour, and queue
  for the model;
- walk-ins: each student queues for their course's model a Poisson(3) number of times a week,
  at times drawn from the demand curve of a week of classes (peaks 10-12 and 14-17 on
  weekdays, a lunch dip, quiet nights, weekends at 15 %), and holds the kit for a drawn time
  (log-normal, a mean per model), then releases it; the service's slot (15 min) cuts longer
  holds;
- batch jobs: one per four students a week, submitted to a model's queue around the clock
  (evenings busier) on behalf of the student's course. Long unattended runs are MODELLED AS
  HOLDS OF 3-6 MINUTES EACH (a stand-in: the service grants walk-in slots only).

Stand-ins: the kits confirm their safe state at once and the broker grants rights at once (the
service's `KitGateway` and `Rights` interfaces); clients never miss a heartbeat (the timeout is
set beyond the week). Everything else is the production code path.

Baseline, in the same run: the same term with fair share switched off
(`fair_share_window_seconds = 0`, so the scheduler is first come, first served across
institutions). It is what the fair-share rule is for: the comparison shows what it costs the
big institutions and gives the small ones, at the same load.

Sizing: `kits_needed(model, students, mean_wait_min)` answers "how many kits of model X does a
course of N students need for a mean wait under W minutes" by running the same simulation for
that course alone (its class, walk-ins and batch jobs) with more or fewer kits, one at a time
from a first guess, until it finds the fewest that are enough (the CLI flag `--size`).

    .venv/bin/python bench/capacity.py [--markdown docs/benchmarks.md] [--deploy docs/deploy.md]
    .venv/bin/python bench/capacity.py --size intersection --students 60 --wait 5
"""

from __future__ import annotations

import argparse
import heapq
import math
import multiprocessing as mp
import sys
import textwrap
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import select

if __package__ in (None, ""):  # run as `python bench/capacity.py`: the repository's packages
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import common
from hardware_kits.descriptor import load_models
from lab_service.policy import DAY, HOUR, MINUTE, WEEK, SharingPolicy
from lab_service.service import KitSharing, SharingError, User
from lab_service.store import SessionRow, SharingStore

TITLE = "Capacity model (a term week)"
SIZING_TITLE = "Sizing the kits (capacity model)"
TERM_START = 1_767_571_200.0  # Monday 2026-01-05 00:00 UTC; the model's hours are UTC
ADMIN = User("capacity-admin", "centre", lab_admin=True)
SITES = ("centre", "partner-a", "partner-b", "partner-c")
# 50 kits of the 4 models; the labs with the most students get the most kits.
KIT_COUNTS = {
    "street-lighting": 16,
    "environment-station": 14,
    "intersection": 12,
    "smart-parking": 8,
}
# A walk-in's mean hold (minutes) per model: a phase-plan experiment takes longer than a lamp's.
MEAN_HOLD_MIN = {
    "street-lighting": 10.0,
    "environment-station": 8.0,
    "intersection": 12.0,
    "smart-parking": 11.0,
}
# Which model a course uses: the intersection and the parking lot are the popular labs, so their
# kits carry more students each than the lamps' and the stations'.
POPULARITY = {
    "street-lighting": 0.28,
    "environment-station": 0.20,
    "intersection": 0.32,
    "smart-parking": 0.20,
}
INSTITUTION_SIZES = (450, 350, 300, 250, 200, 150, 100, 80, 70, 50)  # 2,000 students
COURSE_MAX = 40
CLASS_STARTS_H = (9.0, 10.75, 13.0, 14.75, 16.5)  # weekday lab classes, 90 minutes each
CLASS_LENGTH = 90 * MINUTE
CLASS_KITS = 2
ATTENDANCE = 0.8
WALK_INS_PER_STUDENT = 3.0
BATCH_PER_STUDENT = 0.25
BATCH_HOLD_MIN = (3.0, 6.0)
# Relative demand by hour of a weekday: teaching hours, a lunch dip, evening study, quiet night.
WEEKDAY_CURVE = (
    [0.02] * 7
    + [0.1, 0.3, 0.6]
    + [1.0] * 2
    + [0.6, 0.8]
    + [1.0] * 3
    + [0.6, 0.4, 0.3, 0.3]
    + [0.2, 0.1, 0.05]
)
WEEKEND_FACTOR = 0.15
BATCH_CURVE = [1.0] * 18 + [2.0] * 6  # unattended runs: around the clock, evenings busier


@dataclass(frozen=True)
class Request:
    """One person's turn on a kit of a model: when they queue and how long they would hold it."""

    at: float
    user: User
    model: str
    hold_s: float
    kind: str  # "class", "walk-in" or "batch"


@dataclass(frozen=True)
class PlannedBooking:
    kit_id: str
    course: str
    instructor: User
    starts_at: float
    ends_at: float


@dataclass
class Term:
    kits: list[tuple[str, str]]  # (kit id, model)
    requests: list[Request]
    bookings: list[PlannedBooking] = field(default_factory=list)
    start: float = TERM_START
    length: float = WEEK


@dataclass(frozen=True)
class Served:
    request: Request
    kit_id: str
    wait_s: float
    held_s: float


@dataclass
class Outcome:
    served: list[Served]
    refused: Counter  # requests the service refused, by its reason code
    bookings_made: int
    bookings_refused: Counter
    wall_s: float
    events: int


class VirtualClock:
    """The service's clock: the simulation sets `now`; the service reads it by calling it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class InstantKits:
    """Stand-in `KitGateway`: every kit is online and confirms its safe state at once."""

    def online(self, kit_id: str) -> bool:
        return True

    def send_safe_state(self, kit_id: str) -> str:
        return "safe"

    def confirmed_safe(self, kit_id: str, command_id: str) -> bool:
        return True

    def drain_acks(self) -> list[dict[str, Any]]:
        return []

    def send_at_rest(self, kit_id: str) -> str:
        return "rest"

    def answer(self, kit_id: str, command_id: str) -> str | None:
        return "applied"

    def report(self, kit_id: str) -> dict[str, Any] | None:
        return None  # says nothing about resting: the service leaves idle kits be


class InstantRights:
    """Stand-in `Rights`: the broker grants and revokes at once."""

    def grant(self, user: str, kit_id: str) -> None:
        pass

    def revoke(self, user: str, kit_id: str) -> None:
        pass


def model_policy(fair_share: bool = True) -> SharingPolicy:
    """The production policy, except that clients never miss a heartbeat (not a capacity
    question) and, for the baseline, fair share is off (first come, first served)."""
    policy = SharingPolicy()
    policy.heartbeat_timeout_seconds = 2 * WEEK
    if not fair_share:
        policy.fair_share_window_seconds = 0.0
    return policy


# ============================================================== the simulation


def simulate(term: Term, fair_share: bool = True, clock: VirtualClock | None = None) -> Outcome:
    """Run `term` on the real service with a virtual clock; every request's wait and hold."""
    t0 = time.perf_counter()
    clock = clock or VirtualClock(term.start - 3 * DAY)  # bookings are made the Friday before
    clock.now = term.start - 3 * DAY
    store = SharingStore("sqlite://")
    try:
        service = KitSharing(
            store, model_policy(fair_share), InstantRights(), InstantKits(), clock=clock
        )
        for kit_id, model in term.kits:
            service.register_kit(ADMIN, kit_id, model)
        made, booking_refusals = 0, Counter()
        for b in term.bookings:
            try:
                service.book(b.instructor, b.kit_id, b.course, b.starts_at, b.ends_at)
                made += 1
            except SharingError as err:
                booking_refusals[err.code] += 1
        served, refused, events = _run_events(service, clock, term)
    finally:
        store.close()
    return Outcome(served, refused, made, booking_refusals, time.perf_counter() - t0, events)


ARRIVE, RELEASE, TICK = 2, 0, 1  # at one instant: releases, then a tick, then arrivals


def _run_events(
    service: KitSharing, clock: VirtualClock, term: Term
) -> tuple[list[Served], Counter, int]:
    seq = 0
    heap: list[tuple[float, int, int, Any]] = []

    def push(at: float, kind: int, payload: Any = None) -> None:
        nonlocal seq
        seq += 1
        heapq.heappush(heap, (at, kind, seq, payload))

    for r in term.requests:
        push(r.at, ARRIVE, r)
    for b in term.bookings:  # who may be granted changes as a booked slot starts and ends
        push(b.starts_at, TICK)
        push(b.ends_at, TICK)
    waiting: dict[str, Request] = {}  # user -> their request in the queue
    known: set[int] = set()
    served: list[Served] = []
    refused: Counter = Counter()
    events = 0

    def granted(s: dict[str, Any]) -> None:
        if s["id"] in known:
            return
        known.add(s["id"])
        request = waiting.pop(s["user"])
        hold_end = s["granted_at"] + request.hold_s
        if hold_end < s["ends_at"]:
            push(hold_end, RELEASE, (request.user, s["id"]))
        else:  # the slot (or a booked slot ahead) ends it: the service's time up
            push(s["ends_at"], TICK)
        held = min(hold_end, s["ends_at"]) - s["granted_at"]
        served.append(Served(request, s["kit"], s["queue_wait_s"], held))

    while heap:
        now = heap[0][0]
        clock.now = now
        batch: list[tuple[int, Any]] = []
        while heap and heap[0][0] == now:
            _at, kind, _seq, payload = heapq.heappop(heap)
            batch.append((kind, payload))
        events += 1
        # Only a kit set free, a session's time up or a booked slot's edge can let the
        # service grant in its tick: at other instants its tick does nothing, so it is skipped.
        if any(kind != ARRIVE for kind, _ in batch):
            for kind, payload in batch:
                if kind == RELEASE:
                    service.release(payload[0], payload[1])
            service.tick()
            for s in _granted_at(service.store, now):
                granted(s)
        arrivals = [p for k, p in batch if k == ARRIVE]
        if arrivals:
            results = service.request_many([(r.user, None, r.model) for r in arrivals])
            for r, result in zip(arrivals, results, strict=True):
                if isinstance(result, SharingError):
                    refused[result.code] += 1  # e.g. already waiting for this model
                    continue
                waiting[r.user.name] = r
                if result.get("session"):  # a free kit: granted at once
                    granted(result["session"])
    return served, refused, events


def _granted_at(store: SharingStore, now: float) -> list[dict[str, Any]]:
    """The sessions the service granted at `now`, from its records (one indexed query:
    cheaper than listing every live session)."""
    with store.transaction() as db:
        return [
            {
                "id": row.id,
                "user": row.user,
                "kit": row.kit_id,
                "granted_at": row.granted_at,
                "ends_at": row.ends_at,
                "queue_wait_s": row.queue_wait_s,
            }
            for row in db.scalars(select(SessionRow).where(SessionRow.granted_at == now))
        ]


# ============================================================== the term


def hour_weights(curve: list[float], weekend: float) -> np.ndarray:
    """168 hourly weights of a week from Monday 00:00, normalised."""
    week = np.array([c * (weekend if day >= 5 else 1.0) for day in range(7) for c in curve])
    return week / week.sum()


def draw_times(rng: np.random.Generator, n: int, weights: np.ndarray, start: float) -> np.ndarray:
    hours = rng.choice(len(weights), size=n, p=weights)
    return start + (hours + rng.random(n)) * HOUR


def draw_holds(rng: np.random.Generator, n: int, mean_min: float) -> np.ndarray:
    """Log-normal holds with the given mean (sigma 0.5), at least a minute."""
    sigma = 0.5
    mu = math.log(mean_min) - sigma**2 / 2
    return np.maximum(1.0, rng.lognormal(mu, sigma, n)) * MINUTE


def make_kits(counts: dict[str, int]) -> list[tuple[str, str]]:
    """Kits of each model spread over the sites in turn: ids like `partner-a-intersection-3`."""
    kits = []
    for model, count in counts.items():
        for n in range(count):
            kits.append((f"{SITES[n % len(SITES)]}-{model}-{n + 1}", model))
    return kits


@dataclass(frozen=True)
class Course:
    name: str
    institution: str
    model: str
    students: int
    class_day: int  # 0 = Monday
    class_start_h: float


def course_requests(
    rng: np.random.Generator, course: Course, start: float
) -> tuple[list[Request], list[User]]:
    """The course's week: its lab class, its students' walk-ins and its batch jobs."""
    members = frozenset({course.name})
    students = [
        User(f"{course.name}-s{n + 1}", course.institution, courses=members)
        for n in range(course.students)
    ]
    mean = MEAN_HOLD_MIN[course.model]
    requests: list[Request] = []
    class_at = start + course.class_day * DAY + course.class_start_h * HOUR
    attending = [s for s in students if rng.random() < ATTENDANCE]
    arrivals = class_at + rng.random(len(attending)) * HOUR
    holds = draw_holds(rng, len(attending), mean)
    requests += [
        Request(float(a), s, course.model, float(h), "class")
        for s, a, h in zip(attending, arrivals, holds, strict=True)
    ]
    walk_weights = hour_weights(WEEKDAY_CURVE, WEEKEND_FACTOR)
    for s in students:
        n = int(rng.poisson(WALK_INS_PER_STUDENT))
        for a, h in zip(
            draw_times(rng, n, walk_weights, start), draw_holds(rng, n, mean), strict=True
        ):
            requests.append(Request(float(a), s, course.model, float(h), "walk-in"))
    n_batch = int(rng.poisson(BATCH_PER_STUDENT * course.students))
    batch_at = draw_times(rng, n_batch, hour_weights(BATCH_CURVE, 1.0), start)
    for n, a in enumerate(batch_at):
        # Each job is its own queue entry (a student's course may run several at once).
        job = User(f"{course.name}-batch{n + 1}", course.institution, courses=members)
        hold = rng.uniform(*BATCH_HOLD_MIN) * MINUTE
        requests.append(Request(float(a), job, course.model, float(hold), "batch"))
    return requests, students


def class_bookings(
    course: Course, kits: list[tuple[str, str]], start: float, count: int = CLASS_KITS
) -> list[PlannedBooking]:
    """The instructor books the class's slot on `count` kits of the model, trying them in
    turn (the service refuses clashes and what exceeds the quotas)."""
    teacher = User(f"{course.name}-teacher", course.institution, instructor_of={course.name})
    starts = start + course.class_day * DAY + course.class_start_h * HOUR
    return [
        PlannedBooking(kit_id, course.name, teacher, starts, starts + CLASS_LENGTH)
        for kit_id, model in kits
        if model == course.model
    ][: max(count, 0)]


def term_week(seed: int = 24) -> Term:
    """The term week of the module's docstring."""
    rng = np.random.default_rng(seed)
    kits = make_kits(KIT_COUNTS)
    models = list(KIT_COUNTS)
    weights = np.array([POPULARITY[m] for m in models], float)
    requests: list[Request] = []
    bookings: list[PlannedBooking] = []
    slot_use: Counter = Counter()  # (model, day, start) -> classes: spread kits over slots
    for i, size in enumerate(INSTITUTION_SIZES):
        institution = f"univ-{i + 1:02d}"
        n_courses = math.ceil(size / COURSE_MAX)
        for c in range(n_courses):
            model = str(rng.choice(models, p=weights / weights.sum()))
            day, start_h = min(
                ((d, h) for d in range(5) for h in CLASS_STARTS_H),
                key=lambda dh: (slot_use[(model, *dh)], rng.random()),
            )
            slot_use[(model, day, start_h)] += 1
            course = Course(
                f"{institution}-c{c + 1}",
                institution,
                model,
                size // n_courses + (1 if c < size % n_courses else 0),
                day,
                start_h,
            )
            new, _students = course_requests(rng, course, TERM_START)
            requests += new
            # Rotate which kits a slot's classes book, so two classes at once do not clash.
            same_model = [k for k in kits if k[1] == model]
            offset = (slot_use[(model, day, start_h)] - 1) * CLASS_KITS
            bookings += class_bookings(
                course, same_model[offset:] + same_model[:offset], TERM_START
            )
    return Term(kits, requests, bookings)


def course_week(model: str, students: int, kits: int, seed: int = 24) -> Term:
    """One course of `students` on `kits` kits of `model` alone for a week (the sizing case):
    the same per-student demand as the term, its class on Tuesday at 10:45."""
    rng = np.random.default_rng(seed)
    course = Course("sized-course", "univ-sized", model, students, 1, 10.75)
    requests, _ = course_requests(rng, course, TERM_START)
    kit_list = make_kits({model: kits})
    return Term(kit_list, requests, class_bookings(course, kit_list, TERM_START))


# ============================================================== figures


def jain(values: Iterable[float]) -> float:
    """Jain's fairness index: 1 when all are equal, 1/n when one takes everything."""
    xs = [float(v) for v in values]
    square_sum = sum(x * x for x in xs)
    return 1.0 if square_sum == 0 else sum(xs) ** 2 / (len(xs) * square_sum)


@dataclass(frozen=True)
class WaitFigures:
    count: int
    mean_min: float
    p95_min: float


def waits(served: Iterable[Served]) -> WaitFigures:
    w = [s.wait_s / MINUTE for s in served]
    return WaitFigures(len(w), float(np.mean(w)) if w else 0.0, common.percentile(w, 95))


def by_institution(outcome: Outcome) -> dict[str, WaitFigures]:
    groups: dict[str, list[Served]] = defaultdict(list)
    for s in outcome.served:
        groups[s.request.user.institution].append(s)
    return {inst: waits(groups[inst]) for inst in sorted(groups)}


def fairness(outcome: Outcome) -> float:
    """Jain's index of the institutions' mean waits (1 = every institution waits alike)."""
    return jain(f.mean_min for f in by_institution(outcome).values())


def utilisation(outcome: Outcome, term: Term, teaching_hours: bool = False) -> dict[str, float]:
    """Share of the kits' time held, per model: over the whole week, or over weekday teaching
    hours (09:00-18:00), where the load is."""
    counts = Counter(model for _, model in term.kits)
    held: dict[str, float] = defaultdict(float)
    for s in outcome.served:
        if teaching_hours:
            held[s.request.model] += _teaching_overlap(s, term.start)
        else:
            held[s.request.model] += s.held_s
    span = 5 * 9 * HOUR if teaching_hours else term.length
    return {m: held[m] / (counts[m] * span) for m in counts}


def _teaching_overlap(s: Served, start: float) -> float:
    begin = s.request.at + s.wait_s
    end = begin + s.held_s
    total = 0.0
    for day in range(5):
        lo, hi = start + day * DAY + 9 * HOUR, start + day * DAY + 18 * HOUR
        total += max(0.0, min(end, hi) - max(begin, lo))
    return total


# ============================================================== sizing


def mean_wait_min(model: str, students: int, kits: int, seed: int = 24) -> float:
    outcome = simulate(course_week(model, students, kits, seed))
    return waits(outcome.served).mean_min


def kits_needed(
    model: str,
    students: int,
    mean_wait_under_min: float,
    seed: int = 24,
    cache: dict[int, float] | None = None,
    limit: int = 512,
) -> int:
    """The fewest kits of `model` for which a course of `students` waits less than
    `mean_wait_under_min` minutes on average.

    More kits never lengthen the wait (first come, first served within one course), so the
    answer is the edge of a monotone test: bracketed from a first guess (the class's kit time
    over the class's length) one kit at a time. `cache` (kits -> mean wait)
    lets several bounds share the runs."""
    cache = {} if cache is None else cache

    def enough(kits: int) -> bool:
        if kits not in cache:
            cache[kits] = mean_wait_min(model, students, kits, seed)
        return cache[kits] < mean_wait_under_min

    # First guess: the class's kit time over its length (the peak load), less for a looser
    # bound (fitted to this model's answers; it only saves runs, the search decides).
    class_load = ATTENDANCE * students * MEAN_HOLD_MIN[model] * MINUTE / CLASS_LENGTH
    guess = min(limit, max(1, round(class_load / (1 + mean_wait_under_min / 20))))
    # One kit at a time from the guess: the answer is a few kits away, and every run with too
    # few kits is the slow kind (a long queue to estimate).
    if enough(guess):
        high = guess
        while high > 1 and enough(high - 1):
            high -= 1
        return high
    high = guess + 1
    while not enough(high):
        if high >= limit:
            raise ValueError(f"--students: {students} need more than {limit} kits of {model}")
        high += 1
    return high


COURSE_SIZES = (30, 60, 120)
MEAN_WAITS_MIN = (5.0, 15.0)


def sizing_cell(
    model: str, students: int, mean_waits: tuple[float, ...] = MEAN_WAITS_MIN, seed: int = 24
) -> dict[tuple[str, int, float], int]:
    """Kits needed by a course of `students` on `model` for each bound (the runs shared)."""
    cache: dict[int, float] = {}
    return {(model, students, w): kits_needed(model, students, w, seed, cache) for w in mean_waits}


def _task(task: tuple[Any, ...]) -> tuple[tuple[Any, ...], Any]:
    """One unit of the benchmark's work, for a process pool: a term run or a sizing cell."""
    if task[0] == "term":
        return task, simulate(term_week(task[2]), fair_share=task[1])
    return task, sizing_cell(task[1], task[2], seed=task[3])


# ============================================================== report


def report(
    term: Term,
    fair: Outcome,
    fcfs: Outcome | None,
    tiny_wall_s: float,
    whole_s: float | None = None,
) -> tuple[list[str], str]:
    """Plain-text lines and the Markdown body of the benchmarks section."""
    unique = {r.user.name: r.user.institution for r in term.requests if r.kind != "batch"}
    students = Counter(unique.values())
    fair_inst = by_institution(fair)
    fcfs_inst = by_institution(fcfs) if fcfs else {}
    rows = []
    for inst, f in fair_inst.items():
        b = fcfs_inst.get(inst)
        rows.append(
            [
                inst,
                str(students[inst]),
                str(f.count),
                f"{f.mean_min:.1f}",
                f"{f.p95_min:.1f}",
                f"{b.mean_min:.1f}" if b else "-",
                f"{b.p95_min:.1f}" if b else "-",
            ]
        )
    inst_head = [
        "institution",
        "students",
        "turns",
        "mean wait, min",
        "p95 wait, min",
        "FCFS mean",
        "FCFS p95",
    ]
    week, teach = utilisation(fair, term), utilisation(fair, term, teaching_hours=True)
    kinds = defaultdict(list)
    for s in fair.served:
        kinds[s.request.model].append(s)
    model_rows = [
        [
            m,
            str(sum(1 for _, km in term.kits if km == m)),
            str(len(kinds[m])),
            f"{100 * week[m]:.0f} %",
            f"{100 * teach[m]:.0f} %",
            f"{waits(kinds[m]).mean_min:.1f}",
            f"{waits(kinds[m]).p95_min:.1f}",
        ]
        for m in dict.fromkeys(model for _, model in term.kits)
    ]
    model_head = [
        "kit model",
        "kits",
        "turns",
        "use, week",
        "use, weekday 9-18",
        "mean wait, min",
        "p95 wait, min",
    ]
    by_kind = defaultdict(list)
    for s in fair.served:
        by_kind[s.request.kind].append(s)
    kind_rows = [
        [k, str(len(v)), f"{waits(v).mean_min:.1f}", f"{waits(v).p95_min:.1f}"]
        for k, v in sorted(by_kind.items())
    ]
    kind_head = ["kind", "turns", "mean wait, min", "p95 wait, min"]
    runs = [fair, *([fcfs] if fcfs else [])]
    summary = [
        ["turns served", *(str(len(o.served)) for o in runs)],
        ["mean wait, min", *(f"{waits(o.served).mean_min:.2f}" for o in runs)],
        ["p95 wait, min", *(f"{waits(o.served).p95_min:.1f}" for o in runs)],
        ["Jain's index of the institutions' mean waits", *(f"{fairness(o):.3f}" for o in runs)],
        ["simulation run time (wall), s", *(f"{o.wall_s:.1f}" for o in runs)],
        ["simulated time per wall time", *(f"{WEEK / o.wall_s:,.0f} x" for o in runs)],
    ]
    summary_head = ["figure", "fair share", *(["FCFS baseline"] if fcfs else [])]
    notes = [
        f"requests: {len(term.requests)} over {fair.events} distinct instants",
        f"bookings: {fair.bookings_made} made, {sum(fair.bookings_refused.values())} refused "
        f"by the service ({_counts(fair.bookings_refused) or 'none'})",
        f"requests refused: {_counts(fair.refused) or 'none'} (the student already held or "
        "waited for that model)",
        f"a tiny term (one kit, three turns) runs in {1000 * tiny_wall_s:.0f} ms",
    ]
    if whole_s is not None:
        notes.append(
            f"the whole benchmark (both weeks and the sizing table in a pool of processes) "
            f"took {whole_s:.0f} s"
        )
    if fcfs and {"univ-01", "univ-10"} <= set(fair_inst) & set(fcfs_inst):
        big, small = INSTITUTION_SIZES.index(max(INSTITUTION_SIZES)), len(INSTITUTION_SIZES) - 1
        big_name, small_name = f"univ-{big + 1:02d}", f"univ-{small + 1:02d}"
        notes.append(
            "fair share against first come, first served: the largest institution "
            f"({big_name}) waits {fair_inst[big_name].mean_min:.2f} min on average instead of "
            f"{fcfs_inst[big_name].mean_min:.2f}, the smallest ({small_name}) "
            f"{fair_inst[small_name].mean_min:.2f} instead of "
            f"{fcfs_inst[small_name].mean_min:.2f}: fair share evens out the institutions' "
            "use of the kits, not their waits, so an institution queueing many students at "
            "once waits for its surplus (a lower Jain's index of waits is the intended effect)"
        )
    lines = ["Capacity model: a term week on the lab service's scheduler", ""]
    lines += [common.text_table(summary, summary_head), "", *notes]
    for head, body in ((inst_head, rows), (model_head, model_rows), (kind_head, kind_rows)):
        lines += ["", common.text_table(body, head)]
    intro = (
        f"`.venv/bin/python bench/capacity.py` ({common.machine()}). {len(term.kits)} kits of "
        f"{len(KIT_COUNTS)} models at {len(SITES)} sites, "
        f"{sum(INSTITUTION_SIZES):,} students of {len(INSTITUTION_SIZES)} institutions, one week "
        "(`bench/capacity.py` says what is drawn and what is a stand-in: batch jobs are holds "
        "of 3-6 minutes). Baseline: the same week with fair share off (first come, first "
        "served across institutions). The service runs unchanged on a virtual clock (in-memory "
        "SQLite); the kits confirm their safe state at once."
    )
    md = [
        textwrap.fill(intro, 100),
        "",
        common.markdown_table(summary, summary_head),
        "",
        *(textwrap.fill(n, 100, initial_indent="- ", subsequent_indent="  ") for n in notes),
        "",
        common.markdown_table(rows, inst_head),
        "",
        common.markdown_table(model_rows, model_head),
        "",
        common.markdown_table(kind_rows, kind_head),
    ]
    return lines, "\n".join(md) + "\n"


def _counts(c: Counter) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(c.items()))


def sizing_markdown(table: dict[tuple[str, int, float], int]) -> str:
    sizes = sorted({n for _, n, _ in table})
    mean_waits = sorted({w for _, _, w in table})
    models = sorted({m for m, _, _ in table})
    head = ["kit model", *(f"N={n}, <{w:g} min" for n in sizes for w in mean_waits)]
    rows = [[m, *(str(table[(m, n, w)]) for n in sizes for w in mean_waits)] for m in models]
    return common.markdown_table(rows, head) + "\n"


def tiny_term() -> Term:
    """One kit, three turns: the smallest run, for the run-time comparison and the tests."""
    a, b, c = (User(n, "univ-a") for n in ("a1", "a2", "a3"))
    return Term(
        [("tiny-kit", "street-lighting")],
        [
            Request(TERM_START, a, "street-lighting", 10 * MINUTE, "walk-in"),
            Request(TERM_START + 2 * MINUTE, b, "street-lighting", 3 * MINUTE, "walk-in"),
            Request(TERM_START + 4 * MINUTE, c, "street-lighting", 5 * MINUTE, "walk-in"),
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seed", type=int, default=24, help="the draw of the week")
    parser.add_argument("--jobs", type=int, default=2, help="processes (default 2)")
    parser.add_argument("--markdown", type=Path, help="write the term's tables into this file")
    parser.add_argument("--deploy", type=Path, help="write the sizing table into this file")
    parser.add_argument("--no-baseline", action="store_true", help="skip the FCFS run")
    parser.add_argument("--no-sizing", action="store_true", help="skip the sizing table")
    parser.add_argument("--size", metavar="MODEL", help="only answer one sizing question")
    parser.add_argument("--students", type=int, default=30, help="course size for --size")
    parser.add_argument("--wait", type=float, default=5.0, help="mean wait bound, minutes")
    args = parser.parse_args(argv)
    progress = common.progress_printer("capacity")
    models = list(load_models())
    if args.size is not None:
        if args.size not in models:
            print(f"--size: unknown kit model {args.size!r} (one of {', '.join(models)})")
            return 2
        if args.students < 1:
            print("--students: must be at least 1")
            return 2
        if not args.wait > 0:
            print("--wait: must be more than 0 minutes")
            return 2
        try:
            kits = kits_needed(args.size, args.students, args.wait, args.seed)
        except ValueError as err:
            print(err)
            return 2
        print(
            f"{args.size}: {kits} kits for a course of {args.students} students "
            f"(mean wait under {args.wait:g} min)"
        )
        return 0
    if set(KIT_COUNTS) != set(models):
        print(f"kit models: the model's {sorted(KIT_COUNTS)} differ from {sorted(models)}")
        return 2
    t0 = time.perf_counter()
    tiny = simulate(tiny_term())
    tasks: list[tuple[Any, ...]] = [("term", True, args.seed)]
    if not args.no_baseline:
        tasks.append(("term", False, args.seed))
    if not args.no_sizing:
        # The heaviest cells (big classes, long holds) first, so the processes finish together.
        cells = sorted(
            ((m, n) for m in models for n in COURSE_SIZES),
            key=lambda mn: -mn[1] * MEAN_HOLD_MIN[mn[0]],
        )
        tasks += [("size", m, n, args.seed) for m, n in cells]
    terms: dict[bool, Outcome] = {}
    table: dict[tuple[str, int, float], int] = {}
    with mp.get_context("fork").Pool(max(1, args.jobs)) as pool:
        for task, result in pool.imap_unordered(_task, tasks):
            progress(f"done: {task[:3]}")
            if task[0] == "term":
                terms[task[1]] = result
            else:
                table.update(result)
    term = term_week(args.seed)
    whole_s = time.perf_counter() - t0
    lines, md = report(term, terms[True], terms.get(False), tiny.wall_s, whole_s)
    print("\n".join(lines))
    if args.markdown:
        common.write_markdown(args.markdown, TITLE, md, progress)
    if table:
        sizing = sizing_markdown(table)
        print("\n" + sizing)
        if args.deploy:
            common.write_markdown(args.deploy, SIZING_TITLE, SIZING_INTRO + sizing, progress)
    return 0


SIZING_INTRO = (
    textwrap.fill(
        "Kits of one model that a course of N students needs for a mean wait under 5 and 15 "
        "minutes, from the capacity model (`.venv/bin/python bench/capacity.py --deploy "
        "docs/deploy.md`; `--size MODEL --students N --wait W` answers one case). It runs the lab "
        "service's own scheduler for the course alone on kits of its own for a week, with the "
        "term's per-student demand: a weekly 90-minute lab class that 80 % of the students attend "
        "(the peak that sets the figure), three walk-ins per student, one batch job per four "
        "students; holds and the term on a shared pool: `docs/benchmarks.md`. Courses that share "
        "a model's kits at different hours need the largest of their figures, at the same hour "
        "the sum.",
        100,
    )
    + "\n\n"
)


if __name__ == "__main__":
    raise SystemExit(main())
