"""Kernels from the fork server, as jupyter_client sees them.

`SandboxKernelManager` is an `AsyncKernelManager` whose provisioner asks the fork server
(grader/zygote.py) for the kernel instead of starting `python -m ipykernel_launcher`: the kernel
is a fork of a warmed interpreter, confined by grader/sandbox.py, listening on ZeroMQ ipc sockets
in a folder the fork server made for it. Everything above (nbclient, nbgrader's Execute) is
unchanged, so outputs, timeouts and interrupts behave as with a cold kernel.

Its settings are `Sandbox` (grader/settings.py). Without `Sandbox.server_socket` the first
kernel of a process starts a private fork server (as root: the full sandbox; otherwise the weak
mode, with a warning).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from jupyter_client.asynchronous.client import AsyncKernelClient
from jupyter_client.manager import AsyncKernelManager
from jupyter_client.provisioning.local_provisioner import LocalProvisioner
from traitlets import Bool, Instance, List, Unicode, default

from grader import sandbox, zygote
from grader.sandbox import Limits
from grader.settings import Sandbox

log = logging.getLogger("smartlab.grade")
# The graded submission's owner, for the kernel (courses recompute per-student variants).
STUDENT_VARIABLE = "SMARTLAB_STUDENT"


class SandboxError(RuntimeError):
    """The sandbox could not give a kernel; the message says why."""


# ------------------------------------------------------------------ private fork server


class PrivateForkServer:
    """A fork server child of this process. It stops when this process closes its end of the
    lifeline pipe (exit, crash or `stop()`), which works even after this process has given up
    root and may no longer signal it.

    Without `settings` it starts importing the kernel machinery at once and waits for
    `configure()`: `smartlab grade` starts it before loading nbgrader and its configuration,
    so the two start-ups overlap."""

    def __init__(self, settings: Sandbox | None = None, allow_uids: tuple[int, ...] = ()) -> None:
        ready_r, ready_w = os.pipe()
        life_r, self._lifeline = os.pipe()
        settings_r, self._settings = os.pipe()
        for fd in (self._lifeline, self._settings):
            os.set_inheritable(fd, False)
        command = [
            sys.executable,
            "-P",  # not the current folder (perhaps a course folder) on root's sys.path
            "-m",
            "grader.zygote",
            "--settings-fd",
            str(settings_r),
            "--ready-fd",
            str(ready_w),
            "--lifeline-fd",
            str(life_r),
        ]
        self.process = subprocess.Popen(
            command,
            pass_fds=(ready_w, life_r, settings_r),
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        for fd in (ready_w, life_r, settings_r):
            os.close(fd)
        self._ready = os.fdopen(ready_r, "rb")
        self.ready = False
        self.socket_path: Path | None = None
        atexit.register(self.stop)
        if settings is not None:
            self.configure(settings, allow_uids)

    def configure(self, settings: Sandbox, allow_uids: tuple[int, ...] = ()) -> None:
        run_dir = Path(settings.run_dir)
        zygote.prepare_run_dir(run_dir)
        self.socket_path = run_dir / f"forkserver-{os.getpid()}.sock"
        message = {
            "socket": str(self.socket_path),
            "run_dir": str(run_dir),
            "max_slots": settings.max_slots,
            "preload": list(settings.preload),
            "allow_uid": list(allow_uids),
        }
        with contextlib.suppress(BrokenPipeError):  # it died starting: wait_ready says so
            os.write(self._settings, json.dumps(message).encode() + b"\n")
        self._close_settings()

    def wait_ready(self) -> str:
        """Block until it listens (it imports and warms up first); return its socket."""
        if self.socket_path is None:
            raise SandboxError("the fork server was never configured")
        if not self.ready:
            line = self._ready.readline()
            self._ready.close()
            if line.strip() != b"ready":
                self.stop()
                raise SandboxError(f"the fork server did not start (exit {self.process.poll()})")
            self.ready = True
        return str(self.socket_path)

    def _close_settings(self) -> None:
        if self._settings >= 0:
            os.close(self._settings)
            self._settings = -1

    def stop(self) -> None:
        self._close_settings()  # not configured yet: it reads end-of-file and exits
        if self._lifeline >= 0:
            os.close(self._lifeline)
            self._lifeline = -1
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(PermissionError):
                self.process.kill()


_private: PrivateForkServer | None = None
_private_lock = threading.Lock()


def fork_server_socket(settings: Sandbox) -> str:
    """The fork server to use: the configured one, or this process's private one."""
    global _private
    if settings.server_socket:
        return settings.server_socket
    with _private_lock:
        if _private is None or _private.process.poll() is not None:
            _private = PrivateForkServer(settings)
            if os.geteuid() != 0:
                log.warning(sandbox.WEAK_MODE_WARNING.format(user=zygote._username(os.geteuid())))
        return _private.wait_ready()


