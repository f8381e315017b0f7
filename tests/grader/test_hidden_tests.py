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
    # The attacks worked where only instructors look: the spy printed the hidden tests and
    # the cheater's traceback shows the hidden assert that failed.
    spied = "".join(
        "".join(o.get("text", ""))
        for c in autograded_cells(course, "spy", "squares")
        for o in c.get("outputs", [])
    )
    assert "hidden: squares(10)" in spied
    cheater = autograded_cells(course, "cheater", "squares")
    assert any(
        "squares(10)" in "".join(o.get("traceback", []))
        for c in cheater
        for o in c.get("outputs", [])
    )

    done = nbgrader("generate_feedback", ASSIGNMENT, "--force", cwd=course)
    assert done.returncode == 0, done.stderr[-2000:]
    pages = sorted((course / "feedback").glob(f"*/{ASSIGNMENT}/*.html"))
    assert len(pages) == 2 * 13
    for page in pages:
        text = visible_text(page)
        shown = [line for line in lines if line in text]
        assert shown == [] and "HIDDEN TESTS" not in text, (page, shown)
    spy_page = visible_text(course / "feedback" / "spy" / ASSIGNMENT / "squares.html")
    assert "[hidden test code removed]" in spy_page
    cheater_page = visible_text(course / "feedback" / "cheater" / ASSIGNMENT / "squares.html")
    assert "AssertionError" in cheater_page and "squares(2) == [1, 4]" in cheater_page
    # A notebook a limit stopped says so in its feedback.
    looper_page = visible_text(course / "feedback" / "looper" / ASSIGNMENT / "squares.html")
    assert "Grading stopped early." in looper_page and "NotRun" in looper_page
