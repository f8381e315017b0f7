"""Every assignment of every course, through nbgrader's real command line.

For each assignment, in a temporary copy of its course: `nbgrader generate_assignment`; a scan
of the release for solutions and hidden tests; then one `nbgrader autograde` over a batch of
submissions built from the release: the instructor's solution, the untouched release, and one
plausible wrong answer per autograded question. A second autograde of some of them checks that
grading is deterministic. Grading runs with the hub's own nbgrader config and with the lab's
URLs pointing at ports where nothing listens: no broker, no lab service, no live kit.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
import pytest
from nbgrader.api import Gradebook

from courses.install import assignments, available_courses
from coursework.variants import variant
from grader.execute import WITHHELD
from hub_config.spawner import JUPYTER_CONFIG_DIR as HUB_JUPYTER_CONFIG
from site_config.runtime import free_port
from tests.conftest import REPO
from tests.courses.wrong_answers import BAD_INPUT, WRONG

BIN = Path(sys.executable).parent
MARKERS = ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
REGION = re.compile(
    r"^[ \t]*#*[ \t]*BEGIN (SOLUTION|HIDDEN TESTS)[^\n]*\n(.*?)"
    r"^[ \t]*#*[ \t]*END \1[^\n]*$",
    re.S | re.M,
)
SOLUTION = "solution"
UNTOUCHED = "untouched"
ALL = [(course, name) for course in available_courses() for name in assignments(course)]

# Assignments with a variant per student: the question whose answer is the student's own
# number, and that answer written out as a literal (what a student copying it would submit).
VARIANT_CELL = "v01"
VARIANT_STUDENTS = ("variant-a", "variant-b", "variant-c")
STOLEN = "variant-b-with-a-numbers"  # B submits A's numbers
VARIANT_ANSWERS = {
    ("smart-lighting", "02-adaptive-dimming"): (
        "dim_power",
        lambda v: f"dim_power_w = {6.0 + (v['lamp_max_w'] - 6.0) * 0.1!r}",
    ),
    ("traffic-signals", "02-actuated-control"): (
        "flow",
        lambda v: (
            f"flow_ratio = {(max(v['north'], v['south']) + max(v['east'], v['west'])) / 1800!r}"
        ),
    ),
}
# Controller questions (the job interface, scored on the twin with run_on_twin).
CONTROLLER_QUESTIONS = {
    ("smart-lighting", "02-adaptive-dimming"): "hil",
    ("traffic-signals", "02-actuated-control"): "hil",
}


def test_every_course_has_two_assignments_or_more() -> None:
    courses = available_courses()
    assert {"iot-basics", "smart-lighting", "traffic-signals"} <= set(courses)
    for course in courses:
        assert len(assignments(course)) >= 2, course
    assert set(WRONG) == set(ALL), "every assignment needs its wrong answers"


# ------------------------------------------------------------------ running nbgrader


def nbgrader(root: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(BIN / "nbgrader"), *args],
        cwd=root,
        env=env,
        text=True,
        capture_output=True,
        timeout=900,
        check=False,
    )
    assert done.returncode == 0, f"nbgrader {' '.join(args)}:\n{done.stderr[-3000:]}"
    return done


def grading_env(tmp: Path) -> dict[str, str]:
    """The hub's nbgrader config (exchange, timeout, feedback without hidden tests), and the
    lab's addresses on ports nobody listens on."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SMARTLAB_", "JUPYTER"))}
    env.update(
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        JUPYTER_CONFIG_PATH=str(HUB_JUPYTER_CONFIG),  # as the hub sets it
        JUPYTER_CONFIG_DIR=str(tmp / "config"),
        JUPYTER_RUNTIME_DIR=str(tmp / "runtime"),
        JUPYTER_DATA_DIR=str(tmp / "data"),
        SMARTLAB_EXCHANGE=str(tmp / "exchange"),
        SMARTLAB_MQTT_URL=f"mqtt://nobody:nothing@127.0.0.1:{free_port()}",
        SMARTLAB_LAB_URL=f"http://127.0.0.1:{free_port()}",
        SMARTLAB_TOKEN="none",
    )
    return env


# ------------------------------------------------------------------ notebooks


def strip_markers(source: str) -> str:
    """The source version of a solution cell as a student who got it right would write it."""
    return "\n".join(
        line for line in source.splitlines() if not any(marker in line for marker in MARKERS)
    )


