"""`smartlab grade`: nbgrader's autograde for a whole class, in parallel, in the sandbox.

`SmartGrade` is an nbgrader application: it reads the configuration exactly as `nbgrader
autograde` does (the Jupyter config path, the current folder, the course folder's
nbgrader_config.py), so every nbgrader setting applies, and adds its own (`c.SmartGrade.*`,
`c.Sandbox.*`). It starts one fork server (warm, sandboxed kernels), forks `workers` grading
processes, and hands them one submission at a time; each runs nbgrader's own Autograde
converter with `SandboxedExecute` in place of `Execute`, writing the autograded notebooks and
gradebook rows nbgrader would write. A journal makes an interrupted run resumable.
"""

from __future__ import annotations

import fcntl
import fnmatch
import logging
import os
import pwd
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import nbformat
from nbgrader.api import Gradebook, MissingEntry
from nbgrader.apps.baseapp import NbGrader
from traitlets import Bool, Integer, Unicode, default

from grader import kernels, speedups
from grader.autograde import Outcome, SubmissionGrader, use_sandbox
from grader.feedback import hidden_lines, leaks
from grader.journal import Journal
from grader.pool import WorkerPool
from grader.progress import Progress, clock
from grader.sandbox import WEAK_MODE_WARNING
from grader.settings import SOCKET_ENV, Sandbox
from grader.sqlite import parallel_mode, tune_connections

STATE_DIR = ".smartlab"  # in the course folder, next to gradebook.db


class GradeError(ValueError):
    """A user error: bad course, assignment or option. One line, no traceback."""


@dataclass
class Plan:
    grade: list[str] = field(default_factory=list)
    resumed: list[str] = field(default_factory=list)  # cut off last time: graded again
    already: list[str] = field(default_factory=list)  # graded before, unchanged since
    empty: list[str] = field(default_factory=list)  # a submission folder without notebooks


def default_workers() -> int:
    # A submission is a chain that alternates between its worker (nbgrader) and its kernel, and
    # waits while a kernel starts or a notebook sleeps: two chains per core keep the cores busy
    # (2 cores, 200 notebooks: 1.92 cores busy on average with 5 workers, 1.77 with 3).
    return 2 * len(os.sched_getaffinity(0)) + 1


