"""A variant of an assignment per student: the twin's seed and parameters from a hash.

`variant(course, assignment, student)` draws each parameter an assignment declares in
`RANGES` (the one place where ranges live) from a generator seeded with a hash of the course's
salt, the course, the assignment and the student: the same three always give the same numbers,
two students almost always different ones. A released notebook shows the variant of the
student running it (`$JUPYTERHUB_USER`); while grading, the grader puts the submission's owner
in `$SMARTLAB_STUDENT` (grader/kernels.py), which wins, so the tests check each submission
against its owner's numbers.

The student is read once, at the first call (the notebook's variant cell, before any student
code), so a later cell that changes the environment does not change whose numbers are checked.
"""

from __future__ import annotations

import hashlib
import os
import random
from typing import Any

# Per-course salts: a new salt gives a course new variants for everyone (say, a new term).
SALTS = {"smart-lighting": "sl-2026", "traffic-signals": "ts-2026"}

# (course, assignment) -> {parameter: ("int", lo, hi) | ("float", lo, hi, digits)
#                                    | ("choice", [values])}
RANGES: dict[tuple[str, str], dict[str, tuple[Any, ...]]] = {
    ("smart-lighting", "02-adaptive-dimming"): {
        "seed": ("int", 100, 9999),
        "day": ("int", 0, 40),  # days after 15 April 2025: spring nights
        "start_hour": ("int", 21, 23),  # the run starts after dusk (UTC)
        "motion_events_per_hour": ("int", 20, 150),
        "lamp_max_w": ("float", 60.0, 150.0, 1),  # W at 100 % (the sensor reads up to 150)
    },
    ("traffic-signals", "02-actuated-control"): {
        "seed": ("int", 100, 9999),
        "north": ("int", 250, 700),  # vehicles per hour on each approach
        "south": ("int", 250, 700),
        "east": ("int", 120, 450),
        "west": ("int", 120, 450),
        "pedestrians_per_hour": ("int", 20, 120),
    },
}

STUDENT_VARIABLES = ("SMARTLAB_STUDENT", "JUPYTERHUB_USER")
UNKNOWN_STUDENT = "student"


def _student_from_environment() -> str:
    for name in STUDENT_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return UNKNOWN_STUDENT


_student: str | None = None


def current_student() -> str:
    """The student whose variant this kernel shows: the graded submission's owner while
    grading, else the JupyterHub user running the notebook. Read at the first call (the
    notebook's variant cell), not at import: the grader's fork server may preload modules
    before it sets a kernel's environment."""
    global _student
    if _student is None:
        _student = _student_from_environment()
    return _student


def _draw(rng: random.Random, spec: tuple[Any, ...]) -> Any:
    kind = spec[0]
    if kind == "int":
        return rng.randint(spec[1], spec[2])
    if kind == "float":
        return round(rng.uniform(spec[1], spec[2]), spec[3])
    if kind == "choice":
        return rng.choice(list(spec[1]))
    raise ValueError(f"unknown parameter kind {kind!r}")


def variant(course: str, assignment: str, student: str | None = None) -> dict[str, Any]:
    """The parameters of `assignment` for `student` (default: `current_student()`)."""
    ranges = RANGES.get((course, assignment))
    if ranges is None:
        raise KeyError(f"{course}/{assignment} declares no variant ranges")
    who = current_student() if student is None else student
    key = "\x1f".join((SALTS.get(course, course), course, assignment, who)).encode()
    rng = random.Random(int.from_bytes(hashlib.sha256(key).digest()[:8], "big"))
    return {name: _draw(rng, spec) for name, spec in ranges.items()}
