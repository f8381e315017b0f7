"""The job runner's own parts that need no lab service: the trace a scorer gets, the limits."""

from __future__ import annotations

import math

from coursework.controllers import junction_score, run_on_twin, score_job
from grader.controller_run import ControllerLimits, ControllerRun, MqttAccess, child_spec
from hardware_kits.descriptor import load_models
from hub_config.job_runner import limits_for, trace_of


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


def test_no_score_without_a_course_and_assignment_or_for_an_unscored_one() -> None:
    assert score_job(None, "a", "ann", {}) is None and score_job("c", None, "ann", {}) is None
    assert score_job("smart-lighting", "01-no-such", "ann", {}) is None


def test_a_junction_run_is_scored_against_its_owners_variant_reference() -> None:
    trace = run_on_twin(lambda r, t: None, "intersection", 120, seed=3)
    kit_run = {name: trace[name] for name in trace}  # what the runner gets: plain arrays
    scores = {
        who: score_job("traffic-signals", "02-actuated-control", who, kit_run, 120)
        for who in ("ann", "bob", "cat")
    }
    assert all(0.0 <= s <= 1.0 for s in scores.values())
    # The reference is each owner's traffic: one run scores differently for different owners.
    assert len(set(scores.values())) > 1 or min(scores.values()) == 1.0
    assert junction_score(kit_run, reference_queue=1e-6) < 0.01


def test_a_lighting_run_is_scored_with_the_kits_own_lamp_not_a_variants() -> None:
    always_full = lambda r, t: {"mode": "manual", "dimming": 100}  # noqa: E731
    trace = run_on_twin(always_full, "street-lighting", 60, start=1744750800.0)
    kit_run = {name: trace[name] for name in trace}
    score = score_job("smart-lighting", "02-adaptive-dimming", "ann", kit_run)
    assert score is not None and 0.0 <= score <= 1.0


def test_the_sandboxed_child_gets_the_kit_models_declared_command_rate() -> None:
    models = load_models()
    assert models["intersection"]["max_commands_per_second"] == 3
    assert models["street-lighting"]["max_commands_per_second"] == 5  # the default
    run = ControllerRun("", "f", "k", "intersection", 10, {}, MqttAccess(None, "", 0, "u", "p"))
    assert child_spec(run, models["intersection"])["limits"]["max_commands_per_second"] == 3
    faster = ControllerRun(
        "", "f", "k", "intersection", 10, {}, run.mqtt, ControllerLimits(max_commands_per_second=9)
    )
    assert child_spec(faster, models["intersection"])["limits"]["max_commands_per_second"] == 9


def test_the_twin_refuses_commands_above_the_kit_models_rate() -> None:
    def four_at_once(readings, t):  # four commands in the first sample, 3 a second allowed
        return {"mode": "fixed", "phase-request": 0, "bogus": 1, "also-bogus": 2} if t < 1 else None

    trace = run_on_twin(four_at_once, "intersection", 5)
    by_rate = [c for c in trace.commands if c["reason"] == "rate"]
    assert len(trace.commands) == 4 and len(by_rate) == 1
