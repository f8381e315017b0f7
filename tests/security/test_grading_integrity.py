"""Grading integrity: student code that hooks into the kernel earns nothing for it.

Each tampering student hands in an answer plus code that, in a real kernel, would forge a pass
(a custom exception handler, `sys.excepthook`, patched builtins) or see every later cell's source
(a `pre_run_cell` event, an input transformer) and print it, base64-encoded, in a cell of its
own after the tests. Graded with `smartlab grade` (full sandbox, as root) and given feedback
with `nbgrader generate_feedback`: the tampered cells score 0, the notebooks are flagged, and no
hidden test line appears in the autograded notebooks or the feedback pages, in clear or in
base64. An honest student in the same batch keeps full marks.
"""

from __future__ import annotations

import base64
import binascii
import html
import json
import re
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest

from grader.compare import cell_scores
from grader.feedback import hidden_lines
from grader.synthetic import SyntheticPlan, write_submissions
from tests.grader.conftest import (  # noqa: F401 - fixtures
    ASSIGNMENT,
    COURSE_ID,
    copy_course,
    generated_course,
    nbgrader,
    root_only,
    smartlab,
    work_root,
)
from tests.grader.corpus import CORRECT, FULL_MARKS

pytestmark = root_only

WRONG_SQUARES = {**CORRECT, "squares": "wrong"}
SPY_CELL = "import builtins\nprint('\\n'.join(getattr(builtins, '_spied', [])))"
ATTACKS: dict[str, tuple[dict[str, str], str, str]] = {
    # student: (answers, grade_id the code is appended to, attack code)
    "forger": (
        WRONG_SQUARES,
        "squares",
        "get_ipython().set_custom_exc((BaseException,), lambda *args, **kwargs: None)\n"
        "get_ipython()._showtraceback = lambda *args, **kwargs: None",
    ),
    "excepthooker": (
        WRONG_SQUARES,
        "squares",
        "import sys\nsys.excepthook = lambda *args: None\n"
        "get_ipython().excepthook = lambda *args: None\n"
        "get_ipython().showtraceback = lambda *args, **kwargs: None",
    ),
    "rewriter": (
        WRONG_SQUARES,
        "squares",
        "get_ipython().input_transformers_cleanup.append(\n"
        "    lambda lines: ['pass\\n'] if any('assert' in l for l in lines) else lines)",
    ),
    "astforger": (
        WRONG_SQUARES,
        "squares",
        "import ast\n"
        "class _NoAsserts(ast.NodeTransformer):\n"
        "    def visit_Assert(self, node):\n"
        "        return ast.Pass()\n"
        "get_ipython().ast_transformers.append(_NoAsserts())",
    ),
    "monkeypatcher": (
        CORRECT,
        "normalise",
        "import numpy\n"
        "_normalise = normalise\n"
        "def normalise(xs):  # right for the visible tests, wrong for the hidden one\n"
        "    return _normalise(xs) if len(xs) > 2 else [0.0, 0.0]\n"
        "numpy.allclose = lambda *args, **kwargs: True",
    ),
    "patcher": (
        {**CORRECT, "mean_and_std": "wrong"},
        "mean_and_std",
        "import builtins\nbuiltins.abs = lambda x: 0\n"
        "builtins.AssertionError = type('AssertionError', (Exception,), {})",
    ),
    "peeker": (
        CORRECT,
        "squares",
        "import base64, builtins\nbuiltins._spied = []\n"
        "def _peek(info):\n"
        "    builtins._spied.append(base64.b64encode(info.raw_cell.encode()).decode())\n"
        "    print(base64.b64encode(info.raw_cell.encode()).decode())\n"
        "get_ipython().events.register('pre_run_cell', _peek)",
    ),
    "transformer": (
        CORRECT,
        "squares",
        "import base64, builtins\nbuiltins._spied = []\n"
        "def _keep(lines):\n"
        "    builtins._spied.append(base64.b64encode(''.join(lines).encode()).decode())\n"
        "    print(base64.b64encode(''.join(lines).encode()).decode())\n"
        "    return lines\n"
        "get_ipython().input_transformers_cleanup.append(_keep)\n"
        "get_ipython().input_transformers_post.append(_keep)",
    ),
}
B64 = re.compile(r"[A-Za-z0-9+/]{12,}={0,2}")
TAG = re.compile(r"<[^>]+>")


class Graded:
    def __init__(self, course: Path, summary: str) -> None:
        self.course, self.summary = course, summary

    def scores(self, student: str) -> dict[tuple[str, str], float | None]:
        found = cell_scores(f"sqlite:///{self.course / 'gradebook.db'}", ASSIGNMENT, COURSE_ID)
        return {k[1:]: v[0] for k, v in found.items() if k[0] == student}

    def notebook(self, student: str, name: str) -> nbformat.NotebookNode:
        path = self.course / "autograded" / student / ASSIGNMENT / f"{name}.ipynb"
        return nbformat.read(path, as_version=4)


