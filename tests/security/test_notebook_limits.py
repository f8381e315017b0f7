"""Limits per notebook: memory and processes of the whole notebook (its cgroup), every output
byte counted, nothing of the host writable, nothing of the notebook left running after it.

Each test runs a notebook in the real sandbox (a private root fork server, as `smartlab
grade` uses) and tries to get past one limit.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from pathlib import Path

from grader.sandbox import processes_of
from site_config import cgroups
from tests.conftest import wait_until
from tests.grader.conftest import fork_server, root_only, run_notebook, text_of  # noqa: F401

pytestmark = root_only

CGROUP_OF_SELF = (
    "import re\n"
    "_cg = dict(l.split(':', 2)[1:] for l in open('/proc/self/cgroup').read().splitlines())\n"
)


def _has_v1(controller: str) -> bool:
    return (cgroups.CGROUP_ROOT / controller / "cgroup.procs").exists()


def _limit_file(controller: str, name: str) -> str:
    """Code that prints a limit of the kernel's own cgroup (v1 or v2)."""
    return (
        CGROUP_OF_SELF + f"_path = _cg.get({controller!r}) or _cg.get('')\n"
        f"_base = '/sys/fs/cgroup/{controller}' if {_has_v1(controller)} else '/sys/fs/cgroup'\n"
        f"print('LIMIT', open(_base + _path + '/{name}').read().strip())"
    )


def test_many_memory_hungry_children_stay_within_the_notebook_limit(
    fork_server: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    limit = 1200 << 20
    memory_file = "memory.limit_in_bytes" if _has_v1("memory") else "memory.max"
    hungry = (
        "import os, time\n"
        "pids = []\n"
        "for _ in range(5):\n"
        "    pid = os.fork()\n"
        "    if pid == 0:\n"
        "        try:\n"
        "            block = b'x' * (350 << 20)  # touched: resident, not only mapped\n"
        "            time.sleep(3)\n"
        "            os._exit(0)\n"
        "        except MemoryError:\n"
        "            os._exit(3)  # its own address-space limit: not what is tested here\n"
        "    pids.append(pid)\n"
        "codes = [os.waitpid(p, 0)[1] for p in pids]\n"
        "print('KILLED', sum(1 for c in codes if os.WIFSIGNALED(c)), 'of', len(codes), codes)"
    )
    nb, stops = run_notebook(
        fork_server,
        [_limit_file("memory", memory_file), hungry, "print('after')"],
        tmp_path,
        timeout=60,
        memory="1200M",
        processes=64,
    )
    assert f"LIMIT {limit}" in text_of(nb.cells[0]), text_of(nb.cells[0])
    out = text_of(nb.cells[1])
    # 5 x 400 MiB do not fit in 768 MiB: the kernel's OOM killer stops children (or the
    # kernel itself, and grading says so); never all five finish.
    if stops:
        assert "died" in stops[0]["reason"], stops
    else:
        killed = int(out.split("KILLED ")[1].split()[0])
        assert killed >= 2, out


def _running(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    found.append(entry.name)
            except OSError:
                continue
    return found


def test_a_fork_bomb_is_bounded_by_the_notebooks_pids_limit(
    fork_server: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    bomb = (
        "import os, time\n"
        "made = 0\n"
        "for _ in range(200):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError:\n"
        "        break\n"
        "    if pid == 0:\n"
        "        time.sleep(30)\n"
        "        os._exit(0)\n"
        "    made += 1\n"
        "print('MADE', made)"
    )
    nb, _ = run_notebook(
        fork_server, [_limit_file("pids", "pids.max"), bomb], tmp_path, timeout=60, processes=24
    )
    assert "LIMIT 24" in text_of(nb.cells[0]), text_of(nb.cells[0])
    made = int(text_of(nb.cells[1]).split("MADE ")[1].split()[0])
    assert 0 < made < 24


def test_no_process_of_the_notebook_survives_it(
    fork_server: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    marker = f"{secrets.randbelow(10**6) + 10**6}.25"
    daemon = (
        "import os, subprocess\n"
        f"subprocess.Popen(['sleep', '{marker}'], start_new_session=True)\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        f"        os.execvp('sleep', ['sleep', '{marker}'])\n"
        "    os._exit(0)\n"
        "print('CGROUP', open('/proc/self/cgroup').read().replace(chr(10), ' '))"
    )
    nb, _ = run_notebook(fork_server, [daemon], tmp_path, timeout=30)
    output = text_of(nb.cells[0])
    assert "CGROUP" in output and f"/{cgroups.GRADING_GROUP}/" in output
    # This notebook's cgroup (other notebooks of the fork server may be running meanwhile).
    name = re.search(rf"/{cgroups.GRADING_GROUP}/([\w-]+)", output).group(1)
    deadline = time.monotonic() + 30  # the fork server cleans up once the kernel is closed
    while (left := _running(marker)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert left == []
    # Its cgroup is gone as well.

    def emptied() -> bool:
        groups = cgroups.CGROUP_ROOT.glob(f"*/{cgroups.GRADING_GROUP}/{name}")
        return all(not cgroups.members(g) for g in groups if g.is_dir())

    wait_until(emptied, timeout=30)


def test_display_metadata_counts_toward_the_output_limit(
    fork_server: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    heavy = (
        "from IPython.display import display\n"
        "for _ in range(6):\n"
        "    display({'text/plain': 'x'}, raw=True, metadata={'m': 'y' * (3 << 20)})"
    )
    nb, stops = run_notebook(fork_server, [heavy, "print('after')"], tmp_path, output="1M")
    assert stops and "output" in stops[0]["reason"], stops
    assert len(json.dumps(nb)) < 5 << 20  # not six 3 MiB metadata blobs


def test_nothing_of_the_host_is_writable(
    fork_server: str,  # noqa: F811
    tmp_path: Path,
) -> None:
    name = f"smartlab-probe-{secrets.token_hex(4)}"
    targets = ["/run", "/run/lock", "/dev/mqueue", "/dev/shm", "/var/tmp", "/dev"]
    probe = (
        "import os\n"
        f"for folder in {targets!r}:\n"
        "    try:\n"
        f"        with open(os.path.join(folder, {name!r}), 'w') as f:\n"
        "            f.write('x')\n"
        "        print('WROTE', folder)\n"
        "    except OSError as err:\n"
        "        print('refused', folder, type(err).__name__)"
    )
    nb, _ = run_notebook(fork_server, [probe], tmp_path)
    out = text_of(nb.cells[0])
    for folder in ("/run", "/run/lock", "/dev"):
        if os.path.isdir(folder):
            assert f"refused {folder} " in out, out
    for folder in targets:  # what a private tmpfs took is gone; the host's folder is untouched
        assert not os.path.exists(os.path.join(folder, name)), folder
    assert processes_of(0) != []  # sanity: the host is alive and well
