"""The server forker (hub_config/server_forker.py): what it accepts, and, as root, a real forker
process: each child is the requested account in its own session with exactly the given
environment, nothing but root reaches the socket, and neither a malformed request nor a child
that dies takes the forker down or leaves a zombie behind."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from hub_config.server_forker import (
    MAX_PACKET,
    RequestError,
    check_request,
    in_process,
    reachable,
    request_start,
)
from site_config.cgroups import CGROUP_ROOT

NOBODY = "nobody"
SINGLEUSER = str(Path(sys.executable).parent / "jupyterhub-singleuser")
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="switching accounts needs root")


def start(**fields: object) -> dict[str, object]:
    return {"op": "start", "user": NOBODY, "argv": ["/bin/true"], "env": {}, **fields}


@pytest.mark.parametrize(
    "request_, why",
    [
        ([], "expected"),
        ({"op": "stop"}, "expected"),
        (start(user="root"), "never root"),
        (start(user="../etc"), "user"),
        (start(user="no-such-account-here"), "no account"),
        (start(argv=[]), "argv"),
        (start(argv="/bin/sh"), "argv"),
        (start(env={"HOME": 1}), "env"),
        (start(cgroups=["/sys/fs/cgroup"]), "cgroup"),
        (start(cgroups=["/tmp/smartlab/anna"]), "cgroup"),
        (start(cgroups=[str(CGROUP_ROOT / "smartlab-grade" / "job")]), "cgroup"),
        (
            start(cgroups=[str(CGROUP_ROOT / "smartlab" / ".." / ".." / "x" / "smartlab" / "a")]),
            "cgroup",
        ),
    ],
)
def test_refuses_what_is_not_a_users_server(request_, why):
    with pytest.raises(RequestError, match=why):
        check_request(request_)


def test_accepts_a_users_cgroup():
    job = check_request(start(cgroups=[str(CGROUP_ROOT / "smartlab" / "anna")]))
    assert job["cgroups"] == [CGROUP_ROOT / "smartlab" / "anna"] and job["user"] == NOBODY


def test_runs_in_process_only_what_its_imports_fit(monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_SINGLEUSER_EXTENSION", raising=False)
    assert in_process([SINGLEUSER], {"HOME": "/home/anna"})
    assert not in_process(["/usr/bin/python3", "-m", "jupyterhub.singleuser"], {})
    # Read by jupyterhub.singleuser at import: the forker's copy decided otherwise.
    assert not in_process([SINGLEUSER], {"JUPYTERHUB_SINGLEUSER_EXTENSION": "0"})
    assert not in_process([SINGLEUSER], {"PYTHONPATH": "/home/anna/lib"})


def test_a_missing_socket_is_not_reachable(tmp_path):
    assert not reachable(None) and not reachable(str(tmp_path / "none.sock"))
    (tmp_path / "file").write_text("")
    assert not reachable(str(tmp_path / "file"))


# ------------------------------------------------------------------ a real forker (root)


@pytest.fixture(scope="module")
def forker(tmp_path_factory) -> Iterator[tuple[Path, subprocess.Popen]]:
    folder = tmp_path_factory.mktemp("forker")
    folder.chmod(0o700)
    path = folder / "f.sock"
    log = (folder / "forker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-P", "-m", "hub_config.server_forker", "--socket", str(path)],
        env={"PATH": os.environ["PATH"]},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while b"ready" not in (folder / "forker.log").read_bytes():
        assert process.poll() is None, (folder / "forker.log").read_text()
        assert time.monotonic() < deadline, "the forker did not get ready"
        time.sleep(0.1)
    yield path, process
    process.terminate()
    process.wait(10)


def run(path: Path, argv: list[str], env: dict[str, str], timeout: float = 30) -> tuple[int, str]:
    """Start `argv` through the forker; its pid and what it wrote."""
    reader, writer = os.pipe()
    try:
        pid = request_start(str(path), NOBODY, argv, env, [], stdio=(writer, writer))
    finally:
        os.close(writer)
    out = b""
    deadline = time.monotonic() + timeout
    while chunk := os.read(reader, 65536):
        out += chunk
        assert time.monotonic() < deadline
    os.close(reader)
    return pid, out.decode()


def gone(pid: int, timeout: float = 10) -> bool:
    """The pid no longer exists: exited and reaped (a zombie still answers kill(pid, 0))."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


