"""Unix accounts for users' servers and course graders, as The Littlest JupyterHub makes them.

When the platform runs as root, each person's server and each course's formgrader runs under a
Unix account of the same name (nbgrader takes the student id from the Unix account), with a
private home, so the operating system keeps homes and submissions apart. Accounts the platform
made carry the group `smartlab-users`; an existing account without it belongs to someone else
and is never taken over.
"""

from __future__ import annotations

import contextlib
import grp
import json
import os
import pwd
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jupyterhub.spawner import set_user_setuid

ACCOUNT_GROUP = "smartlab-users"
# Course graders' accounts: the sandbox's fork server gives kernels to this group only.
GRADER_GROUP = "smartlab-graders"


class AccountError(ValueError):
    """An account cannot be made or used; the message names it and why."""


def can_isolate() -> bool:
    """Switching to other Unix accounts needs root."""
    return os.geteuid() == 0


def closed_to_other_accounts(path: str | os.PathLike[str]) -> str | None:
    """The first folder on the way to `path` that other accounts cannot pass through (no
    execute bit for others), or None. Users' servers and graded kernels run under their own
    accounts from the platform's Python environment, so it must lie on such a path."""
    current = Path(os.path.abspath(path))
    for folder in [*reversed(current.parents), current]:
        try:
            mode = folder.stat().st_mode
        except FileNotFoundError:
            return None  # the rest is made by the platform, with modes of its own
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return str(folder)
    return None


