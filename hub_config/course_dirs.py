"""Course folders on the hub: one per course in its grader account's home, as nbgrader's
demos/demo_multiple_classes lays them out (/home/grader-<course>/<course>).

The grader account owns the course folder (source, release, gradebook); the formgrader service
runs as that account, and so does nbgrader when `smartlab up` releases the first assignment.
Course content comes from courses/ (courses/install.py; `smartlab courses install` does the
same for a deployment without `smartlab up`, as the account that runs it).
"""

from __future__ import annotations

import json
import os
import pwd
import stat
from pathlib import Path

from courses.install import (
    COURSES_DIR,
    assignments,
    available_courses,
    course_files,
)
from hub_config import hub
from hub_config.accounts import (
    GRADER_GROUP,
    AccountError,
    call_as,
    ensure_account,
    run_as,
)
from site_config.runtime import Runtime
from site_config.site import Site

GRADER_CONFIG = """# Written by `smartlab up`: this account's course, for nbgrader.
c = get_config()  # noqa: F821
c.CourseDirectory.course_id = {course!r}
c.CourseDirectory.root = {root!r}
"""


def course_root(runtime: Runtime, course_id: str) -> Path:
    return runtime.home(hub.grader_account(course_id)) / course_id


def prepare_exchange(runtime: Runtime) -> None:
    """nbgrader's shared exchange: everyone may create their course's inbound/outbound in it."""
    runtime.exchange.mkdir(parents=True, exist_ok=True)
    runtime.exchange.chmod(0o777 | stat.S_ISVTX)


def prepare_course(runtime: Runtime, course_id: str) -> Path:
    """The grader account, its home and nbgrader config, and the course's sources (first run:
    copied from courses/; later runs keep the instructors' edits).

    Root makes the account and its home (in the homes' folder, root's own); everything inside
    the home is written by the grader account itself (`call_as`): anyone with formgrader
    access runs code as that account, so a link they plant there must never be followed by
    root. The sources are read here (the checkout's course folders are closed to others)."""
    account = hub.grader_account(course_id)
    home, root = runtime.home(account), course_root(runtime, course_id)
    if runtime.isolate:
        owner: pwd.struct_passwd | None = ensure_account(account, home, groups=(GRADER_GROUP,))
    else:
        owner = None
        home.mkdir(parents=True, exist_ok=True)
    files = course_files(COURSES_DIR / course_id) if course_id in available_courses() else {}
    call_as(
        owner,
        "hub_config.grader_home:write_course_folder",
        {
            "home": str(home),
            "root": str(root),
            "config": GRADER_CONFIG.format(course=course_id, root=str(root)),
            "files": files,
        },
    )
    return root


def release_first_assignment(runtime: Runtime, course_id: str) -> str | None:
    """generate + release the course's first assignment (as its grader) unless already out."""
    names = assignments(course_id) if course_id in available_courses() else []
    if not names:
        return None
    first = names[0]
    if (runtime.exchange / course_id / "outbound" / first).exists():
        return first
    root = course_root(runtime, course_id)
    env = {**os.environ, **hub.service_environment(runtime)}
    account = hub.grader_account(course_id)
    for step in ("generate_assignment", "release_assignment"):
        run_as(
            account if runtime.isolate else None,
            [hub.venv_command("nbgrader"), step, first, "--force"],
            root,
            env,
        )
    return first


def course_due_dates(runtime: Runtime, course_id: str) -> dict[str, str]:
    """The due dates in the course's gradebook, read as its grader account (the gradebook is
    the course staff's, closed to others; root follows no path inside that home)."""
    owner = pwd.getpwnam(hub.grader_account(course_id)) if runtime.isolate else None
    found = call_as(
        owner, "hub_config.grader_home:due_dates", {"root": str(course_root(runtime, course_id))}
    )
    return found if isinstance(found, dict) else {}


def write_schedule(runtime: Runtime, due: dict[str, dict[str, str]]) -> Path:
    """The public, read-only schedule the front door shows (labs/home/exchange.py): due dates
    only, nothing else of the gradebook. Replaced whole, never written through a link."""
    public = Path(runtime.state_dir) / hub.SCHEDULE_FILE
    staged = public.with_suffix(".new")
    staged.unlink(missing_ok=True)
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w") as out:
        os.fchmod(out.fileno(), 0o644)  # the umask of a root start is 077
        json.dump(due, out, indent=1, sort_keys=True)
    os.replace(staged, public)
    return public


def prepare_courses(site: Site, runtime: Runtime) -> dict[str, str]:
    """Every course of the site ready for its formgrader: course -> its released first
    assignment, or why it could not be released (the platform still comes up without it)."""
    prepare_exchange(runtime)
    released = {}
    due: dict[str, dict[str, str]] = {}
    for course in site.courses:
        try:
            prepare_course(runtime, course.id)
            first = release_first_assignment(runtime, course.id)
            due[course.id] = course_due_dates(runtime, course.id)
        except AccountError as err:
            released[course.id] = f"not released: {err}"  # shown by `smartlab up`
        else:
            released[course.id] = f"released {first}" if first else "no assignment yet"
    write_schedule(runtime, due)  # due dates set in a formgrader show from the next start
    return released
