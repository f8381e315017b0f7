"""The capacity model (bench/capacity.py): the lab service's real scheduler on a virtual clock.

Every case runs the production `KitSharing` on in-memory SQLite; only the kits and the broker
are the service's instant stand-ins, as in the model itself."""

from __future__ import annotations

import itertools
import threading
import time

import pytest
from sqlalchemy import select

from bench import capacity as C
from lab_service.policy import DAY, MINUTE
from lab_service.service import User
from lab_service.store import SessionRow, SharingStore

A1, A2 = User("a1", "univ-a"), User("a2", "univ-a")
B1, C1 = User("b1", "univ-b"), User("c1", "univ-c")
LAMP = "street-lighting"


def one_kit_term(*turns: tuple[User, float, float]) -> C.Term:
    """One kit; each turn: who, arrival (minutes after the start), hold (minutes)."""
    return C.Term(
        [("kit-1", LAMP)],
        [
            C.Request(C.TERM_START + at * MINUTE, user, LAMP, hold * MINUTE, "walk-in")
            for user, at, hold in turns
        ],
    )


def waits_min(outcome: C.Outcome) -> dict[str, float]:
    return {s.request.user.name: s.wait_s / MINUTE for s in outcome.served}


def test_three_students_on_one_kit_wait_the_hand_computed_minutes():
    # Three institutions, so fair share is first come, first served here: a1 holds 0-10;
    # b1 (arrived at 2) 10-13; c1 (arrived at 4) 13-18.
    term = one_kit_term((A1, 0, 10), (B1, 2, 3), (C1, 4, 5))
    outcome = C.simulate(term)
    assert waits_min(outcome) == pytest.approx({"a1": 0.0, "b1": 8.0, "c1": 9.0})
    assert [s.held_s / MINUTE for s in outcome.served] == pytest.approx([10, 3, 5])
    assert C.waits(outcome.served).mean_min == pytest.approx(17 / 3)


def test_fair_share_serves_the_other_institution_first_and_fcfs_does_not():
    # a1 holds 0-10. a2 (same institution, at 1) and b1 (at 3) wait. With fair share univ-a
    # had a session within the hour, so b1 goes first (10-15), then a2 (15-19); first come,
    # first served gives a2 10-14, then b1 14-19.
    turns = ((A1, 0, 10), (A2, 1, 4), (B1, 3, 5))
    fair = waits_min(C.simulate(one_kit_term(*turns)))
    fcfs = waits_min(C.simulate(one_kit_term(*turns), fair_share=False))
    assert fair == pytest.approx({"a1": 0.0, "b1": 7.0, "a2": 14.0})
    assert fcfs == pytest.approx({"a1": 0.0, "a2": 9.0, "b1": 11.0})


def test_a_hold_longer_than_the_slot_is_cut_by_the_service_at_time_up():
    outcome = C.simulate(one_kit_term((A1, 0, 40), (B1, 1, 5)))
    slot = C.model_policy().slot_seconds / MINUTE
    assert [s.held_s / MINUTE for s in outcome.served] == pytest.approx([slot, 5])
    assert waits_min(outcome)["b1"] == pytest.approx(slot - 1)


def test_the_virtual_clock_drives_the_real_service_without_sleeping(monkeypatch):
    real_sleep = time.sleep
    simulating = threading.current_thread()

    def no_sleep(seconds: float) -> None:
        # Only the simulation's thread is watched: threads other tests left behind may sleep.
        if threading.current_thread() is simulating:
            raise AssertionError("the simulation slept")
        real_sleep(seconds)

    monkeypatch.setattr(time, "sleep", no_sleep)
    seen: list[float] = []
    original = C._granted_at

    def granted_at(store: SharingStore, now: float) -> list[dict]:
        with store.transaction() as db:  # the service's own records carry virtual times
            seen.extend(db.scalars(select(SessionRow.granted_at)))
        return original(store, now)

    monkeypatch.setattr(C, "_granted_at", granted_at)
    term = C.course_week("smart-parking", 30, 3)
    term.requests = [r for r in term.requests if r.at < C.TERM_START + DAY]  # Monday only
    assert len(term.requests) >= 10
    outcome = C.simulate(term)  # its speed is bench/capacity.py's: timing is not asserted here
    assert len(outcome.served) == len(term.requests) - sum(outcome.refused.values())
    assert seen and all(C.TERM_START <= t < C.TERM_START + DAY + 15 * MINUTE for t in seen)
    assert abs(max(seen) - time.time()) > 30 * DAY  # not the wall clock


