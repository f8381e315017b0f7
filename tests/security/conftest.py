"""The security tests reuse the grader tests' course fixtures (a generated nbgrader course), and
share one platform started as root, as `./smartlab up` starts it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.grader.conftest import generated_course, work_root  # noqa: F401
from tests.stack import Up, running

# Files an earlier run (or an older version) left readable by everyone, planted before the
# start, which must close them.
LEFTOVERS = ("lab-service.sqlite", "lab_service_config.py", "old-run.sqlite")


@pytest.fixture(scope="package")
def platform(work_root: Path, home_root: Path) -> Iterator[Up]:  # noqa: F811
    # Outside /tmp: the sandbox replaces /tmp with its own, which would hide the state folder
    # whatever its modes.
    state = work_root / "security-state"
    state.mkdir(mode=0o711)
    for name in LEFTOVERS:
        (state / name).write_bytes(b"")  # an empty file is an empty SQLite database
        (state / name).chmod(0o644)
    for folder in (REPO / "courses").iterdir():
        if folder.is_dir() and folder.name != "__pycache__":
            folder.chmod(0o755)  # as a clone has them before any start
    with running(Up(state, home_root)) as up:
        yield up
