"""Course folders on the hub: one per course in its grader account's home, as nbgrader's
demos/demo_multiple_classes lays them out (/home/grader-<course>/<course>).

The grader account owns the course folder (source, release, gradebook); the formgrader service
runs as that account, and so does nbgrader when `smartlab up` releases the first assignment.
Course content comes from courses/ (courses/install.py; `smartlab courses install` does the
same for a deployment without `smartlab up`, as the account that runs it).
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from pathlib import Path

from courses.install import COURSES_DIR, assignments, available_courses, copy_missing
from hub_config import hub
from hub_config.accounts import (
    GRADER_GROUP,
    AccountError,
    ensure_account,
    private_dir,
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
    copied from courses/; later runs keep the instructors' edits)."""
    account = hub.grader_account(course_id)
    home, root = runtime.home(account), course_root(runtime, course_id)
    owner = (
        ensure_account(account, home, groups=(GRADER_GROUP,))
        if runtime.isolate
        else pwd.getpwuid(os.geteuid())
    )
    if not runtime.isolate:
        home.mkdir(parents=True, exist_ok=True)
    config_dir = home / ".jupyter"
    config_dir.mkdir(exist_ok=True)
    (config_dir / "nbgrader_config.py").write_text(
        GRADER_CONFIG.format(course=course_id, root=str(root))
    )
    root.mkdir(exist_ok=True)
    if course_id in available_courses():
        copy_missing(COURSES_DIR / course_id, root)  # an instructor's edited copy wins
    if runtime.isolate:
        for path in (config_dir, root):
            _chown_tree(path, owner)
        private_dir(home, owner)
    return root


def _chown_tree(path: Path, owner: pwd.struct_passwd) -> None:
    shutil.chown(path, owner.pw_uid, owner.pw_gid)
    for item in path.rglob("*"):
        os.lchown(item, owner.pw_uid, owner.pw_gid)


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


def prepare_courses(site: Site, runtime: Runtime) -> dict[str, str]:
    """Every course of the site ready for its formgrader: course -> its released first
    assignment, or why it could not be released (the platform still comes up without it)."""
    prepare_exchange(runtime)
    released = {}
    for course in site.courses:
        prepare_course(runtime, course.id)
        try:
            first = release_first_assignment(runtime, course.id)
        except AccountError as err:
            released[course.id] = f"not released: {err}"
        else:
            released[course.id] = f"released {first}" if first else "no assignment yet"
    return released