def test_the_service_refuses_a_booking_beyond_the_institutions_weekly_quota():
    teacher = User("t", "univ-a", instructor_of=frozenset({"c"}))
    start = C.TERM_START + 9 * 3600
    bookings = [  # 11 slots of 2 hours on one kit: 22 hours, the quota is 20
        C.PlannedBooking("kit-1", "c", teacher, start + d * 3 * 3600, start + d * 3 * 3600 + 7200)
        for d in range(11)
    ]
    term = C.Term([("kit-1", LAMP)], [], bookings)
    outcome = C.simulate(term)
    assert outcome.bookings_made < 11
    assert sum(outcome.bookings_refused.values()) == 11 - outcome.bookings_made


def test_more_kits_never_give_a_longer_mean_wait_in_the_sizing_search():
    cache: dict[int, float] = {}
    needed = C.kits_needed("intersection", 20, 5.0, cache=cache)
    means = [cache.get(k) or C.mean_wait_min("intersection", 20, k) for k in range(1, 6)]
    assert all(a >= b for a, b in itertools.pairwise(means)), means
    assert means[needed - 1] < 5.0
    assert needed == 1 or means[needed - 2] >= 5.0  # the fewest that are enough
    assert means[0] > means[-1]  # the kits make a difference here
    assert C.kits_needed("intersection", 20, 15.0, cache=cache) <= needed


def test_fairness_is_reported_per_institution():
    term = one_kit_term((A1, 0, 10), (A2, 1, 4), (B1, 3, 5))
    outcome = C.simulate(term)
    per_institution = C.by_institution(outcome)
    assert set(per_institution) == {"univ-a", "univ-b"}
    assert per_institution["univ-a"].mean_min == pytest.approx(7.0)  # (0 + 14) / 2
    assert per_institution["univ-b"].p95_min == pytest.approx(7.0)
    assert C.fairness(outcome) == pytest.approx(C.jain([7.0, 7.0]))
    _lines, markdown = C.report(term, outcome, None, 0.01)
    assert "univ-a" in markdown and "univ-b" in markdown and "Jain" in markdown


def test_jains_index_is_one_for_equal_shares_and_one_over_n_for_one_taker():
    assert C.jain([3, 3, 3]) == pytest.approx(1.0)
    assert C.jain([5, 0, 0, 0]) == pytest.approx(0.25)
    assert C.jain([0, 0]) == 1.0


def test_the_size_flag_names_a_bad_model_or_bound_in_one_line(capsys):
    assert C.main(["--size", "teleporter"]) == 2
    assert C.main(["--size", LAMP, "--wait", "0"]) == 2
    assert C.main(["--size", LAMP, "--students", "0"]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert out[0].startswith("--size: unknown kit model 'teleporter'")
    assert out[1].startswith("--wait:") and out[2].startswith("--students:")
    assert "Traceback" not in "".join(out)


def test_the_size_flag_answers_with_the_kits_a_course_needs(capsys):
    assert C.main(["--size", LAMP, "--students", "10", "--wait", "15"]) == 0
    answer = capsys.readouterr().out.strip()
    kits = C.kits_needed(LAMP, 10, 15.0)
    assert answer == f"{LAMP}: {kits} kits for a course of 10 students (mean wait under 15 min)"


def test_a_course_no_kit_count_can_serve_is_named_in_one_line():
    with pytest.raises(ValueError, match=r"^--students: 10 need more than 2 kits"):
        C.kits_needed(LAMP, 10, 0.0, limit=2)  # nothing waits less than 0
