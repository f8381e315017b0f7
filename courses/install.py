"""Install the centre's nbgrader courses into course folders and release their first assignment.

Each course ships as nbgrader's source layout: `courses/<course_id>/nbgrader_config.py` and
`courses/<course_id>/source/<assignment>/`. Installing copies that into a course folder (the
grader account's course root) and, if asked, runs nbgrader's own `generate_assignment` and
`release_assignment` for the first assignment (the one whose name sorts first), so students
see it in their assignment list.

Installing again is safe: files an instructor already has are never overwritten, and an
assignment already in the exchange is not released twice.

    smartlab courses list
    smartlab courses install --root /srv/courses --exchange /srv/nbgrader/exchange
"""

from __future__ import annotations

import argparse
import base64
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

COURSES_DIR = Path(__file__).parent
CONFIG_FILE = "nbgrader_config.py"
SKIP = {"__pycache__", ".ipynb_checkpoints"}

Progress = Callable[[str], None]


class CourseError(ValueError):
    """A course that cannot be installed; str() is one line for the user (`smartlab` prints
    it without a traceback)."""


def available_courses() -> list[str]:
    """Course ids shipped with the platform (folders with a config and a source folder)."""
    return sorted(p.name for p in COURSES_DIR.iterdir() if _is_course(p))


def _is_course(folder: Path) -> bool:
    try:
        return (folder / CONFIG_FILE).is_file() and (folder / "source").is_dir()
    except PermissionError:
        raise CourseError(
            f"{folder} is closed to this account (`smartlab up` as root closes the course "
            "sources: solutions and hidden tests): run this as root or as the checkout's owner"
        ) from None


def close_to_others(folder: Path) -> None:
    """Course staff's folder: no access for other accounts (students share the machine), group
    members keep reading. Changed on a descriptor opened without following a link."""
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        mode = os.fstat(fd).st_mode & 0o7777
        if mode & 0o027:
            os.fchmod(fd, mode & ~0o027)
    finally:
        os.close(fd)


def assignments(course_id: str) -> list[str]:
    """The course's assignments in release order (their names sort in that order)."""
    source = _course_dir(course_id) / "source"
    return sorted(p.name for p in source.iterdir() if p.is_dir() and p.name not in SKIP)


def _course_dir(course_id: str) -> Path:
    if course_id not in available_courses():
        raise CourseError(f"no course {course_id!r}; available: {', '.join(available_courses())}")
    return COURSES_DIR / course_id


def copy_missing(source: Path, target: Path) -> int:
    """Copy files that do not exist in `target` yet; return how many were copied."""
    return write_missing(course_files(source), target)


def course_files(source: Path) -> dict[str, list]:
    """The files below `source` (relative path -> [base64 content, mode, mtime]): read by whoever
    may read the sources, written by `write_missing` as the course folder's owner."""
    files: dict[str, list] = {}
    for path in sorted(source.rglob("*")):
        relative = path.relative_to(source)
        if path.is_dir() or SKIP & set(relative.parts):
            continue
        info = path.stat()
        content = base64.b64encode(path.read_bytes()).decode()
        files[relative.as_posix()] = [content, info.st_mode & 0o777, info.st_mtime]
    return files


def write_missing(files: dict[str, list], target: Path) -> int:
    """Write the `course_files` that `target` does not have yet; return how many."""
    copied = 0
    for relative, (content, mode, mtime) in files.items():
        destination = Path(target) / relative
        if destination.exists() or destination.is_symlink():
            continue  # an instructor's edited copy wins
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(base64.b64decode(content))
        destination.chmod(mode)
        os.utime(destination, (mtime, mtime))
        copied += 1
    return copied


def nbgrader_env() -> dict[str, str]:
    """The environment nbgrader runs in: this interpreter's scripts first on PATH (nbgrader
    runs `alembic` from PATH to create the gradebook)."""
    env = dict(os.environ)
    scripts = str(Path(sys.executable).parent)
    env["PATH"] = scripts + os.pathsep + env.get("PATH", "")
    return env


