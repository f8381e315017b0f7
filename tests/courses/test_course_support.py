"""The pieces the course notebooks stand on: safe calls into student code, the offline kit,
the scorers shipped with the assignments, the live-kit helpers, the recorded data and the
course installer."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import math
import re
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType

import nbformat
import numpy as np
import pytest
from nbclient import NotebookClient

from courses import datasets
from courses.install import CourseError, assignments, available_courses, install_course
from coursework import checks, live
from hardware_kits import protocol as P
from hardware_kits.twins.offline import OfflineKit
from site_config.runtime import free_port
from tests.conftest import REPO, KitProcess, wait_until

COURSES = REPO / "courses"


def load(path: Path) -> ModuleType:
    """A module shipped in an assignment folder, imported as the notebook imports it."""
    name = f"course_{path.stem}"  # not the bare name: no clash with anything installed
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up there
    writes, sys.dont_write_bytecode = sys.dont_write_bytecode, True  # no __pycache__ in source/
    try:
        spec.loader.exec_module(module)
    finally:
        sys.dont_write_bytecode = writes
    return module


NIGHT = load(COURSES / "smart-lighting/source/02-adaptive-dimming/night.py")
JUNCTION = load(COURSES / "traffic-signals/source/02-actuated-control/junction.py")


# ------------------------------------------------------------------ checks


def test_call_turns_a_student_exception_into_one_line() -> None:
    def broken(x):
        return x / 0

    with pytest.raises(AssertionError) as err:
        checks.call(broken, 1)
    assert str(err.value) == "broken завершилась с ошибкой ZeroDivisionError: division by zero"
    assert err.value.__suppress_context__  # no chained traceback of the student's error


def test_call_stops_a_loop_even_one_that_swallows_exceptions() -> None:
    def stubborn():
        while True:  # what a student might write: every error swallowed
            with contextlib.suppress(Exception):
                time.sleep(0.01)

    started = time.monotonic()
    with pytest.raises(AssertionError, match=r"stubborn не завершилась за 0\.3 с"):
        checks.call(stubborn, seconds=0.3)
    assert time.monotonic() - started < 2.0


def test_a_time_limit_inside_another_keeps_the_outer_one() -> None:
    with pytest.raises(checks.StudentTimeout, match="outer"), checks.time_limit(0.5, "outer"):
        with checks.time_limit(5.0, "inner"):
            pass  # the inner limit ends at once; the outer one must still fire
        time.sleep(2.0)


def test_checks_name_the_wrong_type() -> None:
    with pytest.raises(AssertionError, match="ожидалось число, получено str"):
        checks.number("1.5", "x")
    with pytest.raises(AssertionError, match="ожидалось целое число"):
        checks.integer(2.0, "level")
    with pytest.raises(AssertionError, match="ожидалось 3 элементов, получено 2"):
        checks.array([1, 2], "a", 3)
    with pytest.raises(AssertionError, match=r"ключи не те; нет b; лишние c"):
        checks.keys({"a": 1, "c": 2}, {"a", "b"}, "d")
    with pytest.raises(AssertionError, match=r"первый — \[1\]"):
        checks.all_close([1.0, 2.5], [1.0, 2.0], "v")
    assert checks.integer(np.int64(3), "n") == 3
    checks.all_close([np.nan, 1.0], [np.nan, 1.0], "nan equals nan")


# ------------------------------------------------------------------ the offline kit


def test_offline_kit_refuses_what_the_kit_refuses() -> None:
    kit = OfflineKit("intersection", seed=1)
    with pytest.raises(P.ProtocolError) as err:
        kit.set(
            "phase-plan",
            [{"green": ["north", "east"], "seconds": 20}, {"green": ["south"], "seconds": 20}],
        )
    assert err.value.reason == P.R_INTERLOCK
    with pytest.raises(P.ProtocolError) as err:
        kit.set("phase-request", 1)  # only in manual mode
    assert err.value.reason == P.R_INTERLOCK
    lamp = OfflineKit("street-lighting")
    lamp.set("mode", "manual")
    assert lamp.set("dimming", np.int64(40)) == 40  # numpy scalars, as notebooks compute them
    with pytest.raises(P.ProtocolError, match="must be an integer"):
        lamp.set("dimming", 40.5)


def test_offline_kit_is_deterministic() -> None:
    def run() -> list[dict]:
        kit = OfflineKit("environment-station", seed=9, start=1_744_675_200)
        samples = []
        for _ in range(100):
            kit.advance(7.0)
            samples.append(kit.latest)
        return samples

    assert run() == run()


# ------------------------------------------------------------------ scorers


class Minimal:
    """The cheapest safe dimmer: exactly the required light, nothing more."""

    def step(self, sample):
        need = (NIGHT.MOTION_LX if sample["motion"] else NIGHT.MINIMUM_LX) - sample["ambient-light"]
        return 0 if need <= 0 else math.ceil(need * 100 / NIGHT.E_LAMP_FULL_LX - 1e-9)


def test_night_score_is_reproducible_and_counts_dark_moments() -> None:
    start = NIGHT.night_start() + 4 * 3600  # 20:00, dark and busy
    first = NIGHT.simulate_night(Minimal, seed=4, start=start, hours=1.0)
    assert first == NIGHT.simulate_night(Minimal, seed=4, start=start, hours=1.0)
    assert first.violations == 0 and first.motion_steps > 0 and first.saving > 0.6

    class IgnoresMotion(Minimal):
        def step(self, sample):
            return super().step({**sample, "motion": False})

    blind = NIGHT.simulate_night(IgnoresMotion, seed=4, start=start, hours=1.0)
    assert blind.violations > 0 and "нарушений освещённости" in str(blind)
    assert blind.energy_wh < first.energy_wh


@pytest.mark.parametrize(
    ("controller", "message"),
    [
        (
            lambda: type("C", (), {"step": lambda self, s: 50.5})(),
            "стенд отклонил уровень 50.5 (float)",
        ),
        (
            lambda: type("C", (), {"step": lambda self, s: 1 / 0})(),
            "ZeroDivisionError: division by zero",
        ),
        (lambda: 1 / 0, "контроллер не создаётся: ZeroDivisionError"),
    ],
    ids=["wrong-type", "raises", "cannot-start"],
)
def test_night_reports_a_faulty_controller_in_one_line(controller, message) -> None:
    with pytest.raises(AssertionError, match=re.escape(message)):
        NIGHT.simulate_night(controller, hours=0.1)


def test_night_stops_a_looping_controller() -> None:
    class Loops:
        def step(self, sample):
            while True:
                pass

    with pytest.raises(AssertionError, match=r"не уложился в 0\.5 с"):
        NIGHT.simulate_night(Loops, hours=0.1, time_budget_s=0.5)


def test_junction_enforces_the_interlock_and_scores_deterministically() -> None:
    class Turning:
        def __init__(self):
            self.plan = [
                {"green": ["north", "east"], "seconds": 20},
                {"green": ["south"], "seconds": 20},
            ]

        def step(self, sample):
            return 0

    with pytest.raises(AssertionError, match=r"стенд отклонил план фаз .*interlock"):
        JUNCTION.run_controller(Turning, hours=0.1)

    class Alternates:
        def __init__(self):
            self.plan = [
                {"green": ["north", "south"], "seconds": 30},
                {"green": ["east", "west"], "seconds": 30},
            ]
            self.t = 0

        def step(self, sample):
            self.t += 1
            return (self.t // 30) % 2

    first = JUNCTION.run_controller(Alternates, seed=5, hours=0.5)
    assert first == JUNCTION.run_controller(Alternates, seed=5, hours=0.5)
    assert first.conflicts == 0 and first.vehicles > 0 and first.mean_delay_s > 0
    fixed = JUNCTION.run_fixed(seed=5, hours=0.5)
    assert fixed.vehicles == first.vehicles  # the same arrivals whatever the signals do


# ------------------------------------------------------------------ live kits


def test_live_helpers_step_aside_while_grading(monkeypatch, capsys) -> None:
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    monkeypatch.setenv("SMARTLAB_MQTT_URL", "mqtt://u:p@127.0.0.1:1")
    assert live.live_lab() is None
    with live.live_session("streetlight-1") as kit:
        assert kit is None
    assert capsys.readouterr().out.count("идёт проверка nbgrader") == 2


def test_live_helpers_explain_a_missing_lab(monkeypatch, capsys) -> None:
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.delenv("SMARTLAB_MQTT_URL", raising=False)
    monkeypatch.delenv("SMARTLAB_TOKEN", raising=False)
    assert live.live_lab() is None
    assert live.live_kit(None, "envstation-1") is None
    with live.live_session("envstation-1") as kit:
        assert kit is None
    out = capsys.readouterr().out
    assert "no broker URL" in out and "no lab service token" in out


@pytest.mark.broker
def test_live_helpers_watch_a_real_kit(broker, state_root, monkeypatch) -> None:
    """What an exploration cell does, against a real broker and a twin kit."""
    kit_id = "envstation-course"
    broker.provision_kits([kit_id])
    runner = KitProcess(
        broker, state_root, {"id": kit_id, "model": "environment-station", "seed": 3, "rate_hz": 10}
    ).start()
    try:
        user = broker.provision_user("course-student")
        monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
        monkeypatch.setenv("SMARTLAB_MQTT_URL", broker.address(user.username).url())
        lab = live.live_lab()
        assert lab is not None
        try:
            kit = live.live_kit(lab, kit_id, timeout=20)
            assert kit is not None
            wait_until(lambda: len(kit.history("co2")[0]) >= 3, timeout=20)
            assert set(kit.latest) == {
                "temperature",
                "humidity",
                "pressure",
                "pm25",
                "co2",
                "noise",
            }
        finally:
            lab.close()
    finally:
        runner.stop()


# ------------------------------------------------------------------ data and installation


def test_recorded_data_is_what_the_twins_give() -> None:
    for relative, make in datasets.DATASETS.items():
        assert (COURSES / relative).read_text() == make(), relative


def test_install_course_copies_and_releases_the_first_assignment_once(tmp_path) -> None:
    course = "traffic-signals"
    root, exchange = tmp_path / "grader" / course, tmp_path / "exchange"
    first = assignments(course)[0]
    assert install_course(course, root, True, exchange, progress=None) == [first]
    released = exchange / course / "outbound" / first
    notebook = next(released.glob("*.ipynb")).read_text()
    assert "BEGIN SOLUTION" not in notebook and "ВАШ КОД ЗДЕСЬ" in notebook
    assert (root / "source" / assignments(course)[1]).is_dir()

    config = root / "nbgrader_config.py"
    config.write_text(config.read_text() + "# the instructor's own line\n")
    assert install_course(course, root, True, exchange, progress=None) == []
    assert "the instructor's own line" in config.read_text()  # never overwritten
    with pytest.raises(CourseError, match="no course 'nope'"):
        install_course("nope", root, False, None, progress=None)


def test_courses_are_listed_in_release_order() -> None:
    assert {"iot-basics", "smart-lighting", "traffic-signals"} <= set(available_courses())
    for course in available_courses():
        names = assignments(course)
        assert names == sorted(names) and names[0].startswith("01-")
        metadata = json.loads(
            (
                COURSES
                / course
                / "source"
                / names[0]
                / next(p.name for p in (COURSES / course / "source" / names[0]).glob("*.ipynb"))
            ).read_text()
        )
        assert metadata["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize(
    ("course", "assignment"), [(c, a) for c in available_courses() for a in assignments(c)]
)
def test_notebook_runs_top_to_bottom_without_a_kit(
    course, assignment, tmp_path, monkeypatch
) -> None:
    """As a student runs it (not under nbgrader): the lab's addresses lead nowhere, every
    exploration cell says so, and every other cell runs."""
    folder = tmp_path / assignment
    shutil.copytree(COURSES / course / "source" / assignment, folder)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    monkeypatch.setenv("SMARTLAB_MQTT_URL", f"mqtt://u:p@127.0.0.1:{free_port()}")
    monkeypatch.setenv("SMARTLAB_LAB_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("SMARTLAB_TOKEN", "student-token")
    path = next(folder.glob("*.ipynb"))
    nb = nbformat.read(str(path), as_version=4)
    NotebookClient(
        nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(folder)}}
    ).execute()  # raises on error
    said = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "Живой стенд недоступен" in said
    assert "идёт проверка nbgrader" not in said
