"""Fixtures of the grader tests: the fixture course, synthetic classes, a fork server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook
from traitlets.config import Config

from grader import kernels
from grader.execute import STOPS, SandboxedExecute
from grader.settings import SOCKET_ENV, Sandbox

REPO = Path(__file__).resolve().parents[2]
FIXTURE_COURSE = Path(__file__).parent / "fixtures" / "course"
COURSE_ID = "grading-demo"
ASSIGNMENT = "ps1"
SECRET_ENV = "SMARTLAB_TEST_GRADER_SECRET"

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="the full sandbox needs root")


def tool_env() -> dict[str, str]:
    """nbgrader runs `alembic` from PATH: the environment's bin first."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    env.pop(SOCKET_ENV, None)
    return env


def smartlab(*args: str, cwd: Path = REPO, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "hub_config.cli", *args],
        cwd=cwd,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def nbgrader(*args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["nbgrader", *args],
        cwd=cwd,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="session")
def work_root() -> Iterator[Path]:
    # Not pytest's tmp_path: that is under /tmp, which the sandbox replaces with its own, so a
    # test that student code cannot see a course folder there would prove nothing. Outside
    # /tmp (as a real /home/grader-<course> is) the hiding itself is what is tested.
    base = "/var/lib" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="smartlab-grader-test-", dir=base))
    root.chmod(0o711)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def generated_course(work_root: Path) -> Path:
    """The fixture course after `nbgrader generate_assignment ps1` (gradebook and release)."""
    course = work_root / "template"
    shutil.copytree(FIXTURE_COURSE, course)
    done = nbgrader("generate_assignment", ASSIGNMENT, cwd=course)
    assert done.returncode == 0, done.stderr
    return course


def copy_course(template: Path, target: Path) -> Path:
    shutil.copytree(template, target)
    return target


# ------------------------------------------------------------------ kernels without nbgrader


@pytest.fixture(scope="session")
def fork_server() -> Iterator[str]:
    """A private fork server for the sandbox tests, started with a secret in its
    environment (which no kernel may see)."""
    os.environ[SECRET_ENV] = "grader-only"
    server = kernels.PrivateForkServer(Sandbox())
    try:
        yield server.wait_ready()
    finally:
        server.stop()
        os.environ.pop(SECRET_ENV, None)


def run_notebook(
    socket_path: str, sources: list[str], folder: Path, timeout: int = 10, **limits: Any
) -> tuple[nbformat.NotebookNode, list[dict[str, Any]]]:
    """Execute `sources` as a notebook with SandboxedExecute; return it and the stops."""
    config = Config()
    config.Sandbox.server_socket = socket_path
    for key, value in limits.items():
        setattr(config.Sandbox, key, value)
    config.Execute.timeout = timeout
    config.SandboxedExecute.course_root = str(folder)
    nb = new_notebook(cells=[new_code_cell(s) for s in sources])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    del STOPS[:]
    executor = SandboxedExecute(config=config)
    resources = {
        "metadata": {"path": str(folder)},
        "nbgrader": {
            "student": "s",
            "assignment": "a",
            "notebook": "n",
            "db_url": "sqlite:///" + str(folder / "gradebook.db"),
        },
    }
    executed, _ = executor.preprocess(nb, resources)
    return executed, list(STOPS)


def text_of(cell: nbformat.NotebookNode) -> str:
    parts = []
    for output in cell.get("outputs", []):
        parts.append(output.get("text", ""))
        parts.append(output.get("data", {}).get("text/plain", ""))
        if output.get("output_type") == "error":
            parts.append(f"{output['ename']}: {output['evalue']}")
    return "".join(parts)


# ------------------------------------------------------------------ the hostile class


HOSTILE_LIMITS = """
# Tighter limits for the hostile class, so the tests stay short.
c.Sandbox.wall_seconds = 20
c.Sandbox.cpu_seconds = 8
c.Sandbox.output = "1M"
c.Sandbox.memory = "1G"
c.Sandbox.file_size = "16M"

from grader.autograde import use_sandbox  # noqa: E402 - feedback without hidden tests

use_sandbox(c)
"""


class HostileClass:
    def __init__(
        self,
        course: Path,
        run: subprocess.CompletedProcess,
        port: int,
        accepted: list[object],
        source_before: bytes,
    ) -> None:
        self.course, self.run, self.port = course, run, port
        self.accepted, self.source_before = accepted, source_before


@pytest.fixture(scope="session")
def hostile_class(generated_course: Path, work_root: Path) -> Iterator[HostileClass]:
    import socket
    import threading

    from .corpus import hostile_corpus

    course = copy_course(generated_course, work_root / "hostile")
    with open(course / "nbgrader_config.py", "a") as config:
        config.write(HOSTILE_LIMITS)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.5)
    port = listener.getsockname()[1]
    accepted: list[object] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                accepted.append(listener.accept())
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    hostile_corpus(course, port)
    source_before = (course / "source" / "ps1" / "squares.ipynb").read_bytes()
    try:
        run = smartlab("grade", COURSE_ID, ASSIGNMENT, "--course-dir", str(course))
        yield HostileClass(course, run, port, accepted, source_before)
    finally:
        stop.set()
        thread.join(2)
        listener.close()
