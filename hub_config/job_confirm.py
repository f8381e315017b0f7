"""`smartlab jobs confirm|report COURSE ASSIGNMENT`: graded controllers, run again on a kit.

After autograding, each submission's controller question (grader/controller_questions.py: the
cell the course's source notebook tags, answered by the submission) is submitted as an
experiment job for its student (the caller is the course's instructor: `owner` in POST
/api/jobs), on any working kit of the question's model. When a job has ended its twin score
goes in beside it: the share of points nbgrader's gradebook gave the question's test cell (the
first graded cell after the controller cell). The runner scores the kit's run with the
assignment's scorer; the report puts the two side by side and flags a gap larger than
GAP_SHARE of the twin score.

It combines the grader (notebooks, gradebook) and the client (the lab service): hub wiring.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nbformat

from grader.controller_questions import (
    ControllerQuestionError,
    ControllerSpec,
    controller_question,
    controller_specs,
)
from labs.client.rest_service import LabService

GAP_SHARE = 0.2  # a kit score further than this share of the twin score from it: flagged
ENDED = ("finished", "failed", "cancelled")
SCORE_WAIT_SECONDS = 30.0  # the runner scores a run after up to 10 s of its records settling
POLL_SECONDS = 2.0
Say = Callable[[str], None]


@dataclass(frozen=True)
class Confirmation:
    """One student's controller question, ready to run on a kit."""

    student: str
    notebook: str
    spec: ControllerSpec
    source: str | None  # None: the submission's cell cannot run (`problem` says why)
    twin_score: float | None
    problem: str = ""


def twin_score_cell(source_nb: Any, grade_id: str) -> str | None:
    """The grade id of the first autograded test cell after the controller cell."""
    seen = False
    for cell in source_nb.cells:
        meta = cell.get("metadata", {}).get("nbgrader") or {}
        if meta.get("grade_id") == grade_id:
            seen = True
        elif seen and meta.get("grade") and not meta.get("solution"):
            return meta.get("grade_id")
    return None


def plan(
    root: Path, course: str, assignment: str, students: set[str] | None = None
) -> list[Confirmation]:
    """Every autograded submission's controller questions, with their twin scores."""
    from nbgrader.api import Gradebook  # nbgrader's import is slow: only for this command

    found: list[Confirmation] = []
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", course) as gb:
        for path in sorted((root / "source" / assignment).glob("*.ipynb")):
            source_nb = nbformat.read(str(path), as_version=4)
            for spec in controller_specs(source_nb):
                test_id = twin_score_cell(source_nb, spec.grade_id)
                for submission in gb.find_assignment(assignment).submissions:
                    student = submission.student.id
                    if students is not None and student not in students:
                        continue
                    graded = root / "autograded" / student / assignment / path.name
                    if not graded.exists():
                        continue
                    twin = _twin_score(gb, test_id, path.stem, assignment, student)
                    try:
                        nb = nbformat.read(str(graded), as_version=4)
                        answer = controller_question(nb, spec).source
                        found.append(Confirmation(student, path.stem, spec, answer, twin))
                    except ControllerQuestionError as err:
                        found.append(Confirmation(student, path.stem, spec, None, twin, str(err)))
    return found


def _twin_score(
    gb: Any, test_id: str | None, notebook: str, assignment: str, student: str
) -> float | None:
    from nbgrader.api import MissingEntry

    if test_id is None:
        return None
    try:
        grade = gb.find_grade(test_id, notebook, assignment, student)
    except MissingEntry:
        return None
    if not grade.max_score:
        return None
    return round(float(grade.score) / float(grade.max_score), 4)


def confirm(
    service: LabService,
    confirmations: list[Confirmation],
    course: str,
    assignment: str,
    duration_s: float | None = None,
    timeout_s: float = 3600.0,
    say: Say = print,
) -> dict[int, Confirmation]:
    """Submit a job per runnable confirmation, wait for them all to end (saying how many are
    queued, running, ended), then attach each twin score. job id -> its confirmation."""
    jobs: dict[int, Confirmation] = {}
    for c in confirmations:
        if c.source is None:
            say(f"{c.student}: not run on a kit: {c.problem}")
            continue
        view = service.request(
            "POST",
            "/api/jobs",
            {
                "model": c.spec.model,
                "duration_s": duration_s or c.spec.duration_s,
                "inputs": {},
                "controller": {"source": c.source, "entry": c.spec.entry},
                "course": course,
                "assignment": assignment,
                "owner": c.student,
            },
        )
        jobs[view["id"]] = c
        say(f"{c.student}: job {view['id']} submitted ({c.spec.model}, {c.spec.grade_id})")
    deadline = time.monotonic() + timeout_s
    shown = ""
    while jobs:
        states = [service.request("GET", f"/api/jobs/{i}")["state"] for i in jobs]
        line = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
        if line != shown:
            say(f"{len(jobs)} jobs: {line}")
            shown = line
        if all(s in ENDED for s in states):
            break
        if time.monotonic() >= deadline:
            say(f"stopped waiting after {timeout_s:g} s; `smartlab jobs report` shows them later")
            return jobs
        time.sleep(POLL_SECONDS)
    # A job is finished before the runner has scored its recorded run (it waits for the last
    # samples to be stored): give the kit scores a moment to arrive before the report.
    settle = time.monotonic() + SCORE_WAIT_SECONDS
    while time.monotonic() < settle and any(
        view["outcome"] == "completed" and view["score"] is None
        for view in (service.request("GET", f"/api/jobs/{i}") for i in jobs)
    ):
        time.sleep(POLL_SECONDS)
    for job_id, c in jobs.items():
        if c.twin_score is not None:
            service.request("POST", f"/api/jobs/{job_id}/score", {"twin_score": c.twin_score})
    return jobs