def solution_cells(nb: nbformat.NotebookNode) -> dict[str, nbformat.NotebookNode]:
    return {
        c.metadata.nbgrader["grade_id"]: c
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }


def autograded_cells(nb: nbformat.NotebookNode) -> dict[str, float]:
    """grade id -> points of the test cells (graded, not a written answer)."""
    return {
        c.metadata.nbgrader["grade_id"]: float(c.metadata.nbgrader["points"])
        for c in nb.cells
        if c.metadata.get("nbgrader", {}).get("grade") and not c.metadata.nbgrader.get("solution")
    }


def question_cells(question: str, cells: dict[str, float]) -> set[str]:
    """The test cells of a question: named after its solution cell (`units` -> units_tests)."""
    return {name for name in cells if name.startswith(question + "_")}


def secret_lines(nb: nbformat.NotebookNode) -> set[str]:
    """Lines of solution and hidden-test regions that appear nowhere else in the source."""
    inside, outside = set(), set()
    for cell in nb.cells:
        regions = [m.group(2) for m in REGION.finditer(cell.source)]
        for region in regions:
            inside |= {line.strip() for line in region.splitlines()}
        rest = REGION.sub("", cell.source)
        if cell.metadata.get("nbgrader", {}).get("solution") and not regions:
            inside |= {line.strip() for line in cell.source.splitlines()}  # whole-cell answer
        else:
            outside |= {line.strip() for line in rest.splitlines()}
    return {line for line in inside - outside if len(line) >= 12}


# ------------------------------------------------------------------ one graded assignment


@dataclass
class Graded:
    course: str
    assignment: str
    root: Path
    env: dict[str, str]
    notebook: str
    source: nbformat.NotebookNode
    release: nbformat.NotebookNode
    points: dict[str, float]
    scores: dict[str, dict[str, float]] = field(default_factory=dict)
    regraded: dict[str, dict[str, float]] = field(default_factory=dict)

    def submit(self, student: str, nb: nbformat.NotebookNode) -> None:
        folder = self.root / "submitted" / student / self.assignment
        folder.mkdir(parents=True)
        nbformat.write(nb, str(folder / self.notebook))

    def autograded(self, student: str) -> nbformat.NotebookNode:
        return nbformat.read(
            str(self.root / "autograded" / student / self.assignment / self.notebook), as_version=4
        )

    def read_scores(self) -> dict[str, dict[str, float]]:
        with Gradebook(f"sqlite:///{self.root / 'gradebook.db'}") as gb:
            assignment = gb.find_assignment(self.assignment)
            found = {}
            for submission in assignment.submissions:
                notebook = submission.notebooks[0]
                found[submission.student.id] = {
                    g.name: g.score for g in notebook.grades if g.name in self.points
                }
            return found


def correct_submission(graded: Graded) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(json.loads(nbformat.writes(graded.release)))
    answers = solution_cells(graded.source)
    for grade_id, cell in solution_cells(nb).items():
        cell.source = strip_markers(answers[grade_id].source)
    return nb


def wrong_submission(
    correct: nbformat.NotebookNode, question: str, source: str
) -> nbformat.NotebookNode:
    nb = nbformat.from_dict(json.loads(nbformat.writes(correct)))
    solution_cells(nb)[question].source = source.strip("\n")
    return nb