@pytest.fixture(scope="module")
def graded(generated_course: Path, work_root: Path) -> Iterator[Graded]:  # noqa: F811
    course = copy_course(generated_course, work_root / "integrity")
    with open(course / "nbgrader_config.py", "a") as config:
        config.write("\nfrom grader.autograde import use_sandbox\n\nuse_sandbox(c)\n")
    plans = [SyntheticPlan("honest", dict(CORRECT))]
    for student, (answers, grade_id, code) in ATTACKS.items():
        in_stats = grade_id in ("mean_and_std", "normalise")
        notebook = "stats.ipynb" if in_stats else "squares.ipynb"
        plans.append(
            SyntheticPlan(
                student, dict(answers), append={grade_id: code}, final_cells={notebook: SPY_CELL}
            )
        )
    write_submissions(course, ASSIGNMENT, plans)
    run = smartlab("grade", COURSE_ID, ASSIGNMENT, "--course-dir", str(course))
    assert run.returncode == 0, run.stdout + run.stderr
    done = nbgrader("generate_feedback", ASSIGNMENT, "--force", cwd=course)
    assert done.returncode == 0, done.stderr[-2000:]
    yield Graded(course, run.stdout)


def _hidden(course: Path) -> set[str]:
    found: set[str] = set()
    for path in (course / "source" / ASSIGNMENT).glob("*.ipynb"):
        found |= hidden_lines(nbformat.read(path, as_version=4))
    return found


def _decoded(text: str) -> str:
    """`text` with every base64-looking run decoded next to it."""
    parts = [text]
    for token in B64.findall(text):
        for candidate in (token, token + "=", token + "=="):
            try:
                parts.append(base64.b64decode(candidate, validate=True).decode("utf-8", "replace"))
                break
            except (binascii.Error, ValueError):
                continue
    return "\n".join(parts)


def _leaked(text: str, lines: set[str]) -> list[str]:
    plain = _decoded(text)
    return sorted(line for line in lines if line in plain)


def test_the_honest_student_keeps_full_marks(graded: Graded) -> None:
    assert {k: v for k, v in graded.scores("honest").items() if v is not None} == FULL_MARKS
    assert "tampered" not in json.dumps(graded.notebook("honest", "squares").metadata)


@pytest.mark.parametrize(
    ("student", "cells"),
    [
        ("forger", [("squares", "correct_squares"), ("squares", "squares_sums")]),
        ("excepthooker", [("squares", "correct_squares"), ("squares", "squares_sums")]),
        ("rewriter", [("squares", "correct_squares")]),
        ("astforger", [("squares", "correct_squares")]),
        ("patcher", [("stats", "mean_and_std_tests")]),
        ("monkeypatcher", [("stats", "normalise_tests")]),
    ],
)
def test_forging_a_pass_earns_nothing(
    graded: Graded, student: str, cells: list[tuple[str, str]]
) -> None:
    scores = graded.scores(student)
    for cell in cells:
        assert scores[cell] == 0.0, (student, cell, scores)


@pytest.mark.parametrize(
    "student", ["forger", "rewriter", "astforger", "patcher", "peeker", "transformer"]
)
def test_tampering_is_flagged_for_the_instructor(graded: Graded, student: str) -> None:
    notebook = "stats" if student == "patcher" else "squares"
    nb = graded.notebook(student, notebook)
    flagged = nb.metadata["smartlab_grade"]["tampered"]
    assert flagged and all(entry["changed"] for entry in flagged)
    assert "Grading integrity violation" in nb.cells[0].source
    assert re.search(rf"^  {student}: {notebook}\.ipynb cell \d+: FLAGGED", graded.summary, re.M)
    page = (graded.course / "feedback" / student / ASSIGNMENT / f"{notebook}.html").read_text()
    assert "Grading integrity violation" in html.unescape(TAG.sub("", page))


@pytest.mark.parametrize("student", ["peeker", "transformer", "forger", "honest"])
def test_no_hidden_test_source_leaks(graded: Graded, student: str) -> None:
    lines = _hidden(graded.course)
    assert len(lines) >= 5
    for name in ("squares", "stats"):
        nb = graded.notebook(student, name)
        for cell in nb.cells:
            if "BEGIN HIDDEN TESTS" in cell.source:
                continue  # the instructor's copy keeps the tests' source, not their output
            assert _leaked(json.dumps(cell.get("outputs", [])), lines) == [], (name, cell)
        page = graded.course / "feedback" / student / ASSIGNMENT / f"{name}.html"
        text = html.unescape(TAG.sub("", page.read_text()))
        assert _leaked(text, lines) == [], (student, name)


def test_hidden_test_cells_keep_only_pass_fail_and_their_authors_words(graded: Graded) -> None:
    nb = graded.notebook("peeker", "squares")
    hidden = next(c for c in nb.cells if "BEGIN HIDDEN TESTS" in c.source)
    # The peeker's hook was removed before the cell ran: nothing of it in the outputs.
    for output in hidden.outputs:
        assert output.output_type != "stream" or output.text in ("", "visible tests passed\n")
    wrong = graded.notebook("forger", "squares")
    assert graded.scores("forger")[("squares", "squares_invalid_input")] is not None
    for cell in wrong.cells:
        for output in cell.get("outputs", []):
            if output.output_type == "error" and "BEGIN HIDDEN TESTS" in cell.source:
                assert len(output.traceback) == 1  # no traceback lines of the hidden code
