"""No course code runs as root (issue 20, item 2): `smartlab grade` started as root loads the
course's nbgrader_config.py (and imports from the course folder) only as the folder's owner."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from grader.synthetic import SyntheticPlan, write_submissions
from tests.grader.conftest import ASSIGNMENT, COURSE_ID, REPO, tool_env
from tests.grader.corpus import CORRECT
from tests.grader.test_formgrader import _grader_account

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="grading as root needs root")

# Loading the config leaves a file whose owner says who loaded it; so does importing a module
# planted in the course folder under the name of one the fork server preloads.
WRITES_WHEN_LOADED = """
import os
open({proof!r} + "-config-" + str(os.getuid()), "w").close()
"""


def grade_as_root(course: Path, cwd: Path) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "hub_config.cli", "grade", COURSE_ID, ASSIGNMENT]
    return subprocess.run(
        [*command, "--course-dir", str(course)],
        cwd=cwd,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_course_config_run_by_root_grading_writes_nothing_as_root(
    generated_course: Path, work_root: Path
) -> None:
    account = _grader_account()
    course = work_root / "config-as-root"
    shutil.copytree(generated_course, course)
    proofs = work_root / "proofs"  # anyone may write here, root as well as the grader
    proofs.mkdir(mode=0o1777)
    proofs.chmod(0o1777)
    proof = str(proofs / "proof")
    config = course / "nbgrader_config.py"
    config.write_text(config.read_text() + WRITES_WHEN_LOADED.format(proof=proof))
    (course / "numpy.py").write_text(WRITES_WHEN_LOADED.format(proof=proof + "-numpy"))
    write_submissions(course, ASSIGNMENT, [SyntheticPlan("anna", dict(CORRECT))])
    for path in [course, *course.rglob("*")]:
        os.lchown(path, account.pw_uid, account.pw_gid)
    done = grade_as_root(course, cwd=course)  # the course folder as the current folder, too
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 graded" in done.stdout and "sandbox: full" in done.stdout, done.stdout
    written = sorted(p.name for p in proofs.iterdir())
    assert f"proof-config-{account.pw_uid}" in written, written  # loaded, as the grader
    assert all(name.endswith(f"-{account.pw_uid}") for name in written), written
    assert all((proofs / name).stat().st_uid == account.pw_uid for name in written)
    autograded = course / "autograded" / "anna" / ASSIGNMENT
    assert autograded.stat().st_uid == account.pw_uid


def test_a_root_course_folder_whose_config_others_may_change_is_refused(
    generated_course: Path, work_root: Path
) -> None:
    course = work_root / "writable-config"
    shutil.copytree(generated_course, course)
    proof = str(work_root / "refused")
    config = course / "nbgrader_config.py"
    config.write_text(config.read_text() + WRITES_WHEN_LOADED.format(proof=proof))
    config.chmod(0o666)
    done = grade_as_root(course, cwd=REPO)
    assert done.returncode != 0
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith(
            f"{config} belongs to root but other accounts may change it: refusing to load it as "
            "root (give the course folder to its grader account)"
        )
    ), done.stderr
    assert not [p for p in work_root.iterdir() if p.name.startswith("refused")]
