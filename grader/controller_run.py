"""Run a student's controller on a kit inside the grading sandbox; say how it ended.

As root, `run_controller` takes a pool slot (the fork servers' own slots and accounts,
grader/zygote.py), forks a child and confines it with grader/sandbox.py: private namespaces with
no network at all, the filesystem read-only, the pool account `smartlab-sb<slot>`, rlimits (CPU,
address space, processes, file size), its own cgroup where the machine has one (memory of the
whole run), no new privileges, death with this process. The broker's Unix socket is the one way
out: its folder is kept in sight, and the child logs in with the job's own credential, so the
broker decides what it may do (grader/controller_child.py is the child's program).

This process enforces the wall time (it kills the child's process group, its cgroup and every
process of its account) and reads the child's report: CPU, memory and wall limits are decided
here from how the child ended; what happened inside the run (a raise, a bad entry, the rate)
from the child's last report line.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import secrets
import shutil
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from grader import sandbox, zygote
from grader.kernel_child import close_other_fds
from hardware_kits.descriptor import DEFAULT_COMMANDS_PER_SECOND

OUTCOMES = (
    "completed",
    "crashed",
    "overran",
    "flooded",
    "memory",
    "invalid",
    "kit-unsafe",
    "cancelled",
)
MAX_DETAIL = 300
MAX_REPORT_BYTES = 64 * 1024
CONFINE_FAILED = 121  # the child's exit code when it could not be confined (never ran code)


class ControllerRunError(RuntimeError):
    """The sandbox could not be set up; no controller code ran. str() says why in one line."""


@dataclass(frozen=True)
class MqttAccess:
    socket_path: str | None
    host: str
    port: int
    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class ControllerLimits:
    cpu_seconds: float = 30.0
    memory_mb: int = 512
    wall_seconds: float = 60.0  # from the fork to the end: the duration plus start-up
    # None: the kit model's declared `max_commands_per_second` (hardware_kits/descriptor.py).
    max_commands_per_second: float | None = None
    call_seconds: float = 1.0  # one call of the controller
    output_bytes: int = 1 << 20  # what the controller may print (kept in the run's log)


@dataclass(frozen=True)
class ControllerRun:
    source: str
    entry: str
    kit_id: str
    model: str
    duration_s: float
    inputs: dict[str, Any]
    mqtt: MqttAccess
    limits: ControllerLimits = ControllerLimits()


@dataclass(frozen=True)
class ControllerOutcome:
    outcome: str
    detail: str
    commands_sent: int
    commands_refused: int


def run_controller(
    run: ControllerRun,
    descriptor: dict[str, Any] | None = None,
    run_dir: Path | None = None,
    max_slots: int = 64,
) -> ControllerOutcome:
    """Run `run` to its end in the sandbox. `descriptor`: the kit model's (default: loaded by
    name). Raises ControllerRunError when the sandbox cannot be made (not root, no socket)."""
    if os.geteuid() != 0:
        raise ControllerRunError("running a controller needs root (it confines it in a sandbox)")
    if not run.mqtt.socket_path:
        raise ControllerRunError("the broker has no Unix socket; a sandboxed controller has no way")
    if descriptor is None:
        from hardware_kits.descriptor import load_models

        descriptor = load_models()[run.model]
    run_dir = Path(run_dir or zygote.default_run_dir())
    zygote.prepare_run_dir(run_dir)
    slot, slot_fd = zygote.take_slot(run_dir, max_slots)
    if slot_fd is None:
        raise ControllerRunError(f"all {max_slots} sandbox slots are busy")
    account = zygote.pool_account(run_dir, slot)
    if sandbox.kill_account_processes(account.uid):
        os.close(slot_fd)
        raise ControllerRunError(f"cannot stop the processes left by {account.name}")
    job_dir = run_dir / "jobs" / f"ctl-{slot}-{secrets.token_hex(6)}"
    job_dir.mkdir(mode=0o711)
    sock_dir = job_dir / "sock"
    sock_dir.mkdir(mode=0o700)
    os.chown(sock_dir, account.uid, account.gid)
    limits = sandbox_limits(run.limits)
    cgroup = job_dir.name if sandbox.notebook_cgroup(job_dir.name, limits).prepare() else ""
    job = sandbox.Job(
        slot=slot,
        full=True,
        account=account,
        sock_dir=str(sock_dir),
        client_uid=0,
        client_gid=0,
        limits=limits,
        cgroup=cgroup,
        visible=[str(Path(run.mqtt.socket_path).parent)],
    )
    try:
        return _run_child(run, descriptor, job, job_dir / "controller.log")
    finally:
        leftovers = _stop_everything(job)
        shutil.rmtree(job_dir, ignore_errors=True)
        if not leftovers:  # never reuse an account that still runs something
            os.close(slot_fd)


def sandbox_limits(limits: ControllerLimits) -> sandbox.Limits:
    return sandbox.Limits(
        cpu_seconds=max(1, math.ceil(limits.cpu_seconds)),
        wall_seconds=limits.wall_seconds,
        memory_bytes=limits.memory_mb << 20,
        processes=32,
        file_bytes=limits.output_bytes + (64 << 10),
        tmp_bytes=16 << 20,
        open_files=64,
        output_bytes=limits.output_bytes,
    )


def child_spec(run: ControllerRun, descriptor: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": run.source,
        "entry": run.entry,
        "kit_id": run.kit_id,
        "duration_s": run.duration_s,
        "inputs": run.inputs,
        "descriptor": {"actuators": descriptor["actuators"]},
        "mqtt": {
            "socket_path": run.mqtt.socket_path,
            "username": run.mqtt.username,
            "password": run.mqtt.password,
        },
        "limits": {**asdict(run.limits), "max_commands_per_second": command_rate(run, descriptor)},
    }


def command_rate(run: ControllerRun, descriptor: dict[str, Any]) -> float:
    """The run's own rate if set, else the kit model's declared one."""
    if run.limits.max_commands_per_second is not None:
        return float(run.limits.max_commands_per_second)
    return float(descriptor.get("max_commands_per_second", DEFAULT_COMMANDS_PER_SECOND))


def _run_child(
    run: ControllerRun, descriptor: dict[str, Any], job: sandbox.Job, log_path: Path
) -> ControllerOutcome:
    spec_r, spec_w = os.pipe()
    report_r, report_w = os.pipe()
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    started = time.monotonic()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        _become_child(job, spec_r, report_w, log_fd)
    for fd in (spec_r, report_w, log_fd):
        os.close(fd)
    # In a thread: a spec larger than the pipe waits for the child, which the wall time bounds.
    payload = json.dumps(child_spec(run, descriptor)).encode()
    writer = threading.Thread(target=_write_spec, args=(spec_w, payload), daemon=True)
    writer.start()
    os.set_blocking(report_r, False)
    lines, status, usage, killed = _wait(pid, report_r, started + run.limits.wall_seconds)
    os.close(report_r)
    writer.join(1)
    return decide(run.limits, lines, status, usage, killed, time.monotonic() - started, log_path)


def _write_spec(fd: int, payload: bytes) -> None:
    with contextlib.suppress(OSError), os.fdopen(fd, "wb") as spec:
        spec.write(payload)


def _become_child(job: sandbox.Job, spec_r: int, report_w: int, log_fd: int) -> None:
    """Confine, then exec the child's program: a fresh interpreter keeps nothing of this
    process's memory (a runner's tokens)."""
    code = CONFINE_FAILED
    try:
        os.dup2(spec_r, 0)
        os.dup2(log_fd, 1)
        os.dup2(log_fd, 2)
        os.dup2(report_w, 3)
        close_other_fds(keep={0, 1, 2, 3})
        for fd in (0, 1, 2, 3):
            os.set_inheritable(fd, True)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # oversized writes fail with EFBIG
        signal.set_wakeup_fd(-1)
        sandbox.confine(job, None)
        argv = [sys.executable, "-I", "-m", "grader.controller_child"]
        os.execve(sys.executable, argv, dict(os.environ))
    except BaseException as err:
        with contextlib.suppress(Exception):
            os.write(2, f"controller sandbox failed: {type(err).__name__}: {err}\n".encode())
    finally:
        os._exit(code)


def _wait(pid: int, report_r: int, deadline: float) -> tuple[list[bytes], int, Any, bool]:
    """Collect the report until the child exits; kill its process group at `deadline`."""
    data, killed = b"", False
    while True:
        with contextlib.suppress(BlockingIOError):
            while chunk := os.read(report_r, 65536):
                data = (data + chunk)[-MAX_REPORT_BYTES:]
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            with contextlib.suppress(BlockingIOError):
                while chunk := os.read(report_r, 65536):
                    data = (data + chunk)[-MAX_REPORT_BYTES:]
            return data.splitlines(), status, usage, killed
        if not killed and time.monotonic() >= deadline:
            killed = True
            _kill_group(pid)
        time.sleep(0.05)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


def _stop_everything(job: sandbox.Job) -> int:
    """Whatever the controller left (daemonised processes, other sessions): its cgroup, then
    every process of its account. Returns how many survived."""
    left = 0
    if job.cgroup:
        left += sandbox.notebook_cgroup(job.cgroup, job.limits).kill_all()
    if job.account is not None:
        left += sandbox.kill_account_processes(job.account.uid)
    return left


def _last_report(lines: list[bytes]) -> tuple[dict[str, Any] | None, int, int]:
    """The final report (None if the child never wrote one) and the latest counts."""
    final, sent, refused = None, 0, 0
    for line in lines:
        try:
            message = json.loads(line)
        except ValueError:
            continue
        if not isinstance(message, dict):
            continue
        sent = _count(message.get("sent"), sent)
        refused = _count(message.get("refused"), refused)
        if message.get("outcome") in OUTCOMES and isinstance(message.get("detail"), str):
            final = message
    return final, sent, refused


def _count(value: Any, default: int) -> int:
    return (
        value
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0
        else (default)
    )


def decide(
    limits: ControllerLimits,
    lines: list[bytes],
    status: int,
    usage: Any,
    killed: bool,
    wall: float,
    log_path: Path,
) -> ControllerOutcome:
    """The outcome: the limits this process saw broken first, then the child's own report."""
    final, sent, refused = _last_report(lines)
    cpu = usage.ru_utime + usage.ru_stime
    sig = os.WTERMSIG(status) if os.WIFSIGNALED(status) else None
    code = os.WEXITSTATUS(status) if os.WIFEXITED(status) else None

    def outcome(name: str, detail: str) -> ControllerOutcome:
        line = " ".join(detail.split())[:MAX_DETAIL]
        return ControllerOutcome(name, line, sent, refused)

    if code == CONFINE_FAILED and final is None:
        raise ControllerRunError(f"the sandbox could not start: {_log_tail(log_path)}")
    if killed:
        return outcome(
            "overran", f"the run went past its wall time limit of {limits.wall_seconds:g} s"
        )
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu >= limits.cpu_seconds - 0.05):
        return outcome("overran", f"the controller used more than {limits.cpu_seconds:g} s of CPU")
    if final is not None and code == 0:
        return outcome(final["outcome"], final["detail"])
    if sig == signal.SIGKILL:  # not ours and not the CPU limit: the memory limit's OOM kill
        return outcome("memory", f"the controller used more than {limits.memory_mb} MB of memory")
    if sig is not None:
        name = signal.Signals(sig).name if sig in signal.Signals._value2member_map_ else sig
        return outcome("crashed", f"the controller's process was ended by signal {name}")
    return outcome("crashed", f"the controller's process exited with status {code}")


def _log_tail(path: Path) -> str:
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1][:200] if lines else "no log"
