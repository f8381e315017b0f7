"""`smartlab up` stops what its subtree left behind: orphans in sessions of their own."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time

from site_config.runtime import ephemeral_ports, free_port

# A "hub" that starts a "service" in a session of its own (as JupyterHub starts its managed
# services) and exits without stopping it, as JupyterHub does when it fails at start.
HUB = (
    "import subprocess; p = subprocess.Popen(['sleep', '300'], start_new_session=True,"
    " stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); print(p.pid)"
)

# A launcher in miniature: it adopts orphans, starts a "hub" that starts a "service" in a session
# of its own and dies without stopping it (as JupyterHub does when it fails at start), then
# stops its leftovers. It prints the service's pid, then what it stopped.
LAUNCHER = textwrap.dedent(
    """
    import subprocess, sys, time
    from hub_config.leftover_processes import adopt_leftovers, stop_leftovers
    assert adopt_leftovers()
    hub = subprocess.run(
        [sys.executable, "-c", sys.argv[1]], capture_output=True, text=True, check=True
    )
    print(hub.stdout.strip(), flush=True)
    time.sleep(0.2)
    print(stop_leftovers(grace=5), flush=True)
    """
)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_an_orphan_of_a_hub_that_died_is_stopped_with_the_launcher():
    done = subprocess.run(
        [sys.executable, "-c", LAUNCHER, HUB],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))),
    )
    assert done.returncode == 0, done.stderr
    service, stopped = done.stdout.split("\n")[:2]
    assert int(service) in eval(stopped)
    deadline = time.monotonic() + 5
    while alive(int(service)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(int(service))


def test_without_adoption_the_orphan_would_have_outlived_its_hub():
    """The case the launcher guards against: the orphan goes to init and keeps running."""
    hub = subprocess.run(
        [sys.executable, "-c", HUB],
        capture_output=True,
        text=True,
        check=True,
    )
    orphan = int(hub.stdout)
    try:
        time.sleep(0.2)
        assert alive(orphan)
    finally:
        os.kill(orphan, 9)


def test_chosen_ports_stay_out_of_the_kernels_ephemeral_range():
    """Between its choice and its service's bind, a port of the ephemeral range can be taken
    by any outgoing connection; these cannot."""
    ports = {free_port() for _ in range(50)}
    assert not ports & set(ephemeral_ports())
    assert all(port >= 20000 for port in ports)
