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

import ast
import builtins
import contextlib
import importlib.util
import json
import os
import re
import secrets
import signal
import time
from queue import Empty
from typing import Any

from jupyter_core.paths import jupyter_config_path
from nbclient.client import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbclient.util import ensure_async, run_sync
from nbformat import NotebookNode
from nbformat.v4 import new_markdown_cell, new_output
from nbgrader.preprocessors import ClearHiddenTests, Execute
from nbgrader.utils import is_grade, is_solution
from traitlets import Unicode, default

from grader.guard import GUARD_REPLY, GUARD_REQUEST
from grader.kernels import SandboxKernelManager
from grader.sandbox import describe_bytes, kernel_runtime
from grader.settings import Sandbox

NOTE_KEY = "smartlab_grade"  # notebook metadata: why a run stopped early, tampering
TAMPERED_ENAME = "GradingIntegrityError"
TAMPERED_TEXT = (
    "не проверено: код студента изменил обработку ошибок или хуки ядра / "
    "not graded: student code changed the kernel's error handling or hooks"
)
INTEGRITY_NOTE = (
    "**Нарушение целостности проверки / Grading integrity violation.** "
    "Код в этом блокноте изменил обработку ошибок, преобразователи ввода или обработчики "
    "событий ядра. Ячейки с тестами {cells} не выполнялись и оценены в 0 баллов; работа "
    "отмечена для преподавателя. / Code in this notebook changed the kernel's exception "
    "handling, input transformers or event hooks. Test cells {cells} were not run and score "
    "0 points; the submission is flagged for the instructor."
)
WITHHELD = "[вывод скрытых тестов не показывается / output of hidden tests withheld]"
GUARD_TIMEOUT = 30.0  # seconds for the kernel to answer a check (it has nothing else to do)
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
            km.student = str((self.resources or {}).get("nbgrader", {}).get("student") or "")
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
        self._tampered: list[dict[str, Any]] = []
        self._hidden_marker = ClearHiddenTests(config=self.config).begin_test_delimeter
        # Fixed before any code runs: what an error message of a hidden-test cell may be.
        self._literals = {
            value for c in nb.cells if c.cell_type == "code" for value in _literals(c.source)
        }
        with self.setup_kernel():
            assert self.kc is not None
            info = self.wait_for_reply(self.kc.kernel_info())
            assert info is not None
            self.nb.metadata["language_info"] = info["content"]["language_info"]
            for index, cell in enumerate(self.nb.cells):
                if self._stopped_at is not None:
                    self._mark_not_run(cell)
                    continue
                hidden = cell.cell_type == "code" and self._hidden_marker in cell.source
                if _is_test_cell(cell) and self._guard_says_tampered(index, cell, "check"):
                    continue  # not run: its source never reaches the tampered kernel
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
                if hidden:
                    withhold_hidden_output(cell, self._literals)
                    if self._stopped_at is None:
                        self._guard_says_tampered(index, cell, "scrub")
        self.set_widgets_metadata()
        if self._stopped_at is not None:
            self._add_note(resources)
        if self._tampered:
            self._add_integrity_note(resources)
        return self.nb, self.resources

    # ---- integrity (grader/guard.py runs the kernel's side)

    def _guard_says_tampered(self, index: int, cell: NotebookNode, op: str) -> bool:
        """Ask the kernel's guard to check (and restore) its hooks, or to forget the source
        of the hidden-test cell just run; a change means tampering: the cell scores 0."""
        if not getattr(self.km, "guarded", False):
            return False
        changed = run_sync(self._async_guard)(op, cell.get("execution_count"))
        if changed is None:
            if not run_sync(self._async_kernel_alive)():
                return False  # dead: running the cell reports it as nbclient does
            changed = ["the kernel did not answer the integrity check"]
        if not changed:
            return False
        self._tampered.append({"cell": index + 1, "changed": changed[:20]})
        cell.outputs = [
            new_output(
                "error",
                ename=TAMPERED_ENAME,
                evalue=TAMPERED_TEXT,
                traceback=[f"{TAMPERED_ENAME}: {TAMPERED_TEXT} ({', '.join(changed[:5])})"],
            )
        ]
        cell.execution_count = None
        return True

    async def _async_kernel_alive(self) -> bool:
        return bool(self.km is not None and await ensure_async(self.km.is_alive()))

    async def _async_guard(self, op: str, count: Any) -> list[str] | None:
        assert self.kc is not None
        nonce = secrets.token_hex(8)
        msg = self.kc.session.msg(GUARD_REQUEST, {"op": op, "nonce": nonce, "count": count})
        self.kc.shell_channel.send(msg)
        deadline = time.monotonic() + GUARD_TIMEOUT
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = await ensure_async(self.kc.shell_channel.get_msg(timeout=left))
            except Empty:
                return None
            if reply.get("parent_header", {}).get("msg_id") != msg["header"]["msg_id"]:
                continue  # a late reply to something else
            content = reply.get("content", {})
            if reply.get("msg_type") != GUARD_REPLY or content.get("nonce") != nonce:
                return ["a forged integrity reply"]
            changed = content.get("changed")
            if not isinstance(changed, list):
                return ["a malformed integrity reply"]
            return [str(c)[:200] for c in changed]
        return None

    def _add_integrity_note(self, resources: Any) -> None:
        cells = ", ".join(str(t["cell"]) for t in self._tampered)
        note = new_markdown_cell(INTEGRITY_NOTE.format(cells=cells))
        note.metadata[NOTE_KEY] = {"note": True, "tampered": True}
        self.nb.cells.insert(0, note)
        self.nb.metadata.setdefault(NOTE_KEY, {})["tampered"] = self._tampered
        ids = (resources or {}).get("nbgrader", {})
        first = self._tampered[0]
        STOPS.append(
            {
                "student": ids.get("student"),
                "assignment": ids.get("assignment"),
                "notebook": ids.get("notebook"),
                "cell": first["cell"],
                "reason": "FLAGGED: student code changed how grade cells run ("
                + ", ".join(first["changed"][:3])
                + f"); cells {cells} score 0",
            }
        )

    # ---- limits

    def process_message(
        self, msg: dict[str, Any], cell: NotebookNode, cell_index: int
    ) -> NotebookNode | None:
        # Every message that ends up in the notebook counts (outputs, display updates, widget
        # state): text, all MIME bundles, metadata.
        if msg.get("msg_type") not in ("status", "execute_input", "execute_reply"):
            self._output_bytes += _content_size(msg.get("content", {}))
            if self._output_limit and self._output_bytes > self._output_limit:
                if self._stop is None:
                    self._stop = (
                        f"its output passed the limit of {describe_bytes(self._output_limit)}"
                    )
                    self._kill_kernel()
                return None
        return super().process_message(msg, cell, cell_index)

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
    """Every byte of an output message counts: text, every MIME bundle, metadata, transient."""
    try:
        return len(json.dumps(content, default=str, ensure_ascii=False).encode())
    except (TypeError, ValueError):
        return len(repr(content))