def run_nbgrader(args: list[str], course_root: Path, exchange: Path | None = None) -> None:
    """Run one nbgrader command in a course folder; CourseError with nbgrader's last error
    line if it fails."""
    command = [
        str(Path(sys.executable).parent / "nbgrader"),
        *args,
        f"--CourseDirectory.root={course_root}",
    ]
    if exchange is not None:
        command += [f"--Exchange.root={exchange}", "--Exchange.path_includes_course=True"]
    done = subprocess.run(
        command, cwd=course_root, env=nbgrader_env(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        lines = (
            [
                line
                for line in (done.stderr + done.stdout).splitlines()
                if "ERROR" in line or "Error" in line
            ]
            or done.stderr.splitlines()
            or ["?"]
        )
        raise CourseError(f"nbgrader {args[0]} failed in {course_root}: {lines[-1].strip()}")


def install_course(
    course_id: str,
    course_root: Path,
    release_first: bool = True,
    exchange: Path | None = None,
    progress: Progress | None = print,
) -> list[str]:
    """Install a course into `course_root`; with `release_first`, generate and release its
    first assignment to `exchange` (unless it is released already). Returns the assignments
    released by this call."""
    say = progress or (lambda _line: None)
    source = _course_dir(course_id)
    course_root = Path(course_root).resolve()
    course_root.mkdir(mode=0o700, parents=True, exist_ok=True)
    close_to_others(course_root)  # the sources (solutions, hidden tests) land only here
    copied = copy_missing(source, course_root)
    say(f"{course_id}: {copied} new files in {course_root}")
    if not release_first:
        return []
    if exchange is None:
        raise CourseError("releasing an assignment needs the exchange folder")
    exchange = Path(exchange).resolve()
    first = assignments(course_id)[0]
    if (exchange / course_id / "outbound" / first).is_dir():
        say(f"{course_id}: {first} is already released")
        return []
    if not exchange.is_dir():
        exchange.mkdir(parents=True)
        exchange.chmod(0o1777)  # everyone may add their course folders; sticky, as /tmp
    say(f"{course_id}: generating {first}…")
    run_nbgrader(["generate_assignment", first, "--force"], course_root)
    say(f"{course_id}: releasing {first} to {exchange}")
    run_nbgrader(["release_assignment", first], course_root, exchange)
    return [first]


def install_all(
    root: Path,
    exchange: Path | None,
    release_first: bool = True,
    courses: list[str] | None = None,
    progress: Progress | None = print,
) -> dict[str, list[str]]:
    """Install courses into `root/<course_id>`; returns course -> assignments released."""
    return {
        course_id: install_course(
            course_id, Path(root) / course_id, release_first, exchange, progress
        )
        for course_id in (courses or available_courses())
    }


# ------------------------------------------------------------------ smartlab courses


def cmd_list(_args: argparse.Namespace) -> int:
    for course_id in available_courses():
        print(f"{course_id:<18} {', '.join(assignments(course_id))}")
    return 0


def cmd_install(args: argparse.Namespace) -> int:
    install_all(args.root, args.exchange, not args.no_release, args.course or None)
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    group = commands.add_parser("courses", help="the nbgrader courses shipped with the platform")
    sub = group.add_subparsers(dest="courses_command", required=True)
    listing = sub.add_parser("list", help="list the courses and their assignments")
    listing.set_defaults(run=cmd_list)
    install = sub.add_parser(
        "install", help="copy courses into course folders and release their first assignments"
    )
    install.add_argument(
        "--root", type=Path, required=True, help="folder that receives one course folder per course"
    )
    install.add_argument("--exchange", type=Path, help="nbgrader exchange folder")
    install.add_argument("--no-release", action="store_true", help="only copy the course files")
    install.add_argument("course", nargs="*", help="course ids (default: all)")
    install.set_defaults(run=cmd_install)
