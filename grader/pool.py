"""Grading processes: forked once from the configured grader, one submission at a time each.

Forking after the configuration is loaded and nbgrader is imported makes a worker cost nothing
to start. Each worker runs nbgrader's converter for one submission at a time (the kernel itself
is another, sandboxed process), so a worker that dies (a crash in a library, a kill) costs only
the submission it had: the pool reports that submission as failed and forks a replacement.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import signal
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection, wait
from typing import Any

Work = Callable[[str], dict[str, Any]]


def _worker_main(conn: Connection, work: Work, init: Callable[[], None] | None) -> None:
    # Ctrl-C goes to the whole process group: only the parent handles it (it stops us). Blocked,
    # not ignored: nbclient installs its own SIGINT handler around each notebook, which would
    # otherwise end a kernel early and record a truncated notebook as graded.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    if init is not None:
        init()
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            result = work(task)
        except Exception as err:  # the pool's caller decides what a failure means
            result = {
                "status": "failed",
                "message": f"{type(err).__name__}: {err}",
                "details": traceback.format_exc(),
            }
        conn.send(result)


class WorkerPool:
    def __init__(self, size: int, work: Work, init: Callable[[], None] | None = None) -> None:
        self.size = max(1, size)
        self.work, self.init = work, init
        self.ctx = multiprocessing.get_context("fork")
        self.workers: list[tuple[Any, Connection]] = []

    def _spawn(self) -> tuple[Any, Connection]:
        parent, child = self.ctx.Pipe()
        process = self.ctx.Process(
            target=_worker_main, args=(child, self.work, self.init), daemon=True
        )
        process.start()
        child.close()
        return process, parent

    def run(
        self,
        tasks: list[str],
        on_result: Callable[[str, dict[str, Any]], None],
        on_start: Callable[[str], None] | None = None,
    ) -> None:
        """Run every task; call `on_result(task, result)` in this process as each finishes."""
        queue = list(reversed(tasks))
        busy: dict[Connection, tuple[Any, str]] = {}
        idle: list[tuple[Any, Connection]] = []
        try:
            for _ in range(min(self.size, len(tasks))):
                idle.append(self._spawn())
            while queue or busy:
                while queue and idle:
                    process, conn = idle.pop()
                    task = queue.pop()
                    if on_start:
                        on_start(task)
                    conn.send(task)
                    busy[conn] = (process, task)
                ready = wait(list(busy) + [p.sentinel for p, _ in busy.values()])
                for item in ready:
                    conn = (
                        item
                        if isinstance(item, Connection)
                        else next((c for c, (p, _) in busy.items() if p.sentinel == item), None)
                    )
                    if conn is None or conn not in busy:
                        continue
                    process, task = busy.pop(conn)
                    try:
                        result = conn.recv()
                    except (EOFError, OSError):
                        process.join(1)
                        result = {
                            "status": "failed",
                            "message": f"the grading process died (exit code {process.exitcode})",
                        }
                        conn.close()
                        process, conn = self._spawn()
                    idle.append((process, conn))
                    on_result(task, result)
        finally:
            self.workers = idle + [(p, c) for c, (p, _) in busy.items()]
            self.stop(kill=bool(busy))

    def stop(self, kill: bool = False) -> None:
        for process, conn in self.workers:
            with contextlib.suppress(OSError):
                if kill:
                    os.kill(process.pid, signal.SIGKILL)
                else:
                    conn.send(None)
        for process, conn in self.workers:
            process.join(5)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
        self.workers = []
