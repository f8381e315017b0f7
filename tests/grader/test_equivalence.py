"""`smartlab grade` gives what `nbgrader autograde` gives: scores per cell, autograded notebooks,
and the same handling of bad submissions; the batch never stops for one of them."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from grader.compare import cell_scores, differences

from .conftest import ASSIGNMENT, COURSE_ID, copy_course, nbgrader, root_only, smartlab
from .corpus import FULL_MARKS, class_corpus

pytestmark = root_only


@dataclass
class Pair:
    nbgrader: Path
    smartlab: Path
    nbgrader_run: subprocess.CompletedProcess
    smartlab_run: subprocess.CompletedProcess
    students: list[str]


@pytest.fixture(scope="module")
def graded(generated_course: Path, work_root: Path) -> Pair:
    base = copy_course(generated_course, work_root / "class")
    students = sorted(class_corpus(base))
    ours = copy_course(base, work_root / "class-smartlab")
    theirs = base
    nb_run = nbgrader("autograde", ASSIGNMENT, cwd=theirs)
    sl_run = smartlab("grade", COURSE_ID, ASSIGNMENT, "--course-dir", str(ours))
    return Pair(theirs, ours, nb_run, sl_run, students)


def db(course: Path) -> str:
    return f"sqlite:///{course / 'gradebook.db'}"


def test_every_cell_scores_the_same(graded: Pair) -> None:
    expected = cell_scores(db(graded.nbgrader), ASSIGNMENT, COURSE_ID)
    actual = cell_scores(db(graded.smartlab), ASSIGNMENT, COURSE_ID)
    assert differences(expected, actual) == []
    # The corpus really spans the cases: full marks, zero, partial credit, manual grading.
    assert {k[1:]: v[0] for k, v in actual.items() if k[0] == "anna"} == {
        **FULL_MARKS,
        ("squares", "squares_explain"): None,
    }
    assert actual[("bella", "squares", "correct_squares")] == (0.0, False)  # timed out
    assert actual[("artem", "squares", "squares_sums")] == (0.0, False)
    assert actual[("missing", "stats", "mean_and_std_tests")] == (0.0, False)
    assert actual[("anna", "squares", "squares_explain")] == (None, True)
    # nbgrader records the corrupt one before failing on it, and never sees the empty one.
    assert {k[0] for k in actual} == set(graded.students) - {"empty"}


def _outputs(cell: dict) -> list[tuple]:
    found = []
    for o in cell.get("outputs", []):
        kind = o["output_type"]
        if kind == "stream":
            found.append((kind, o["name"], "".join(o["text"])))
        elif kind == "error":
            found.append((kind, o["ename"], o["evalue"]))
        else:
            found.append((kind, "".join(o.get("data", {}).get("text/plain", ""))))
    return found


def test_autograded_notebooks_match(graded: Pair) -> None:
    ours = sorted(
        p.relative_to(graded.smartlab)
        for p in (graded.smartlab / "autograded").rglob("*")
        if p.is_file()
    )
    theirs = sorted(
        p.relative_to(graded.nbgrader)
        for p in (graded.nbgrader / "autograded").rglob("*")
        if p.is_file()
    )
    assert ours == theirs
    compared = 0
    for relative in (p for p in ours if p.suffix == ".ipynb"):
        mine = json.loads((graded.smartlab / relative).read_text())
        nbg = json.loads((graded.nbgrader / relative).read_text())
        assert [c["source"] for c in mine["cells"]] == [c["source"] for c in nbg["cells"]]
        for a, b in zip(mine["cells"], nbg["cells"], strict=True):
            assert _outputs(a) == _outputs(b), (relative, a["source"][:80])
            compared += 1
    assert compared > 100


def test_bad_submissions_are_handled_as_nbgrader_does(graded: Pair) -> None:
    for course in (graded.nbgrader, graded.smartlab):
        autograded = course / "autograded"
        for failed in ("corrupt", "foreign"):  # failed: nothing half done
            assert not (autograded / failed / ASSIGNMENT).exists()
        assert not (autograded / "empty" / ASSIGNMENT).exists()
        assert sorted(p.name for p in (autograded / "renamed" / ASSIGNMENT).iterdir()) == [
            "numbers.csv",
            "stats.ipynb",
            "timestamp.txt",
        ]
        extras = autograded / "extras" / ASSIGNMENT
        assert (extras / "helper.py").read_text() == "ANSWER = 42\n"
        assert (extras / "notes" / "todo.txt").exists()
        assert (extras / "numbers.csv").read_text() == (
            course / "source" / ASSIGNMENT / "numbers.csv"
        ).read_text()
    assert graded.nbgrader_run.returncode == 1  # nbgrader also reports those two


def test_summary_names_each_problem_in_one_line(graded: Pair) -> None:
    run = graded.smartlab_run
    assert run.returncode == 1, run.stderr  # two submissions failed; the batch went on
    out = run.stdout
    assert re.search(r"^ps1: 10 graded, 2 failed, 0 already graded, 1 skipped", out, re.M), out
    assert re.search(r"^  corrupt: NotJSONError: Notebook does not appear to be JSON", out, re.M)
    assert re.search(
        r"^  foreign: ValidationError: nbgrader cell does not have a grade_id", out, re.M
    )
    assert re.search(r"^  empty: empty submission folder \(no notebooks\)$", out, re.M)
    assert re.search(r"^  renamed: Skipping unknown notebook: .*squares \(1\)\.ipynb$", out, re.M)
    assert "Traceback" not in out and "Traceback" not in run.stderr
    progress = run.stderr.strip().splitlines()[-1]
    assert re.match(r"grading ps1 \[#+\] 12/12 .*/s .* left, 2 failed$", progress), progress


def test_a_second_run_only_grades_what_changed(graded: Pair) -> None:
    again = smartlab(
        "grade",
        COURSE_ID,
        ASSIGNMENT,
        "--course-dir",
        str(graded.smartlab),
        "--student",
        "a*",
        "--student",
        "bo*",
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert again.stdout.startswith("ps1: 0 graded, 0 failed, 3 already graded, 0 skipped")
