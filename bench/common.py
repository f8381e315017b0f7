"""What the benchmark scripts share: CPU accounting from /proc, the twin and select-loop paho
subscriber child processes, plain-text and Markdown tables, and the docs/benchmarks.md writer.

The benchmarks are the `bench` package, run from the repository as `python -m bench.<name>`
(the spawned children find it on the same sys.path); the running stack comes from the tests'
harness, `tests/stack.py`.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
import selectors
import signal
import sys
import time
from array import array
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from hardware_kits.mqtt import BrokerAddress, Credentials, make_client

INTRO = (
    "# Benchmarks\n\nThe figures are measured on the 2-core CI-class machine; baselines are "
    "measured in the same run, on the same broker, next to the figures they are compared "
    "with; compare ratios, not absolute times (the machine is shared and noisy).\n"
)


def progress_printer(name: str) -> Callable[[str], None]:
    """A `progress(text)` that writes `[name HH:MM:SS] text` to stderr (stdout is the report)."""

    def progress(text: str) -> None:
        print(f"[{name} {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)

    return progress


# ============================================================== CPU accounting


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of processes (all their threads), from /proc."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU time the whole machine spent busy (all cores, every process), from /proc/stat."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU of named process groups over a window, in % of one core; 'others' is the rest of the
    machine (processes not started by this benchmark)."""

    def __init__(self, groups: dict[str, list[int]]) -> None:
        self.groups = groups
        self.start = {name: cpu_seconds(pids) for name, pids in groups.items()}
        self.machine = machine_busy_seconds()
        self.t0 = time.monotonic()

    def stop(self) -> dict[str, float]:
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        used = {name: cpu_seconds(pids) - self.start[name] for name, pids in self.groups.items()}
        others = machine_busy_seconds() - self.machine - sum(used.values())
        out = {name: 100 * s / elapsed for name, s in used.items()}
        out["others"] = max(0.0, 100 * others / elapsed)
        return out


def machine() -> str:
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return (
        f"{os.cpu_count()} CPUs (nproc {len(os.sched_getaffinity(0))}), {model}, "
        f"Linux {platform.release()}, Python {platform.python_version()}"
    )


# ============================================================== child processes


def spawn(ctx: Any, target: Callable[..., None], *args: Any) -> tuple[Any, Connection]:
    """Start `target(child's end of a pipe, *args)` as a daemon process of the multiprocessing
    context `ctx`; return the process and our end of the pipe."""
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(child, *args), daemon=True)
    proc.start()
    child.close()  # only the child holds it now, so its death shows as EOF on ours
    return proc, parent


# ============================================================== twins (child process)


def twin_worker(
    conn: Connection,
    host: str,
    port: int,
    kits: list[tuple[str, str, dict[str, str]]],
    rate_hz: float,
    record_sent: bool = False,
) -> None:
    """Run `kits` [(kit id, model, credentials)] as twins (KitRunner) until told to stop.

    Sends ("ready", pid), then waits for any message; with `record_sent`, answers it with
    ("result", {kit: [ts of every telemetry message sent, in sequence order]})."""
    from hardware_kits.descriptor import load_models
    from hardware_kits.kit_runner import KitRunner
    from hardware_kits.twins.base import twin_class

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    models = load_models()
    runners: list[KitRunner] = []
    sent: dict[str, array] = {}
    try:
        for i, (kit_id, model, creds) in enumerate(kits):
            # Same seed and start as telemetry.py's kit_templates, so raw lines match in size.
            twin = twin_class(model)(models[model], seed=i + 1, start=time.time())
            address = BrokerAddress(host, port, Credentials(**creds))
            runner = KitRunner(kit_id, twin, address, rate_hz=rate_hz)
            if record_sent:
                sent[kit_id] = _record_sent(runner)
            runners.append(runner)
        for runner in runners:
            runner.start()
        conn.send(("ready", os.getpid()))
        conn.recv()  # stop
    except Exception as err:
        conn.send(("error", f"twins: {type(err).__name__}: {err}"))
        return
    finally:
        for runner in runners:
            with contextlib.suppress(Exception):  # stopping must not hide the figures
                runner.stop()
    if record_sent:
        conn.send(("result", {kit: list(stamps) for kit, stamps in sent.items()}))


