"""The fork server: a warmed Python that forks one fresh, sandboxed kernel per notebook.

A cold `python -m ipykernel_launcher` spends about a second importing IPython, ipykernel, zmq,
tornado and numpy. This process imports all of that once (and whatever a trial kernel imported
on its way up, see `warm_up`), never runs student code itself, and forks a child per request:
the child confines itself (grader/sandbox.py) and starts an ipykernel in-process on the ZeroMQ
ipc sockets the client chose (grader/kernel_child.py). Nothing is shared between students:
each child is a fresh fork of a process that never ran anyone's code, and its random generators
are reseeded.

Protocol: a SOCK_SEQPACKET Unix socket, one JSON object per packet; one connection is one
kernel, and closing it kills that kernel.

    client: {"op": "open", "limits": {...}, "hide": [...], "env": {...}}
    server: {"ok": true, "slot": 3, "sock_dir": ".../sock", "mode": "full", "user": "smartlab-sb3"}
    client: {"op": "launch", "connection": {...}, "argv": [...], "ipykernel": true,
             "kernel_args": [...]}   + SCM_RIGHTS: the folder whose files the kernel gets
    server: {"ok": true, "pid": 1234}
    server: {"op": "ready", "ok": true}        (sockets bound; false: it died starting)
    client: {"op": "signal", "signum": 2}      (any time; SIGKILL also stops the account)
    server: {"op": "exit", "code": ..., "signal": ..., "reason": "cpu"|"wall"|null, ...}

Errors are {"ok": false, "error": "..."}. Slots (pool accounts) are locked with flock in
<run_dir>/slots, so several fork servers on one machine never share an account at once.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import fcntl
import gc
import json
import logging
import os
import secrets
import selectors
import shutil
import signal
import socket
import stat
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from grader import sandbox
from grader.kernel_child import (
    DEFAULT_PRELOAD,
    KERNEL_MODULES,
    preload,
    run_kernel,
    warm_tracebacks,
    warm_up,
)
from grader.sandbox import Account, Job, Limits

log = logging.getLogger("smartlab.grade.forkserver")

MAX_PACKET = 1 << 20


def default_run_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/run/smartlab-grade")
    base = os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/smartlab-grade-{os.geteuid()}"
    return Path(base) / "smartlab-grade" if "XDG_RUNTIME_DIR" in os.environ else Path(base)


def prepare_run_dir(run_dir: Path) -> None:
    """<run_dir> (traversable), slots/ (private), jobs/ (traversable, entries private)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    info = os.lstat(run_dir)
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
        raise OSError(f"{run_dir} is not a folder of this account; refusing to use it")
    os.chmod(run_dir, 0o711)
    (run_dir / "slots").mkdir(exist_ok=True)
    os.chmod(run_dir / "slots", 0o700)
    (run_dir / "jobs").mkdir(exist_ok=True)
    os.chmod(run_dir / "jobs", 0o711)


