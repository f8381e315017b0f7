"""The fork server's children: warming the server up, and becoming a sandboxed kernel.

`preload` and `warm_up` run in the fork server before it serves (so every kernel finds
ipykernel, IPython, zmq, numpy … already imported); `run_kernel` runs in each forked child:
confine (grader/sandbox.py), then start an ipykernel in this process on the sockets the client
chose, or exec a foreign kernel inside the same sandbox.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
from pathlib import Path
from typing import Any

from grader import guard, sandbox
from grader.sandbox import Job

# numpy (with the parts it imports lazily on first use: reading data files needs numpy.ma, 10-20 ms
# in every kernel otherwise; numpy.random is reseeded per kernel), and the platform's own modules
# that notebooks and course tests import.
DEFAULT_PRELOAD = [
    "numpy",
    "numpy.ma",
    "numpy.random",
    "hardware_kits.twins",
    "labs.client",
    "coursework.checks",
    "coursework.live",
]
# The in-process kernel itself.
KERNEL_MODULES = ["ipykernel.kernelapp", "ipykernel.ipkernel", "ipykernel.zmqshell"]
# `python -m grader.zygote` puts the folder it was started in first on sys.path (not under
# `python -P`, as `smartlab grade` starts it); kernels must not import from there.
START_PATH = sys.path[0] if sys.path and not sys.flags.safe_path else ""


def add_working_folder(path: list[str]) -> None:
    """The notebook's folder ('') on the kernel's path, where IPython puts it for any kernel:
    after the standard library, before site-packages (so a scorer beside the notebook imports).
    IPython leaves it out itself under `python -P`, which the fork server may run with."""
    if "" in path:
        return
    folders = [os.path.basename(p) for p in path]
    where = next((i for i, f in enumerate(folders) if f in ("site-packages", "dist-packages")), 0)
    path.insert(where, "")


def preload(modules: list[str]) -> list[str]:
    """Import `modules`; return those that could not be imported (a course may not use them)."""
    missing = []
    for name in modules:
        try:
            __import__(name)
        except Exception:  # any import error: the kernel would hit it too, later
            missing.append(name)
    return missing


def warm_tracebacks() -> None:
    """Format a traceback here, as a kernel does for a failing cell: the first one in a fresh
    process costs 0.1-0.2 s (stack_data, executing and pygments build their caches), one in a
    fork of a process that already did it about 0.01 s. Most notebooks a grader sees have a
    failing test. No student code is involved: the exception is this function's own."""
    from IPython.core import ultratb

    def fail() -> None:
        raise ValueError("warm-up")

    try:
        fail()
    except ValueError:
        info = sys.exc_info()
        for theme in ("linux", "nocolor", "neutral"):
            with contextlib.suppress(Exception):
                ultratb.AutoFormattedTB(mode="Context", theme_name=theme).structured_traceback(
                    *info
                )


def warm_up(folder: Path) -> int:
    """Start one kernel (unconfined, never given code) in a child, its sockets in `folder`, and
    import here every module it imported on its way up, so the real children find them loaded.
    Returns how many. Import KERNEL_MODULES first (grader/zygote.py `warm`): the child then
    imports only what starting up and running cells load lazily."""
    reader, writer = os.pipe()
    work = Path(folder) / f"warmup-{secrets.token_hex(4)}"
    work.mkdir(mode=0o700)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os.close(reader)
        try:
            before = set(sys.modules)
            devnull = os.open(os.devnull, os.O_RDWR)
            os.dup2(devnull, 1)
            os.dup2(devnull, 2)
            from ipykernel.kernelapp import IPKernelApp

            app = IPKernelApp.instance()
            app.initialize(
                [
                    "-f",
                    str(work / "kernel.json"),
                    "--transport=ipc",
                    f"--ip={work / 'k'}",
                    "--HistoryManager.hist_file=:memory:",
                ]
            )
            # What a first cell imports (display, compilation, a traceback) counts too.
            for code in ("import numpy as np\nnp.arange(3)", "print(1)", "1/0"):
                app.shell.run_cell(code, store_history=True)
            new = sorted(set(sys.modules) - before)
            os.write(writer, json.dumps(new).encode())
        finally:
            os._exit(0)
    os.close(writer)
    data = b""
    while chunk := os.read(reader, 1 << 16):
        data += chunk
    os.close(reader)
    os.waitpid(pid, 0)
    shutil.rmtree(work, ignore_errors=True)
    names = json.loads(data or b"[]")
    skip = ("__main__", "__mp_main__")
    return len(names) - len(preload([n for n in names if n not in skip]))


