"""The nbgrader side of an LTI enrolment: the student's record in the course's gradebook.

The course folder follows the hub layout, `/home/grader-<course>/<course>` with `gradebook.db`
inside (nbgrader's default `CourseDirectory.db_url`). A course whose folder does not exist here
is skipped (the caller logs it): its formgrader makes the record when it first sees the student.
"""

from __future__ import annotations

import os
from pathlib import Path

COURSE_DIR_TEMPLATE = "/home/grader-{course}/{course}"
GRADEBOOK = "gradebook.db"


def course_dir(template: str, course: str) -> Path:
    return Path(template.format(course=course))


def gradebook_url(folder: Path) -> str:
    return f"sqlite:///{folder / GRADEBOOK}"


def ensure_student(
    template: str,
    course: str,
    student_id: str,
    *,
    first_name: str | None,
    last_name: str | None,
    email: str | None,
    lms_user_id: str,
) -> bool:
    """Create or update the student in the course's gradebook; False if the course is absent."""
    folder = course_dir(template, course)
    if not folder.is_dir():
        return False
    from nbgrader.api import Gradebook  # imported on use: a heavy import for the hub

    database = folder / GRADEBOOK
    with Gradebook(gradebook_url(folder), course_id=course) as gradebook:
        gradebook.update_or_create_student(
            student_id,
            first_name=first_name,
            last_name=last_name,
            email=email,
            lms_user_id=lms_user_id,
        )
    _give_to_course_owner(database, folder)
    return True


def _give_to_course_owner(database: Path, folder: Path) -> None:
    # The hub runs as root; the formgrader runs as the course's grader account and must be able
    # to write the gradebook that this call may just have created.
    if os.geteuid() != 0:
        return
    owner = folder.stat()
    mine = database.stat()
    if (mine.st_uid, mine.st_gid) != (owner.st_uid, owner.st_gid):
        os.chown(database, owner.st_uid, owner.st_gid)
