"""The job runner's own parts that need no lab service: the trace a scorer gets, the limits."""

from __future__ import annotations

import math

from hub_config.job_runner import limits_for, scorer_for, trace_of


def test_trace_is_per_sensor_time_from_the_first_sample_and_nan_where_missing() -> None:
    trace = trace_of(
        [
            {"ts": 100.0, "seq": 1, "values": {"lux": 3, "motion": True, "mode": "auto"}},
            {"ts": 100.5, "seq": 2, "values": {"lux": 4.5}},
        ]
    )
    t, lux = trace["lux"]
    assert list(t) == [0.0, 0.5] and list(lux) == [3.0, 4.5]
    assert trace["motion"][1][0] == 1.0 and math.isnan(trace["motion"][1][1])
    assert math.isnan(trace["mode"][1][0])  # text readings are not numbers
    assert trace_of([]) == {}


def test_a_run_gets_its_duration_plus_start_up_as_wall_time() -> None:
    limits = limits_for(30)
    assert limits.wall_seconds > 30 and limits.cpu_seconds >= 30


def test_no_scorer_without_a_course_and_assignment() -> None:
    assert scorer_for(None, "a") is None and scorer_for("c", None) is None
