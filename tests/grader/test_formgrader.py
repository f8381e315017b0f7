"""The formgrader's "autograde" and `nbgrader autograde` itself run student code in the same
sandbox once the course config calls `use_sandbox(c)`; a formgrader that is not root (it runs as
grader-<course>) gets the full sandbox from the root fork server (`smartlab sandbox serve`)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from grader.synthetic import SyntheticPlan, write_submissions

from .conftest import ASSIGNMENT, REPO, copy_course, nbgrader, root_only, tool_env
from .corpus import CORRECT

pytestmark = root_only
GRADER_ACCOUNT = "smartlab-test-grader"
PROBE = (
    "import os, pwd, socket\n"
    "print('user', pwd.getpwuid(os.getuid()).pw_name)\n"
    "try:\n    socket.create_connection(('1.1.1.1', 443), timeout=2)\n"
    "    print('network open')\nexcept OSError:\n    print('network blocked')"
)
USE_SANDBOX = "\nfrom grader.autograde import use_sandbox  # noqa: E402\n\nuse_sandbox(c)\n"
# What the formgrader's autograde button runs (nbgrader/server_extensions/formgrader).
API_AUTOGRADE = (
    "import sys\n"
    "from nbgrader.apps import NbGraderAPI\n"
    "from nbgrader.coursedir import CourseDirectory\n"
    "from traitlets.config import Config\n"
    "from jupyter_core.application import JupyterApp\n"
    "from nbgrader.apps.baseapp import NbGrader\n"
    "app = NbGrader()\n"
    "app.initialize([], root=sys.argv[1])\n"
    "api = NbGraderAPI(app.coursedir, parent=app)\n"
    "result = api.autograde(sys.argv[2], sys.argv[3])\n"
    "print('success' if result['success'] else result.get('error'))\n"
)


def probe_output(course: Path, student: str) -> str:
    nb = json.loads((course / "autograded" / student / ASSIGNMENT / "squares.ipynb").read_text())
    cell = next(
        c
        for c in nb["cells"]
        if c.get("metadata", {}).get("nbgrader", {}).get("grade_id") == "squares"
    )
    return "".join("".join(o.get("text", "")) for o in cell["outputs"])


@pytest.fixture(scope="module")
def sandboxed_course(generated_course: Path, work_root: Path) -> Path:
    course = copy_course(generated_course, work_root / "formgrader")
    with open(course / "nbgrader_config.py", "a") as config:
        config.write(USE_SANDBOX)
    write_submissions(
        course,
        ASSIGNMENT,
        [
            SyntheticPlan(name, dict(CORRECT), append={"squares": PROBE})
            for name in ("cli", "api", "hub")
        ],
    )
    return course


def test_nbgrader_autograde_runs_student_code_in_the_sandbox(sandboxed_course: Path) -> None:
    done = nbgrader("autograde", ASSIGNMENT, "--student", "cli", cwd=sandboxed_course)
    assert done.returncode == 0, done.stderr[-2000:]
    out = probe_output(sandboxed_course, "cli")
    assert "user smartlab-sb" in out and "network blocked" in out, out


def test_formgrader_autograde_runs_student_code_in_the_sandbox(sandboxed_course: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-c", API_AUTOGRADE, str(sandboxed_course), ASSIGNMENT, "api"],
        cwd=sandboxed_course,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.stdout.strip().endswith("success"), done.stdout + done.stderr[-2000:]
    out = probe_output(sandboxed_course, "api")
    assert "user smartlab-sb" in out and "network blocked" in out, out


def _grader_account() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(GRADER_ACCOUNT)
    except KeyError:
        subprocess.run(
            [
                "useradd",
                "--system",
                "--no-create-home",
                "--home-dir",
                "/nonexistent",
                "--shell",
                "/usr/sbin/nologin",
                "--user-group",
                GRADER_ACCOUNT,
            ],
            check=True,
        )
        return pwd.getpwnam(GRADER_ACCOUNT)


def test_formgrader_as_grader_account_uses_the_root_sandbox_service(
    sandboxed_course: Path, work_root: Path
) -> None:
    account = _grader_account()
    course = work_root / "formgrader-hub"
    shutil.copytree(sandboxed_course, course)
    shutil.rmtree(course / "autograded", ignore_errors=True)
    for path in [course, *course.rglob("*")]:
        os.lchown(path, account.pw_uid, account.pw_gid)
    course.chmod(0o700)
    socket_path = work_root / "service" / "sandbox.sock"
    socket_path.parent.mkdir(mode=0o755)
    service = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub_config.cli",
            "sandbox",
            "serve",
            "--socket",
            str(socket_path),
            "--group",
            GRADER_ACCOUNT,
        ],
        cwd=REPO,
        env=tool_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not socket_path.exists():
            assert service.poll() is None and time.monotonic() < deadline, service.stdout
            time.sleep(0.1)
        env = {**tool_env(), "SMARTLAB_SANDBOX_SOCKET": str(socket_path), "HOME": str(course)}
        done = subprocess.run(
            [sys.executable, "-c", API_AUTOGRADE, str(course), ASSIGNMENT, "hub"],
            cwd=course,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
            user=account.pw_uid,
            group=account.pw_gid,
            extra_groups=[account.pw_gid],
        )
    finally:
        service.terminate()
        service.wait(15)
    assert done.stdout.strip().endswith("success"), done.stdout + done.stderr[-3000:]
    assert "SANDBOX IS WEAK" not in done.stderr
    out = probe_output(course, "hub")
    assert "user smartlab-sb" in out and "network blocked" in out, out
    owner = (course / "autograded" / "hub" / ASSIGNMENT / "squares.ipynb").stat().st_uid
    assert owner == account.pw_uid
