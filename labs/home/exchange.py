"""What the front door reads from nbgrader's exchange: names only, never a file's content.

The exchange is shared by every account (students write to it), so it is read with directory
descriptors opened without following links (`O_NOFOLLOW`, `dir_fd`): a link planted where a
folder is expected is skipped, never followed, even when the service runs as root (it must, to
list a course's inbound folder, which nbgrader makes writable but not readable by others).

    <exchange>/<course>/outbound/<assignment>/      released assignments (nbgrader release)
    <exchange>/<course>/inbound/<student>+<assignment>+<timestamp>[+<random>]   submissions

Due dates are not in the exchange (nbgrader keeps them in the course's closed gradebook); an
installation may publish them in a schedule file (JSON: {course: {assignment: due ISO time}}).
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
MAX_ENTRIES = 10_000  # a folder stuffed with names costs a bounded listing


@contextlib.contextmanager
def _open_dir(root: Path, *parts: str) -> Iterator[int | None]:
    """A descriptor of root/parts..., each step opened without following a link; None if a
    step is missing, a link, or not a folder."""
    fds: list[int] = []
    try:
        fds.append(os.open(root, FLAGS))
        for part in parts:
            if "/" in part or part in ("", ".", ".."):
                yield None
                return
            fds.append(os.open(part, FLAGS, dir_fd=fds[-1]))
        yield fds[-1]
    except OSError:
        yield None
    finally:
        for fd in fds:
            os.close(fd)


def _names(fd: int, folders_only: bool) -> list[str]:
    found = []
    with os.scandir(fd) as entries:
        for count, entry in enumerate(entries):
            if count >= MAX_ENTRIES:
                break
            try:
                mode = entry.stat(follow_symlinks=False).st_mode
            except OSError:
                continue
            if not folders_only or stat.S_ISDIR(mode):
                found.append(entry.name)
    return found


def released_assignments(exchange: Path, course: str) -> list[str]:
    """The assignments of `course` in the exchange's outbound folder, sorted."""
    with _open_dir(exchange, course, "outbound") as fd:
        return sorted(_names(fd, folders_only=True)) if fd is not None else []


def submissions(exchange: Path, course: str) -> int | None:
    """Submissions of `course` received (latest per student and assignment), or None when
    its inbound folder cannot be listed by this account."""
    with _open_dir(exchange, course, "inbound") as fd:
        if fd is None:
            return None
        try:
            names = _names(fd, folders_only=True)
        except OSError:
            return None
    latest = {tuple(name.split("+")[:2]) for name in names if name.count("+") >= 2}
    return len(latest)


def read_json(path: Path | None) -> Any:
    """A small JSON file the platform writes, read without following a link; None if it is
    missing, a link or not JSON."""
    if path is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as src:
            return json.loads(src.read(1_000_000))
    except (OSError, ValueError):
        return None


def due_dates(schedule: Path | None) -> dict[str, dict[str, str]]:
    """{course: {assignment: due}} from the published schedule file; {} if none or invalid."""
    data = read_json(schedule)
    if not isinstance(data, dict):
        return {}
    return {
        str(course): {str(a): str(d) for a, d in items.items() if isinstance(d, str)}
        for course, items in data.items()
        if isinstance(items, dict)
    }
