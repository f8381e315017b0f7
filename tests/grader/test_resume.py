"""An interrupted `smartlab grade` (Ctrl-C, or killed outright) carries on where it stopped and
ends with the gradebook an uninterrupted run gives."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from grader.compare import cell_scores, differences
from grader.synthetic import SyntheticPlan, write_submissions

from .conftest import ASSIGNMENT, COURSE_ID, REPO, copy_course, root_only, smartlab, tool_env
from .corpus import CORRECT

pytestmark = root_only
STUDENTS = [f"s{i:02d}" for i in range(8)]


def journal_states(course: Path) -> list[tuple[str, str]]:
    path = course / ".smartlab" / f"grade-{ASSIGNMENT}.journal"
    if not path.exists():
        return []
    return [(e["student"], e["state"]) for e in map(json.loads, path.read_text().splitlines())]


def start(course: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub_config.cli",
            "grade",
            COURSE_ID,
            ASSIGNMENT,
            "--course-dir",
            str(course),
            "--workers",
            "1",
        ],
        cwd=REPO,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )


def interrupt_after(course: Path, graded: int, signum: int) -> subprocess.Popen:
    process = start(course)
    deadline = time.monotonic() + 180
    while sum(state == "graded" for _, state in journal_states(course)) < graded:
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(process.pid, signum)
    process.wait(60)
    return process


def fork_servers_of(pid: int) -> list[int]:
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if f"forkserver-{pid}.sock".encode() in cmdline:
            found.append(int(entry))
    return found


def test_interrupted_runs_resume_to_the_same_gradebook(
    generated_course: Path, work_root: Path
) -> None:
    course = copy_course(generated_course, work_root / "resume")
    write_submissions(
        course,
        ASSIGNMENT,
        [SyntheticPlan(s, {**CORRECT, "normalise": "slow"}, slow_seconds=0.1) for s in STUDENTS],
    )
    reference = copy_course(course, work_root / "resume-reference")

    first = interrupt_after(course, 2, signal.SIGINT)  # Ctrl-C
    assert first.returncode == 130, first.communicate()
    second = interrupt_after(course, 4, signal.SIGKILL)  # a crash: no clean-up at all
    deadline = time.monotonic() + 15
    while fork_servers_of(second.pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert fork_servers_of(second.pid) == []  # the fork server followed its grader

    states = dict(journal_states(course))
    cut_off = [s for s, state in states.items() if state == "started"]
    done = [s for s, state in states.items() if state == "graded"]
    assert len(cut_off) == 1 and len(done) >= 4
    last = smartlab("grade", COURSE_ID, ASSIGNMENT, "--course-dir", str(course))
    assert last.returncode == 0, last.stdout + last.stderr
    left = len(STUDENTS) - len(done)
    assert last.stdout.startswith(
        f"ps1: {left} graded, 0 failed, {len(done)} already graded, 0 skipped "
        f"(1 resumed from an interrupted run)"
    ), last.stdout

    full = smartlab("grade", COURSE_ID, ASSIGNMENT, "--course-dir", str(reference))
    assert full.returncode == 0, full.stdout
    expected = cell_scores(f"sqlite:///{reference / 'gradebook.db'}", ASSIGNMENT, COURSE_ID)
    actual = cell_scores(f"sqlite:///{course / 'gradebook.db'}", ASSIGNMENT, COURSE_ID)
    assert len(actual) == 6 * len(STUDENTS) and differences(expected, actual) == []
    for student in STUDENTS:
        assert (course / "autograded" / student / ASSIGNMENT / "stats.ipynb").exists()
