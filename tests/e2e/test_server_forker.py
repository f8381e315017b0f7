"""Users' servers forked from the warm server forker (hub_config/server_forker.py) on the real
platform: each runs as its user's own account, inside the user's cgroups, with the spawner's
environment; another user's server cannot read its files; stop, restart and a crashed server
work as with servers the hub started itself, leaving no zombie, and the forker outlives both a
crash and a malformed request. Also prints the CPU-seconds of one forked start."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from pathlib import Path

import pytest

from hub_config.accounts import can_isolate
from hub_config.server_forker import MAX_PACKET
from site_config.cgroups import GROUP, CgroupLimits
from tests.e2e.hubclient import Browser, run_in_kernel

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(not can_isolate(), reason="the server forker runs only as root"),
]

PROBE = """
import json, os, pwd
seen = {"whoami": pwd.getpwuid(os.getuid()).pw_name, "cgroups": open("/proc/self/cgroup").read(),
        "env": {k: os.environ.get(k) for k in ("HOME", "USER", "SMARTLAB_LANG",
                                               "JUPYTER_CONFIG_PATH", "JUPYTERHUB_USER")},
        "server_uid": os.stat("/proc/" + str(os.getppid())).st_uid}
try:
    seen["other"] = open(%r).read()
except PermissionError:
    seen["other"] = "denied"
print(json.dumps(seen))
"""


def forker_log(platform) -> str:
    return (platform.state / "hub" / "server-forker.log").read_text(errors="replace")


def forked_pid(platform, user: str, after: int = 0) -> int:
    """The pid of `user`'s latest forked server (the forker logs each start)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        pids = [
            int(p) for p in re.findall(rf"started {user}'s server: pid (\d+)", forker_log(platform))
        ]
        if len(pids) > after:
            return pids[-1]
        time.sleep(0.2)
    raise AssertionError(f"no forked server of {user}:\n{forker_log(platform)[-2000:]}")


def starts(platform, user: str) -> int:
    return len(re.findall(rf"started {user}'s server", forker_log(platform)))


def forker_pid(platform) -> int:
    sock = str(platform.state / "hub" / "server-forker.sock")
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"hub_config.server_forker" in cmdline and sock.encode() in cmdline:
                return int(entry.name)
    raise AssertionError("the server forker is not running")