class SmartGrade(NbGrader):
    name = "smartlab-grade"
    description = "Autograde every submission of an assignment, in parallel and sandboxed."

    workers = Integer(help="Grading processes at once (default: 2 x CPUs + 1).").tag(config=True)
    force = Bool(False, help="Grade again submissions that are already autograded.").tag(
        config=True
    )
    state_dir = Unicode(
        STATE_DIR, help="Folder (in the course folder) for the run journal and log."
    ).tag(config=True)

    @default("workers")
    def _workers_default(self) -> int:
        return default_workers()

    @default("classes")
    def _classes_default(self) -> list[Any]:
        return [*super()._classes_default(), Sandbox, SmartGrade]

    # ---- set-up

    def setup(self, course_dir: Path, course_id: str) -> None:
        """Load the configuration as nbgrader does, for the course in `course_dir`."""
        # nbgrader warns when the current folder has no nbgrader_config.py; the course
        # folder's is loaded right after, so that warning would only mislead.
        quiet = logging.getLogger("traitlets")
        level = quiet.level
        self.log_level = logging.ERROR
        try:
            self.initialize([], root=str(course_dir))
        finally:
            quiet.setLevel(level)
        configured = self.coursedir.course_id
        if configured and configured != course_id:
            raise GradeError(f"{course_dir} is the course {configured!r}, not {course_id!r}")
        use_sandbox(self.config)
        # nbconvert validates the whole notebook after every preprocessor unless told to do it
        # once at the end (its own option); an invalid notebook still fails, as before.
        self.config.Exporter.optimistic_validation = True

    @property
    def state_path(self) -> Path:
        return Path(self.coursedir.root) / self.state_dir

    # ---- planning

    def plan(self, assignment: str, students: list[str] | None, journal: Journal) -> Plan:
        self._check_gradebook(assignment)
        pattern = self.coursedir.format_path(self.coursedir.submitted_directory, "*", assignment)
        folders = sorted(Path(p) for p in _glob(pattern))
        plan = Plan()
        for folder in folders:
            student = folder.parent.name
            if students and not any(fnmatch.fnmatchcase(student, s) for s in students):
                continue
            if not any(folder.glob("*.ipynb")):
                plan.empty.append(student)
                continue
            if self.force:
                plan.grade.append(student)
            elif journal.state(student) == "started":
                plan.resumed.append(student)
            elif self._up_to_date(assignment, student):
                plan.already.append(student)
            else:
                plan.grade.append(student)
        if students and not (plan.grade or plan.resumed or plan.already or plan.empty):
            raise GradeError(
                f"no submission of {assignment!r} by {', '.join(students)} in "
                f"{Path(pattern).parent.parent}"
            )
        return plan

    def _check_gradebook(self, assignment: str) -> None:
        with Gradebook(self.coursedir.db_url, self.coursedir.course_id) as gb:
            try:
                found = gb.find_assignment(assignment)
            except MissingEntry:
                raise GradeError(
                    f"assignment {assignment!r} is not in the gradebook of "
                    f"{self.coursedir.root}: run `nbgrader generate_assignment {assignment}` "
                    "there first"
                ) from None
            if not found.notebooks:
                raise GradeError(f"assignment {assignment!r} has no notebooks in the gradebook")

    def _up_to_date(self, assignment: str, student: str) -> bool:
        """nbgrader's rule: graded unless the submission is newer than the autograded copy."""
        cd = self.coursedir
        dest = cd.format_path(cd.autograded_directory, student, assignment)
        if not os.path.isdir(dest):
            return False
        src = cd.format_path(cd.submitted_directory, student, assignment)
        new, old = cd.get_existing_timestamp(src), cd.get_existing_timestamp(dest)
        return not (new is not None and old is not None and new > old)

    def release_leaks(self, assignment: str) -> list[str]:
        """Release notebooks that show hidden test code (regenerate them before students
        fetch them)."""
        cd = self.coursedir
        source = Path(cd.format_path(cd.source_directory, ".", assignment))
        release = Path(cd.format_path(cd.release_directory, ".", assignment))
        found = []
        for path in sorted(release.glob("*.ipynb")):
            original = source / path.name
            if not original.exists():
                continue
            try:
                lines = hidden_lines(nbformat.read(original, as_version=4))
                places = leaks(nbformat.read(path, as_version=4), lines) if lines else []
            except Exception:  # an unreadable notebook is nbgrader's to report
                continue
            if places:
                found.append(f"{path}: {', '.join(places)}")
        return found

    # ---- running

    def start_sandbox(
        self,
        allow_uids: tuple[int, ...] = (),
        started: kernels.PrivateForkServer | None = None,
        settings: Sandbox | None = None,
    ) -> Callable[[], str]:
        """Start (or find) the fork server, or configure the one `started` before the
        configuration was read (with `settings`, else this app's); returns a function that
        waits until it listens and gives its socket, so its warm-up overlaps with planning.
        Called again once configured, only a configured `server_socket` changes the choice."""
        settings = settings or Sandbox(parent=self)
        started = started or getattr(self, "_fork_server", None)
        if settings.server_socket:
            if started is not None:
                started.stop()
            return lambda: settings.server_socket
        if started is None:
            started = kernels.PrivateForkServer()
        self._fork_server = started
        if started.socket_path is None:
            started.configure(settings, allow_uids)
        return started.wait_ready

    def stop_sandbox(self) -> None:
        server = getattr(self, "_fork_server", None)
        if server is not None:
            server.stop()

    def run_batch(
        self,
        assignment: str,
        students: list[str] | None = None,
        out: TextIO | None = None,
        err: TextIO | None = None,
        sandbox: Callable[[], str] | None = None,
    ) -> int:
        out, err = out or sys.stdout, err or sys.stderr
        self.state_path.mkdir(exist_ok=True)
        os.chmod(self.state_path, 0o700)
        lock = open(self.state_path / f"grade-{assignment}.lock", "a")  # noqa: SIM115
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise GradeError(
                f"another `smartlab grade` is grading {assignment!r} in "
                f"{self.coursedir.root}; wait for it to finish"
            ) from None
        try:
            return self._run_locked(assignment, students, out, err, sandbox)
        finally:
            lock.close()

    def _run_locked(
        self,
        assignment: str,
        students: list[str] | None,
        out: TextIO,
        err: TextIO,
        sandbox: Callable[[], str] | None,
    ) -> int:
        journal = Journal(self.state_path / f"grade-{assignment}.journal")
        log_path = self.state_path / f"grade-{assignment}.log"
        stop_logging = self._log_to(log_path)
        try:
            plan = self.plan(assignment, students, journal)
            for problem in self.release_leaks(assignment):
                print(f"warning: hidden tests in the release: {problem}", file=err)
            for student in plan.empty:
                journal.record(student, "skipped", message="empty submission folder")
            todo = plan.resumed + plan.grade
            mode = "-"
            if todo:
                socket_path = (sandbox or self.start_sandbox())()
                mode = self._sandbox_mode(socket_path, err)
                # The workers forked below must use this fork server, not start their own.
                os.environ[SOCKET_ENV] = socket_path
                self.config.Sandbox.server_socket = socket_path
            tune_connections()
            with parallel_mode(self.coursedir.db_url):
                outcomes = self._run(assignment, todo, journal, err)
            self._summary(assignment, plan, outcomes, mode, log_path, out)
            return 1 if any(o.status == "failed" for o in outcomes) else 0
        finally:
            journal.close()
            stop_logging()

    def _log_to(self, path: Path) -> Callable[[], None]:
        """nbgrader's per-notebook INFO goes to the run's log file, not the terminal; so do
        library warnings (SQLAlchemy's about nbgrader's sessions). Returns the undo."""
        handler = logging.FileHandler(path)
        handler.setFormatter(logging.Formatter("%(asctime)s %(process)d %(levelname)s %(message)s"))
        for old in list(self.log.handlers):
            self.log.removeHandler(old)
        self.log.addHandler(handler)
        self.log.setLevel(logging.INFO)
        self.log.propagate = False
        logging.captureWarnings(True)
        warnings_log = logging.getLogger("py.warnings")
        warnings_log.addHandler(handler)
        propagate, warnings_log.propagate = warnings_log.propagate, False

        def undo() -> None:
            logging.captureWarnings(False)
            warnings_log.removeHandler(handler)
            warnings_log.propagate = propagate
            self.log.removeHandler(handler)
            handler.close()

        return undo

    def _sandbox_mode(self, socket_path: str, err: TextIO) -> str:
        probe = kernels.KernelLease(socket_path)
        try:
            opened = probe.open(Sandbox(parent=self).limits(), [], {})
        finally:
            probe.close()
        if opened["mode"] != "full":
            print("WARNING: " + WEAK_MODE_WARNING.format(user=opened["user"]), file=err)
            return f"WEAK (student code runs as {opened['user']})"
        return "full (pool accounts smartlab-sb*, no network, course files hidden)"

    def _run(
        self, assignment: str, todo: list[str], journal: Journal, err: TextIO
    ) -> list[Outcome]:
        outcomes: list[Outcome] = []
        if not todo:
            return outcomes
        grader = SubmissionGrader(self.coursedir, parent=self)

        def work(student: str) -> dict[str, Any]:
            return grader.grade(assignment, student).as_dict()

        progress = Progress(len(todo), label=f"grading {assignment}", stream=err)
        progress.start()

        def started(student: str) -> None:
            journal.record(student, "started")

        def finished(student: str, result: dict[str, Any]) -> None:
            known = {k: result[k] for k in Outcome.__dataclass_fields__ if k in result}
            outcome = Outcome(**{"student": student, **known})
            outcomes.append(outcome)
            journal.record(
                student,
                outcome.status,
                message=outcome.message,
                seconds=outcome.seconds,
                stops=outcome.stops,
            )
            if outcome.details:
                self.log.error("%s: %s", student, outcome.details)
            progress.advance(failed=outcome.status == "failed")

        pool = WorkerPool(min(self.workers, len(todo)), work, init=speedups.install)
        try:
            pool.run(todo, finished, on_start=started)
        finally:
            progress.close()
        return outcomes

    def _summary(
        self,
        assignment: str,
        plan: Plan,
        outcomes: list[Outcome],
        mode: str,
        log_path: Path,
        out: TextIO,
    ) -> None:
        graded = [o for o in outcomes if o.status == "graded"]
        failed = [o for o in outcomes if o.status == "failed"]
        stopped = [o for o in graded if o.stops]
        total = sum(o.seconds for o in outcomes)
        print(
            f"{assignment}: {len(graded)} graded, {len(failed)} failed, "
            f"{len(plan.already)} already graded, {len(plan.empty)} skipped"
            + (f" ({len(plan.resumed)} resumed from an interrupted run)" if plan.resumed else ""),
            file=out,
        )
        if outcomes:
            print(
                f"sandbox: {mode}; {self.workers} workers; {clock(total)} of grading time", file=out
            )
        if stopped:
            print("stopped by a limit (graded as far as they got):", file=out)
            for o in stopped:
                for stop in o.stops:
                    print(
                        f"  {o.student}: {stop['notebook']}.ipynb cell {stop['cell']}: "
                        f"{stop['reason']}",
                        file=out,
                    )
        if failed:
            print("failed (not graded; details in the log):", file=out)
            for o in failed:
                print(f"  {o.student}: {o.message}", file=out)
        if plan.empty:
            print("skipped:", file=out)
            for student in plan.empty:
                print(f"  {student}: empty submission folder (no notebooks)", file=out)
        notes = [(o.student, w) for o in outcomes for w in o.warnings]
        if notes:
            print("notes from nbgrader:", file=out)
            for student, warning in notes:
                print(f"  {student}: {warning}", file=out)
        print(f"log: {log_path}", file=out)


