"""A network course from release to feedback, through the hub's URLs only, as people use it.

Two students of two universities take smart-lighting; its instructor collects and autogrades
through the course's formgrader service; both students fetch feedback without hidden tests.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from hub_config.course_dirs import course_root
from site_config.platform_accounts import SANDBOX_PREFIX
from tests.e2e.hubclient import Browser, json_of
from tests.stack import Up

pytestmark = pytest.mark.broker

COURSE = "smart-lighting"
STUDENTS = {"anna": "univ-a", "boris": "univ-b"}
INSTRUCTOR = "irina"


def first_assignment(platform: Up) -> tuple[str, Path]:
    source = course_root(platform.runtime, COURSE) / "source"
    first = sorted(p for p in source.iterdir() if p.is_dir())[0]
    return first.name, next(first.glob("*.ipynb"))


def hidden_test_lines(source_notebook: Path) -> list[str]:
    """The lines between the hidden-test markers of the instructor's source notebook."""
    lines, hidden = [], False
    for cell in json.loads(source_notebook.read_text())["cells"]:
        for line in "".join(cell["source"]).splitlines():
            if "BEGIN HIDDEN TESTS" in line:
                hidden = True
            elif "END HIDDEN TESTS" in line:
                hidden = False
            elif hidden and len(line.strip()) > 8:
                lines.append(line.strip())
    return lines


# Appended to anna's answer: its output in her feedback says who ran her code at grading.
WHO_RUNS_ME = (
    "import os as _os, pwd as _pwd\nprint('graded as', _pwd.getpwuid(_os.getuid()).pw_name)"
)


def solution_of(source_notebook: Path, grade_id: str) -> str:
    """The instructor's solution of one answer cell, markers removed."""
    cell = next(
        c
        for c in json.loads(source_notebook.read_text())["cells"]
        if c["metadata"].get("nbgrader", {}).get("grade_id") == grade_id
    )
    return "\n".join(
        line for line in "".join(cell["source"]).splitlines() if "SOLUTION" not in line
    )


def answer_one_question(student: Browser, path: str, source_notebook: Path) -> str:
    """Put the right answer into the first autograded answer cell; returns its grade id."""
    contents = f"/user/{student.username}/api/contents/{path}"
    model = json_of(student.get(contents, params={"content": 1}))
    cell = next(
        c
        for c in model["content"]["cells"]
        if c["metadata"].get("nbgrader", {}).get("solution") and c["cell_type"] == "code"
    )
    grade_id = cell["metadata"]["nbgrader"]["grade_id"]
    cell["source"] = solution_of(source_notebook, grade_id) + "\n" + WHO_RUNS_ME
    json_of(
        student.request(
            "PUT",
            contents,
            json={"type": "notebook", "format": "json", "content": model["content"]},
        )
    )
    return grade_id


def test_two_universities_submit_and_get_feedback_without_hidden_tests(platform, browsers):
    assignment, source_notebook = first_assignment(platform)
    hidden = hidden_test_lines(source_notebook)
    assert hidden, "the course's first assignment should have hidden tests"
    notebook = f"{COURSE}/{assignment}/{source_notebook.name}"

    for username in STUDENTS:
        student = browsers[username]
        student.start_server()
        student.open(f"/user/{username}/lab")
        listed = json_of(student.get(f"/user/{username}/assignments", params={"course_id": COURSE}))
        assert listed["success"], listed
        released = {a["assignment_id"]: a["status"] for a in listed["value"]}
        assert released.get(assignment) == "released", released
        fetched = json_of(
            student.post(
                f"/user/{username}/assignments/fetch",
                data={"course_id": COURSE, "assignment_id": assignment},
            )
        )
        assert fetched["success"], fetched
        if username == "anna":
            answered = answer_one_question(student, notebook, source_notebook)
        submitted = json_of(
            student.post(
                f"/user/{username}/assignments/submit",
                data={"course_id": COURSE, "assignment_id": assignment},
            )
        )
        assert submitted["success"], submitted

    instructor = browsers[INSTRUCTOR]
    api = f"/services/{COURSE}/formgrader/api"
    instructor.open(f"/services/{COURSE}/formgrader")
    collected = json_of(instructor.post(f"{api}/assignment/{assignment}/collect"))
    assert collected["success"], collected
    for username in STUDENTS:
        graded = json_of(instructor.post(f"{api}/submission/{assignment}/{username}/autograde"))
        assert graded["success"], graded
    scores = {s["student"]: s for s in json_of(instructor.get(f"{api}/submissions/{assignment}"))}
    assert set(scores) == set(STUDENTS)
    assert scores["anna"]["score"] > 0  # one question answered right
    assert scores["boris"]["score"] == 0  # the untouched release
    assert json_of(instructor.post(f"{api}/assignment/{assignment}/generate_feedback"))["success"]
    assert json_of(instructor.post(f"{api}/assignment/{assignment}/release_feedback"))["success"]

    for username in STUDENTS:
        student = browsers[username]
        got = json_of(
            student.post(
                f"/user/{username}/assignments/fetch_feedback",
                data={"course_id": COURSE, "assignment_id": assignment},
            )
        )
        assert got["success"], got
        folder = json_of(
            student.get(f"/user/{username}/api/contents/{COURSE}/{assignment}/feedback")
        )
        [stamp] = [item["path"] for item in folder["content"]]
        page = json_of(
            student.get(
                f"/user/{username}/api/contents/{stamp}/{source_notebook.stem}.html",
                params={"content": 1, "format": "text"},
            )
        )["content"]
        text = html.unescape(page)
        assert source_notebook.stem in text or "Score" in text
        leaked = [line for line in hidden if line in text]
        assert not leaked, f"hidden tests in {username}'s feedback: {leaked[:3]}"
        if username == "anna" and platform.runtime.isolate:
            # The formgrader's autograde ran her code in the sandbox, not as grader-<course>.
            assert f"graded as {SANDBOX_PREFIX}" in text, text[-2000:]
    assert answered
