"""The grader's `smartlab` commands: `grade`, `sandbox serve`, and the `export` action that
`smartlab grades` (hub_config/lti/cli.py, beside its LTI `push`) is made of."""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "grade",
        help="autograde an assignment: nbgrader's results, in parallel and sandboxed",
        description="Autograde every submission of ASSIGNMENT (nbgrader's course layout: "
        "submitted/<student>/<assignment>/), like `nbgrader autograde`, with warm sandboxed "
        "kernels in parallel. Interrupted runs resume where they stopped.",
    )
    parser.add_argument("course", help="the course id (nbgrader's CourseDirectory.course_id)")
    parser.add_argument("assignment", help="the assignment to grade")
    parser.add_argument(
        "--course-dir",
        help="the course folder (default: the course's grader "
        "home on this hub, else ./courses/<course>)",
    )
    parser.add_argument(
        "--workers",
        type=int,
        help="grading processes at once (default: c.SmartGrade.workers, else CPUs + 1)",
    )
    parser.add_argument(
        "--student",
        action="append",
        metavar="ID",
        help="only this student (a glob such as 'a*' works; repeat for more)",
    )
    parser.add_argument(
        "--force", action="store_true", help="grade again what is already autograded"
    )
    parser.set_defaults(run=_run_grade)


def _run_grade(args: argparse.Namespace) -> int:
    from grader import speedups

    speedups.skip_slow_optional_imports()
    from grader.kernels import PrivateForkServer

    # Started before nbgrader is imported: the kernel's imports overlap with ours.
    fork_server = PrivateForkServer()
    from grader.app import grade

    return grade(
        args.course,
        args.assignment,
        course_dir=args.course_dir,
        workers=args.workers,
        students=args.student,
        force=args.force,
        fork_server=fork_server,
    )


# ------------------------------------------------------------------ smartlab grades


def add_export(actions: argparse._SubParsersAction) -> None:
    parser = actions.add_parser(
        "export",
        help="gradebook CSVs per course and per institution, and LMS totals",
        description="Write <out>/<course>.csv (nbgrader export's columns plus institution), "
        "<out>/<course>--<institution>.csv for each institution, and "
        "<out>/<course>--totals.csv (one row per student: a column per assignment, total, "
        "percent) for an LMS grade import.",
    )
    parser.add_argument("course", help="the course id")
    parser.add_argument("--course-dir", help="the course folder (as for `smartlab grade`)")
    parser.add_argument("--out", default=".", help="folder for the CSV files (default: .)")
    parser.add_argument(
        "--site",
        help="site file mapping students to institutions "
        "(default: $SMARTLAB_SITE, else the demo site)",
    )
    parser.set_defaults(run=_run_export)


def _run_export(args: argparse.Namespace) -> int:
    from grader.app import find_course_dir
    from grader.export import export_course

    root = find_course_dir(args.course, args.course_dir)
    written = export_course(root, args.course, Path(args.out), site_path=args.site)
    for path in written:
        print(path)
    return 0


# ------------------------------------------------------------------ smartlab sandbox


def register_sandbox(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("sandbox", help="the grading sandbox's fork server")
    actions = parser.add_subparsers(dest="sandbox_action", required=True, metavar="ACTION")
    serve = actions.add_parser(
        "serve",
        help="run the root fork server that formgraders and graders use",
        description="Run the fork server as root so graders that are not root (the "
        "formgrader runs as grader-<course>) get the full sandbox: point them at it with "
        "$SMARTLAB_SANDBOX_SOCKET or c.Sandbox.server_socket.",
    )
    serve.add_argument("--socket", default="/run/smartlab-grade/sandbox.sock")
    serve.add_argument(
        "--group",
        action="append",
        default=[],
        help="Unix group whose members may ask for kernels (repeatable)",
    )
    serve.add_argument("--max-slots", type=int, default=64)
    serve.set_defaults(run=_run_sandbox)


def _run_sandbox(args: argparse.Namespace) -> int:
    import grp

    from grader import zygote

    if os.geteuid() != 0:
        raise ValueError(
            "smartlab sandbox serve must run as root (it switches to the sandbox accounts)"
        )
    argv = ["--socket", args.socket, "--max-slots", str(args.max_slots)]
    for name in args.group:
        try:
            argv += ["--allow-gid", str(grp.getgrnam(name).gr_gid)]
        except KeyError:
            raise ValueError(f"no such group: {name}") from None
    return zygote.main(argv)
