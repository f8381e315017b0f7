"""Hostile submissions, all in one batch: each attack is contained, and every other
submission is graded as if it were alone."""

from __future__ import annotations

import pwd
import re
import time

from grader.compare import cell_scores
from grader.sandbox import processes_of
from site_config.platform_accounts import SANDBOX_PREFIX

from .conftest import ASSIGNMENT, COURSE_ID, HostileClass, root_only
from .corpus import FULL_MARKS, autograded_cells

pytestmark = root_only


def outputs_of(hostile: HostileClass, student: str, notebook: str = "squares") -> str:
    """The text of the answer cell the attack was appended to."""
    cells = autograded_cells(hostile.course, student, notebook)
    answer = next(
        c for c in cells if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "squares"
    )
    return "".join(
        "".join(o.get("text", "")) + o.get("ename", "") + ": " + o.get("evalue", "")
        if o["output_type"] == "error"
        else "".join(o.get("text", ""))
        for o in answer.get("outputs", [])
    )


def test_the_batch_completes_and_honest_students_keep_their_marks(
    hostile_class: HostileClass,
) -> None:
    run = hostile_class.run
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith("ps1: 13 graded, 0 failed"), run.stdout
    scores = cell_scores(
        f"sqlite:///{hostile_class.course / 'gradebook.db'}", ASSIGNMENT, COURSE_ID
    )
    for student in (
        "honest1",
        "honest2",
        "reader",
        "writer",
        "net",
        "killer",
        "hog",
        "filler",
    ):
        got = {k[1:]: v[0] for k, v in scores.items() if k[0] == student and v[0] is not None}
        assert got == FULL_MARKS, student
    # The spy hooked the kernel (an input transformer): the test cell after it is not run and
    # scores nothing; the hook is gone for the cells after that.
    spy = {k[1:]: v[0] for k, v in scores.items() if k[0] == "spy" and v[0] is not None}
    assert spy == {**FULL_MARKS, ("squares", "correct_squares"): 0.0}
    assert all(score is None or score <= 3 for score, _ in scores.values())


def test_reading_the_solution_or_hidden_tests_fails(hostile_class: HostileClass) -> None:
    out = outputs_of(hostile_class, "reader")
    for what in (
        "/source/ps1/*.ipynb",
        "/release/ps1/*",
        "/gradebook.db",
        "/nbgrader_config.py",
        "/autograded/*/ps1/*.ipynb",
    ):
        assert re.search(rf"^(blocked|nothing) .*{re.escape(what)}$", out, re.M), (what, out)
    assert "READ" not in out and "listed" not in out, out


def test_reading_another_students_submission_fails(hostile_class: HostileClass) -> None:
    out = outputs_of(hostile_class, "reader")
    assert re.search(r"^(blocked|nothing) .*/submitted/honest1/ps1/\*\.ipynb$", out, re.M), out
    assert re.search(r"^(blocked|nothing) /run/smartlab-grade/jobs/\*/sock/\*$", out, re.M), out


def test_student_code_cannot_write_the_gradebook_or_course_files(
    hostile_class: HostileClass,
) -> None:
    out = outputs_of(hostile_class, "writer")
    assert "WROTE" not in out and out.count("blocked") == 4, out
    assert (
        hostile_class.course / "source" / "ps1" / "squares.ipynb"
    ).read_bytes() == hostile_class.source_before


def test_no_network(hostile_class: HostileClass) -> None:
    out = outputs_of(hostile_class, "net")
    assert "CONNECTED" not in out and out.count("blocked") == 3, out
    assert hostile_class.accepted == []


def test_killing_the_graders_parent_or_the_grader_fails(hostile_class: HostileClass) -> None:
    out = outputs_of(hostile_class, "killer")
    match = re.search(r"killed (\d+) of (\d+)", out)
    assert match and match.group(1) == "0" and int(match.group(2)) >= 2, out


def test_fork_bomb_is_refused_and_cleaned_up(hostile_class: HostileClass) -> None:
    # Refused at the process limit (or, on a very busy machine, interrupted at the cell time
    # limit before reaching it: test_sandbox.py tests the limit alone).
    assert re.search(
        r"fork refused BlockingIOError|KeyboardInterrupt|CellTimeoutError",
        outputs_of(hostile_class, "forker"),
    )
    uids = [p.pw_uid for p in pwd.getpwall() if p.pw_name.startswith(SANDBOX_PREFIX)]
    deadline = time.monotonic() + 10
    while any(processes_of(uid) for uid in uids) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert [pid for uid in uids for pid in processes_of(uid)] == []


def test_memory_bomb_is_refused(hostile_class: HostileClass) -> None:
    assert "memory refused at" in outputs_of(hostile_class, "hog")


def test_gigabytes_on_disk_are_refused(hostile_class: HostileClass) -> None:
    assert "disk refused 27" in outputs_of(hostile_class, "filler")  # EFBIG: file size limit


def test_gigabytes_of_output_are_cut(hostile_class: HostileClass) -> None:
    # Cut by the cell time limit, the kernel's memory limit or the output limit (each alone in
    # test_sandbox.py), whichever comes first; the notebook stays small and only that answer
    # scores nothing.
    shouted = outputs_of(hostile_class, "shouter")
    assert re.search(r"(CellTimeoutError|GradingStopped|KeyboardInterrupt|MemoryError)", shouted), (
        shouted[-300:]
    )
    path = hostile_class.course / "autograded" / "shouter" / ASSIGNMENT / "squares.ipynb"
    assert path.stat().st_size < 2 << 20
    scores = cell_scores(
        f"sqlite:///{hostile_class.course / 'gradebook.db'}", ASSIGNMENT, COURSE_ID
    )
    assert scores[("shouter", "stats", "normalise_tests")] == (2.0, False)


def test_an_endless_loop_is_stopped_and_graded_as_far_as_it_got(
    hostile_class: HostileClass,
) -> None:
    out = hostile_class.run.stdout
    assert re.search(r"^  looper: squares\.ipynb cell 2: .*(CPU time|time limit)", out, re.M), out
    looper = autograded_cells(hostile_class.course, "looper", "squares")
    note = "".join(looper[0]["source"])
    assert looper[0]["cell_type"] == "markdown" and note.startswith("**Grading stopped early.**")
    later = [c for c in looper[3:] if c["cell_type"] == "code"]  # after the stopped one
    assert later and all(c["outputs"][-1]["ename"] == "NotRun" for c in later)
    # Its stats notebook ran in a kernel of its own, untouched.
    scores = cell_scores(
        f"sqlite:///{hostile_class.course / 'gradebook.db'}", ASSIGNMENT, COURSE_ID
    )
    assert scores[("looper", "stats", "normalise_tests")] == (2.0, False)
    assert scores[("looper", "squares", "correct_squares")] == (0.0, False)
