"""Hidden tests stay hidden: not in the release, not in the feedback students fetch (neither
the test code, nor a failing hidden test's traceback, nor what student code spied on)."""

from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat

from grader.feedback import hidden_lines, leaks

from .conftest import ASSIGNMENT, HostileClass, nbgrader, root_only
from .corpus import autograded_cells

pytestmark = root_only
TAG = re.compile(r"<[^>]+>")


def course_hidden_lines(course: Path) -> set[str]:
    found: set[str] = set()
    for path in (course / "source" / ASSIGNMENT).glob("*.ipynb"):
        found |= hidden_lines(nbformat.read(path, as_version=4))
    return found


def visible_text(page: Path) -> str:
    """What a browser shows of a feedback page (tags gone, entities decoded)."""
    return html.unescape(TAG.sub("", page.read_text()))


def test_release_has_no_hidden_tests(generated_course: Path) -> None:
    lines = course_hidden_lines(generated_course)
    assert len(lines) >= 5
    for path in (generated_course / "release" / ASSIGNMENT).glob("*.ipynb"):
        assert leaks(nbformat.read(path, as_version=4), lines) == [], path


def test_feedback_shows_no_hidden_test(hostile_class: HostileClass) -> None:
    course = hostile_class.course
    lines = course_hidden_lines(course)
    # Not even where only instructors look: the spy's input transformer was removed before
    # the first test cell (which then scored 0, flagged), and a failing hidden test shows its
    # error and its author's message, not its traceback.
    spied = "".join(
        "".join(o.get("text", ""))
        for c in autograded_cells(course, "spy", "squares")
        for o in c.get("outputs", [])
    )
    assert "squares(10)" not in spied and "input_transformers_post" in spied + str(
        autograded_cells(course, "spy", "squares")
    )
    cheater = autograded_cells(course, "cheater", "squares")
    hidden_errors = [
        o
        for c in cheater
        if "BEGIN HIDDEN TESTS" in "".join(c["source"])
        for o in c.get("outputs", [])
        if o["output_type"] == "error"
    ]
    assert [(o["ename"], o["evalue"], len(o["traceback"])) for o in hidden_errors] == [
        ("AssertionError", "hidden: squares(10)", 1)
    ]

    done = nbgrader("generate_feedback", ASSIGNMENT, "--force", cwd=course)
    assert done.returncode == 0, done.stderr[-2000:]
    pages = sorted((course / "feedback").glob(f"*/{ASSIGNMENT}/*.html"))
    assert len(pages) == 2 * 13
    for page in pages:
        text = visible_text(page)
        shown = [line for line in lines if line in text]
        assert shown == [] and "HIDDEN TESTS" not in text, (page, shown)
    spy_page = visible_text(course / "feedback" / "spy" / ASSIGNMENT / "squares.html")
    assert "Grading integrity violation" in spy_page
    cheater_page = visible_text(course / "feedback" / "cheater" / ASSIGNMENT / "squares.html")
    assert "AssertionError: hidden: squares(10)" in cheater_page
    # A notebook a limit stopped says so in its feedback.
    looper_page = visible_text(course / "feedback" / "looper" / ASSIGNMENT / "squares.html")
    assert "Grading stopped early." in looper_page and "NotRun" in looper_page