@dataclass(frozen=True)
class ReportRow:
    student: str
    twin_score: float | None
    kit_score: float | None
    outcome: str | None
    gap: bool


def report(service: LabService, course: str, assignment: str) -> list[ReportRow]:
    """Per student, their latest job of the assignment: twin and kit scores and the gap."""
    latest: dict[str, dict[str, Any]] = {}
    for job in service.request("GET", "/api/jobs", query={"course": course}):
        if job["assignment"] != assignment or job["state"] not in ENDED:
            continue
        if job["owner"] not in latest or job["id"] > latest[job["owner"]]["id"]:
            latest[job["owner"]] = job
    return [
        ReportRow(
            student,
            job["twin_score"],
            job["score"],
            job["outcome"],
            gap(job["twin_score"], job["score"]),
        )
        for student, job in sorted(latest.items())
    ]


def gap(twin: float | None, kit: float | None) -> bool:
    """The kit's score further from the twin's than GAP_SHARE of it (a missing kit score, a
    run that failed on the kit, counts as 0)."""
    if twin is None:
        return False
    return abs((kit or 0.0) - twin) > GAP_SHARE * twin


def format_report(rows: list[ReportRow]) -> str:
    def number(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    width = max([len("student"), *(len(r.student) for r in rows)])
    lines = [f"{'student':<{width}}  {'twin':>6}  {'kit':>6}  {'gap':<4} kit run"]
    for r in rows:
        flag = "GAP" if r.gap else ""
        lines.append(
            f"{r.student:<{width}}  {number(r.twin_score):>6}  {number(r.kit_score):>6}  "
            f"{flag:<4} {r.outcome or '-'}"
        )
    return "\n".join(lines)


# ---------------------------------------------------------------- the commands


def add_actions(actions: argparse._SubParsersAction) -> None:
    """`smartlab jobs confirm` and `smartlab jobs report` (the caller: a course instructor's
    lab service token in $SMARTLAB_TOKEN)."""
    confirm_cmd = actions.add_parser(
        "confirm",
        help="run each autograded controller question again on a kit, then report",
        description="For each autograded submission of ASSIGNMENT, submit its controller "
        "question as a job for its student on a kit of the question's model, wait for the "
        "jobs, attach the twin scores from the gradebook and print the report.",
    )
    confirm_cmd.add_argument("course")
    confirm_cmd.add_argument("assignment")
    confirm_cmd.add_argument("--course-dir", help="the course folder (as for `smartlab grade`)")
    confirm_cmd.add_argument("--students", help="only these students (comma-separated)")
    confirm_cmd.add_argument(
        "--duration-s", type=float, help="seconds on the kit (default: the question's)"
    )
    confirm_cmd.add_argument("--timeout-s", type=float, default=3600.0)
    confirm_cmd.add_argument("--lab-url", help="the lab service (default: $SMARTLAB_LAB_URL)")
    confirm_cmd.set_defaults(run=_run_confirm)
    report_cmd = actions.add_parser(
        "report", help="twin and kit scores of an assignment's controller jobs, side by side"
    )
    report_cmd.add_argument("course")
    report_cmd.add_argument("assignment")
    report_cmd.add_argument("--lab-url", help="the lab service (default: $SMARTLAB_LAB_URL)")
    report_cmd.set_defaults(run=_run_report)


def _run_confirm(args: argparse.Namespace) -> int:
    from grader.app import find_course_dir

    root = find_course_dir(args.course, args.course_dir)
    students = set(args.students.split(",")) if args.students else None
    confirmations = plan(root, args.course, args.assignment, students)
    if not confirmations:
        raise ValueError(f"{args.course}/{args.assignment}: no autograded controller question")
    service = LabService(args.lab_url)
    confirm(service, confirmations, args.course, args.assignment, args.duration_s, args.timeout_s)
    print(format_report(report(service, args.course, args.assignment)), flush=True)
    return 0


def _run_report(args: argparse.Namespace) -> int:
    service = LabService(args.lab_url)
    print(format_report(report(service, args.course, args.assignment)))
    return 0
