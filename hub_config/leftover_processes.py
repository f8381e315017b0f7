"""What `smartlab up` started stops with it, even processes the hub left behind.

JupyterHub starts its managed services (lab service, formgraders, front door…) in sessions of
their own, and a hub that fails at start exits without stopping the ones it already started
(`JupyterHub.exit(1)` in `start()`): they would keep their ports and the state folder open. As a
child subreaper (Linux `PR_SET_CHILD_SUBREAPER`, what container init processes such as tini use),
the launcher becomes the parent of every orphan of its subtree, so it can find and stop them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import time
from pathlib import Path

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>


def adopt_leftovers() -> bool:
    """Make this process the parent of its subtree's orphans; False where Linux says no."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def children(parent: int | None = None) -> list[int]:
    """The processes whose parent is `parent` (default: this one), zombies included."""
    parent = os.getpid() if parent is None else parent
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            # The name in parentheses may itself hold spaces and parentheses: split after it.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == parent:
                found.append(int(entry.name))
    return found


def reap(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, os.WNOHANG)


def stop_leftovers(grace: float = 10.0) -> list[int]:
    """SIGTERM every child still here (each adopted orphan), SIGKILL after `grace` seconds;
    their own children come to us as they die, and are stopped the same way. Call it once the
    processes this one started on purpose have been stopped. Returns the pids stopped."""
    stopped: list[int] = []
    deadline = time.monotonic() + grace
    while pids := children():
        late = time.monotonic() > deadline
        for pid in pids:
            if pid in stopped and not late:
                continue  # once is enough: a second SIGTERM cuts some programs' own shutdown
            if pid not in stopped:
                stopped.append(pid)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL if late else signal.SIGTERM)
        time.sleep(0.1)
        reap(pids)
        if time.monotonic() > deadline + grace:  # unkillable (D state): leave it
            break
    return stopped
