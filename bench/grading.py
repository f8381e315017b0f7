"""Autograding benchmark: `smartlab grade` against `nbgrader autograde`, same class, same run.

One run takes a course (the first assignment of courses/iot-basics when it exists, else the
grader tests' own course), generates the assignment with `nbgrader generate_assignment`, makes
`--students` synthetic submissions from the instructor's solutions (grader/synthetic.py: each
answer correct, blank, wrong, failing or slow; a third with extra cells), copies the course
twice, and grades one copy with `nbgrader autograde` (serial, a cold kernel per notebook) and
the other with `smartlab grade` (warm sandboxed kernels, parallel), one after the other on this
machine. It prints the throughput of each, their ratio, the CPU each used, and whether every
grade cell got the same score in both gradebooks.

Results go to stdout (and with `--markdown FILE` into a section of that file); progress to
stderr. The exit status is 0 whatever the figures, unless the scores disagree (then 1).

    .venv/bin/python -m bench.grading [--students 200] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench import common
from grader.compare import cell_scores, differences
from grader.synthetic import class_plans, write_submissions

TITLE = "Fast sandboxed autograding (issue 7)"
REPO = Path(__file__).resolve().parent.parent
FIXTURE = REPO / "tests" / "grader" / "fixtures" / "course"


@dataclass
class Run:
    name: str
    wall: float
    cpu: float
    status: int
    others: float  # cores the rest of the machine kept busy meanwhile (it is shared)


def pick_course(explicit: str | None) -> tuple[Path, str, str]:
    """(course folder, course id, assignment)."""
    candidates = [Path(explicit)] if explicit else [REPO / "courses" / "iot-basics", FIXTURE]
    for course in candidates:
        source = course / "source"
        assignments = (
            sorted(p.name for p in source.iterdir() if p.is_dir()) if source.is_dir() else []
        )
        if assignments:
            return course, _course_id(course), assignments[0]
    raise SystemExit(f"no course with a source/<assignment>/ in {candidates}")


def _course_id(course: Path) -> str:
    for line in (course / "nbgrader_config.py").read_text().splitlines():
        if "CourseDirectory.course_id" in line and "=" in line:
            return line.split("=", 1)[1].strip().strip("\"'")
    return course.name


def timed(name: str, command: list[str], cwd: Path, env: dict[str, str], log: Path) -> Run:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = common.machine_busy_seconds()
    started = time.monotonic()
    with open(log, "w") as out:
        status = subprocess.run(command, cwd=cwd, env=env, stdout=out, stderr=out).returncode
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    others = max(0.0, common.machine_busy_seconds() - busy - cpu) / wall
    return Run(name, wall, cpu, status, others)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=200)
    parser.add_argument(
        "--course",
        help="course folder (default: courses/iot-basics, else the grader tests' course)",
    )
    parser.add_argument("--workers", type=int, help="smartlab grade --workers")
    parser.add_argument("--markdown", type=Path, help="write the results into this file")
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args(argv)
    progress = common.progress_printer("grading")
    course, course_id, assignment = pick_course(args.course)
    work = Path(tempfile.mkdtemp(prefix="smartlab-bench-grading-"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env.pop("SMARTLAB_SANDBOX_SOCKET", None)
    try:
        base = work / "course"
        shutil.copytree(
            course,
            base,
            ignore=shutil.ignore_patterns(
                "gradebook.db", "release", "submitted", "autograded", "feedback", ".smartlab"
            ),
        )
        progress(f"{course_id}/{assignment}: nbgrader generate_assignment")
        subprocess.run(
            ["nbgrader", "generate_assignment", assignment],
            cwd=base,
            env=env,
            check=True,
            capture_output=True,
        )
        plans = class_plans(base, assignment, args.students, seed=7)
        write_submissions(base, assignment, plans)
        notebooks = len(list((base / "release" / assignment).glob("*.ipynb")))
        total = args.students * notebooks
        copies = {name: work / name for name in ("nbgrader", "smartlab")}
        for copy in copies.values():
            shutil.copytree(base, copy)
        progress(
            f"nbgrader autograde: {args.students} submissions, {total} notebooks, "
            "one at a time (several minutes)"
        )
        nb_run = timed(
            "nbgrader autograde",
            ["nbgrader", "autograde", assignment],
            copies["nbgrader"],
            env,
            work / "nbgrader.log",
        )
        progress(f"nbgrader autograde: {nb_run.wall:.1f} s")
        command = [
            sys.executable,
            "-m",
            "hub_config.cli",
            "grade",
            course_id,
            assignment,
            "--course-dir",
            str(copies["smartlab"]),
        ]
        if args.workers:
            command += ["--workers", str(args.workers)]
        progress("smartlab grade")
        sl_run = timed("smartlab grade", command, REPO, env, work / "smartlab.log")
        progress(f"smartlab grade: {sl_run.wall:.1f} s")
        expected = cell_scores(
            f"sqlite:///{copies['nbgrader'] / 'gradebook.db'}", assignment, course_id
        )
        actual = cell_scores(
            f"sqlite:///{copies['smartlab'] / 'gradebook.db'}", assignment, course_id
        )
        diff = differences(expected, actual)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            progress(f"kept {work}")

    rows = []
    for run in (nb_run, sl_run):
        rows.append(
            [
                run.name,
                f"{run.wall:.1f}",
                f"{total / run.wall:.2f}",
                f"{run.wall / total:.3f}",
                f"{run.cpu:.1f}",
                f"{run.cpu / total:.3f}",
                f"{run.others:.2f}",
                str(run.status),
            ]
        )
    header = [
        "",
        "wall s",
        "notebooks/s",
        "s per notebook",
        "CPU s",
        "CPU s per notebook",
        "other load (cores)",
        "exit",
    ]
    ratio = nb_run.wall / sl_run.wall
    cpu_ratio = nb_run.cpu / sl_run.cpu if sl_run.cpu else float("nan")
    cores = len(os.sched_getaffinity(0))
    # smartlab grade is CPU-bound (nbgrader, serial, uses under one core): with the cores to
    # itself it would take its CPU time divided by the cores.
    idle = nb_run.wall / (sl_run.cpu / cores) if sl_run.cpu else float("nan")
    agree = len(expected) - len(diff)
    summary = [
        f"course {course_id}, assignment {assignment}: {args.students} submissions x "
        f"{notebooks} notebook(s) = {total} notebooks; {common.machine()}",
        f"throughput ratio smartlab/nbgrader: {ratio:.1f}x measured, other processes using "
        f"{sl_run.others:.2f} of the {cores} cores meanwhile; {idle:.1f}x with the {cores} "
        f"cores to itself (its CPU time / {cores}); CPU per notebook {cpu_ratio:.1f}x less",
        f"scores: {agree} of {len(expected)} grade cells identical"
        + ("" if not diff else f"; {len(diff)} differ, e.g. {diff[0]}"),
    ]
    print(common.text_table(rows, header))
    print("\n".join(summary))
    if args.markdown:
        body = [
            "`bench/grading.py`: one class of synthetic submissions (answers correct, blank, "
            "wrong, failing or slow; a third with extra cells), graded by `nbgrader autograde` "
            "(serial, a cold kernel per notebook) and by `smartlab grade` (parallel, warm "
            "sandboxed kernels, default workers) in the same run on the same machine. Compare "
            'the ratio, not the absolute times: the machine is shared ("other load": cores '
            "other people's processes kept busy during each run).",
            "",
            common.markdown_table(rows, header),
            "",
            *[f"- {line}" for line in summary],
            "",
            f"Measured {time.strftime('%Y-%m-%d')}; target: >= 10x nbgrader's throughput on "
            "2 cores, identical scores.",
        ]
        common.write_markdown(args.markdown, TITLE, "\n".join(body), progress)
    return 1 if diff else 0


if __name__ == "__main__":
    sys.exit(main())