def _is_test_cell(cell: NotebookNode) -> bool:
    """An autograder test cell: graded code that is not the student's answer."""
    return cell.cell_type == "code" and is_grade(cell) and not is_solution(cell)


def _literals(source: str) -> list[str]:
    """The string constants the test's author wrote in `source`, in source order."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found.append((node.lineno, node.col_offset, node.value))
    return [value for *_, value in sorted(found)]


# Error names a hidden-test cell may show: Python's own and those nbclient/nbgrader add (a
# fixed set: a student-chosen exception name would be a channel).
EXCEPTION_NAMES = {
    name
    for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)
} | {"CellTimeoutError", "DeadKernelError", "CellExecutionError"}
NUMBER = re.compile(r"^-?\d{1,6}(\.\d{1,6})?$")


def withhold_hidden_output(cell: NotebookNode, messages: set[str] | None = None) -> None:
    """A cell with hidden tests keeps only what decides its points (an error or not, stderr or
    not, a partial-credit number) and text written before grading: printed lines that are
    string literals of its own source (each at most once, in source order), an error message
    that is a string literal of the notebook (`messages`: the test's assertion message, or
    the student's own `raise` message). Nothing computed while it ran, so no encoding of the
    hidden source reaches the autograded notebook or the feedback."""
    literals = _literals(cell.source)
    allowed = set(literals) | (messages or set())
    kept: list[NotebookNode] = []
    streams: dict[str, list[str]] = {}
    for output in cell.get("outputs", []):
        kind = output.get("output_type")
        if kind == "stream":
            name = "stderr" if output.get("name") == "stderr" else "stdout"
            if name not in streams:
                streams[name] = []
                kept.append(new_output("stream", name=name, text=""))
            streams[name] += [line for line in output.get("text", "").split("\n") if line]
        elif kind == "error":
            ename = output.get("ename") if output.get("ename") in EXCEPTION_NAMES else "Exception"
            evalue = output.get("evalue") if output.get("evalue") in allowed else ""
            if output.get("ename") in (STOPPED_ENAME, NOT_RUN_ENAME, TAMPERED_ENAME):
                kept.append(output)  # the grader's own words
                continue
            text = f"{ename}: {evalue}" if evalue else f"{ename}: {WITHHELD}"
            kept.append(new_output("error", ename=ename, evalue=evalue, traceback=[text]))
        elif kind == "execute_result":
            plain = output.get("data", {}).get("text/plain", "")
            if isinstance(plain, str) and NUMBER.match(plain.strip()):
                kept.append(
                    new_output(
                        "execute_result",
                        data={"text/plain": plain.strip()},
                        execution_count=output.get("execution_count"),
                    )
                )
    for output in kept:
        if output.get("output_type") == "stream":
            lines = streams[output.name]
            shown = [value for value in dict.fromkeys(literals) if value in lines]
            if output.name == "stderr" and not shown:
                shown = [WITHHELD]  # stderr costs the points: keep that it happened
            output.text = "".join(f"{line}\n" for line in shown)
    cell.outputs = [o for o in kept if o.get("output_type") != "stream" or o.text]


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