@pytest.fixture(scope="module", params=ALL, ids=[f"{c}/{a}" for c, a in ALL])
def graded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Graded]:
    course, assignment = request.param
    tmp = tmp_path_factory.mktemp(f"{course}-{assignment}")
    root = tmp / course
    source_dir = REPO / "courses" / course / "source" / assignment
    shutil.copytree(
        source_dir,
        root / "source" / assignment,
        ignore=shutil.ignore_patterns("__pycache__", ".ipynb_checkpoints"),
    )
    shutil.copy(REPO / "courses" / course / "nbgrader_config.py", root)
    env = grading_env(tmp)
    nbgrader(root, env, "generate_assignment", assignment, "--force")
    notebook = next(source_dir.glob("*.ipynb")).name
    source = nbformat.read(str(source_dir / notebook), as_version=4)
    release = nbformat.read(str(root / "release" / assignment / notebook), as_version=4)
    result = Graded(
        course, assignment, root, env, notebook, source, release, autograded_cells(source)
    )

    correct = correct_submission(result)
    result.submit(SOLUTION, correct)
    result.submit(UNTOUCHED, release)
    for question, wrong in WRONG[(course, assignment)].items():
        result.submit(f"wrong-{question}", wrong_submission(correct, question, wrong))
    if (course, assignment) in VARIANT_ANSWERS:
        for student in VARIANT_STUDENTS:
            result.submit(student, correct)
        question, literal = VARIANT_ANSWERS[(course, assignment)]
        theirs = literal(variant(course, assignment, VARIANT_STUDENTS[0]))
        result.submit(STOLEN, wrong_submission(correct, question, theirs))
    # One autograde over every submission: a kernel per notebook, no per-call start-up.
    nbgrader(root, env, "autograde", assignment, "--force")
    result.scores = result.read_scores()
    # Grading again must give the same scores: a wrong submission (partial marks) runs every
    # other question's correct code too, twins and all.
    again = {f"wrong-{next(iter(WRONG[(course, assignment)]))}"}
    others = ",".join(sorted(set(result.scores) - again))
    nbgrader(
        root,
        env,
        "autograde",
        assignment,
        "--force",
        f"--CourseDirectory.student_id_exclude={others}",
    )
    result.regraded = {s: v for s, v in result.read_scores().items() if s in again}
    yield result


# ------------------------------------------------------------------ the checks


def variant_output(nb: nbformat.NotebookNode) -> str:
    cell = next(c for c in nb.cells if c.get("id") == VARIANT_CELL)
    return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")


def test_variant_assignments_give_two_students_different_numbers(graded: Graded) -> None:
    if (graded.course, graded.assignment) not in VARIANT_ANSWERS:
        pytest.skip("no variants in this assignment")
    shown = {s: variant_output(graded.autograded(s)) for s in VARIANT_STUDENTS}
    for student, text in shown.items():
        assert f"Вариант для {student}:" in text, text  # the owner's, recomputed by the grader
        assert str(variant(graded.course, graded.assignment, student)) in text
    assert len(set(shown.values())) == len(VARIANT_STUDENTS)


def test_solution_gets_full_marks_for_every_variant(graded: Graded) -> None:
    if (graded.course, graded.assignment) not in VARIANT_ANSWERS:
        pytest.skip("no variants in this assignment")
    for student in VARIANT_STUDENTS:
        assert graded.scores[student] == graded.points, student


def test_another_students_numbers_lose_the_variant_question(graded: Graded) -> None:
    if (graded.course, graded.assignment) not in VARIANT_ANSWERS:
        pytest.skip("no variants in this assignment")
    question, _ = VARIANT_ANSWERS[(graded.course, graded.assignment)]
    cells = question_cells(question, graded.points)
    want = {name: 0.0 if name in cells else full for name, full in graded.points.items()}
    assert graded.scores[STOLEN] == want


def test_released_variant_equals_the_one_the_grader_recomputes(graded: Graded) -> None:
    """The release run by student X (as JupyterHub starts it, $JUPYTERHUB_USER=X) shows the
    variant the grader computes when it grades X's submission."""
    if (graded.course, graded.assignment) not in VARIANT_ANSWERS:
        pytest.skip("no variants in this assignment")
    from nbclient import NotebookClient

    student = VARIANT_STUDENTS[1]
    nb = nbformat.reads(nbformat.writes(graded.release), as_version=4)
    last = next(i for i, c in enumerate(nb.cells) if c.get("id") == VARIANT_CELL)
    nb.cells = [c for c in nb.cells[: last + 1] if c.cell_type == "code"]
    env = {k: v for k, v in graded.env.items() if not k.startswith("SMARTLAB_STUDENT")}
    env["JUPYTERHUB_USER"] = student
    folder = graded.root / "release" / graded.assignment
    NotebookClient(nb, timeout=120, resources={"metadata": {"path": str(folder)}}).execute(env=env)
    released = variant_output(nb)
    assert f"Вариант для {student}:" in released
    assert released == variant_output(graded.autograded(student))


def test_controller_question_scores_the_solution_above_a_do_nothing_controller(
    graded: Graded,
) -> None:
    question = CONTROLLER_QUESTIONS.get((graded.course, graded.assignment))
    if question is None:
        pytest.skip("no controller question in this assignment")
    cells = question_cells(question, graded.points)
    assert all(graded.scores[SOLUTION][c] == graded.points[c] > 0 for c in cells)
    assert all(graded.scores[f"wrong-{question}"][c] == 0.0 for c in cells)  # does nothing