def _glob(pattern: str) -> list[str]:
    import glob

    return [p for p in glob.glob(pattern) if os.path.isdir(p)]


# ------------------------------------------------------------------ course folders


def find_course_dir(course_id: str, explicit: str | None = None) -> Path:
    """The course folder: --course-dir, else the course's grader home on this hub
    (/home/grader-<course>/<course>, as `smartlab up` makes it), else ./courses/<course>."""
    if explicit:
        path = _absolute(Path(explicit).expanduser())
        if not path.is_dir():
            raise GradeError(f"{explicit}: no such course folder")
        return path
    candidates = []
    try:
        from site_config.paths import default_state_dir
        from site_config.runtime import Runtime
        from site_config.site import GRADER_PREFIX

        runtime = Runtime.from_env("", str(default_state_dir()))
        candidates.append(runtime.home(GRADER_PREFIX + course_id) / course_id)
    except Exception:  # no hub configured here: only the local folders below
        pass
    candidates.append(Path("courses") / course_id)
    for path in candidates:
        if (path / "nbgrader_config.py").exists() or (path / "gradebook.db").exists():
            return _absolute(path)
    tried = ", ".join(str(p) for p in candidates)
    raise GradeError(f"no course folder for {course_id!r} (tried {tried}); give --course-dir")


