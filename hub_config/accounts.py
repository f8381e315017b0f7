"""Unix accounts for users' servers and course graders, as The Littlest JupyterHub makes them.

When the platform runs as root, each person's server and each course's formgrader runs under a
Unix account of the same name (nbgrader takes the student id from the Unix account), with a
private home, so the operating system keeps homes and submissions apart. Accounts the platform
made carry the group `smartlab-users`; an existing account without it belongs to someone else
and is never taken over.
"""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

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
    """`path` exists, belongs to `account` and only it can enter."""
    path.mkdir(parents=True, exist_ok=True)
    shutil.chown(path, account.pw_uid, account.pw_gid)
    path.chmod(mode)


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
