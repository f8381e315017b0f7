"""The nbgrader side of an LTI enrolment: the student's record in the course's gradebook.

The course folder follows the hub layout, `/home/grader-<course>/<course>` with `gradebook.db`
inside (nbgrader's default `CourseDirectory.db_url`). A course whose folder does not exist here
is skipped (the caller logs it): its formgrader makes the record when it first sees the student.
"""

from __future__ import annotations

import os
import pwd
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
    """Create or update the student in the course's gradebook; False if the course is absent.

    The hub runs as root, and the course folder is its grader account's: anyone with formgrader
    access runs code as that account and could plant a link at `gradebook.db`. So the record is
    written by a process running as the folder's owner (`call_as`), which creates the gradebook
    as its own: root neither opens nor chowns anything there. A link at the folder itself, or a
    root folder that others may write, raises AccountError (the caller logs it)."""
    # Imported here: the child that writes the record imports this module and should stay light.
    from hub_config.accounts import call_as, folder_owner

    folder = course_dir(template, course)
    uid = folder_owner(folder)
    if uid is None:
        return False
    owner = pwd.getpwuid(uid) if os.geteuid() == 0 and uid != 0 else None
    call_as(
        owner,
        "hub_config.lti.gradebook:record_student",
        {
            "folder": str(folder),
            "course": course,
            "student_id": student_id,
            "first_name": first_name,
            "last_name": last_name,
            "email": email,
            "lms_user_id": lms_user_id,
        },
    )
    return True


def record_student(
    folder: str,
    course: str,
    student_id: str,
    first_name: str | None,
    last_name: str | None,
    email: str | None,
    lms_user_id: str,
) -> None:
    """The write itself, as the course folder's owner."""
    from nbgrader.api import Gradebook  # imported on use: a heavy import for the hub

    with Gradebook(gradebook_url(Path(folder)), course_id=course) as gradebook:
        gradebook.update_or_create_student(
            student_id,
            first_name=first_name,
            last_name=last_name,
            email=email,
            lms_user_id=lms_user_id,
        )
