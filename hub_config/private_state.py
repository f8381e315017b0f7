"""What only root and course staff may read, closed to every other account when `smartlab up`
starts as root: the course sources in the checkout and root's service state.

Students' servers run under their own accounts on the same machine, so a file's mode is the
boundary. The folders of the checkout's `courses/` (each course's solutions and hidden tests,
the released data's parameters) become 0700; root's service state (the lab service's database
and config, the broker's folder with its dynamic-security JSON, the LTI store) is created
private: the launcher runs with umask 077, and every start tightens what an earlier run (or an
older version) left open. Only what students must reach stays open: their homes and nbgrader's
exchange (and the sandbox's socket folder, for the graders).

Root never follows a link here: every change is made on a descriptor opened with O_NOFOLLOW,
relative to a folder descriptor, so a link planted in the checkout or the state folder changes
nothing outside it.
"""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path

# Root's own files: nobody else may read, write or enter them.
PRIVATE_UMASK = 0o077


@contextlib.contextmanager
def _folder(path: Path) -> Iterator[int]:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


def _close_entry(parent_fd: int, name: str, keep: int = 0o700, folders_only: bool = False) -> bool:
    """Clear every bit of the entry `name` beyond `keep`; True if it was open. Links, sockets
    and other special files are left alone (never followed); files too if `folders_only`."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(name, flags, dir_fd=parent_fd)
    except OSError:  # a link (ELOOP), a socket (ENXIO), gone meanwhile
        return False
    try:
        mode = os.fstat(fd).st_mode
        kinds = (stat.S_ISDIR(mode),) if folders_only else (stat.S_ISDIR(mode), stat.S_ISREG(mode))
        if not any(kinds) or not stat.S_IMODE(mode) & ~keep:
            return False
        os.fchmod(fd, stat.S_IMODE(mode) & keep)
        return True
    finally:
        os.close(fd)


def close_course_sources(courses_dir: Path) -> list[str]:
    """Make every folder of the checkout's `courses_dir` 0700 (its owner and root read it, no
    one else): the course folders (`<course_id>/`, solutions and hidden tests) and the staff's
    tools beside them (`datasets/`, whose parameters are answers). Only its installer and
    `__init__` stay readable. Returns the folders closed."""
    closed = []
    with _folder(courses_dir) as parent:
        for name in sorted(os.listdir(parent)):
            if name != "__pycache__" and _close_entry(parent, name, folders_only=True):
                closed.append(name)
    return closed


def close_state_folder(state_dir: Path, shared: Iterable[Path]) -> list[str]:
    """Tighten the state folder's entries to 0700/0600, except `shared` (homes, the exchange,
    the sandbox's socket folder: what other accounts must reach). Returns the names tightened.
    Closing an entry closes everything below it, so only the top level is touched."""
    state_dir = Path(state_dir)
    keep_open = {p.name for p in map(Path, shared) if p.parent == state_dir}
    with _folder(state_dir) as parent:
        return [
            name
            for name in sorted(os.listdir(parent))
            if name not in keep_open and _close_entry(parent, name)
        ]
