"""The server forker: a warmed root process that forks one user's server per start.

A cold `jupyterhub-singleuser` spends about two CPU-seconds importing jupyter_server, JupyterLab,
nbgrader and Voilà (half of it jsonschema building its URI grammars) before it serves anything;
fifty students logging in at once pay that fifty times on two cores. This process imports all
of that once, never runs anyone's code itself, and forks a child per start, as the grader's fork
server does for kernels (grader/zygote.py). The child becomes the server exactly as
LocalProcessSpawner's Popen would have made it: a new session, the user's cgroups (joined as
root), the user's account (jupyterhub.spawner.set_user_setuid: groups, gid, uid, home), the
spawner's environment and argv; then jupyterhub-singleuser's `main` runs in the child itself.

Protocol: a SOCK_SEQPACKET Unix socket that only root reaches (0600 in a 0700 folder, and the
peer's uid is checked); one connection is one start, one JSON object per packet.

    hub:     {"op": "start", "user": "anna", "argv": [...], "env": {...},
              "cgroups": ["/sys/fs/cgroup/smartlab/anna"]}  + SCM_RIGHTS: stdout, stderr
    forker:  {"ok": true, "pid": 1234}        or {"ok": false, "error": "..."}

The hub then treats the pid as LocalProcessSpawner treats a server it found after a restart:
it polls and signals the pid itself (as root). The forker reaps its children, so an ended
server leaves no zombie behind that would still look alive to `os.kill(pid, 0)`.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import selectors
import signal
import socket
import stat
import struct
import sys
import threading
from pathlib import Path
from typing import Any

from grader.kernel_child import close_other_fds, preload, reseed
from site_config.cgroups import CGROUP_ROOT, GROUP, join

log = logging.getLogger("smartlab.server_forker")

SOCKET_ENV = "SMARTLAB_SERVER_FORKER"  # the hub's environment: where the socket is
MAX_PACKET = 1 << 20
# What every user's server imports on its way up (-X importtime of one start): the server
# and JupyterHub's extension of it, then the extensions it loads (jupyter_server_config.d).
PRELOAD = [
    "jupyter_client.session",
    "jupyterhub.services.auth",
    "jupyterhub.singleuser",
    "jupyterhub.singleuser.extension",
    "jupyterhub.spawner",  # set_user_setuid, for the child
    "jupyter_server.serverapp",
    "jupyterlab",
    "jupyterlab.labapp",
    "jupyterlab_server",
    "jupyter_lsp",
    "jupyter_lsp.serverextension",
    "jupyter_server_terminals",
    "notebook",
    "notebook.app",
    "notebook_shim",
    "nbgrader.server_extensions.assignment_list",
    "nbgrader.server_extensions.validate_assignment",
    "nbgrader.server_extensions.formgrader",
    "nbgrader.server_extensions.course_list",
    "voila.server_extension",
    "labs.jupyterlab_links",
]
# Read at import time by the preloaded modules: a server whose environment sets any of these
# differently from the forker's is started the ordinary way (exec of its command) instead.
IMPORT_TIME_ENV = (
    "JUPYTERHUB_SINGLEUSER_EXTENSION",
    "JUPYTERHUB_SINGLEUSER_APP",
    "JUPYTER_ALLOW_INSECURE_WRITES",  # jupyter_core.paths
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSAFEPATH",
    "PYTHONNOUSERSITE",
    "PYTHONUSERBASE",
    "PYTHONSTARTUP",
)


class RequestError(ValueError):
    """A request the forker will not act on; its text goes back to the hub."""


# ------------------------------------------------------------------ the child


def check_request(request: Any) -> dict[str, Any]:
    """The fields of a start request, validated: it comes from root, but a mistake in it must
    not make the forker start a server as root or outside the users' cgroups."""
    if not isinstance(request, dict) or request.get("op") != "start":
        raise RequestError("expected {'op': 'start', ...}")
    user, argv, env = request.get("user"), request.get("argv"), request.get("env")
    cgroups = request.get("cgroups", [])
    if not isinstance(user, str) or not user or "/" in user:
        raise RequestError("user: a user name")
    if not (isinstance(argv, list) and argv and all(isinstance(a, str) for a in argv)):
        raise RequestError("argv: a list of strings")
    if not (
        isinstance(env, dict)
        and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
    ):
        raise RequestError("env: a mapping of strings")
    if not (isinstance(cgroups, list) and all(isinstance(c, str) for c in cgroups)):
        raise RequestError("cgroups: a list of folders")
    users = CGROUP_ROOT.resolve()
    for folder in cgroups:
        path = Path(os.path.normpath(folder))
        if path.parent.name != GROUP or not path.is_relative_to(users):
            raise RequestError(f"cgroups: {folder} is not a user's cgroup")
    import pwd

    try:
        account = pwd.getpwnam(user)
    except KeyError:
        raise RequestError(f"user: no account {user}") from None
    if account.pw_uid == 0:
        raise RequestError("user: never root")
    return {"user": user, "argv": argv, "env": env, "cgroups": [Path(c) for c in cgroups]}


