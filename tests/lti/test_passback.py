"""Grade passback (LTI Advantage AGS) from an nbgrader gradebook to two LMSs: right platform,
right line item, right values; retried when refused for a while, reported and kept when refused
for good, and sent by the next push."""

from __future__ import annotations

from pathlib import Path

import pytest
from nbgrader.api import Gradebook

from hub_config import cli as smartlab
from hub_config.lti import passback
from hub_config.lti.keys import KEY_FILE, ToolKey
from hub_config.lti.store import LtiStore
from site_config.site import load_site
from tests.lti.conftest import Browser, Hub
from tests.lti.platform import INSTRUCTOR, LEARNER, LaunchSpec, Platform

COURSE, ASSIGNMENT = "iot-basics", "ps1"
FAST = passback.Retry(attempts=3, backoff=0.05, timeout=10)


def course_dir(hub: Hub) -> Path:
    return hub.courses / f"grader-{COURSE}" / COURSE


def grade(hub: Hub, scores: dict[str, tuple[float, float] | None]) -> None:
    """Submissions of ps1 (two cells of 5 points): student → (cell 1, cell 2), None: ungraded."""
    with Gradebook(f"sqlite:///{course_dir(hub) / 'gradebook.db'}", course_id=COURSE) as book:
        if not book.assignments:
            book.add_assignment(ASSIGNMENT)
            book.add_notebook("problem1", ASSIGNMENT)
            for cell in ("c1", "c2"):
                book.add_grade_cell(cell, "problem1", ASSIGNMENT, max_score=5, cell_type="code")
        for student, points in scores.items():
            try:
                book.find_submission(ASSIGNMENT, student)
            except Exception:
                book.add_submission(ASSIGNMENT, student)
            for cell, value in zip(("c1", "c2"), points or (None, None), strict=True):
                cell_grade = book.find_grade(cell, "problem1", ASSIGNMENT, student)
                cell_grade.auto_score = value
                cell_grade.needs_manual_grade = value is None
            book.db.commit()


def push(hub: Hub, retry: passback.Retry = FAST) -> passback.Report:
    site = load_site(hub.folder / "site.yaml")
    state = hub.folder / "lti"
    return passback.push(
        site,
        LtiStore(state),
        ToolKey.load_or_create(state / KEY_FILE),
        COURSE,
        ASSIGNMENT,
        course_dir(hub),
        retry,
    )


def mine(outcomes: list[passback.Outcome]) -> list[tuple[str, str]]:
    """(user, status) of this module's students (launch tests enrol others in the course)."""
    return sorted((o.username, o.status) for o in outcomes if o.username.endswith(("-301", "-302")))


@pytest.fixture(autouse=True)
def healthy_platforms(platforms: tuple[Platform, Platform]):
    yield
    for p in platforms:
        p.score_failures, p.refuse_scores, p.refuse_status = 0, False, 503


def received(platform: Platform) -> dict[str, float]:
    return {s["userId"]: s["scoreGiven"] for s in platform.scores}


@pytest.fixture(scope="module")
def enrolled(hub: Hub, platforms: tuple[Platform, Platform]) -> None:
    """Students 301 of both LMSs (same id), 302 of the academy, and an instructor launch."""
    a, b = platforms
    for platform, context, sub in ((a, "102", "301"), (b, "7", "301"), (b, "7", "302")):
        response = Browser(hub).launch(platform, LaunchSpec(sub, [LEARNER], context))
        assert response.status_code == 302
    Browser(hub).launch(a, LaunchSpec("399", [INSTRUCTOR], "102"))
    for p in platforms:
        p.scores.clear()