def _run(*command: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise AccountError(f"{' '.join(command[:2])} failed: {detail[-1] if detail else '?'}")


def _ensure_group(name: str = ACCOUNT_GROUP) -> None:
    try:
        grp.getgrnam(name)
    except KeyError:
        _run("groupadd", "--system", name)


def _is_ours(name: str) -> bool:
    return name in grp.getgrnam(ACCOUNT_GROUP).gr_mem


def ensure_account(name: str, home: Path, groups: tuple[str, ...] = ()) -> pwd.struct_passwd:
    """The Unix account `name` with its private home `home` (made or moved there if needed),
    also a member of `groups`."""
    _ensure_group()
    for group in groups:
        _ensure_group(group)
    try:
        account = pwd.getpwnam(name)
    except KeyError:
        home.parent.mkdir(parents=True, exist_ok=True)
        _run(
            "useradd",
            "--no-create-home",
            "--home-dir",
            str(home),
            "--shell",
            "/bin/bash",
            "--user-group",
            "--groups",
            ACCOUNT_GROUP,
            name,
        )
        account = pwd.getpwnam(name)
    else:
        if not _is_ours(name):
            raise AccountError(
                f"the Unix account {name!r} exists and was not made by Smart City "
                f"Lab (no group {ACCOUNT_GROUP}): rename the person in the site "
                "file"
            )
        if account.pw_dir != str(home):
            _run("usermod", "--home", str(home), name)
            account = pwd.getpwnam(name)
    missing = [g for g in groups if name not in grp.getgrnam(g).gr_mem]
    if missing:
        _run("usermod", "--append", "--groups", ",".join(missing), name)
    private_dir(home, account)
    return account


def private_dir(path: Path, account: pwd.struct_passwd, mode: int = 0o700) -> None:
    """`path` exists, belongs to `account` and only it can enter. Root does this in a folder of
    its own (the homes' root): a symbolic link planted at `path` is refused, never followed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _no_follow(path) as fd:
        os.fchown(fd, account.pw_uid, account.pw_gid)
        os.fchmod(fd, mode)


@contextlib.contextmanager
def _no_follow(path: Path) -> Iterator[int]:
    """The folder `path` opened without following a link at its last component (made first
    if missing): fchown/fchmod on it change that folder and nothing a link points at."""
    parent = os.open(path.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        with contextlib.suppress(FileExistsError):
            os.mkdir(path.name, 0o700, dir_fd=parent)
        try:
            fd = os.open(
                path.name,
                os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                dir_fd=parent,
            )
        except OSError as err:
            raise AccountError(
                f"{path} is not a folder (a symbolic link?): refusing to use it ({err.strerror})"
            ) from None
    finally:
        os.close(parent)
    try:
        yield fd
    finally:
        os.close(fd)


# The platform's links in a home: an entry only the platform makes (owned by the account that
# runs the hub, which a user cannot be) and that points at a folder of this name.
LINK_SUFFIX = ("labs", "dashboards")


def link_in_home(home: Path, name: str, target: Path) -> str:
    """A symbolic link `home`/`name` -> `target`, made by root in the user's home without ever
    following what the user controls: the home is opened with O_NOFOLLOW (its parent is the
    homes' root, root's own) and everything in it is done relative to that handle, never
    through a path. Our own link to an older place (the checkout moved) is replaced atomically;
    anything else the user put there is theirs and left alone. Says what it did: "made",
    "kept", "replaced" or "left" (the user's own entry)."""
    with _no_follow(home) as fd:
        try:
            info = os.stat(name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            info = None
        if info is not None:
            if not stat.S_ISLNK(info.st_mode) or info.st_uid != os.geteuid():
                return "left"  # a folder, a file or a link of the user's own
            current = os.readlink(name, dir_fd=fd)
            if current == str(target):
                return "kept"
            if tuple(Path(current).parts[-2:]) != LINK_SUFFIX:
                return "left"
        if info is None:
            try:
                os.symlink(target, name, dir_fd=fd)  # symlink(2) fails on any existing entry
            except FileExistsError:
                return "left"  # the user made one meanwhile
            return "made"
        spare = f".{name}.smartlab-new"
        try:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(spare, dir_fd=fd)  # unlink(2) removes a link, never its target
            os.symlink(target, spare, dir_fd=fd)
        except OSError:
            return "left"  # a folder of the user's own by that name: not ours to touch
        os.replace(spare, name, src_dir_fd=fd, dst_dir_fd=fd)  # rename(2) never follows
        return "replaced"


def folder_owner(folder: Path) -> int | None:
    """The uid whose rights apply in `folder` (its owner, not following a link); None if there
    is no such folder. Root acts in it as that account; a link there, or a folder of root's
    that others may write, is refused: root never follows what another account controls."""
    try:
        info = os.lstat(folder)
    except FileNotFoundError:
        return None
    if stat.S_ISLNK(info.st_mode):
        raise AccountError(f"{folder} is a symbolic link: refusing to follow it as root")
    if not stat.S_ISDIR(info.st_mode):
        return None
    if info.st_uid == 0 and info.st_mode & 0o022:
        raise AccountError(f"{folder} belongs to root but others may write in it: refusing it")
    return info.st_uid


def call_as(account: pwd.struct_passwd | None, target: str, payload: dict[str, Any]) -> Any:
    """`target` ("module:function") called with `payload` as keyword arguments, as `account`
    (None or this process's own account: here, in this process). For another account: a fresh
    interpreter started as it (no state of this process, which may run threads, is inherited),
    JSON both ways: root never unpickles what another account's process could have written.
    AccountError with the function's one-line error on failure."""
    if account is None or account.pw_uid == os.geteuid():
        module, name = target.split(":")
        return getattr(__import__(module, fromlist=[name]), name)(**payload)
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": account.pw_dir,
        "USER": account.pw_name,
        "LOGNAME": account.pw_name,
        "LANG": "C.UTF-8",
    }
    done = subprocess.run(
        [sys.executable, "-P", "-m", "hub_config.as_account", target],
        input=json.dumps(payload),
        cwd="/",
        env=env,
        capture_output=True,
        text=True,
        user=account.pw_uid,
        group=account.pw_gid,
        extra_groups=os.getgrouplist(account.pw_name, account.pw_gid),
        umask=0o022,
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        raise AccountError(f"as {account.pw_name}: {lines[-1] if lines else done.returncode}")
    return json.loads(done.stdout)


def run_as(name: str | None, command: list[str], cwd: Path, env: dict[str, str]) -> None:
    """Run `command` as the Unix account `name` (root only; None: this process's own account),
    raising AccountError with the command's last line of output on failure."""
    preexec = None
    if name is not None:
        account = pwd.getpwnam(name)
        env = {**env, "HOME": account.pw_dir, "USER": name, "LOGNAME": name}
        preexec = set_user_setuid(name, chdir=False)  # JupyterHub's own switch of account
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, preexec_fn=preexec
    )
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        who = f" as {name}" if name else ""
        raise AccountError(
            f"{' '.join(command[-3:])}{who} failed: {lines[-1] if lines else done.returncode}"
        )