# ------------------------------------------------------------------ one kernel's connection


class KernelLease:
    """One connection to the fork server = one kernel. Blocking calls, short messages."""

    def __init__(self, socket_path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self.sock.connect(socket_path)
        except OSError as err:
            self.sock.close()
            raise SandboxError(
                f"cannot reach the sandbox fork server at {socket_path}: {err.strerror or err}"
            ) from None
        self.exit_info: dict[str, Any] | None = None
        self.ready: bool | None = None
        self.pid: int | None = None
        self._lock = threading.Lock()

    def _request(self, message: dict[str, Any], fds: list[int] | None = None) -> dict[str, Any]:
        with self._lock:
            data = json.dumps(message).encode()
            if fds:
                socket.send_fds(self.sock, [data], fds)
            else:
                self.sock.send(data)
            while True:
                reply = self._receive(block=True)
                if reply.get("op") == "exit":
                    self.exit_info = reply
                    continue
                if reply.get("op") == "ready":
                    self.ready = reply.get("ok", False)
                    continue
                if not reply.get("ok"):
                    raise SandboxError(f"sandbox: {reply.get('error', 'refused')}")
                return reply

    def _receive(self, block: bool) -> dict[str, Any]:
        self.sock.setblocking(block)
        try:
            data = self.sock.recv(1 << 20)
        finally:
            self.sock.setblocking(True)
        if not data:
            raise SandboxError("the sandbox fork server went away")
        return json.loads(data)

    def open(self, limits: Limits, hide: list[str], env: dict[str, str]) -> dict[str, Any]:
        return self._request({"op": "open", "limits": limits.as_dict(), "hide": hide, "env": env})

    def launch(self, request: dict[str, Any], source_dir: str | None) -> int:
        fds = []
        if source_dir:
            fds.append(os.open(source_dir, os.O_RDONLY | os.O_DIRECTORY))
        try:
            reply = self._request({"op": "launch", **request}, fds)
        finally:
            for fd in fds:
                os.close(fd)
        self.pid = int(reply["pid"])
        if request.get("ipykernel"):
            self.wait_ready()
        return self.pid

    def wait_ready(self) -> None:
        """Block until the kernel has bound its sockets (or died): connecting before that
        costs a ZeroMQ reconnect interval."""
        with self._lock:
            while self.ready is None and self.exit_info is None:
                message = self._receive(block=True)
                if message.get("op") == "ready":
                    self.ready = bool(message.get("ok"))
                elif message.get("op") == "exit":
                    self.exit_info = message

    def poll(self) -> dict[str, Any] | None:
        if self.exit_info is None:
            with self._lock:
                try:
                    message = self._receive(block=False)
                except (BlockingIOError, InterruptedError):
                    return None
                except (SandboxError, OSError):
                    message = {"op": "exit", "code": None, "signal": None, "reason": "lost"}
                if message.get("op") == "exit":
                    self.exit_info = message
                elif message.get("op") == "ready":
                    self.ready = bool(message.get("ok"))
        return self.exit_info

    def wait_exit(self, timeout: float) -> dict[str, Any] | None:
        deadline = time.monotonic() + timeout
        while self.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        return self.exit_info

    def signal(self, signum: int) -> None:
        with contextlib.suppress(OSError), self._lock:
            self.sock.send(json.dumps({"op": "signal", "signum": signum}).encode())

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class _RemoteProcess:
    """What LocalProvisioner expects of a Popen, for a kernel the fork server started."""

    stdin = stdout = stderr = None

    def __init__(self, lease: KernelLease) -> None:
        self.lease = lease
        self.pid = lease.pid

    def poll(self) -> int | None:
        info = self.lease.poll()
        if info is None:
            return None
        return info.get("code") if info.get("code") is not None else -(info.get("signal") or 9)

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired("kernel", timeout or 0)
            time.sleep(0.02)
        return code

    def send_signal(self, signum: int) -> None:
        if self.lease.exit_info is None:
            self.lease.signal(signum)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)