# The graded controller questions confirmed on kits (`smartlab jobs confirm`): a small class,
# two right answers and the do-nothing one, on twins of the question's model through the real
# lab service, runner (root: the sandbox), and broker.
KIT_CLASS = (VARIANT_STUDENTS[0], VARIANT_STUDENTS[1], "wrong-hil")
KIT_SECONDS = 8


def test_controller_question_twin_and_kit_scores_side_by_side(
    graded: Graded, broker, models, state_root
) -> None:
    from hardware_kits.kit_runner import KitRunner
    from hardware_kits.twins.base import twin_class
    from hub_config.job_confirm import gap
    from tests.integration.test_lab_jobs_end_to_end import RunnerProcess
    from tests.stack import ServiceProcess, call_api, token, with_tokens

    if CONTROLLER_QUESTIONS.get((graded.course, graded.assignment)) is None:
        pytest.skip("no controller question in this assignment")
    if os.geteuid() != 0:
        pytest.skip("the controller sandbox needs root")
    spec = next(
        c.metadata["smartlab"]["controller"]
        for c in graded.source.cells
        if "controller" in c.metadata.get("tags", [])
    )
    users = {
        "teacher": {"name": "teach", "institution": "univ-a", "instructor_of": [graded.course]},
        "admin": {"name": "lab-admin", "institution": "centre", "lab_admin": True},
        "runner": {"name": "jobs-runner", "institution": "centre", "job_runner": True},
    }
    name = f"confirm-{graded.course}"
    service = ServiceProcess(broker, state_root, with_tokens(users), name=name).start()
    runner = RunnerProcess(service, broker, service.dir / "runner.log")
    kits = []
    try:
        for i in (1, 2):
            kit_id = f"cf-{graded.course[:8]}-{i}"
            body = {"id": kit_id, "model": spec["model"]}
            assert call_api(service.port, "POST", "/api/kits", token("admin"), body)[0] == 201
            twin = twin_class(spec["model"])(models[spec["model"]], seed=i)
            kits.append(KitRunner(kit_id, twin, broker.address(f"kit-{kit_id}")).start())
        runner.start()
        command = [sys.executable, "-m", "hub_config.cli", "jobs", "confirm"]
        command += [graded.course, graded.assignment, "--course-dir", str(graded.root)]
        command += ["--students", ",".join(KIT_CLASS), "--duration-s", str(KIT_SECONDS)]
        done = subprocess.run(
            command,
            cwd=REPO,
            env={
                **graded.env,
                "SMARTLAB_TOKEN": token("teacher"),
                "SMARTLAB_LAB_URL": service.url,
            },
            text=True,
            capture_output=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:] + runner.output()[-2000:]
    finally:
        runner.stop()
        service.stop()
        for kit in kits:
            kit.stop()
    out = done.stdout
    print(out)  # the instructor's view: twin and kit scores side by side
    assert "3 jobs:" in out and "3 finished" in out, out
    table = out[out.index("student") :].splitlines()
    rows = {line.split()[0]: line.split() for line in table[1:]}
    assert set(rows) == set(KIT_CLASS), out
    for _, twin, kit, *rest in rows.values():
        twin_score, kit_score = float(twin), float(kit)
        assert 0.0 <= kit_score <= 1.0, out
        flagged = rest[0] == "GAP"
        assert flagged == gap(twin_score, kit_score), out
        assert rest[-1] == "completed", out
    # The twin score is the gradebook's: full for the right answers, none for doing nothing.
    assert float(rows["wrong-hil"][1]) == 0.0
    assert float(rows[VARIANT_STUDENTS[0]][1]) == float(rows[VARIANT_STUDENTS[1]][1]) == 1.0


