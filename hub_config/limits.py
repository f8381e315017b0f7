"""Memory and CPU limits for processes started on this machine, with the kernel's cgroups.

LocalProcessSpawner has `mem_limit` and `cpu_limit` but enforces neither; KubeSpawner and
SystemdSpawner do. On one machine run as root, a cgroup per user gives the same: everything the
user's server starts (kernels, terminals) stays inside it. Both cgroup v2 (the unified tree)
and v1 (one tree per controller) are handled; where neither is writable the limits are only
advertised (MEM_LIMIT, CPU_LIMIT in the environment), and the hub log says so.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
GROUP = "smartlab"
CPU_PERIOD_US = 100_000

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CgroupLimits:
    """The cgroup(s) of one user; `mem_bytes`/`cpus` of 0 mean no limit of that kind."""

    name: str
    mem_bytes: int = 0
    cpus: float = 0.0

    def _v2(self) -> Path | None:
        root = CGROUP_ROOT if (CGROUP_ROOT / "cgroup.controllers").exists() else None
        return root / GROUP / self.name if root else None

    def _v1(self, controller: str) -> Path | None:
        tree = CGROUP_ROOT / controller
        return tree / GROUP / self.name if (tree / "cgroup.procs").exists() else None

    def _files(self) -> dict[Path, str]:
        """limit file -> value to write, for the cgroup version this machine has."""
        quota = f"{int(self.cpus * CPU_PERIOD_US)}" if self.cpus else ""
        v2 = self._v2()
        if v2 is not None:
            files = {}
            if self.mem_bytes:
                files[v2 / "memory.max"] = str(self.mem_bytes)
            if quota:
                files[v2 / "cpu.max"] = f"{quota} {CPU_PERIOD_US}"
            return files
        files = {}
        memory, cpu = self._v1("memory"), self._v1("cpu")
        if self.mem_bytes and memory is not None:
            files[memory / "memory.limit_in_bytes"] = str(self.mem_bytes)
        if quota and cpu is not None:
            files[cpu / "cpu.cfs_period_us"] = str(CPU_PERIOD_US)
            files[cpu / "cpu.cfs_quota_us"] = quota
        return files

    def prepare(self) -> list[Path]:
        """Make the cgroups and write the limits; the cgroup folders a process should join.
        Empty (and a warning) where the machine does not let us."""
        files = self._files()
        if (self.mem_bytes or self.cpus) and not files:
            log.warning("no writable cgroup controller: limits of %s are not enforced", self.name)
        folders: list[Path] = []
        try:
            if self.mem_bytes and self._v2() is not None:
                parent = CGROUP_ROOT / GROUP
                parent.mkdir(exist_ok=True)
                (CGROUP_ROOT / "cgroup.subtree_control").write_text("+memory +cpu")
                (parent / "cgroup.subtree_control").write_text("+memory +cpu")
            for path, value in files.items():
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(value)
                if path.parent not in folders:
                    folders.append(path.parent)
        except OSError as err:
            log.warning("cannot set the limits of %s (%s): not enforced", self.name, err)
            return []
        return folders


def join(folders: tuple[Path, ...] | list[Path]) -> None:
    """Move the calling process into the cgroups (call it between fork and exec, as root)."""
    for folder in folders:
        (folder / "cgroup.procs").write_text("0")