def test_scores_arrive_at_the_right_platform_with_retries(hub, platforms, enrolled):
    a, b = platforms
    grade(hub, {"univ-a-301": (5, 4), "academy-301": (3, 3), "academy-302": None})
    a.score_failures = 1  # a busy LMS: the first score post gets 503
    b.refuse_scores = True  # an LMS down for longer than the retries
    first = push(hub)

    assert received(a) == {"301": 9.0}
    [score] = a.scores
    assert score["scoreMaximum"] == 10.0 and score["gradingProgress"] == "FullyGraded"
    [item] = [i for i in a.lineitems.values() if i["context"] == "102"]
    assert (item["resourceId"], item["label"], item["scoreMaximum"]) == ("ps1", "ps1", 10.0)
    assert score["lineitem"] == item["id"]
    sent_a = [o for o in first.outcomes if o.username == "univ-a-301"]
    assert [(o.status, o.attempts) for o in sent_a] == [("sent", 2)]

    assert b.scores == [] and b.score_attempts == FAST.attempts
    assert mine(first.outcomes) == [
        ("academy-301", "failed"),
        ("academy-302", "not graded"),
        ("univ-a-301", "sent"),
    ]
    assert [o.username for o in first.failed] == ["academy-301"]
    assert "503" in first.failed[0].error
    # Nothing lost: the failure is on record with its score.
    store = LtiStore(hub.folder / "lti")
    kept = store.sent_score("academy", "7", ASSIGNMENT, "academy-301")
    assert (kept.status, kept.score, kept.max_score) == ("failed", 6.0, 10.0)

    # The academy's LMS is back: the next push sends only what is missing.
    b.refuse_scores = False
    second = push(hub)
    assert received(b) == {"301": 6.0} and len(a.scores) == 1
    assert mine(second.outcomes) == [
        ("academy-301", "sent"),
        ("academy-302", "not graded"),
        ("univ-a-301", "unchanged"),
    ]
    # Moodle-style line item URL (with its own query) kept its query on the way to /scores.
    assert b.scores[0]["lineitem"].endswith("/lineitem?type_id=7")

    # A regrade and a late grading: only those two go out.
    grade(hub, {"academy-301": (5, 3), "academy-302": (2, 2)})
    third = push(hub)
    assert [s["scoreGiven"] for s in b.scores] == [6.0, 8.0, 4.0]
    assert received(b) == {"301": 8.0, "302": 4.0} and len(a.scores) == 1
    assert mine(third.outcomes) == [
        ("academy-301", "sent"),
        ("academy-302", "sent"),
        ("univ-a-301", "unchanged"),
    ]


def test_a_refusal_that_retrying_cannot_change_is_reported_at_once(hub, platforms, enrolled):
    _, b = platforms
    grade(hub, {"academy-301": (0, 1)})
    b.refuse_scores, b.refuse_status = True, 422
    attempts = b.score_attempts
    report = push(hub)
    assert b.score_attempts == attempts + 1
    [failed] = report.failed
    assert (failed.username, failed.attempts) == ("academy-301", 1) and "422" in failed.error


def smartlab_push(hub: Hub, assignment: str, *options: str) -> list[str]:
    return [
        "grades",
        "push",
        COURSE,
        assignment,
        "--site",
        str(hub.folder / "site.yaml"),
        "--state-dir",
        str(hub.folder),
        "--course-dir",
        str(course_dir(hub)),
        *options,
    ]


def test_push_command_reports_failures_and_exits_non_zero(hub, platforms, enrolled, capsys):
    a, _ = platforms
    grade(hub, {"univ-a-301": (1, 1)})  # changed: must go out again
    a.refuse_scores = True
    command = smartlab_push(hub, ASSIGNMENT, "--attempts", "2", "--backoff", "0.05")
    assert smartlab.main(command) == 1
    out, err = capsys.readouterr()
    assert "failed: univ-a-301 (univ-a course '102')" in err
    assert "run the push again" in err and "Traceback" not in err
    assert f"{COURSE}/{ASSIGNMENT}:" in out and "1 failed" in out

    a.refuse_scores = False
    assert smartlab.main(command) == 0
    out, _ = capsys.readouterr()
    assert "1 sent" in out and received(a)["301"] == 2.0


def test_push_of_an_unknown_assignment_is_one_line(hub, enrolled, capsys):
    assert smartlab.main(smartlab_push(hub, "nope")) == 2
    assert capsys.readouterr().err.strip() == (
        "smartlab: iot-basics: no assignment 'nope' in the gradebook"
    )