def take_slot(run_dir: Path, max_slots: int) -> tuple[int, int | None]:
    """A free pool slot and its flock-ed lock file (the fd: keep it open while the slot is in
    use); (-1, None) when all are busy. Shared by every fork server and controller runner."""
    for slot in range(max_slots):
        fd = os.open(run_dir / "slots" / f"{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        return slot, fd
    return -1, None


def pool_account(run_dir: Path, slot: int) -> Account:
    """The pool account of `slot`, made under a lock (two processes may need it at once)."""
    lock = os.open(run_dir / "slots" / "accounts.lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        return sandbox.ensure_account(slot)
    finally:
        os.close(lock)


# ------------------------------------------------------------------ the server


@dataclass
class Connection:
    sock: socket.socket
    uid: int
    gid: int
    pending_open: dict[str, Any] | None = None
    job: Job | None = None
    job_dir: Path | None = None
    slot_fd: int | None = None
    pid: int | None = None
    started: float = 0.0
    deadline: float | None = None
    reason: str | None = None
    log_path: Path | None = None
    ready_fd: int | None = None
    cpu_limit: int = 0
    closed: bool = False
    stats: dict[str, Any] = field(default_factory=dict)


class ForkServer:
    def __init__(
        self,
        socket_path: Path,
        run_dir: Path,
        max_slots: int = 64,
        allowed_gids: tuple[int, ...] = (),
        allowed_uids: tuple[int, ...] = (),
    ) -> None:
        self.socket_path = Path(socket_path)
        self.run_dir = Path(run_dir)
        self.max_slots = max_slots
        self.allowed_gids = set(allowed_gids)
        self.allowed_uids = set(allowed_uids)
        self.full = os.geteuid() == 0
        self.selector = selectors.DefaultSelector()
        self.by_pid: dict[int, Connection] = {}
        self.waiting: list[Connection] = []
        self.accounts: dict[int, Account] = {}
        self.stopping = False

    # ---- set-up

    def listen(self) -> socket.socket:
        prepare_run_dir(self.run_dir)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = os.umask(0o177 if not self.allowed_gids else 0o111)
        try:
            listener.bind(str(self.socket_path))
        finally:
            os.umask(old)
        if len(self.allowed_uids) == 1 and not self.allowed_gids:
            os.chown(self.socket_path, next(iter(self.allowed_uids)), -1)
        listener.listen(64)
        listener.setblocking(False)
        return listener

    def serve_forever(
        self, listener: socket.socket, ready_fd: int | None = None, lifeline_fd: int | None = None
    ) -> None:
        """Serve until SIGTERM/SIGINT, or until `lifeline_fd` (the read end of a pipe whose
        writer is the grader) reports EOF: the fork server never outlives its grader."""
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.selector.register(listener, selectors.EVENT_READ, "listen")
        self.selector.register(wake_r, selectors.EVENT_READ, "wake")
        if lifeline_fd is not None:
            self.selector.register(lifeline_fd, selectors.EVENT_READ, "lifeline")
        if ready_fd is not None:
            os.write(ready_fd, b"ready\n")
            os.close(ready_fd)
        while not self.stopping:
            for key, _ in self.selector.select(timeout=self._next_timeout()):
                if key.data == "listen":
                    self._accept(listener)
                elif key.data == "lifeline":
                    if not os.read(lifeline_fd, 4096):  # type: ignore[arg-type]
                        self.stopping = True
                elif key.data == "wake":
                    with contextlib.suppress(BlockingIOError):
                        wake_r.recv(4096)
                elif isinstance(key.data, tuple):
                    self._kernel_ready(key.data[1])
                else:
                    self._readable(key.data)
            self._reap()
            self._enforce_deadlines()
            self._serve_waiting()
        for conn in list(self.by_pid.values()):
            self._kill(conn, "stopped")
        deadline = time.monotonic() + 5
        while self.by_pid and time.monotonic() < deadline:
            self._reap()
            time.sleep(0.02)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def _next_timeout(self) -> float:
        timeout = 0.5 if self.waiting else 5.0
        deadlines = [c.deadline for c in self.by_pid.values() if c.deadline is not None]
        if deadlines:
            timeout = min(timeout, max(0.0, min(deadlines) - time.monotonic()))
        return timeout

    # ---- connections

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except BlockingIOError:
                return
            pid, uid, gid = struct.unpack(
                "3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
            )
            if not self._allowed(uid, gid):
                log.warning("refusing pid %d uid %d: not allowed to ask for kernels", pid, uid)
                sock.close()
                continue
            sock.setblocking(False)
            conn = Connection(sock, uid, gid)
            self.selector.register(sock, selectors.EVENT_READ, conn)

    def _allowed(self, uid: int, gid: int) -> bool:
        if uid in (0, os.geteuid()) or uid in self.allowed_uids:
            return True
        if not self.allowed_gids:
            return False
        import pwd

        try:
            groups = os.getgrouplist(pwd.getpwuid(uid).pw_name, gid)
        except KeyError:
            groups = [gid]
        return bool(self.allowed_gids.intersection(groups))

    def _send(self, conn: Connection, message: dict[str, Any]) -> None:
        if conn.closed:
            return
        try:
            conn.sock.send(json.dumps(message).encode())
        except OSError:
            self._close(conn)

    def _readable(self, conn: Connection) -> None:
        try:
            data, fds, _flags, _addr = socket.recv_fds(conn.sock, MAX_PACKET, 4)
        except BlockingIOError:
            return
        except OSError:
            data, fds = b"", []
        if not data:
            for fd in fds:
                os.close(fd)
            self._close(conn)
            return
        try:
            request = json.loads(data)
            op = request.get("op")
            if op == "open":
                self._open(conn, request)
            elif op == "launch":
                self._launch(conn, request, fds[0] if fds else None)
                fds = fds[1:]
            elif op == "signal":
                self._signal(conn, int(request["signum"]))
            else:
                self._send(conn, {"ok": False, "error": f"unknown op {op!r}"})
        except Exception as err:  # a bad request costs that client its kernel, nothing more
            log.exception("request failed")
            self._send(conn, {"ok": False, "error": f"{type(err).__name__}: {err}"})
        finally:
            for fd in fds:
                os.close(fd)

    def _close(self, conn: Connection) -> None:
        if conn.closed:
            return
        conn.closed = True
        with contextlib.suppress(KeyError, ValueError):
            self.selector.unregister(conn.sock)
        conn.sock.close()
        if conn in self.waiting:
            self.waiting.remove(conn)
        if conn.pid is not None:
            self._kill(conn, conn.reason)
        elif conn.job is not None:
            self._release(conn)

    # ---- open: a slot and a job folder

    def _open(self, conn: Connection, request: dict[str, Any]) -> None:
        if conn.job is not None or conn.pending_open is not None:
            raise ValueError("this connection already has a kernel")
        conn.pending_open = request
        self.waiting.append(conn)
        self._serve_waiting()

    def _serve_waiting(self) -> None:
        while self.waiting:
            conn = self.waiting[0]
            slot, fd = self._take_slot()
            if fd is None:
                return  # all busy: retried when a kernel ends, or within 0.5 s
            self.waiting.pop(0)
            try:
                self._prepare(conn, slot, fd)
            except Exception as err:
                log.exception("could not prepare a sandbox")
                os.close(fd)
                self._send(conn, {"ok": False, "error": f"{type(err).__name__}: {err}"})

    def _take_slot(self) -> tuple[int, int | None]:
        return take_slot(self.run_dir, self.max_slots)

    def _prepare(self, conn: Connection, slot: int, slot_fd: int) -> None:
        request = conn.pending_open or {}
        conn.pending_open = None
        limits = Limits(
            **{
                k: v
                for k, v in request.get("limits", {}).items()
                if k in Limits.__dataclass_fields__
            }
        )
        account = None
        if self.full:
            account = self.accounts.get(slot) or self._ensure_account(slot)
            self.accounts[slot] = account
            if sandbox.kill_account_processes(account.uid):  # leftovers of a crashed server
                raise OSError(f"cannot stop the processes of {account.name}")
        job_dir = self.run_dir / "jobs" / f"{slot}-{secrets.token_hex(6)}"
        job_dir.mkdir(mode=0o711)
        sock_dir = job_dir / "sock"
        sock_dir.mkdir(mode=0o770)
        if account is not None:
            # setgid: the sockets the kernel binds get the client's group, so a client that is
            # not root can connect (the kernel's umask leaves them group-writable).
            os.chown(sock_dir, account.uid, conn.gid)
            os.chmod(sock_dir, 0o2770)
        else:
            os.chmod(job_dir, 0o700)
        hide = [str(p) for p in request.get("hide", []) if isinstance(p, str) and p.startswith("/")]
        cgroup = job_dir.name
        if not (self.full and sandbox.notebook_cgroup(cgroup, limits).prepare()):
            cgroup = ""  # not root, or no cgroup controller: rlimits only (logged)
        conn.job = Job(
            slot=slot,
            full=self.full,
            account=account,
            sock_dir=str(sock_dir),
            client_uid=conn.uid,
            client_gid=conn.gid,
            limits=limits,
            hide=hide,
            env=dict(request.get("env", {})),
            cgroup=cgroup,
        )
        conn.job_dir, conn.slot_fd = job_dir, slot_fd
        self._send(
            conn,
            {
                "ok": True,
                "slot": slot,
                "sock_dir": str(sock_dir),
                "mode": "full" if self.full else "weak",
                "user": account.name if account else _username(os.geteuid()),
            },
        )

    def _ensure_account(self, slot: int) -> Account:
        return pool_account(self.run_dir, slot)

    # ---- launch

    def _launch(self, conn: Connection, request: dict[str, Any], source_fd: int | None) -> None:
        job = conn.job
        if job is None or conn.job_dir is None:
            raise ValueError("open first")
        if conn.pid is not None:
            raise ValueError("this connection already has a kernel")
        conn.log_path = conn.job_dir / "kernel.log"
        log_fd = os.open(conn.log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        ready_r, ready_w = os.pipe()
        try:
            pid = os.fork()
            if pid == 0:  # pragma: no cover - child
                os.close(ready_r)
                run_kernel(job, request, source_fd, log_fd, ready_w)
        finally:
            os.close(log_fd)
            os.close(ready_w)
        conn.pid, conn.started = pid, time.monotonic()
        if job.limits.wall_seconds > 0:
            conn.deadline = conn.started + job.limits.wall_seconds
        self.by_pid[pid] = conn
        self._send(conn, {"ok": True, "pid": pid})
        # The kernel's sockets are bound when it writes to (or closes) this pipe.
        conn.ready_fd = ready_r
        self.selector.register(ready_r, selectors.EVENT_READ, ("ready", conn))

    def _kernel_ready(self, conn: Connection) -> None:
        if conn.ready_fd is None:
            return
        self.selector.unregister(conn.ready_fd)
        ready = os.read(conn.ready_fd, 1) == b"r"
        os.close(conn.ready_fd)
        conn.ready_fd = None
        self._send(conn, {"op": "ready", "ok": ready})

    def _signal(self, conn: Connection, signum: int) -> None:
        if conn.pid is None:
            return
        if signum == signal.SIGKILL:
            conn.reason = conn.reason or "killed"
            self._kill(conn, conn.reason)
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(conn.pid, signum)

    def _kill(self, conn: Connection, reason: str | None) -> None:
        conn.reason = conn.reason or reason
        if conn.pid is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(conn.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(conn.pid, signal.SIGKILL)

    def _enforce_deadlines(self) -> None:
        now = time.monotonic()
        for conn in list(self.by_pid.values()):
            if conn.deadline is not None and now >= conn.deadline and conn.reason is None:
                log.info("kernel %d ran out of wall time", conn.pid)
                self._kill(conn, "wall")

    # ---- exits

    def _reap(self) -> None:
        while self.by_pid:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            conn = self.by_pid.pop(pid, None)
            if conn is None:
                continue
            cpu = usage.ru_utime + usage.ru_stime
            job = conn.job
            reason = conn.reason
            sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
            # SIGXCPU: the soft CPU limit; SIGKILL with the CPU used up: the hard one.
            if (
                reason is None
                and job is not None
                and job.limits.cpu_seconds
                and (
                    sig == signal.SIGXCPU
                    or (sig == signal.SIGKILL and cpu >= job.limits.cpu_seconds - 0.05)
                )
            ):
                reason = "cpu"
            message = {
                "op": "exit",
                "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
                "signal": sig,
                "reason": reason,
                "cpu_seconds": round(cpu, 3),
                "max_rss_kib": usage.ru_maxrss,
                "wall_seconds": round(time.monotonic() - conn.started, 3),
                "log_tail": _tail(conn.log_path),
            }
            if conn.ready_fd is not None:
                self._kernel_ready(conn)
            self._release(conn)
            self._send(conn, message)

    def _release(self, conn: Connection) -> None:
        """After a kernel: stop everything its account still runs, delete its files, free
        the slot."""
        job = conn.job
        if job is not None and job.cgroup:
            # Everything the notebook started, whatever account or session it ended up in.
            left = sandbox.notebook_cgroup(job.cgroup, job.limits).kill_all()
            if left:
                log.error("%d processes of notebook cgroup %s survived", left, job.cgroup)
        if job is not None and job.account is not None:
            left = sandbox.kill_account_processes(job.account.uid)
            if left:
                log.error(
                    "%d processes of %s survived; slot %d stays locked",
                    left,
                    job.account.name,
                    job.slot,
                )
                conn.slot_fd = None  # never reuse an account that still runs something
        if conn.job_dir is not None:
            shutil.rmtree(conn.job_dir, ignore_errors=True)
        if conn.slot_fd is not None:
            os.close(conn.slot_fd)
        conn.job, conn.job_dir, conn.slot_fd, conn.pid = None, None, None, None


def _tail(path: Path | None, limit: int = 2000) -> str:
    if path is None:
        return ""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - limit))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _username(uid: int) -> str:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


# ------------------------------------------------------------------ entry point


def warm(skip_trial_kernel: bool) -> None:
    """Import the kernel machinery, and what a trial kernel imports on its way up. The
    machinery first: otherwise the trial kernel imports it, and this process again after (that
    was half of the fork server's start-up)."""
    preload(KERNEL_MODULES)
    if skip_trial_kernel:
        return
    with tempfile.TemporaryDirectory(prefix="smartlab-warmup-") as folder:
        try:
            warm_up(Path(folder))
        except OSError as err:
            if err.errno != errno.ENOSPC:
                raise
    warm_tracebacks()


def read_settings(args: argparse.Namespace) -> bool:
    """The rest of the options, from the grader that started us; False if it sent none."""
    with os.fdopen(args.settings_fd, "rb") as source:
        line = source.readline()
    if not line.strip():
        return False
    settings = json.loads(line)
    args.socket = Path(settings["socket"])
    args.run_dir = Path(settings["run_dir"])
    args.max_slots = int(settings["max_slots"])
    args.preload = ",".join(settings["preload"])
    args.allow_uid = [int(uid) for uid in settings["allow_uid"]]
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grader.zygote")
    parser.add_argument("--socket", type=Path)
    parser.add_argument("--run-dir", type=Path, default=None)
    parser.add_argument("--max-slots", type=int, default=64)
    parser.add_argument("--preload", default=",".join(DEFAULT_PRELOAD))
    parser.add_argument("--allow-gid", type=int, action="append", default=[])
    parser.add_argument("--allow-uid", type=int, action="append", default=[])
    parser.add_argument("--ready-fd", type=int, default=None)
    parser.add_argument("--lifeline-fd", type=int, default=None)
    parser.add_argument("--no-warmup", action="store_true")
    parser.add_argument(
        "--settings-fd",
        type=int,
        default=None,
        help="read --socket, --run-dir, --max-slots, --preload and --allow-uid "
        "as one JSON line from this fd, after importing the kernel machinery",
    )
    args = parser.parse_args(argv)
    if args.settings_fd is None and args.socket is None:
        parser.error("--socket is required")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s forkserver %(message)s")
    # One thread per BLAS: set before numpy loads (fork + thread pools do not mix).
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ["PYDEVD_DISABLE_FILE_VALIDATION"] = "1"  # debugpy's frozen-modules note
    if args.settings_fd is not None:
        # The slow part first: a grader starts us before it reads its configuration.
        warm(args.no_warmup)
        if not read_settings(args):
            return 0  # the grader ended (or needed no private fork server) before sending them
    run_dir = args.run_dir or default_run_dir()
    server = ForkServer(
        args.socket, run_dir, args.max_slots, tuple(args.allow_gid), tuple(args.allow_uid)
    )
    listener = server.listen()
    preload([m for m in args.preload.split(",") if m])
    if args.settings_fd is None:
        warm(args.no_warmup)
    # Every kernel is a fork of this process. Kept in the collector, the preloaded modules'
    # objects would be walked by each kernel's first full collection, which also writes to
    # (so copies) every page they sit on: frozen, they stay shared and unvisited.
    gc.freeze()
    server.serve_forever(listener, args.ready_fd, args.lifeline_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