@root_only
def test_the_child_is_the_account_in_its_own_session_with_only_the_given_env(forker):
    path, process = forker
    probe = (
        "import os, json; print(json.dumps([os.getuid(), os.getgid(), os.getgroups(), "
        "os.getsid(0) == os.getpid(), dict(os.environ), sys.argv]))"
    )
    env = {"HOME": "/nonexistent", "SMARTLAB_LANG": "ru", "PATH": "/usr/bin:/bin"}
    pid, out = run(path, [sys.executable, "-c", "import sys;" + probe, "x"], env)
    uid, gid, groups, own_session, seen_env, argv = json.loads(out.splitlines()[-1])
    import pwd

    nobody = pwd.getpwnam(NOBODY)
    assert (uid, gid) == (nobody.pw_uid, nobody.pw_gid)
    assert 0 not in groups and own_session
    assert {k: v for k, v in seen_env.items() if k != "LC_CTYPE"} == env
    assert argv == ["-c", "x"]
    assert gone(pid), "the ended child was not reaped"
    assert process.poll() is None


@root_only
def test_jupyterhub_singleuser_runs_in_the_forked_child_as_the_account(forker):
    path, _ = forker
    pid, out = run(path, [SINGLEUSER, "--version"], {"HOME": "/nonexistent", "PATH": "/bin"})
    assert out.strip().splitlines()[-1][:1].isdigit(), out
    assert gone(pid)


@root_only
def test_survives_malformed_requests_and_crashing_children(forker):
    path, process = forker
    for packet, fds in ((b"not json", [1, 2]), (b'{"op": "start"}', [1, 2]), (b"{}", [])):
        with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
            sock.settimeout(10)
            sock.connect(str(path))
            socket.send_fds(sock, [packet], fds)
            reply = json.loads(sock.recv(MAX_PACKET))
        assert reply["ok"] is False and reply["error"], reply
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:  # says nothing, leaves
        sock.connect(str(path))
    pid, out = run(path, ["/no/such/server"], {})
    assert gone(pid)
    pid, _ = run(path, [sys.executable, "-c", "import os; os.kill(os.getpid(), 9)"], {})
    assert gone(pid)
    pid, out = run(path, ["/bin/echo", "still here"], {})
    assert out.splitlines()[-1] == "still here" and process.poll() is None


@root_only
def test_only_root_reaches_the_socket(forker):
    path, _ = forker
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.parent.stat().st_mode & 0o077 == 0
    import pwd

    nobody = pwd.getpwnam(NOBODY)
    attempt = (
        "import socket\n"
        "s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)\n"
        f"try:\n    s.connect({str(path)!r}); print('connected')\n"
        "except PermissionError:\n    print('refused')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", attempt],
        user=nobody.pw_uid,
        group=nobody.pw_gid,
        extra_groups=[],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.stdout.strip() == "refused", done


def test_a_forked_server_takes_its_own_prefix_not_the_forkers():
    """HubAuth's class-level defaults were read from the forker's environment at import: the
    child must take them again, or its login cookie (the user's token) gets the path "/" and
    goes to every other user's server."""
    code = (
        "import os\n"
        "from jupyterhub.services.auth import HubOAuth\n"
        "from hub_config.server_forker import refresh_env_defaults\n"
        "os.environ.update(JUPYTERHUB_SERVICE_PREFIX='/user/anna/', USER='anna',"
        " JUPYTERHUB_ALLOW_TOKEN_IN_URL='1')\n"
        "refresh_env_defaults()\n"
        "from jupyter_client.session import Session\n"
        "auth = HubOAuth()\n"
        "print(auth.base_url, auth.cookie_path, auth.allow_token_in_url, Session().username)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("JUPYTERHUB_", "USER"))}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.stdout.split() == ["/user/anna/", "/user/anna/", "True", "anna"], done


def test_a_left_socket_without_a_forker_means_a_cold_start(tmp_path):
    """The forker ended and left its socket file: the spawner is told to start cold."""
    import asyncio
    from types import SimpleNamespace

    from hub_config.server_forker import start_forked

    path = tmp_path / "f.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.bind(str(path))  # bound, never listening: as after the forker's death
    spawner = SimpleNamespace(
        port=0,
        get_env=dict,
        cmd=[SINGLEUSER],
        get_args=list,
        log=SimpleNamespace(info=lambda *a: None),
        user=SimpleNamespace(name=NOBODY),
        ip="",
    )
    assert reachable(str(path))
    assert asyncio.run(start_forked(spawner, str(path), [])) is None