# ------------------------------------------------------------------ kernel child


def run_kernel(
    job: Job, request: dict[str, Any], source_fd: int | None, log_fd: int, ready_fd: int
) -> None:
    """In the forked child: confine, then become the kernel; write to `ready_fd` once its
    sockets are bound. Never returns."""
    code = 1
    try:
        os.dup2(log_fd, 2)
        devnull = os.open(os.devnull, os.O_RDWR)
        os.dup2(devnull, 0)
        os.dup2(devnull, 1)
        close_other_fds(keep={0, 1, 2, source_fd, ready_fd})
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with EFBIG
        signal.set_wakeup_fd(-1)
        sandbox.confine(job, source_fd)
        if source_fd is not None:
            os.close(source_fd)
        connection = dict(request["connection"])
        conn_file = os.path.join(
            sandbox.HOMEDIR if job.full else os.path.dirname(job.sock_dir), "kernel.json"
        )
        fd = os.open(conn_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(connection, out)
        if request.get("ipykernel"):
            reseed()
            sys.path[:] = [p for p in sys.path if p not in ("", START_PATH)]
            add_working_folder(sys.path)
            from ipykernel.kernelapp import IPKernelApp

            kernel_args = request.get("kernel_args", [])
            args = ["-f", conn_file, *kernel_args]
            sys.argv = [sys.executable, "-m", "ipykernel_launcher", *args]
            app = IPKernelApp.instance()
            if not kernel_args:  # the usual kernel spec: `-f {connection_file}` only
                app.parse_command_line = lambda argv=None: parse_connection_file_only(
                    app, conn_file
                )
            # No history database: a hidden test's source must not outlive its cell on disk.
            app.config.HistoryManager.enabled = False
            app.initialize(args)
            # Before any student code: the references the grader checks each grade cell against.
            guard.install(app.shell, app.kernel)
            os.write(ready_fd, b"r")
            os.close(ready_fd)
            app.start()
            code = 0
        else:
            argv = [a.replace("{connection_file}", conn_file) for a in request["argv"]]
            os.close(ready_fd)  # a foreign kernel: the client polls its sockets as usual
            os.execvpe(argv[0], argv, os.environ)
    except BaseException as err:
        with contextlib.suppress(Exception):
            os.write(2, f"sandboxed kernel failed: {type(err).__name__}: {err}\n".encode())
    finally:
        os._exit(code)


def parse_connection_file_only(app: Any, conn_file: str) -> None:
    """What `app.parse_command_line(["-f", conn_file])` does, without building traitlets'
    argument parser for every class and alias: that was a fifth of each kernel's start-up.
    tests/grader/test_units.py checks both give the same configuration."""
    from traitlets.config import Config

    app.argv = ["-f", conn_file]
    app.cli_config = Config({"IPKernelApp": {"connection_file": conn_file}})
    app.update_config(app.cli_config)
    app.extra_args = []


def reseed() -> None:
    """Children of one fork server would otherwise share the random state imported here."""
    import random

    random.seed()
    np_random = sys.modules.get("numpy.random")
    if np_random is not None:
        with contextlib.suppress(Exception):
            np_random.seed()


def close_other_fds(keep: set[int | None]) -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
