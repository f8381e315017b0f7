"""The sandbox's settings, the traitlets way: `c.Sandbox.*` in any nbgrader config.

`Sandbox` holds the limits of student code (CPU, wall time, memory, processes, file and output
sizes), the paths to hide from it, and where the fork server is (`server_socket`, else a private
one per process). `parse_size` reads sizes such as 512M or 2G.
"""

from __future__ import annotations

import os
import re
from typing import Any

from traitlets import Float, Integer, List, Unicode, default, validate
from traitlets.config import LoggingConfigurable

from grader import kernel_child, zygote
from grader.sandbox import Limits

SOCKET_ENV = "SMARTLAB_SANDBOX_SOCKET"
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?\s*$", re.I)


def parse_size(value: Any) -> int:
    """'512M', '2G', '1.5GiB', 1048576 -> bytes."""
    if isinstance(value, int):
        return value
    match = _SIZE.match(str(value))
    if not match:
        raise ValueError(f"not a size: {value!r} (use e.g. 512M or 2G)")
    number, unit = float(match.group(1)), match.group(2).lower()
    return int(number * {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[unit])


class Sandbox(LoggingConfigurable):
    """Limits for student code and where its kernels come from."""

    cpu_seconds = Integer(600, help="CPU seconds the kernel of one notebook may use.").tag(
        config=True
    )
    wall_seconds = Float(
        900.0,
        help="Wall-clock seconds one notebook may run, all cells together (the "
        "per-cell limit stays nbgrader's Execute.timeout).",
    ).tag(config=True)
    memory = Unicode("2G", help="Address space of the kernel (RLIMIT_AS), e.g. 1G.").tag(
        config=True
    )
    processes = Integer(64, help="Processes and threads of the sandbox account.").tag(config=True)
    file_size = Unicode("64M", help="Largest file student code may write.").tag(config=True)
    tmp_size = Unicode("256M", help="Size of the private /tmp (the work folder is in it).").tag(
        config=True
    )
    open_files = Integer(256, help="Open files of the kernel.").tag(config=True)
    output = Unicode("8M", help="Cell output kept from one notebook; more stops the kernel.").tag(
        config=True
    )
    hide_paths = List(
        Unicode(),
        help=(
            "Extra files or folders that student code must not see (in addition to the course "
            "folder, the gradebook and the Jupyter/nbgrader configuration folders)."
        ),
    ).tag(config=True)
    server_socket = Unicode(
        help=(
            "Socket of a running fork server (`smartlab sandbox serve`); default "
            f"${SOCKET_ENV}, else a private one started on first use."
        )
    ).tag(config=True)
    run_dir = Unicode(help="Where the fork server keeps sockets, slots and job folders.").tag(
        config=True
    )
    max_slots = Integer(64, help="Kernels at once (one pool account each).").tag(config=True)
    preload = List(
        Unicode(),
        default_value=list(kernel_child.DEFAULT_PRELOAD),
        help=("Modules the fork server imports before forking kernels."),
    ).tag(config=True)

    @default("server_socket")
    def _server_socket_default(self) -> str:
        return os.environ.get(SOCKET_ENV, "")

    @default("run_dir")
    def _run_dir_default(self) -> str:
        return str(zygote.default_run_dir())

    @validate("memory", "file_size", "tmp_size", "output")
    def _valid_size(self, proposal: dict[str, Any]) -> str:
        parse_size(proposal["value"])
        return proposal["value"]

    def limits(self) -> Limits:
        return Limits(
            cpu_seconds=self.cpu_seconds,
            wall_seconds=self.wall_seconds,
            memory_bytes=parse_size(self.memory),
            processes=self.processes,
            file_bytes=parse_size(self.file_size),
            tmp_bytes=parse_size(self.tmp_size),
            open_files=self.open_files,
            output_bytes=parse_size(self.output),
        )
