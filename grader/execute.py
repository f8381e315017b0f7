"""nbgrader's Execute preprocessor, with sandboxed warm kernels and limits that stop politely.

`SandboxedExecute` is nbgrader's `Execute` (so `c.Execute.timeout` and the rest of its
configuration apply unchanged, and a cell that times out is interrupted and marked exactly as
nbgrader marks it) with three differences:

- its kernels come from the fork server (grader/kernels.py): warm, fresh per notebook,
  sandboxed, and blind to the grader's files (`hidden_paths`);
- it keeps at most `Sandbox.output` bytes of output per notebook;
- when the kernel dies (a limit: CPU, wall time, output, memory; or a crash) or ignores the
  interrupt after a cell's time limit, the notebook is graded as far as it got instead of
  failing as a whole: the cell that was running gets an
  error saying which limit stopped it, every later code cell an error saying it did not run (so
  its tests score nothing), and a note at the top of the notebook says what happened, for the
  instructor and for the feedback.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import signal
from typing import Any

from jupyter_core.paths import jupyter_config_path
from nbclient.client import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode
from nbformat.v4 import new_markdown_cell, new_output
from nbgrader.preprocessors import Execute
from traitlets import Unicode, default

from grader.kernels import SandboxKernelManager
from grader.sandbox import describe_bytes, kernel_runtime
from grader.settings import Sandbox

NOTE_KEY = "smartlab_grade"  # notebook metadata: why a run stopped early
STOPPED_ENAME = "GradingStopped"
NOT_RUN_ENAME = "NotRun"

# Each stop, for the caller (the batch grader's summary): dicts with notebook, cell, reason.
STOPS: list[dict[str, Any]] = []


def _needed() -> list[str]:
    """What the kernel itself runs from: never hidden, whatever the configuration says."""
    return [*kernel_runtime(), "/tmp", "/var/tmp", "/dev/shm"]  # the sandbox's private ones


def _course_sources() -> list[str]:
    """The `courses` package (the shipped courses' solutions and hidden tests). Kernels never
    import it; from a checkout it lies under the masked checkout, but an installed copy lies
    in the Python environment, which the sandbox shows."""
    spec = importlib.util.find_spec("courses")
    return list(spec.submodule_search_locations or []) if spec else []


def hidden_paths(config: Any, db_url: str | None, course_root: str | None) -> list[str]:
    """Files and folders of the grader that sandboxed code must not see."""
    found: list[str] = []
    needed = _needed()

    def add(path: str | os.PathLike[str] | None) -> None:
        if not path:
            return
        resolved = os.path.realpath(os.path.expanduser(os.fspath(path)))
        if resolved == "/" or resolved in found or not os.path.exists(resolved):
            return
        if any(n == resolved or n.startswith(resolved + os.sep) for n in needed):
            return  # hiding it would hide the kernel's own code
        found.append(resolved)

    add(course_root)
    if db_url and db_url.startswith("sqlite:///"):
        db = db_url[len("sqlite:///") :]
        for suffix in ("", "-journal", "-wal", "-shm"):
            add(db + suffix)
    for folder in jupyter_config_path():
        for name in ("nbgrader_config.py", "nbgrader_config.json", "jupyterhub_config.py"):
            add(os.path.join(folder, name))
    add(os.path.expanduser("~"))  # the grader account's home: its config, course, tokens
    exchange = None
    with contextlib.suppress(AttributeError, KeyError):
        exchange = config.Exchange.root
    add(exchange if isinstance(exchange, str) else os.environ.get("SMARTLAB_EXCHANGE"))
    for variable in ("SMARTLAB_SITE", "SMARTLAB_STATE_DIR", "SMARTLAB_RUNTIME"):
        add(os.environ.get(variable))
    for path in _course_sources():
        add(path)
    for extra in Sandbox(config=config).hide_paths:
        add(extra)
    return found


class SandboxedExecute(Execute):
    """nbgrader's Execute on sandboxed warm kernels (see module doc)."""

    course_root = Unicode(
        help="The course folder (hidden from student code); default: "
        "CourseDirectory.root, else the current folder (nbgrader runs its "
        "converters there)."
    ).tag(config=True)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("kernel_manager_class", SandboxKernelManager)
        super().__init__(*args, **kwargs)

    @default("course_root")
    def _course_root_default(self) -> str:
        try:
            root = self.config.CourseDirectory.root
        except AttributeError:
            root = None
        return root if isinstance(root, str) and root else os.getcwd()

    @default("shutdown_kernel")
    def _immediate(self) -> str:
        return "immediate"  # one kernel per notebook; nothing to wait for

    # ---- kernel

    def create_kernel_manager(self) -> Any:
        km = super().create_kernel_manager()
        if isinstance(km, SandboxKernelManager):
            db_url = (self.resources or {}).get("nbgrader", {}).get("db_url")
            km.hide_paths = hidden_paths(self.config, db_url, self.course_root)
        return km

    # ---- run

    def preprocess(
        self, nb: NotebookNode, resources: Any = None, km: Any = None
    ) -> tuple[NotebookNode, dict[str, Any]]:
        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        self._output_bytes = 0
        self._output_limit = Sandbox(config=self.config).limits().output_bytes
        self._stop: str | None = None
        self._stopped_at: int | None = None
        with self.setup_kernel():
            assert self.kc is not None
            info = self.wait_for_reply(self.kc.kernel_info())
            assert info is not None
            self.nb.metadata["language_info"] = info["content"]["language_info"]
            for index, cell in enumerate(self.nb.cells):
                if self._stopped_at is not None:
                    self._mark_not_run(cell)
                    continue
                try:
                    self.preprocess_cell(cell, resources, index)
                except DeadKernelError:
                    self._stopped_at = index
                    self._stop = self._stop or self._why_dead()
                    self._mark_stopped(cell)
                except CellTimeoutError:
                    # The cell ran past Execute.timeout and the interrupt did not stop it
                    # (nbgrader would fail the whole submission here).
                    self._stopped_at = index
                    self._stop = self._stop or (
                        f"it kept running past the cell time limit ({self.timeout} s) and "
                        "ignored the interrupt"
                    )
                    self._kill_kernel()
                    self._mark_stopped(cell)
        self.set_widgets_metadata()
        if self._stopped_at is not None:
            self._add_note(resources)
        return self.nb, self.resources

    # ---- limits

    def output(
        self, outs: list[NotebookNode], msg: dict[str, Any], display_id: str | None, cell_index: int
    ) -> NotebookNode | None:
        self._output_bytes += _content_size(msg.get("content", {}))
        if self._output_limit and self._output_bytes > self._output_limit:
            if self._stop is None:
                self._stop = f"its output passed the limit of {describe_bytes(self._output_limit)}"
                self._kill_kernel()
            return None
        return super().output(outs, msg, display_id, cell_index)

    def _kill_kernel(self) -> None:
        provisioner = getattr(self.km, "provisioner", None)
        process = getattr(provisioner, "process", None)
        if process is not None:
            process.send_signal(signal.SIGKILL)

    def _why_dead(self) -> str:
        info = getattr(self.km, "exit_info", None) or {}
        if not info and self.km is not None:
            lease = getattr(getattr(self.km, "provisioner", None), "lease", None)
            if lease is not None:
                lease.wait_exit(5)
                info = lease.exit_info or {}
        limits = Sandbox(config=self.config).limits()
        reason = info.get("reason")
        if reason == "cpu":
            return f"it used up its CPU time ({limits.cpu_seconds} s)"
        if reason == "wall":
            return (
                f"the notebook ran longer than its time limit "
                f"({limits.wall_seconds:g} s for all cells)"
            )
        sig = info.get("signal")
        if sig:
            name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
            return (
                f"the kernel died ({name}); the limits are "
                f"{describe_bytes(limits.memory_bytes)} of memory and "
                f"{limits.processes} processes"
            )
        return f"the kernel stopped (exit code {info.get('code')})"

    def _mark_stopped(self, cell: NotebookNode) -> None:
        cell.outputs = list(cell.get("outputs", []))
        cell.outputs.append(
            new_output(
                "error",
                ename=STOPPED_ENAME,
                evalue=f"grading stopped here: {self._stop}",
                traceback=[f"{STOPPED_ENAME}: grading stopped in this cell because {self._stop}."],
            )
        )

    def _mark_not_run(self, cell: NotebookNode) -> None:
        if cell.cell_type != "code" or not cell.source.strip():
            return
        cell.outputs = [
            new_output(
                "error",
                ename=NOT_RUN_ENAME,
                evalue="not run: grading stopped in an earlier cell",
                traceback=[
                    f"{NOT_RUN_ENAME}: this cell was not run because grading stopped "
                    f"earlier ({self._stop})."
                ],
            )
        ]
        cell.execution_count = None

    def _add_note(self, resources: Any) -> None:
        assert self._stopped_at is not None
        number = self._stopped_at + 1
        text = (
            f"**Grading stopped early.** The notebook was stopped in cell {number} because "
            f"{self._stop}. It was graded as far as it got: the cells after that were not "
            f"run, and their tests score no points."
        )
        note = new_markdown_cell(text)
        note.metadata[NOTE_KEY] = {"note": True}
        self.nb.cells.insert(0, note)
        self.nb.metadata[NOTE_KEY] = {"stopped_at_cell": number, "reason": self._stop}
        ids = (resources or {}).get("nbgrader", {})
        STOPS.append(
            {
                "student": ids.get("student"),
                "assignment": ids.get("assignment"),
                "notebook": ids.get("notebook"),
                "cell": number,
                "reason": self._stop,
            }
        )


def _content_size(content: dict[str, Any]) -> int:
    if "text" in content:
        return len(content["text"])
    size = 0
    for key in ("data", "traceback"):
        value = content.get(key)
        if value:
            size += len(json.dumps(value)) if not isinstance(value, str) else len(value)
    return size


def installed_preprocessors(preprocessors: list[Any]) -> list[Any]:
    """nbgrader's autograde list with Execute replaced by SandboxedExecute."""
    return [
        SandboxedExecute
        if (
            isinstance(pp, type)
            and issubclass(pp, Execute)
            and not issubclass(pp, SandboxedExecute)
        )
        else pp
        for pp in preprocessors
    ]