def in_process(argv: list[str], env: dict[str, str]) -> bool:
    """Whether the preloaded jupyterhub-singleuser can run this start, or it must be exec'd:
    another program, or an environment that changes what the preloaded modules decided at
    import time."""
    if os.path.basename(argv[0]) != "jupyterhub-singleuser":
        return False
    return all(env.get(name) == os.environ.get(name) for name in IMPORT_TIME_ENV)


def become_server(job: dict[str, Any], stdout: int, stderr: int) -> None:
    """In the forked child: the server's session, cgroups, account, environment and argv, then
    jupyterhub-singleuser's main. Never returns."""
    code = 1
    try:
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDONLY)
        os.dup2(devnull, 0)
        os.dup2(stdout, 1)
        os.dup2(stderr, 2)
        close_other_fds(keep={0, 1, 2})
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGPIPE):
            signal.signal(sig, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        from jupyterhub.spawner import set_user_setuid

        join(tuple(job["cgroups"]))  # still root here: the server and its kernels stay inside
        set_user_setuid(job["user"])()  # exactly LocalProcessSpawner's preexec_fn
        argv, env = job["argv"], job["env"]
        if not in_process(argv, env):
            os.execve(argv[0], argv, env)
        run_singleuser(argv, env)
        code = 0
    except SystemExit as done:
        code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    except BaseException as err:
        with contextlib.suppress(Exception):
            os.write(2, f"server forker: the server failed: {type(err).__name__}: {err}\n".encode())
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def run_singleuser(argv: list[str], env: dict[str, str]) -> None:
    """As the user: what `jupyterhub-singleuser ARGS` does, in this process."""
    os.environ.clear()
    os.environ.update(env)
    sys.argv = list(argv)
    # A console script runs with its own folder first on the path, not the forker's.
    sys.path[:] = [os.path.dirname(argv[0]), *[p for p in sys.path if p not in ("", START_PATH)]]
    reseed()
    refresh_env_defaults()
    from jupyterhub.singleuser import main

    sys.exit(main())


START_PATH = sys.path[0] if sys.path and not sys.flags.safe_path else ""


def refresh_env_defaults() -> None:
    """Traitlet defaults that the preloaded classes took from the forker's environment when
    they were defined, taken again from this server's. HubAuth.base_url is the path of the
    server's login cookie: left at the forker's "/", the cookie holding the user's token would
    go to every other user's server too."""
    from jupyter_client.session import Session
    from jupyterhub.services.auth import HubAuth
    from jupyterhub.utils import _bool_env

    getenv = os.environ.get
    hub_auth = {
        "base_url": getenv("JUPYTERHUB_SERVICE_PREFIX") or "/",
        "api_url": getenv("JUPYTERHUB_API_URL") or "http://127.0.0.1:8081/hub/api",
        "keyfile": getenv("JUPYTERHUB_SSL_KEYFILE", ""),
        "certfile": getenv("JUPYTERHUB_SSL_CERTFILE", ""),
        "client_ca": getenv("JUPYTERHUB_SSL_CLIENT_CA", ""),
        "allow_token_in_url": _bool_env("JUPYTERHUB_ALLOW_TOKEN_IN_URL", default=False),
        "allow_websocket_cookie_auth": _bool_env(
            "JUPYTERHUB_ALLOW_WEBSOCKET_COOKIE_AUTH", default=True
        ),
    }
    set_class_defaults(HubAuth, hub_auth)
    set_class_defaults(Session, {"username": getenv("USER", "username")})


def set_class_defaults(base: type, values: dict[str, Any]) -> None:
    """Set the static defaults of traits of `base` and of every subclass: traitlets copies a
    static default into each class's `_static_immutable_initial_values` when it defines it."""
    traits = base.class_traits()  # type: ignore[attr-defined]
    for name, value in values.items():
        traits[name].default_value = value
    classes, seen = [base], set()
    while classes:
        cls = classes.pop()
        if cls in seen:
            continue
        seen.add(cls)
        initial = cls.__dict__.get("_static_immutable_initial_values")
        if initial is not None:
            for name, value in values.items():
                if name in initial:
                    initial[name] = value
        classes.extend(cls.__subclasses__())


# ------------------------------------------------------------------ the server


class ServerForker:
    def __init__(self, socket_path: Path) -> None:
        self.socket_path = Path(socket_path)
        self.selector = selectors.DefaultSelector()
        self.children: dict[int, str] = {}  # pid -> user
        self.stopping = False

    def listen(self) -> socket.socket:
        folder = self.socket_path.parent
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        info = os.lstat(folder)
        if stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
            raise OSError(f"{folder} is not a private folder of this account; refusing it")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        old = os.umask(0o177)
        try:
            listener.bind(str(self.socket_path))
        finally:
            os.umask(old)
        listener.listen(64)
        listener.setblocking(False)
        return listener

    def serve_forever(self, listener: socket.socket) -> None:
        wake_r, wake_w = socket.socketpair()
        wake_r.setblocking(False)
        wake_w.setblocking(False)
        signal.set_wakeup_fd(wake_w.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        self.selector.register(listener, selectors.EVENT_READ, "listen")
        self.selector.register(wake_r, selectors.EVENT_READ, "wake")
        while not self.stopping:
            for key, _ in self.selector.select(timeout=5.0):
                if key.data == "listen":
                    self._accept(listener)
                else:
                    with contextlib.suppress(BlockingIOError):
                        wake_r.recv(4096)
            self.reap()
        # The servers stay: the hub stops them (it does at its own exit); they are orphans of
        # init from now on, which reaps them.
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def _stop(self, *_: Any) -> None:
        self.stopping = True

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                return
            with conn:
                self.handle(conn)

    def handle(self, conn: socket.socket) -> None:
        """One start: read the request, fork, answer. A bad request costs nothing but an error
        answer."""
        _pid, uid, _gid = struct.unpack(
            "3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12)
        )
        fds: list[int] = []
        try:
            if uid != os.geteuid():
                raise RequestError("only the hub's account may start servers")
            conn.settimeout(5.0)
            data, fds, _flags, _addr = socket.recv_fds(conn, MAX_PACKET, 2)
            if len(fds) != 2:
                raise RequestError("send the server's stdout and stderr with the request")
            try:
                request = json.loads(data)
            except ValueError as err:
                raise RequestError(f"not JSON: {err}") from None
            job = check_request(request)
            pid = self.fork(job, fds[0], fds[1])
            reply: dict[str, Any] = {"ok": True, "pid": pid}
        except Exception as err:
            log.warning("refused a start: %s", err)
            reply = {"ok": False, "error": f"{type(err).__name__}: {err}"}
        finally:
            for fd in fds:
                os.close(fd)
        with contextlib.suppress(OSError):
            conn.send(json.dumps(reply).encode())

    def fork(self, job: dict[str, Any], stdout: int, stderr: int) -> int:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            become_server(job, stdout, stderr)
        self.children[pid] = job["user"]
        log.info("started %s's server: pid %d", job["user"], pid)
        return pid

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            user = self.children.pop(pid, "?")
            log.info("%s's server (pid %d) ended: %s", user, pid, describe(status))


def describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


# ------------------------------------------------------------------ the hub's side


def reachable(path: str | None) -> bool:
    """Whether a forker answers at `path` (a socket we may connect to)."""
    if not path:
        return False
    try:
        return stat.S_ISSOCK(os.stat(path).st_mode)
    except OSError:
        return False


def request_start(
    path: str,
    user: str,
    argv: list[str],
    env: dict[str, str],
    cgroups: list[str],
    stdio: tuple[int, int] = (1, 2),
) -> int:
    """Ask the forker at `path` for a server; its pid. Blocking (a few milliseconds): call it
    from a thread in the hub. The server's output goes where the hub's own goes, as with Popen."""
    message = {"op": "start", "user": user, "argv": argv, "env": env, "cgroups": cgroups}
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(30.0)
        sock.connect(path)
        socket.send_fds(sock, [json.dumps(message).encode()], list(stdio))
        reply = json.loads(sock.recv(MAX_PACKET) or b"{}")
    if not reply.get("ok"):
        raise RuntimeError(f"the server forker refused: {reply.get('error', 'no answer')}")
    return int(reply["pid"])


async def start_forked(spawner: Any, path: str, cgroups: list[str]) -> tuple[str, int] | None:
    """LocalProcessSpawner.start, with the forker's fork in place of Popen's fork and exec;
    None if no forker listens there (it ended and left its socket): start cold then."""
    import asyncio
    import shlex

    from jupyterhub.utils import random_port

    if spawner.port == 0:
        spawner.port = random_port()
    env = spawner.get_env()
    argv = [*spawner.cmd, *spawner.get_args()]
    spawner.log.info("Spawning (forked) %s", " ".join(shlex.quote(a) for a in argv))
    try:
        spawner.pid = await asyncio.get_running_loop().run_in_executor(
            None, request_start, path, spawner.user.name, argv, env, cgroups
        )
    except (ConnectionRefusedError, FileNotFoundError):
        return None
    spawner.proc = None  # polled and stopped by pid, as after a hub restart
    return (spawner.ip or "127.0.0.1", spawner.port)


# ------------------------------------------------------------------ entry point


def warm() -> list[str]:
    """Import what every server imports; those that could not be imported."""
    for name in IMPORT_TIME_ENV:
        os.environ.pop(name, None)
    missing = preload(PRELOAD)
    if threading.active_count() != 1:  # a fork copies no thread: a server would miss it
        raise RuntimeError(f"preloading started threads: {threading.enumerate()}")
    return missing


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hub_config.server_forker")
    parser.add_argument("--socket", type=Path, required=True)
    args = parser.parse_args(argv)
    # Its own logger only: a root handler would be inherited by every server's libraries.
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s server-forker %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    if os.geteuid() != 0:
        parser.error("runs as root: it starts servers under the users' accounts")
    forker = ServerForker(args.socket)
    listener = forker.listen()  # the hub waits for the socket; it appears once warm
    missing = warm()
    if missing:
        log.warning("not preloaded (servers import them themselves): %s", ", ".join(missing))
    # Frozen, the preloaded objects are never walked by a server's collector, so their pages
    # stay shared with the forker instead of being copied into every server.
    gc.freeze()
    log.info("ready: %d modules loaded, listening on %s", len(sys.modules), args.socket)
    forker.serve_forever(listener)
    return 0


if __name__ == "__main__":
    sys.exit(main())