def _record_sent(runner: Any) -> array:
    """Keep the exact `ts` of each telemetry message the runner encodes (seq = index + 1)."""
    core = runner.core
    clock, encode = core.clock, core.telemetry
    stamps = array("d")
    last = [0.0]

    def stamped_clock() -> float:
        last[0] = clock()
        return last[0]

    def telemetry(values: dict, sim: float | None = None) -> str:
        payload = encode(values, sim)
        stamps.append(last[0])
        return payload

    core.clock = stamped_clock
    core.telemetry = telemetry
    return stamps


# ============================================================== paho subscribers (child process)


def select_loop(
    conn: Connection,
    client_ids: list[str],
    host: str,
    port: int,
    credentials: Credentials,
    topic: str,
    qos: int,
    on_message: Any,
    on_control: Callable[[Any], bool],
) -> None:
    """Drive one paho v5 client per id, subscribed to `topic`, from one selector loop (paho's
    external-loop API: no network thread per client, so many fit in one process).

    The clients' userdata is their index in `client_ids`. Sends ("ready", pid) once every
    subscription is granted; every message from `conn` goes to `on_control`, and the loop
    disconnects the clients and returns when it answers True. Raises on a refused connection
    or subscription, a lost connection, or when not all are subscribed within 60 s."""
    subscribed: set[int] = set()
    failures: list[str] = []

    def on_connect(client: Any, userdata: int, _flags: Any, reason: Any, _props: Any) -> None:
        if reason.is_failure:
            failures.append(f"{client_ids[userdata]}: {reason}")
        else:
            client.subscribe(topic, qos=qos)

    def on_subscribe(_client: Any, userdata: int, _mid: int, reasons: list, _props: Any) -> None:
        if any(r.is_failure for r in reasons):
            failures.append(f"{client_ids[userdata]}: subscription refused")
        subscribed.add(userdata)

    selector = selectors.DefaultSelector()
    clients = []
    for j, client_id in enumerate(client_ids):
        client = make_client(client_id, credentials)
        client.user_data_set(j)
        client.on_connect, client.on_subscribe = on_connect, on_subscribe
        client.on_message = on_message
        client.connect(host, port, keepalive=60)
        selector.register(client.socket(), selectors.EVENT_READ, client)
        clients.append(client)
    selector.register(conn, selectors.EVENT_READ, None)
    ready = False
    next_misc = time.monotonic() + 1.0
    deadline = time.monotonic() + 60.0
    while True:
        for client in clients:
            if client.want_write():
                client.loop_write()
        for key, _ in selector.select(timeout=0.2):
            if key.data is not None:
                if key.data.loop_read(max_packets=10) != 0:
                    raise ConnectionError(f"lost the connection of {key.data._client_id!r}")
                continue
            if on_control(conn.recv()):
                for client in clients:
                    client.disconnect()
                    with contextlib.suppress(Exception):  # push the DISCONNECT out now
                        client.loop_write()
                return
        if failures:
            raise ConnectionError("; ".join(failures[:3]))
        if not ready:
            if len(subscribed) == len(clients):
                conn.send(("ready", os.getpid()))
                ready = True
            elif time.monotonic() > deadline:
                raise TimeoutError(f"only {len(subscribed)} of {len(clients)} clients subscribed")
        if time.monotonic() >= next_misc:  # keepalive pings, retries
            for client in clients:
                client.loop_misc()
            next_misc = time.monotonic() + 1.0


# ============================================================== report


def text_table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def markdown_table(rows: list[list[str]], header: list[str]) -> str:
    return "\n".join(
        [
            "| " + " | ".join(header) + " |",
            "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows),
        ]
    )


def write_markdown(path: Path, title: str, body: str, progress: Callable[[str], None]) -> None:
    """Replace the section `## <title>` of `path` with `body` (append it if missing; create the
    file with INTRO if missing); other sections are left as they are. The file is read just
    before writing, so sections another run wrote meanwhile survive."""
    heading = f"## {title}"
    text = path.read_text() if path.exists() else INTRO
    section = f"{heading}\n\n{body.rstrip()}\n"
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _m: section + "\n", text, count=1).rstrip() + "\n"
    else:
        text = text.rstrip() + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    progress(f"wrote the section {heading!r} of {path}")


def percentile(values: Any, q: float) -> float:
    """The q-th percentile (numpy's linear interpolation) of `values`; NaN when there are none."""
    return float(np.percentile(values, q)) if len(values) else float("nan")