class SandboxProvisioner(LocalProvisioner):
    """Launches the kernel through the fork server (see module doc)."""

    lease = Instance(KernelLease, allow_none=True)

    async def pre_launch(self, **kwargs: Any) -> dict[str, Any]:
        km = self.parent
        settings: Sandbox = km.sandbox
        self.lease = KernelLease(fork_server_socket(settings))
        env = {k: v for k, v in (kwargs.get("env") or {}).items() if k.startswith("NBGRADER_")}
        if os.environ.get("NBGRADER_EXECUTION"):
            env.setdefault("NBGRADER_EXECUTION", os.environ["NBGRADER_EXECUTION"])
        if km.student:  # a per-student variant (coursework/variants.py) is recomputed for them
            env[STUDENT_VARIABLE] = km.student
        opened = self.lease.open(settings.limits(), km.hide_paths, env)
        km.sandbox_mode, km.sandbox_user = opened["mode"], opened["user"]
        km.transport = "ipc"
        km.ip = os.path.join(opened["sock_dir"], "kernel")
        # The grader's own copy of the connection info; the kernel gets its copy from the
        # fork server. A private temp file: the grader's home may be read-only.
        km.connection_file = os.path.join(_private_tmp(), f"kernel-{self.kernel_id}.json")
        return await super().pre_launch(**kwargs)

    async def launch_kernel(self, cmd: list[str], **kwargs: Any) -> dict[str, Any]:
        assert self.lease is not None
        in_process, kernel_args = _ipykernel_arguments(cmd)
        request = {
            "connection": _jsonable(self.connection_info),
            "argv": cmd,
            "ipykernel": in_process,
            "kernel_args": kernel_args,
        }
        cwd = kwargs.get("cwd")
        self.parent.guarded = in_process  # grader/guard.py runs in in-process kernels only
        self.lease.launch(request, os.fspath(cwd) if cwd else None)
        if self.lease.ready is False:  # it died on its way up: say why, not "no reply"
            info = self.lease.wait_exit(5) or {}
            tail = (info.get("log_tail") or "").strip().splitlines()
            raise SandboxError(
                "the sandboxed kernel did not start: "
                + (tail[-1] if tail else f"exit {info.get('code')}")
            )
        self.process = _RemoteProcess(self.lease)
        self.pid, self.pgid = self.lease.pid, None  # signals go through the fork server
        self.cwd = cwd
        return self.connection_info

    @property
    def exit_info(self) -> dict[str, Any] | None:
        return self.lease.exit_info if self.lease else None

    def release(self) -> None:
        """Let the kernel go: the fork server kills it when the connection closes."""
        if self.lease is not None:
            self.lease.poll()
            self.lease.close()
        self.process = None

    async def cleanup(self, restart: bool = False) -> None:
        await super().cleanup(restart)
        if not restart:
            self.release()


def _private_tmp() -> str:
    path = os.path.join(tempfile.gettempdir(), f"smartlab-grade-client-{os.geteuid()}")
    os.makedirs(path, mode=0o700, exist_ok=True)
    return path


def _ipykernel_arguments(cmd: list[str]) -> tuple[bool, list[str]]:
    """Whether `cmd` is this interpreter's ipykernel (then it runs in the fork), and the
    arguments it gets besides the connection file."""
    if "-m" not in cmd or ("ipykernel_launcher" not in cmd and "ipykernel" not in cmd):
        return False, []
    try:
        same = (
            os.path.realpath(cmd[0]) == os.path.realpath(sys.executable)
            or os.path.basename(cmd[0]) == "python"
        )
    except OSError:
        same = False
    if not same:
        return False, []
    args = cmd[cmd.index("-m") + 2 :]
    out, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "-f":
            skip = True
            continue
        if arg.startswith("-f="):
            continue
        out.append(arg)
    return True, out