def test_generated_release_has_no_solution_or_hidden_test(graded: Graded) -> None:
    released = graded.root / "release" / graded.assignment
    secrets = secret_lines(graded.source)
    assert secrets, "the source notebook should have solutions and hidden tests"
    for path in released.rglob("*"):
        if path.is_dir():
            continue
        text = path.read_text(encoding="utf-8")
        for marker in MARKERS:
            assert marker not in text, f"{path.name} contains {marker!r}"
        if path.suffix == ".ipynb":
            lines = {
                line.strip()
                for c in nbformat.read(str(path), as_version=4).cells
                for line in c.source.splitlines()
            }
            leaked = secrets & lines
            assert not leaked, f"{path.name} leaks: {sorted(leaked)[:3]}"
        else:  # data files and helper modules go out exactly as written
            original = REPO / "courses" / graded.course / "source" / graded.assignment
            assert text == (original / path.name).read_text(encoding="utf-8"), path.name
    # every question has visible tests, hidden tests and points; and a written answer
    for cell in graded.source.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade") and not meta.get("solution"):
            assert "BEGIN HIDDEN TESTS" in cell.source, meta["grade_id"]
            assert "assert" in REGION.sub("", cell.source) or "checks." in cell.source
            assert meta["points"] > 0
    manual = [
        c
        for c in graded.source.cells
        if c.cell_type == "markdown" and c.metadata.get("nbgrader", {}).get("grade")
    ]
    assert manual and all(c.metadata.nbgrader["points"] > 0 for c in manual)


def test_solution_gets_full_marks(graded: Graded) -> None:
    assert graded.scores[SOLUTION] == graded.points
    # A test cell's output would count as partial credit: they must print, not return.
    nb = graded.autograded(SOLUTION)
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") in graded.points:
            kinds = {o.output_type for o in cell.outputs}
            assert kinds <= {"stream"}, (cell.metadata.nbgrader.grade_id, kinds)


def test_untouched_release_gets_zero(graded: Graded) -> None:
    assert graded.scores[UNTOUCHED] == dict.fromkeys(graded.points, 0.0)


def test_each_wrong_answer_loses_exactly_its_question(graded: Graded) -> None:
    questions = WRONG[(graded.course, graded.assignment)]
    covered = set()
    for question in questions:
        cells = question_cells(question, graded.points)
        assert cells, f"no test cells for {question}"
        covered |= cells
        want = {name: 0.0 if name in cells else full for name, full in graded.points.items()}
        assert graded.scores[f"wrong-{question}"] == want, question
    assert covered == set(graded.points), "every autograded question has a wrong answer"


def test_grading_twice_gives_the_same_scores(graded: Graded) -> None:
    assert len(graded.regraded) == 1
    for student, scores in graded.regraded.items():
        assert 0 < sum(scores.values()) < sum(graded.points.values())
        assert scores == graded.scores[student], student


def test_grading_never_touches_a_live_kit(graded: Graded) -> None:
    # The exploration cells noticed the grader and left the lab alone.
    outputs = "".join(
        o.get("text", "")
        for c in graded.autograded(SOLUTION).cells
        if c.cell_type == "code"
        for o in c.outputs
    )
    assert "идёт проверка nbgrader" in outputs


def test_bad_input_costs_one_question_and_its_feedback_shows_no_computed_text(
    graded: Graded,
) -> None:
    """A solution that raises, loops or returns the wrong type: the test above shows it costs
    only its question; here the student's feedback says that question failed and shows the
    visible tests, but neither the hidden tests nor the message computed while they ran (it
    may carry text of the student's code: docs/security.md, grading integrity). The message
    itself is what the student reads running the visible tests in their own notebook
    (tests/courses/test_course_support.py checks the helpers' messages)."""
    cases = BAD_INPUT.get((graded.course, graded.assignment))
    if not cases:
        pytest.skip("bad input is exercised on one assignment")
    nbgrader(graded.root, graded.env, "generate_feedback", graded.assignment, "--force")
    hidden = {line for line in secret_lines(graded.source) if line.startswith("_")}
    visible = {
        line.strip()
        for c in graded.release.cells
        if c.metadata.get("nbgrader", {}).get("grade")
        for line in c.source.splitlines()
        if line.startswith("_")
    }
    for question, message in cases.items():
        page = (
            graded.root
            / "feedback"
            / f"wrong-{question}"
            / graded.assignment
            / graded.notebook.replace(".ipynb", ".html")
        ).read_text(encoding="utf-8")
        text = html.unescape(re.sub(r"<[^>]+>", "", page))  # the page as the student reads it
        assert message not in text, question
        assert WITHHELD in text, f"{question}: the failure is shown as withheld output"
        assert any(line in text for line in visible), "the visible tests are shown"
        shown = {line for line in hidden if line in text}
        assert not shown, f"hidden tests in the feedback: {sorted(shown)[:2]}"
