"""Fair share between institutions, simulated on a virtual clock with the scheduler's own code.

The students behave as in the concurrency test (tests/integration/test_sharing_concurrency.py):
they queue for a kit or a model, hold, heartbeat, release or vanish. Without a broker or a wall
clock a simulated afternoon takes a fraction of a second, so the fairness claims are checked
over many seeds rather than one noisy run.
"""

from __future__ import annotations

import random
import statistics
from dataclasses import dataclass

from lab_service import scheduler as S

KITS = {
    "light-1": "street-lighting",
    "light-2": "street-lighting",
    "crossing": "intersection",
    "env": "environment-station",
    "parking": "smart-parking",
}
MODELS = sorted(set(KITS.values()))
SLOT, HEARTBEAT_TIMEOUT, WINDOW, STEP = 300.0, 60.0, 3600.0, 5.0


@dataclass
class Student:
    name: str
    institution: str
    rng: random.Random
    next_at: float = 0.0
    entry: S.Waiting | None = None
    holding: str | None = None  # kit id
    back_at: float = 0.0  # a student who closed the laptop acts again from then


@dataclass
class Held:
    student: Student
    ends_at: float
    heartbeat: float
    released: bool = False


def simulate(
    students_per_institution: dict[str, int], seed: int, hours: float = 2.0
) -> dict[str, list[float]]:
    """Queue waits of the sessions granted, per institution."""
    shuffle = random.Random(seed)
    # Student i of every institution draws from the same stream: equal demand, as in the test.
    students = [
        Student(f"{inst}-{i}", inst, random.Random(seed * 1000 + i))
        for inst, n in students_per_institution.items()
        for i in range(n)
    ]
    for s in students:
        s.next_at = s.rng.uniform(0, 600)
    waiting: dict[int, S.Waiting] = {}
    held: dict[str, Held] = {}
    granted: list[tuple[str, float, float]] = []  # institution, granted at, wait
    ids = iter(range(1, 10**9))

    def grant(now: float) -> None:
        free = [S.KitSlot(k, m, now) for k, m in KITS.items() if k not in held]
        if not free:
            return
        recent: dict[str, int] = {}
        for inst, at, _ in granted:
            if at > now - WINDOW:
                recent[inst] = recent.get(inst, 0) + 1
        for g in S.assign(list(waiting.values()), free, [], recent, now, SLOT, SLOT):
            student = owner[g.entry.id]
            del waiting[g.entry.id]
            student.entry, student.holding = None, g.kit_id
            student.next_at = now + student.rng.uniform(15, 30)
            held[g.kit_id] = Held(student, g.ends_at, now)
            granted.append((g.entry.institution, now, now - g.entry.enqueued_at))

    owner: dict[int, Student] = {}
    now = 0.0
    while now < hours * 3600:
        for kit_id, h in list(held.items()):
            if h.released or now >= h.ends_at or now - h.heartbeat > HEARTBEAT_TIMEOUT:
                del held[kit_id]
                h.student.holding = None
        grant(now)
        shuffle.shuffle(students)
        for s in students:
            if now < max(s.next_at, s.back_at) or (s.back_at and s.holding):
                continue
            s.back_at = 0.0
            if s.holding:
                s.next_at = now + s.rng.uniform(15, 30)
                roll = s.rng.random()
                if roll < 0.03:  # vanishes: no heartbeat, no release
                    s.back_at = now + s.rng.uniform(600, 1800)
                elif roll < 0.15:
                    held[s.holding].released = True
                else:
                    held[s.holding].heartbeat = now
                continue
            s.next_at = now + s.rng.uniform(60, 300)
            if s.entry is not None:
                if s.rng.random() < 0.05:
                    del waiting[s.entry.id]
                    s.entry = None
            elif s.rng.random() < 0.5:
                kit, model = (
                    (s.rng.choice(list(KITS)), None)
                    if s.rng.random() < 0.5
                    else (None, s.rng.choice(MODELS))
                )
                s.entry = S.Waiting(next(ids), s.name, s.institution, kit, model, 0, now)
                waiting[s.entry.id], owner[s.entry.id] = s.entry, s
                grant(now)
        now += STEP
    waits: dict[str, list[float]] = {inst: [] for inst in students_per_institution}
    for inst, _, wait in granted:
        waits[inst].append(wait)
    return waits


def test_with_equal_demand_no_institution_waits_25_percent_longer():
    gaps = []
    for seed in range(12):
        means = [statistics.mean(w) for w in simulate({"a": 70, "b": 70, "c": 70}, seed).values()]
        gaps.append(max(means) / min(means) - 1)
    print(f"gaps between institutions' mean waits: {[f'{g:.0%}' for g in gaps]}")
    assert max(gaps) <= 0.25
    assert statistics.median(gaps) <= 0.10


def test_a_university_queueing_three_times_as_many_students_gets_its_share_only():
    for seed in range(4):
        waits = simulate({"big": 210, "b": 70, "c": 70}, seed)
        total = sum(len(w) for w in waits.values())
        share = {inst: len(w) / total for inst, w in waits.items()}
        mean = {inst: statistics.mean(w) for inst, w in waits.items()}
        print(f"seed {seed}: shares {share}, mean waits {mean}")
        # First come, first served would give "big" three fifths of the kit time.
        assert share["b"] >= 0.28 and share["c"] >= 0.28
        assert share["big"] <= 0.42
        assert mean["b"] < mean["big"] and mean["c"] < mean["big"]