def alive_not_zombie(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def gone(pid: int, timeout: float = 15) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not Path(f"/proc/{pid}").exists():
            return True  # reaped: not even a zombie left
        time.sleep(0.1)
    return False


def stop(browser: Browser) -> None:
    name = browser.username
    answer = browser.request("DELETE", f"/hub/api/users/{name}/server")
    assert answer.status_code in (202, 204), answer.text
    deadline = time.monotonic() + 60
    while browser.get(f"/hub/api/users/{name}").json().get("servers"):
        assert time.monotonic() < deadline, f"{name}'s server did not stop"
        time.sleep(0.5)


def test_a_forked_server_is_the_users_own_with_the_spawners_environment(platform, browsers):
    anna, boris = browsers["anna"], browsers["boris"]
    secret = platform.runtime.home("anna") / "forked-secret.txt"
    for student in (anna, boris):
        stop(student)  # earlier tests of the package may have left it running: a new start
        before = starts(platform, student.username)
        student.start_server()
        student.open(f"/user/{student.username}/lab")
        forked_pid(platform, student.username, before)
    # The login cookie holding the user's token stays on the user's own server's path.
    for student in (anna, boris):
        paths = {
            c.path for c in student.http.cookies if c.name == f"jupyterhub-user-{student.username}"
        }
        assert paths == {f"/user/{student.username}/"}, paths
    secret.write_text("anna's notes")
    os.chown(secret, os.stat(secret.parent).st_uid, os.stat(secret.parent).st_gid)
    secret.chmod(0o600)
    seen = json.loads(run_in_kernel(anna, PROBE % str(secret)))
    import pwd

    account = pwd.getpwnam("anna")
    pid = forked_pid(platform, "anna")
    assert os.stat(f"/proc/{pid}").st_uid == account.pw_uid  # the server itself, not only kernels
    assert seen["whoami"] == "anna" and seen["server_uid"] == account.pw_uid
    if CgroupLimits("anna").folders():  # the machine lets the platform make cgroups
        assert f"{GROUP}/anna" in seen["cgroups"], seen["cgroups"]
        assert f"{GROUP}/anna" in Path(f"/proc/{pid}/cgroup").read_text()
    env = seen["env"]
    assert env["HOME"] == str(platform.runtime.home("anna")) and env["USER"] == "anna", env
    assert env["JUPYTERHUB_USER"] == "anna" and env["SMARTLAB_LANG"] in ("en", "ru"), env
    folders = env["JUPYTER_CONFIG_PATH"].split(os.pathsep)
    assert folders[0].endswith("jupyter/student") and folders[-1].endswith("hub_config/jupyter")
    assert seen["other"] == "anna's notes"
    # boris's forked server, from the same warm process, cannot read anna's file.
    seen = json.loads(run_in_kernel(boris, PROBE % str(secret)))
    assert seen["whoami"] == "boris" and seen["other"] == "denied", seen
    assert "Spawning (forked)" in (platform.state / "hub" / "jupyterhub.log").read_text()


def test_stop_restart_and_a_crash_leave_no_zombie_and_the_forker_running(platform, browsers):
    anna = browsers["anna"]
    forker = forker_pid(platform)
    anna.start_server()
    first = forked_pid(platform, "anna")
    stop(anna)
    assert gone(first), "a stopped server was left (a zombie counts)"
    before = starts(platform, "anna")
    anna.start_server()
    second = forked_pid(platform, "anna", before)
    assert second != first and alive_not_zombie(second)
    anna.open("/user/anna/lab")
    # The server crashes: the forker reaps it, the hub stops it cleanly and starts another.
    os.kill(second, signal.SIGKILL)
    assert gone(second), "a crashed server was left as a zombie"
    # A malformed request from root: refused, the forker goes on.
    with socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET) as sock:
        sock.settimeout(10)
        sock.connect(str(platform.state / "hub" / "server-forker.sock"))
        socket.send_fds(sock, [b'{"op": "start", "user": "root"}'], [1, 2])
        assert json.loads(sock.recv(MAX_PACKET))["ok"] is False
    stop(anna)
    before = starts(platform, "anna")
    anna.start_server()
    third = forked_pid(platform, "anna", before)
    anna.open("/user/anna/lab")
    assert alive_not_zombie(third) and forker_pid(platform) == forker


def test_a_forked_start_costs_a_fraction_of_a_cold_one(platform, browsers):
    """CPU-seconds of starting the server and serving its first /lab page (every process of
    the account, from /proc: the cgroup v1 cpu controller counts no usage), forked and cold
    (the socket moved away: the hub then starts the server as before, and warns)."""
    import pwd

    sock = platform.state / "hub" / "server-forker.sock"
    artem = browsers["artem"]
    if artem.get("/hub/api/users/artem").json().get("servers"):
        stop(artem)
    figures = {}
    for how in ("forked", "cold", "forked again"):
        if how == "cold":
            sock.rename(sock.with_suffix(".away"))
        try:
            # A fresh browser each time: each start is then a first visit, alike for both ways.
            artem = Browser(platform.hub_url, "artem")
            artem.login("demo-artem")
            started = time.monotonic()
            artem.start_server()
            artem.open("/user/artem/lab")
            uid = pwd.getpwnam("artem").pw_uid
            figures[how] = (_cpu_of(uid), time.monotonic() - started)
            stop(artem)
        except Exception as err:
            hub = (platform.state / "hub" / "jupyterhub.log").read_text(errors="replace")
            raise AssertionError(
                f"{how} start: {err}\n{hub[-6000:]}\n--- forker ---\n{forker_log(platform)[-1500:]}"
            ) from err
        finally:
            if how == "cold":
                sock.with_suffix(".away").rename(sock)
    for how, (cpu, wall) in figures.items():
        print(f"{how} start + first /lab: {cpu:.2f} CPU-s, {wall:.1f} s wall")
    assert "no server forker at" in (platform.state / "hub" / "jupyterhub.log").read_text()
    assert figures["forked"][0] < figures["cold"][0] / 2, figures
    assert figures["forked again"][0] < figures["cold"][0] / 2, figures


def _cpu_of(uid: int) -> float:
    """utime + stime of every live process of the account (its server; no kernel yet)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
    return total / ticks
