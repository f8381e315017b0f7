"""run_on_twin, the trace scorers, per-student variants, and finding a notebook's controller
question for a real-kit job (grader/controller_questions.py)."""

from __future__ import annotations

import nbformat
import numpy as np
import pytest

from coursework import variants
from coursework.controllers import (
    RATE,
    SCORERS,
    fixed_plan_queue,
    junction_score,
    lighting_score,
    run_on_twin,
)
from grader.controller_questions import (
    ControllerQuestionError,
    controller_question,
    controller_questions,
    controller_specs,
)
from tests.conftest import REPO

NIGHT = 1_744_675_200 + 22 * 3600  # 15 April 2025, 22:00 UTC
PEAK = 1_744_675_200 + 7.5 * 3600
LIGHTING_NB = REPO / "courses/smart-lighting/source/02-adaptive-dimming/adaptive_dimming.ipynb"
JUNCTION_NB = REPO / "courses/traffic-signals/source/02-actuated-control/actuated.ipynb"


def full_light(readings, t):
    return {"mode": "manual", "dimming": 100} if readings["mode"] != "manual" else None


class Flooder:
    """Sends the same two commands every sample: 4 a second on a 2 Hz kit, then more."""

    def __init__(self, per_sample: int = 2) -> None:
        self.per_sample = per_sample

    def step(self, readings, t):
        return {"mode": "manual", "dimming": 50, **({"bogus": 1} if self.per_sample > 2 else {})}


def test_run_on_twin_is_deterministic_for_a_seed_and_differs_across_seeds() -> None:
    one = run_on_twin(full_light, "street-lighting", 600, seed=4, start=NIGHT)
    two = run_on_twin(full_light, "street-lighting", 600, seed=4, start=NIGHT)
    other = run_on_twin(full_light, "street-lighting", 600, seed=5, start=NIGHT)
    assert len(one.t) == 1200 and one.t[0] == 0.5
    assert np.array_equal(one.values("motion"), two.values("motion"))
    assert np.array_equal(one.values("lamp-power"), two.values("lamp-power"))
    assert not np.array_equal(one.values("motion"), other.values("motion"))
    assert one.commands[0]["outcome"] == "applied" and one.refused == 0
    t, power = one["lamp-power"]  # the trace is a mapping sensor -> (t, v)
    assert t is one.t and power[-1] == 120.0


def test_run_on_twin_takes_a_class_with_inputs_and_a_function_with_inputs() -> None:
    class Fixed:
        def __init__(self, level):
            self.level = level

        def step(self, readings, t):
            return {"mode": "manual", "dimming": self.level}

    def fixed(readings, t, level):
        return {"mode": "manual", "dimming": level}

    by_class = run_on_twin(Fixed, "street-lighting", 30, inputs={"level": 40}, start=NIGHT)
    by_function = run_on_twin(fixed, "street-lighting", 30, inputs={"level": 40}, start=NIGHT)
    assert by_class.values("dimming")[-1] == by_function.values("dimming")[-1] == 40


def test_kit_checks_and_the_rate_refuse_commands_and_count_them() -> None:
    # 2 Hz samples x 2 commands = 4/s: within the default 5/s
    calm = run_on_twin(Flooder, "street-lighting", 10, start=NIGHT)
    assert calm.refused == 0
    # 3 a sample = 6/s: the sixth of each second is refused for the rate; `bogus` by the kit
    busy = run_on_twin(Flooder, "street-lighting", 10, inputs={"per_sample": 3}, start=NIGHT)
    reasons = {c["reason"] for c in busy.commands if c["outcome"] == "rejected"}
    assert reasons == {RATE, "unknown_actuator"}
    assert sum(c["reason"] == RATE for c in busy.commands) >= 9
    out_of_bounds = run_on_twin(
        lambda r, t: {"mode": "manual", "dimming": 150}, "street-lighting", 2, start=NIGHT
    )
    assert {c["reason"] for c in out_of_bounds.commands} == {None, "out_of_range"}
    assert out_of_bounds.values("dimming")[-1] == 100  # the kit kept its safe value


@pytest.mark.parametrize(
    ("controller", "message"),
    [
        (lambda r, t: 1 / 0, "контроллер упал на 0.0 с: ZeroDivisionError"),
        (lambda r, t: 50, "контроллер вернул int"),
        (42, "должен быть функцией или классом"),
    ],
)
def test_a_faulty_controller_is_one_readable_line(controller, message) -> None:
    with pytest.raises(AssertionError, match=message):
        run_on_twin(controller, "street-lighting", 5, start=NIGHT)


def test_a_looping_controller_is_stopped_by_its_budget() -> None:
    def forever(readings, t):
        while True:
            pass

    with pytest.raises(AssertionError, match=r"не уложился в 0\.5 с"):
        run_on_twin(forever, "street-lighting", 5, start=NIGHT, time_budget_s=0.5)


def test_lighting_score_prefers_adaptive_dimming_to_the_kits_auto_mode() -> None:
    def adaptive(readings, t):
        need = (10.0 if readings["motion"] else 2.0) - readings["ambient-light"]
        level = 0 if need <= 0 else min(100, int(np.ceil(need * 5 - 1e-9)))
        return {"mode": "manual", "dimming": level}

    good = run_on_twin(adaptive, "street-lighting", 3600, seed=2, start=NIGHT)
    nothing = run_on_twin(lambda r, t: None, "street-lighting", 3600, seed=2, start=NIGHT)
    dark = run_on_twin(
        lambda r, t: {"mode": "manual", "dimming": 0}, "street-lighting", 3600, start=NIGHT
    )
    assert lighting_score(good) == 1.0
    assert 0.3 < lighting_score(nothing) < 0.9  # safe, but it wastes energy
    assert lighting_score(dark) < 0.1  # saves all, lights nothing
    # a recorded trace is a plain mapping of (t, v) arrays: the same score
    plain = {name: (good.t, good.values(name)) for name in good}
    assert SCORERS[("smart-lighting", "02-adaptive-dimming")](plain) == 1.0


