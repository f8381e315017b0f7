"""`smartlab grade` on bad input (one line, exit 2), its weak mode without root, and
`smartlab grades export`: CSVs per course and institution, LMS totals, as nbgrader exports."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.synthetic import SyntheticPlan, write_submissions
from hub_config import cli

from .conftest import (
    ASSIGNMENT,
    COURSE_ID,
    REPO,
    copy_course,
    nbgrader,
    root_only,
    smartlab,
    tool_env,
)
from .corpus import CORRECT
from .test_formgrader import PROBE, _grader_account


@pytest.fixture(scope="module")
def graded_course(generated_course: Path, work_root: Path) -> Path:
    course = copy_course(generated_course, work_root / "exports")
    write_submissions(
        course,
        ASSIGNMENT,
        [
            SyntheticPlan("anna", dict(CORRECT)),  # univ-a
            SyntheticPlan("artem", {**CORRECT, "squares": "wrong"}),  # univ-a
            SyntheticPlan("boris", {**CORRECT, "normalise": "error"}),  # univ-b
            SyntheticPlan("pavel", {k: "blank" for k in CORRECT}),  # academy
            SyntheticPlan("stranger", dict(CORRECT)),  # not in the site file
        ],
    )
    done = smartlab("grade", COURSE_ID, ASSIGNMENT, "--course-dir", str(course))
    assert done.returncode == 0, done.stdout + done.stderr
    return course


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["grade", "no-such-course", "ps1"], "smartlab: no course folder for 'no-such-course'"),
        (
            ["grade", COURSE_ID, "ps9", "--course-dir", "{course}"],
            "smartlab: assignment 'ps9' is not in the gradebook of {course}: run `nbgrader "
            "generate_assignment ps9` there first",
        ),
        (
            ["grade", "other-course", "ps1", "--course-dir", "{course}"],
            f"smartlab: {{course}} is the course '{COURSE_ID}', not 'other-course'",
        ),
        (
            ["grade", COURSE_ID, "ps1", "--course-dir", "{course}", "--workers", "0"],
            "smartlab: --workers must be at least 1",
        ),
        (
            ["grade", COURSE_ID, "ps1", "--course-dir", "{course}", "--student", "nobody"],
            "smartlab: no submission of 'ps1' by nobody in",
        ),
    ],
)
def test_bad_input_is_one_line(
    graded_course: Path, args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = (graded_course / "gradebook.db").read_bytes()
    status = cli.main([a.format(course=graded_course) for a in args])
    err = capsys.readouterr().err
    assert status == 2
    assert err.startswith(message.format(course=graded_course)), err
    assert len(err.strip().splitlines()) == 1, err
    assert (graded_course / "gradebook.db").read_bytes() == before


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_exports_per_course_institution_and_lms(graded_course: Path, work_root: Path) -> None:
    out = work_root / "export-out"
    done = smartlab(
        "grades", "export", COURSE_ID, "--course-dir", str(graded_course), "--out", str(out)
    )
    assert done.returncode == 0, done.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        f"{COURSE_ID}--{i}.csv" for i in ("academy", "totals", "univ-a", "univ-b", "unknown")
    ] + [f"{COURSE_ID}.csv"]
    course_rows = read_csv(out / f"{COURSE_ID}.csv")
    # The same rows and scores as nbgrader's own export, plus the institution.
    nbgrader("export", "--to", str(out / "nbgrader.csv"), cwd=graded_course)
    theirs = read_csv(out / "nbgrader.csv")
    key = lambda r: (r["assignment"], r["student_id"])  # noqa: E731
    assert [{k: v for k, v in r.items() if k != "institution"} for r in course_rows] == sorted(
        _normalised(theirs), key=key
    )
    by_student = {r["student_id"]: r for r in course_rows}
    assert by_student["anna"]["score"] == "10.0" and by_student["anna"]["institution"] == "univ-a"
    assert by_student["pavel"]["score"] == "0.0" and by_student["pavel"]["institution"] == "academy"
    assert [r["student_id"] for r in read_csv(out / f"{COURSE_ID}--univ-a.csv")] == [
        "anna",
        "artem",
    ]
    assert [r["student_id"] for r in read_csv(out / f"{COURSE_ID}--unknown.csv")] == ["stranger"]
    totals = {r["username"]: r for r in read_csv(out / f"{COURSE_ID}--totals.csv")}
    assert totals["anna"][ASSIGNMENT] == "10.0" and totals["anna"]["max_total"] == "12.0"
    assert totals["anna"]["percent"] == "83.33"  # the written answer awaits manual grading
    assert float(totals["artem"]["total"]) < 10


def _normalised(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    """nbgrader writes floats with str(); ours are formatted alike for whole numbers."""
    out = []
    for row in rows:
        fixed = {}
        for key, value in row.items():
            try:
                number = float(value)
            except ValueError:
                fixed[key] = value
            else:
                fixed[key] = f"{number:.1f}" if number == int(number) else f"{number:g}"
        out.append(fixed)
    return out


@root_only
def test_weak_mode_without_root_says_so_loudly(generated_course: Path, work_root: Path) -> None:
    account = _grader_account()
    course = work_root / "weak"
    shutil.copytree(generated_course, course)
    write_submissions(
        course, ASSIGNMENT, [SyntheticPlan("weakling", dict(CORRECT), append={"squares": PROBE})]
    )
    for path in [course, *course.rglob("*")]:
        os.lchown(path, account.pw_uid, account.pw_gid)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub_config.cli",
            "grade",
            COURSE_ID,
            ASSIGNMENT,
            "--course-dir",
            str(course),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={**tool_env(), "HOME": str(course)},
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=[account.pw_gid],
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "WARNING: SANDBOX IS WEAK: not running as root" in done.stderr
    assert "sandbox: WEAK (student code runs as smartlab-test-grader)" in done.stdout
    nb = (course / "autograded" / "weakling" / ASSIGNMENT / "squares.ipynb").read_text()
    assert "user smartlab-test-grader" in nb