def drop_privileges(owner: pwd.struct_passwd) -> None:
    """Become the course folder's owner (the grader account): files the run writes belong to
    it, as if it had graded, and nothing but the fork server keeps root."""
    os.setgroups(os.getgrouplist(owner.pw_name, owner.pw_gid))
    os.setresgid(owner.pw_gid, owner.pw_gid, owner.pw_gid)
    os.setresuid(owner.pw_uid, owner.pw_uid, owner.pw_uid)
    os.environ["HOME"] = owner.pw_dir
    os.environ["USER"] = os.environ["LOGNAME"] = owner.pw_name


def _absolute(path: Path) -> Path:
    # As root a link is not resolved: course_owner looks at the folder itself, not following it.
    return Path(os.path.abspath(path)) if os.geteuid() == 0 else path.resolve()


def course_owner(root: Path) -> pwd.struct_passwd | None:
    """The account to grade as, when we are root and the course belongs to someone else. A
    link at the course folder, or a folder of root's that others may write (their
    nbgrader_config.py would run as root), is refused."""
    if os.geteuid() != 0:
        return None
    info = os.lstat(root)
    if stat.S_ISLNK(info.st_mode):
        raise GradeError(
            f"{root} is a symbolic link; as root give the course folder itself (--course-dir)"
        )
    if info.st_uid == 0:
        for path in (root, root / "nbgrader_config.py"):
            if _others_control(path):
                raise GradeError(
                    f"{path} belongs to root but other accounts may change it: refusing to load "
                    "it as root (give the course folder to its grader account)"
                )
        return None
    try:
        return pwd.getpwuid(info.st_uid)
    except KeyError:
        raise GradeError(f"{root} belongs to uid {info.st_uid}, which has no account") from None


def _others_control(path: Path) -> bool:
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return False
    return stat.S_ISLNK(info.st_mode) or info.st_uid != 0 or bool(info.st_mode & 0o022)


def grade(
    course_id: str,
    assignment: str,
    course_dir: str | None = None,
    workers: int | None = None,
    students: list[str] | None = None,
    force: bool = False,
    out: TextIO | None = None,
    err: TextIO | None = None,
    fork_server: kernels.PrivateForkServer | None = None,
) -> int:
    """`smartlab grade` as a function (the CLI and the tests call this). `fork_server`: one
    started early, not yet configured (this function stops it in any case)."""
    app = SmartGrade()
    app._fork_server = fork_server
    previous = os.getcwd()
    try:
        root = find_course_dir(course_id, course_dir)
        owner = course_owner(root)
        allow = (owner.pw_uid,) if owner else ()
        if os.geteuid() == 0:
            # Nothing of the course is read as root: the root fork server gets root's settings
            # (c.Sandbox defaults, $SMARTLAB_SANDBOX_SOCKET) before the course configuration is
            # loaded, then this process becomes the course's owner and reads it from its folder.
            app.start_sandbox(allow, fork_server, Sandbox())
            if owner is not None:
                drop_privileges(owner)
            os.chdir(root)
        app.setup(root, course_id)
        if workers is not None:
            if workers < 1:
                raise GradeError("--workers must be at least 1")
            app.workers = workers
        app.force = force or app.force
        sandbox = app.start_sandbox(allow, fork_server)
        return app.run_batch(assignment, students, out, err, sandbox)
    finally:
        app.stop_sandbox()
        os.chdir(previous)
        SmartGrade.clear_instance()
