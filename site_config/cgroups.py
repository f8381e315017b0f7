"""Memory, CPU and process limits for a group of processes, with the kernel's cgroups.

Two users: the hub's spawner (a cgroup per user: LocalProcessSpawner has `mem_limit` and
`cpu_limit` but enforces neither; KubeSpawner and SystemdSpawner do), and the grading sandbox (a
cgroup per graded notebook: memory and processes of the whole notebook, not of each process;
killed as a whole when the notebook ends). Both cgroup v2 (the unified tree) and v1 (one tree
per controller) are handled; where neither is writable the limits are only advertised, and the
caller's log says so.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP = "smartlab"  # users' servers: smartlab/<user>
GRADING_GROUP = "smartlab-grade"  # graded notebooks: smartlab-grade/<job>, apart from any user
CPU_PERIOD_US = 100_000
V1_CONTROLLERS = ("memory", "cpu", "pids")
OPTIONAL = ("memory.swap.max", "memory.memsw.limit_in_bytes")

log = logging.getLogger(__name__)


def _v2_root() -> Path | None:
    return CGROUP_ROOT if (CGROUP_ROOT / "cgroup.controllers").exists() else None


@dataclass(frozen=True)
class CgroupLimits:
    """The cgroup(s) `<group>/<name>` of one user or one notebook; 0 means no limit of that
    kind."""

    name: str
    mem_bytes: int = 0
    cpus: float = 0.0
    pids: int = 0
    group: str = GROUP

    def _v2(self) -> Path | None:
        root = _v2_root()
        return root / self.group / self.name if root else None

    def _v1(self, controller: str) -> Path | None:
        tree = CGROUP_ROOT / controller
        return tree / self.group / self.name if (tree / "cgroup.procs").exists() else None

    def _files(self) -> dict[Path, str]:
        """limit file -> value to write, for the cgroup version this machine has."""
        quota = f"{int(self.cpus * CPU_PERIOD_US)}" if self.cpus else ""
        v2 = self._v2()
        files: dict[Path, str] = {}
        if v2 is not None:
            if self.mem_bytes:
                files[v2 / "memory.max"] = str(self.mem_bytes)
                files[v2 / "memory.swap.max"] = "0"  # the limit is memory, not swap
            if quota:
                files[v2 / "cpu.max"] = f"{quota} {CPU_PERIOD_US}"
            if self.pids:
                files[v2 / "pids.max"] = str(self.pids)
            return files
        memory, cpu, pids = self._v1("memory"), self._v1("cpu"), self._v1("pids")
        if self.mem_bytes and memory is not None:
            files[memory / "memory.limit_in_bytes"] = str(self.mem_bytes)
            if (memory.parent / "memory.memsw.limit_in_bytes").exists():
                files[memory / "memory.memsw.limit_in_bytes"] = str(self.mem_bytes)
        if quota and cpu is not None:
            files[cpu / "cpu.cfs_period_us"] = str(CPU_PERIOD_US)
            files[cpu / "cpu.cfs_quota_us"] = quota
        if self.pids and pids is not None:
            files[pids / "pids.max"] = str(self.pids)
        return files

    def folders(self) -> list[Path]:
        """Every cgroup folder of this name that exists (to join, kill or remove)."""
        v2 = self._v2()
        candidates = [v2] if v2 is not None else [self._v1(c) for c in V1_CONTROLLERS]
        return [p for p in candidates if p is not None and p.is_dir()]

    def _enable_v2_controllers(self) -> None:
        wanted = [
            c
            for c, on in (("memory", self.mem_bytes), ("cpu", self.cpus), ("pids", self.pids))
            if on
        ]
        if not wanted:
            return
        line = " ".join(f"+{c}" for c in wanted)
        (CGROUP_ROOT / "cgroup.subtree_control").write_text(line)
        parent = CGROUP_ROOT / self.group
        parent.mkdir(exist_ok=True)
        (parent / "cgroup.subtree_control").write_text(line)

    def prepare(self) -> list[Path]:
        """Make the cgroups and write the limits; the cgroup folders a process should join.
        Empty (and a warning) where the machine does not let us."""
        files = self._files()
        if (self.mem_bytes or self.cpus or self.pids) and not files:
            log.warning("no writable cgroup controller: limits of %s are not enforced", self.name)
        folders: list[Path] = []
        try:
            if self._v2() is not None:
                self._enable_v2_controllers()
            for path, value in files.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                if path.name in OPTIONAL and not path.exists():
                    continue  # no swap accounting on this kernel: nothing to cap
                path.write_text(value)
                if path.parent not in folders:
                    folders.append(path.parent)
        except OSError as err:
            log.warning("cannot set the limits of %s (%s): not enforced", self.name, err)
            return []
        return folders

    def kill_all(self, timeout: float = 5.0) -> int:
        """SIGKILL every process in these cgroups (forked, daemonised: all of them), then
        remove the cgroups. Returns how many processes were still there at the end."""
        deadline = time.monotonic() + timeout
        left = 0
        for folder in self.folders():
            with contextlib.suppress(OSError):
                (folder / "cgroup.kill").write_text("1")  # v2, Linux 5.14+: atomic
            while True:
                pids = members(folder)
                for pid in pids:
                    with contextlib.suppress(OSError):
                        os.kill(pid, signal.SIGKILL)
                if not pids or time.monotonic() > deadline:
                    left = max(left, len(pids))
                    break
                time.sleep(0.01)
            with contextlib.suppress(OSError):
                folder.rmdir()
        return left


def members(folder: Path) -> list[int]:
    """The processes in one cgroup folder (and below)."""
    found: list[int] = []
    for procs in folder.rglob("cgroup.procs"):
        with contextlib.suppress(OSError, ValueError):
            found.extend(int(line) for line in procs.read_text().split())
    return found


def join(folders: tuple[Path, ...] | list[Path]) -> None:
    """Move the calling process into the cgroups (call it between fork and exec, as root)."""
    for folder in folders:
        (folder / "cgroup.procs").write_text("0")
