"""The README's set-up and course grading work wherever the repository lies.

The repository's files (as `git ls-files` lists them: what a clone holds, with this working
tree's changes) go to a folder under /tmp whose path has a space: /tmp is the folder the grading
sandbox replaces with a private one, and a space breaks every unquoted path. There the README's
test command sets up its own environment from the lock and grades a course's solution.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO

COURSE_TEST = (
    "tests/courses/test_courses.py::test_solution_gets_full_marks[iot-basics/02-air-alerts]"
)


@pytest.fixture(scope="module")
def clone() -> Iterator[Path]:
    top = Path(tempfile.mkdtemp(prefix="smartlab clone ", dir="/tmp"))
    top.chmod(0o755)  # the sandbox's accounts read the environment from here
    target = top / "Smart City Lab"
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = REPO / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    yield target
    shutil.rmtree(top, ignore_errors=True)


def test_readme_setup_and_solution_grading_in_a_path_with_a_space_under_tmp(clone: Path) -> None:
    assert " " in str(clone) and str(clone).startswith("/tmp/")
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VIRTUAL_ENV", "PYTEST_", "SMARTLAB_"))
    }
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if not p.startswith(str(REPO))
    )
    done = subprocess.run(
        ["./smartlab", "test", COURSE_TEST, "-p", "no:cacheprovider", "-q"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    assert "Python environment: " in out and "locked packages installed" in out, out[-2000:]
    assert "1 passed" in out, out[-2000:]
    assert (clone / ".venv" / "bin" / "python").exists()  # its own environment, not ours