def _jsonable(info: dict[str, Any]) -> dict[str, Any]:
    return {k: (v.decode() if isinstance(v, bytes) else v) for k, v in info.items()}


class ReadyKernelClient(AsyncKernelClient):
    """jupyter_client waits until IOPub has been quiet for 0.2 s after kernel_info; nbclient
    filters IOPub by parent message anyway, so one reply on each channel proves readiness."""

    async def _async_wait_for_ready(self, timeout: float | None = None) -> None:
        deadline = time.monotonic() + (timeout if timeout is not None else float("inf"))
        while True:
            self.kernel_info()
            try:
                reply = await self.shell_channel.get_msg(timeout=1)
            except Exception:  # queue.Empty: no reply within a second, ask again
                reply = None
            if reply is not None and reply["msg_type"] == "kernel_info_reply":
                try:
                    await self.iopub_channel.get_msg(timeout=0.5)
                except Exception:
                    pass  # IOPub not yet subscribed: ask again, its status will come
                else:
                    self._handle_kernel_info_reply(reply)
                    break
            if not await self._async_is_alive():
                raise RuntimeError("Kernel died before replying to kernel_info")
            if time.monotonic() > deadline:
                raise RuntimeError(f"Kernel didn't respond in {timeout:.0f} seconds")
        while True:  # drain what is already there, without waiting for more
            try:
                await self.iopub_channel.get_msg(timeout=0)
            except Exception:
                break

    wait_for_ready = _async_wait_for_ready


class SandboxKernelManager(AsyncKernelManager):
    """An AsyncKernelManager whose kernels are sandboxed forks (see module doc)."""

    sandbox = Instance(Sandbox)
    hide_paths = List(Unicode())
    sandbox_mode = Unicode("")
    sandbox_user = Unicode("")
    guarded = Bool(False, help="The kernel answers grader/guard.py's checks.")
    student = Unicode(
        "", help="The graded submission's owner, given to the kernel as $SMARTLAB_STUDENT."
    )

    @default("sandbox")
    def _sandbox_default(self) -> Sandbox:
        return Sandbox(parent=self)

    @default("transport")
    def _transport_default(self) -> str:
        return "ipc"

    @default("client_class")
    def _client_class_default(self) -> str:
        return "grader.kernels.ReadyKernelClient"

    @default("client_factory")
    def _client_factory_default(self) -> type:
        return ReadyKernelClient

    async def _async_shutdown_kernel(self, now: bool = False, restart: bool = False) -> None:
        """A kernel serves one notebook and is never restarted: closing its lease makes the
        fork server kill it and clean up, without waiting here for that."""
        if restart or not isinstance(self.provisioner, SandboxProvisioner):
            await super()._async_shutdown_kernel(now=now, restart=restart)
            return
        self.shutting_down = True
        self._close_control_socket()
        self.provisioner.release()
        await self._async_cleanup_resources(restart=False)

    shutdown_kernel = _async_shutdown_kernel

    @default("transport_encryption")
    def _no_curve(self) -> str:
        return "disabled"  # ipc sockets in a private folder; curve would only cost time

    async def _async_pre_start_kernel(self, **kw: Any) -> tuple[list[str], dict[str, Any]]:
        self.kernel_id = self.kernel_id or kw.pop("kernel_id", str(uuid.uuid4()))
        if self.provisioner is None:
            self.provisioner = SandboxProvisioner(
                kernel_id=self.kernel_id, kernel_spec=self.kernel_spec, parent=self
            )
        return await super()._async_pre_start_kernel(**kw)

    @property
    def exit_info(self) -> dict[str, Any] | None:
        provisioner = self.provisioner
        return provisioner.exit_info if isinstance(provisioner, SandboxProvisioner) else None
