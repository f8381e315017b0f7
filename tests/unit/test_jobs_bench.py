"""The jobs benchmark's arithmetic (bench/jobs.py) on a hand-made timeline of two kits."""

from __future__ import annotations

import math

import pytest

from bench import jobs as J

# kit a: job 1 at 0-30, job 2 at 31.5-61.5 (gap 1.5); kit b: job 3 at 2-32, job 4 at 34-64 (gap 2)
ACKS = [
    *[(0.0 + 0.5 * i, "a", "job-1") for i in range(61)],
    *[(31.5 + 0.5 * i, "a", "job-2") for i in range(61)],
    *[(2.0 + 0.5 * i, "b", "job-3") for i in range(61)],
    *[(34.0 + 0.5 * i, "b", "job-4") for i in range(61)],
]


def test_a_job_runs_from_its_first_acknowledged_command_to_its_last():
    runs = {r.job: r for r in J.runs_from_acks(reversed(ACKS))}  # arrival order does not matter
    assert runs["job-1"] == J.Run("a", "job-1", 0.0, 30.0)
    assert runs["job-4"] == J.Run("b", "job-4", 34.0, 64.0)
    assert len(runs) == 4


def test_gaps_are_measured_between_consecutive_jobs_of_the_same_kit_only():
    runs = J.runs_from_acks(ACKS)
    assert sorted(J.gaps(runs)) == pytest.approx([1.5, 2.0])  # never job-1 -> job-3 across kits


def test_utilisation_is_busy_time_over_every_kits_window():
    runs = J.runs_from_acks(ACKS)
    # busy 4 x 30 s of 2 kits x 64 s
    assert J.utilisation(runs, 2, (0.0, 64.0)) == pytest.approx(120 / 128)
    # a window cuts runs: 0-32 holds a's 30 + 0.5 and b's 30
    assert J.utilisation(runs, 2, (0.0, 32.0)) == pytest.approx(60.5 / 64)
    # an idle kit counts: the same runs on 4 kits are half as busy
    assert J.utilisation(runs, 4, (0.0, 64.0)) == pytest.approx(60 / 128)


def test_an_empty_window_or_no_kits_has_no_utilisation():
    assert math.isnan(J.utilisation([], 2, (5.0, 5.0)))
    assert math.isnan(J.utilisation([], 0, (0.0, 5.0)))


def test_spread_is_p50_p99_and_max():
    p50, p99, top = J.spread([float(x) for x in range(1, 101)])
    assert (p50, top) == (pytest.approx(50.5), 100.0)
    assert p99 == pytest.approx(99.01)
    assert all(math.isnan(x) for x in J.spread([]))


def test_the_breakdown_cuts_each_gap_at_the_service_records():
    runs = J.runs_from_acks(ACKS)
    iso = "1970-01-01T00:00:{:06.3f}+00:00".format
    views = [
        {"owner": "1", "ended_at": iso(30.4)},
        {"owner": "2", "started_at": iso(30.6)},
        {"owner": "3", "ended_at": iso(32.2)},
        {"owner": "4", "started_at": iso(32.5)},
    ]
    parts = J.breakdown(runs, views)
    assert sorted(parts["last command -> finish recorded"]) == pytest.approx([0.2, 0.4])
    assert sorted(parts["finish -> next job granted (safe state, handover)"]) == pytest.approx(
        [0.2, 0.3]
    )
    assert sorted(
        parts["granted -> first command (claim, sandbox, first sample)"]
    ) == pytest.approx([0.9, 1.5])