def test_junction_score_is_low_for_a_junction_left_flashing() -> None:
    reference = fixed_plan_queue(1, 900, start=PEAK)
    assert reference == fixed_plan_queue(1, 900, start=PEAK) > 0
    flashing = run_on_twin(lambda r, t: None, "intersection", 900, seed=1, start=PEAK)
    assert junction_score(flashing, reference_queue=reference) < 0.5
    assert junction_score({"queue-length": (np.arange(3.0), np.zeros(3))}) == 1.0


# ------------------------------------------------------------------ variants


def test_variant_is_deterministic_different_per_student_and_within_its_ranges() -> None:
    key = ("traffic-signals", "02-actuated-control")
    a = variants.variant(*key, "alice")
    assert a == variants.variant(*key, "alice")
    many = [variants.variant(*key, f"s{i}") for i in range(200)]
    assert len({tuple(v.values()) for v in many}) == 200
    for v in many:
        for name, (kind, lo, hi, *_rest) in variants.RANGES[key].items():
            assert kind == "int" and lo <= v[name] <= hi
    lighting = variants.variant("smart-lighting", "02-adaptive-dimming", "alice")
    assert 60.0 <= lighting["lamp_max_w"] <= 150.0
    with pytest.raises(KeyError, match="declares no variant ranges"):
        variants.variant("smart-parking", "01-occupancy", "alice")


def test_variant_follows_the_graded_student_over_the_hub_user(monkeypatch) -> None:
    monkeypatch.setattr(variants, "_student", None)
    monkeypatch.setenv("JUPYTERHUB_USER", "alice")
    monkeypatch.setenv("SMARTLAB_STUDENT", "bob")
    assert variants.current_student() == "bob"
    # read once: a later change of the environment does not change whose numbers count
    monkeypatch.setenv("SMARTLAB_STUDENT", "alice")
    assert variants.current_student() == "bob"
    monkeypatch.setattr(variants, "_student", None)
    monkeypatch.delenv("SMARTLAB_STUDENT")
    assert variants.current_student() == "alice"
    key = ("smart-lighting", "02-adaptive-dimming")
    assert variants.variant(*key) == variants.variant(*key, "alice")


# ------------------------------------------------------------------ controller questions


def test_course_notebooks_declare_their_controller_question() -> None:
    lighting = controller_specs(nbformat.read(str(LIGHTING_NB), as_version=4))
    junction = controller_specs(nbformat.read(str(JUNCTION_NB), as_version=4))
    assert [(s.grade_id, s.entry, s.model) for s in lighting] == [
        ("hil", "dimming_controller", "street-lighting")
    ]
    assert [(s.grade_id, s.entry, s.model) for s in junction] == [
        ("hil", "JunctionController", "intersection")
    ]


def _answered(path, source: str | None = None) -> nbformat.NotebookNode:
    nb = nbformat.read(str(path), as_version=4)
    if source is not None:
        next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "hil")[
            "source"
        ] = source
    return nb


@pytest.mark.parametrize("path", [LIGHTING_NB, JUNCTION_NB], ids=["lighting", "junction"])
def test_the_controller_cell_alone_runs_on_the_twin(path) -> None:
    """What goes to the kit is the cell's text alone: it must define the entry by itself."""
    source_nb = nbformat.read(str(path), as_version=4)
    (question,) = controller_questions(source_nb, _answered(path))
    namespace: dict = {}
    exec(compile(question.source, "<controller>", "exec"), namespace)
    trace = run_on_twin(namespace[question.entry], question.model, 60, start=NIGHT)
    assert trace.refused == 0 and len(trace.commands) > 0
    assert question.job_controller() == {"source": question.source, "entry": question.entry}


def test_the_spec_comes_from_the_course_not_from_the_submission() -> None:
    source_nb = nbformat.read(str(LIGHTING_NB), as_version=4)
    submission = _answered(LIGHTING_NB, "def dimming_controller(readings, t):\n    return None\n")
    for cell in submission.cells:  # a student re-points the metadata at another model
        if "smartlab" in cell.metadata:
            cell.metadata["smartlab"]["controller"]["model"] = "intersection"
            cell.metadata["tags"] = []
    (question,) = controller_questions(source_nb, submission)
    assert question.model == "street-lighting" and "return None" in question.source


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("def other(readings, t):\n    return None\n", "does not define dimming_controller"),
        ("def dimming_controller(readings, t:\n", "does not parse: line 1"),
        ("dimming_controller = print\n", "does not define dimming_controller"),
    ],
)
def test_a_submission_without_a_runnable_controller_says_why(source, message) -> None:
    (spec,) = controller_specs(nbformat.read(str(LIGHTING_NB), as_version=4))
    with pytest.raises(ControllerQuestionError, match=message):
        controller_question(_answered(LIGHTING_NB, source), spec)
    empty = nbformat.v4.new_notebook()
    with pytest.raises(ControllerQuestionError, match="has no cell 'hil'"):
        controller_question(empty, spec)
