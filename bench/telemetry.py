"""Kit telemetry benchmark: twin-to-subscriber latency and zero-loss rate, next to raw mosquitto.

One run starts its own Mosquitto (dynamic security, as `smartlab` configures it) and measures:

1. twins: 5 kits (one of each model, two street-lighting) at 20 Hz each, run by `KitRunner`s in
   one child process, and 100 paho v5 subscribers (QoS 1, `homie/5/+/$telemetry`) spread over
   4 processes; latency = receive wall time - the `ts` the kit put in the message;
2. raw: the same load from 5 `mosquitto_pub -l` (fed same-size JSON lines carrying the send time
   by a feeder thread) to 100 `mosquitto_sub -F '%U ...'` (receive time stamped by mosquitto_sub),
   same broker, same credentials and ACLs;
3. the highest per-kit rate with zero loss and >= 95 % of the target rate, 10 subscribers, for
   twins and for raw.

Both are also run crossed (twins -> mosquitto_sub, mosquitto_pub -> paho), which tells whether a
difference comes from the publishing or the subscribing side (`--skip cross` leaves them out).
The combinations run in interleaved windows (`--rounds`) so that the shared machine's noise hits
them alike; each window records the CPU used by the broker, the publishers, the subscribers and
the rest of the machine.

A message counts as received if it reaches a subscriber at most `--drain` seconds after the
measuring window closes; only messages sent inside the window are counted. Results go to stdout
(and with `--markdown FILE` into a section of that file); progress goes to stderr. The exit status
is 0 whatever the figures: it is a benchmark, not a test.

    .venv/bin/python -m bench.telemetry [--quick] [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import heapq
import json
import multiprocessing as mp
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from bench import common
from hardware_kits import protocol as P
from hardware_kits.broker import Broker
from hardware_kits.mqtt import Credentials, connect_client
from site_config.runtime import free_port

TITLE = "Kit telemetry (issue 2)"
SECTION = f"## {TITLE}"
DEFAULT_MODELS = "street-lighting,street-lighting,intersection,environment-station,smart-parking"
SUB_FILTER = P.all_kits("$telemetry")
PROBE_KIT = "bench-probe"
P99_TARGET_MS = 20.0
RATIO_TARGET = 2.0
MIN_RATE_FRACTION = 0.95


progress = common.progress_printer("telemetry")


# ============================================================== results


@dataclass
class PhaseResult:
    """What one measuring window gave: latencies in ms and message accounting."""

    label: str
    subscribers: int
    rate_hz: float  # per kit
    kits: int
    window_s: float
    latencies_ms: np.ndarray = field(repr=False)
    expected: int  # messages sent in the window x subscribers
    received: int  # distinct ones that arrived before the deadline
    gaps: int  # sequence numbers skipped, as each subscriber saw its stream
    duplicates: int
    sent: int  # messages sent in the window (all kits)
    errors: list[str] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)  # group -> % of one core in the window
    # (p99 ms, CPU % the rest of the machine used) of each window pooled here
    rounds: list[tuple[float, float]] = field(default_factory=list)

    @property
    def lost(self) -> int:
        return self.expected - self.received

    @property
    def achieved_hz(self) -> float:
        return self.sent / self.window_s

    @property
    def target_hz(self) -> float:
        return self.rate_hz * self.kits

    def pct(self, q: float) -> float:
        return common.percentile(self.latencies_ms, q)

    @property
    def max_ms(self) -> float:
        return float(self.latencies_ms.max()) if len(self.latencies_ms) else float("nan")

    @property
    def ok(self) -> bool:
        return (
            not self.errors
            and self.lost == 0
            and self.received > 0
            and self.achieved_hz >= MIN_RATE_FRACTION * self.target_hz
        )

    @classmethod
    def merge(cls, parts: list[PhaseResult]) -> PhaseResult:
        """Pool the rounds of one combination (windows add up, CPU is time-weighted)."""
        first, total = parts[0], sum(p.window_s for p in parts)
        cpu = {k: sum(p.cpu.get(k, 0.0) * p.window_s for p in parts) / total for k in first.cpu}
        return cls(
            first.label,
            first.subscribers,
            first.rate_hz,
            first.kits,
            total,
            np.concatenate([p.latencies_ms for p in parts]),
            sum(p.expected for p in parts),
            sum(p.received for p in parts),
            sum(p.gaps for p in parts),
            sum(p.duplicates for p in parts),
            sum(p.sent for p in parts),
            [e for p in parts for e in p.errors],
            cpu,
            [(p.pct(99), p.cpu.get("others", float("nan"))) for p in parts],
        )

    def cpu_text(self) -> str:
        return ", ".join(f"{name} {pct:.0f}%" for name, pct in self.cpu.items())

    def line(self) -> str:
        return (
            f"{self.label}: {self.kits} kits x {self.rate_hz:g} Hz, {self.subscribers} subs: "
            f"p50 {self.pct(50):.2f} ms, p99 {self.pct(99):.2f} ms, max {self.max_ms:.2f} ms, "
            f"sent {self.achieved_hz:.0f}/s of {self.target_hz:.0f}/s, received "
            f"{self.received}/{self.expected} (lost {self.lost}, gaps {self.gaps}); "
            f"cpu {self.cpu_text()}"
            + (f", errors: {'; '.join(self.errors)}" if self.errors else "")
        )


def account(
    label: str,
    subscribers: int,
    rate_hz: float,
    window: tuple[float, float, float],
    sent_ts: dict[str, list[float]],
    streams: list[dict[str, list[tuple[int, float, float]]]],
    errors: list[str],
) -> PhaseResult:
    """Turn what was sent and what each subscriber got into a PhaseResult.

    `sent_ts[kit]` lists the `ts` of every message sent, in sequence order; `streams` has one
    dict per subscriber: kit -> [(seq, ts, receive time)] in arrival order."""
    t0, t1, deadline = window
    in_window = {kit: sum(1 for ts in stamps if t0 <= ts <= t1) for kit, stamps in sent_ts.items()}
    latencies: list[float] = []
    received = gaps = duplicates = 0
    for stream in streams:
        for kit, messages in stream.items():
            if kit not in in_window:
                continue
            seen: set[int] = set()
            last = None
            for seq, ts, recv in messages:
                if not t0 <= ts <= t1 or recv > deadline:
                    continue
                if seq in seen:
                    duplicates += 1
                    continue
                seen.add(seq)
                latencies.append(recv - ts)
                if last is not None and seq > last + 1:
                    gaps += seq - last - 1
                last = seq if last is None else max(last, seq)
            received += len(seen)
    sent = sum(in_window.values())
    return PhaseResult(
        label,
        subscribers,
        rate_hz,
        len(sent_ts),
        t1 - t0,
        np.array(latencies) * 1000.0,
        sent * subscribers,
        received,
        gaps,
        duplicates,
        sent,
        errors,
    )


# ============================================================== paho subscribers (child processes)


def subscriber_worker(
    conn: Connection,
    index: int,
    count: int,
    host: str,
    port: int,
    creds: dict[str, str],
    loop: str,
    qos: int = 1,
) -> None:
    """`count` paho v5 clients subscribed to every kit's telemetry (QoS 1 unless told).

    loop="select": one selector loop drives every client of this process (paho's external-loop
    API); loop="threads": `connect_client`, i.e. one paho network thread per client."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    credentials = Credentials(**creds)
    records: list[tuple[float, int, str, bytes]] = []
    append, now = records.append, time.time

    def on_message(_client: Any, userdata: int, msg: Any) -> None:
        append((now(), userdata, msg.topic, msg.payload))

    try:
        if loop == "threads":
            clients = []
            for j in range(count):
                client = connect_client(
                    host,
                    port,
                    credentials,
                    f"bench-sub-{index}-{j}",
                    subscribe=[(SUB_FILTER, qos)],
                    keepalive=60,
                )
                client.user_data_set(j)
                client.on_message = on_message
                clients.append(client)
            conn.send(("ready", count))
            window = conn.recv()
            for client in clients:
                client.disconnect()
                client.loop_stop()
        else:
            control: list[tuple[float, float, float]] = []

            def on_control(window: tuple[float, float, float]) -> bool:
                control.append(window)  # the only message: the window, i.e. stop
                return True

            client_ids = [f"bench-sub-{index}-{j}" for j in range(count)]
            common.select_loop(
                conn, client_ids, host, port, credentials, SUB_FILTER, qos, on_message, on_control
            )
            window = control[0]
    except Exception as err:
        conn.send(("error", f"subscriber process {index}: {type(err).__name__}: {err}"))
        return
    conn.send(("result", _streams(records, count, window)))


def _streams(
    records: list[tuple[float, int, str, bytes]], count: int, window: tuple[float, float, float]
) -> list[dict[str, list[tuple[int, float, float]]]]:
    """Per client: kit -> [(seq, ts, receive time)] in arrival order, inside the window only."""
    t0, t1, _ = window
    streams: list[dict[str, list]] = [defaultdict(list) for _ in range(count)]
    for recv, j, topic, payload in records:
        kit, _ = P.split_topic(topic)
        try:
            body = P.decode_telemetry(payload)
        except P.ProtocolError:
            continue
        if t0 <= body["ts"] <= t1:
            streams[j][kit].append((body["seq"], body["ts"], recv))
    return [dict(s) for s in streams]


# ============================================================== orchestration helpers


@dataclass
class Bench:
    args: argparse.Namespace
    broker: Broker
    root: Path
    kits: list[tuple[str, str]]  # (kit id, model)
    kit_creds: dict[str, Credentials]
    observer: Credentials
    probe: Credentials
    templates: dict[str, dict[str, Any]]  # kit -> {"values": ..., "sim": ...}
    # Start offsets of the kits' ticks as the twins had them (KitRunners connect one after the
    # other), so that the raw feeder reproduces the same burst pattern; None: evenly spread.
    offsets: dict[str, float] | None = None
    ctx: Any = field(default_factory=lambda: mp.get_context("spawn"))
    children: list[Any] = field(default_factory=list)  # mp processes and Popen objects

    @property
    def host(self) -> str:
        return self.broker.host

    @property
    def port(self) -> int:
        return self.broker.port

    # ------------------------------------------------------------ process bookkeeping

    def spawn(self, target: Any, *args: Any) -> tuple[Any, Connection]:
        proc, conn = common.spawn(self.ctx, target, *args)
        self.children.append(proc)
        return proc, conn

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen:
        proc = subprocess.Popen(argv, **kw)
        self.children.append(proc)
        return proc

    def reap(self) -> None:
        """Stop every child still running (by its own handle), then forget them."""
        for child in self.children:
            if isinstance(child, subprocess.Popen):
                if child.poll() is None:
                    child.terminate()
            elif child.is_alive():
                child.terminate()
        for child in self.children:
            try:
                if isinstance(child, subprocess.Popen):
                    child.wait(5)
                else:
                    child.join(5)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            if not isinstance(child, subprocess.Popen) and child.is_alive():
                child.kill()
                child.join()
        self.children.clear()

    @staticmethod
    def expect(conn: Connection, what: str, timeout: float) -> Any:
        if not conn.poll(timeout):
            raise TimeoutError(f"no {what} within {timeout:g} s")
        kind, payload = conn.recv()
        if kind == "error":
            raise RuntimeError(payload)
        if kind != what:
            raise RuntimeError(f"expected {what}, got {kind}")
        return payload

    def measure(
        self, warmup: float, duration: float, groups: dict[str, list[int]]
    ) -> tuple[tuple[float, float, float], dict[str, float]]:
        """Wait through warm-up, window and drain; return (t0, t1, deadline) in epoch s and
        the CPU each group of processes used inside the window, in % of one core."""
        t0 = time.time() + warmup
        t1 = t0 + duration
        deadline = t1 + self.args.drain
        time.sleep(max(0.0, t0 - time.time()))
        meter = common.CpuMeter(groups)
        time.sleep(max(0.0, t1 - time.time()))
        cpu = meter.stop()
        time.sleep(max(0.0, deadline - time.time()))
        return (t0, t1, deadline), cpu

    def run(
        self,
        label: str,
        pubs: str,
        subs: str,
        subscribers: int,
        rate_hz: float,
        warmup: float,
        duration: float,
    ) -> PhaseResult:
        """One window: `pubs` is "twins" or "raw" (mosquitto_pub), `subs` "paho" or "raw"
        (mosquitto_sub)."""
        outdir = Path(tempfile.mkdtemp(prefix="subs-", dir=self.root))
        errors: list[str] = []
        feeder: Feeder | None = None
        try:
            if subs == "paho":
                sub_procs, files = self.start_paho_subs(subscribers), []
                sub_pids = [proc.pid for proc, _ in sub_procs]
            else:
                sub_procs, files = [], self.start_raw_subs(subscribers, outdir)
                sub_pids = [proc.pid for proc in self.children]
            if pubs == "twins":
                kits = [(k, model, self.kit_creds[k].as_dict()) for k, model in self.kits]
                twin, tconn = self.spawn(
                    common.twin_worker, self.host, self.port, kits, rate_hz, True
                )  # record what was sent
                self.expect(tconn, "ready", 60)
                pub_pids = [twin.pid]
            else:
                procs = self.start_raw_pubs()
                feeder = Feeder(procs, self.templates, rate_hz, self.offsets)
                feeder.start()
                pub_pids = [os.getpid(), *(proc.pid for proc in procs.values())]
            groups = {
                "broker": [self.broker.process.pid],
                "publishers": pub_pids,
                "subscribers": sub_pids,
            }
            window, cpu = self.measure(warmup, duration, groups)
            if feeder is None:
                tconn.send("stop")
                sent = self.expect(tconn, "result", 30)
                if self.offsets is None and all(sent.values()):
                    first = min(stamps[0] for stamps in sent.values())
                    self.offsets = {kit: stamps[0] - first for kit, stamps in sent.items()}
            else:
                sent = self.stop_raw_pubs(feeder, procs)
                errors += feeder.errors
            if subs == "paho":
                streams = self.collect_paho(sub_procs, window, errors)
            else:
                self.reap()
                streams = [parse_sub_file(path, window) for path in files]
        finally:
            if feeder is not None:
                feeder.stop()
            self.reap()
            shutil.rmtree(outdir, ignore_errors=True)
        result = account(label, subscribers, rate_hz, window, sent, streams, errors)
        result.cpu = cpu
        return result

    def start_paho_subs(self, subscribers: int) -> list[tuple[Any, Connection]]:
        procs = min(self.args.sub_procs, subscribers)
        sizes = [subscribers // procs + (i < subscribers % procs) for i in range(procs)]
        subs = [
            self.spawn(
                subscriber_worker,
                i,
                n,
                self.host,
                self.port,
                self.observer.as_dict(),
                self.args.sub_loop,
                self.args.sub_qos,
            )
            for i, n in enumerate(sizes)
        ]
        for _, conn in subs:
            self.expect(conn, "ready", 90)
        return subs

    def collect_paho(
        self,
        subs: list[tuple[Any, Connection]],
        window: tuple[float, float, float],
        errors: list[str],
    ) -> list[dict]:
        streams: list[dict] = []
        for _, conn in subs:
            conn.send(window)
        for _, conn in subs:
            try:
                streams += self.expect(conn, "result", 60)
            except (RuntimeError, TimeoutError) as err:
                errors.append(str(err))
        return streams

    def mqtt_args(self, creds: Credentials, client_id: str, qos: int = 1) -> list[str]:
        return [
            "-h",
            self.host,
            "-p",
            str(self.port),
            "-u",
            creds.username,
            "-P",
            creds.password,
            "-i",
            client_id,
            "-V",
            "mqttv5",
            "-q",
            str(qos),
            "--nodelay",
        ]

    def start_raw_subs(self, subscribers: int, outdir: Path) -> list[Path]:
        files = [outdir / f"sub-{i}.txt" for i in range(subscribers)]
        for i, path in enumerate(files):
            with path.open("wb") as out:
                # Line-buffered, so that the readiness probe shows up at once.
                self.popen(
                    [
                        "stdbuf",
                        "-oL",
                        "mosquitto_sub",
                        *self.mqtt_args(self.observer, f"bench-raw-sub-{i}", self.args.sub_qos),
                        "-t",
                        SUB_FILTER,
                        "-F",
                        "%U %t %p",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        self.wait_subscribed(files)
        return files

    def start_raw_pubs(self) -> dict[str, subprocess.Popen]:
        pubs = {
            kit: self.popen(
                [
                    "mosquitto_pub",
                    *self.mqtt_args(self.kit_creds[kit], f"bench-raw-{kit}"),
                    "-t",
                    P.telemetry_topic(kit),
                    "-l",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            for kit, _ in self.kits
        }
        time.sleep(0.5)  # let them connect; earlier lines would only wait in the pipe
        return pubs

    @staticmethod
    def stop_raw_pubs(feeder: Feeder, pubs: dict[str, subprocess.Popen]) -> dict[str, list[float]]:
        feeder.stop()
        for proc in pubs.values():
            proc.stdin.close()  # mosquitto_pub publishes what is left, then disconnects
        for proc in pubs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                feeder.errors.append("mosquitto_pub did not finish")
        return feeder.sent

    def wait_subscribed(self, files: list[Path], timeout: float = 90.0) -> None:
        """Publish probes until every mosquitto_sub has printed one (so it is subscribed)."""
        client = connect_client(self.host, self.port, self.probe, "bench-probe")
        try:
            waiting = list(files)
            deadline = time.monotonic() + timeout
            while waiting:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{len(waiting)} mosquitto_sub did not subscribe")
                client.publish(P.telemetry_topic(PROBE_KIT), "probe", qos=1)
                time.sleep(0.2)
                waiting = [p for p in waiting if PROBE_KIT.encode() not in p.read_bytes()]
        finally:
            client.disconnect()
            client.loop_stop()


class Feeder:
    """Feeds `mosquitto_pub -l` processes one JSON line per tick per kit, like a twin would."""

    def __init__(
        self,
        pubs: dict[str, subprocess.Popen],
        templates: dict[str, dict],
        rate_hz: float,
        offsets: dict[str, float] | None = None,
    ) -> None:
        self.pubs = pubs
        self.offsets = offsets
        self.templates = templates
        self.period = 1.0 / rate_hz
        self.sent: dict[str, list[float]] = {kit: [] for kit in pubs}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)

    def _run(self) -> None:
        kits = list(self.pubs)
        fds = {kit: self.pubs[kit].stdin.fileno() for kit in kits}
        start = time.monotonic()
        # Each kit ticks at its own phase, as the twins did (or evenly spread).
        offsets = self.offsets or {kit: i * self.period / len(kits) for i, kit in enumerate(kits)}
        heap = [(start + offsets.get(kit, 0.0), i) for i, kit in enumerate(kits)]
        heapq.heapify(heap)
        seqs = [0] * len(kits)
        try:
            while not self._stop.is_set():
                due, i = heap[0]
                delay = due - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                kit = kits[i]
                seqs[i] += 1
                template = self.templates[kit]
                ts = time.time()
                line = P.encode_telemetry(
                    seqs[i],
                    ts,
                    template["values"],
                    round(template["sim"] + seqs[i] * self.period, 3),
                )
                os.write(fds[kit], line.encode() + b"\n")
                self.sent[kit].append(ts)
                due += self.period
                if due < time.monotonic() - 1.0:  # far behind: resynchronise, as KitRunner does
                    due = time.monotonic()
                heapq.heapreplace(heap, (due, i))
        except OSError as err:
            self.errors.append(f"feeder: {err}")


LINE = re.compile(rb"^(\d+\.\d+) (\S+) (\{.*\})$")


def parse_sub_file(
    path: Path, window: tuple[float, float, float]
) -> dict[str, list[tuple[int, float, float]]]:
    """kit -> [(seq, ts, receive time)] from one `mosquitto_sub -F '%U %t %p'` output file."""
    t0, t1, _ = window
    stream: dict[str, list] = defaultdict(list)
    with path.open("rb") as lines:
        for raw in lines:
            match = LINE.match(raw.rstrip(b"\n"))
            if not match:
                continue
            kit, _ = P.split_topic(match[2].decode())
            body = json.loads(match[3])
            if t0 <= body["ts"] <= t1:
                stream[kit].append((body["seq"], body["ts"], float(match[1])))
    return dict(stream)


# ============================================================== the whole run


@dataclass(frozen=True)
class Combo:
    """Which publishers feed which subscribers."""

    name: str
    pubs: str  # "twins" | "raw"
    subs: str  # "paho" | "raw"


TWINS = Combo("twins -> paho", "twins", "paho")
RAW = Combo("mosquitto_pub -> mosquitto_sub", "raw", "raw")
CROSS = [
    Combo("twins -> mosquitto_sub", "twins", "raw"),
    Combo("mosquitto_pub -> paho", "raw", "paho"),
]


def nominal(bench: Bench, combos: list[Combo]) -> dict[Combo, PhaseResult]:
    """The nominal load, in interleaved rounds (the order rotates), pooled per combination."""
    args, parts = bench.args, defaultdict(list)
    window = args.duration / args.rounds
    for r in range(args.rounds):
        order = combos[r % len(combos) :] + combos[: r % len(combos)]
        for combo in order:
            result = bench.run(
                combo.name, combo.pubs, combo.subs, args.subscribers, args.rate, args.warmup, window
            )
            parts[combo].append(result)
            progress(f"  round {r + 1}/{args.rounds} {result.line()}")
    return {combo: PhaseResult.merge(parts[combo]) for combo in combos}


@dataclass
class Sweep:
    best: float | None = None  # highest per-kit rate that passed
    capped: bool = True  # every step passed (so `best` is a lower bound)
    steps: dict[float, PhaseResult] = field(default_factory=dict)


def rate_sweep(bench: Bench, combos: list[Combo]) -> dict[Combo, Sweep]:
    """Raise the per-kit rate step by step (all combinations at each step, interleaved) until a
    step loses messages or falls short of its rate."""
    args = bench.args
    sweeps = {combo: Sweep() for combo in combos}
    for rate in args.rate_steps:
        active = [c for c in combos if sweeps[c].capped]
        if not active:
            break
        for combo in active:
            result = bench.run(
                combo.name,
                combo.pubs,
                combo.subs,
                args.rate_subscribers,
                rate,
                args.rate_warmup,
                args.rate_window,
            )
            sweep = sweeps[combo]
            sweep.steps[rate] = result
            progress(f"  {result.line()} -> {'ok' if result.ok else 'FAIL'}")
            if result.ok:
                sweep.best = rate
            else:
                sweep.capped = False
    return sweeps


def offsets_text(offsets: dict[str, float] | None) -> str:
    if not offsets:
        return "evenly spread"
    return ", ".join(f"{v * 1000:.1f}" for v in sorted(offsets.values())) + " ms"


def ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def fmt_rate(sweep: Sweep | None, kits: int) -> str:
    if sweep is None:
        return "not measured"
    if sweep.best is None:
        return "none"
    return f"{'≥ ' if sweep.capped else ''}{sweep.best:g} Hz/kit ({sweep.best * kits:g} msg/s)"


CPU_GROUPS = ("broker", "publishers", "subscribers", "others")


def cpu_cell(result: PhaseResult) -> str:
    return " / ".join(f"{result.cpu.get(k, float('nan')):.0f}" for k in CPU_GROUPS)


HEADER = ["", "twins (KitRunner -> paho)", "raw (mosquitto_pub -> mosquitto_sub)", "twin/raw"]


def report(
    twin: PhaseResult,
    raw: PhaseResult,
    twin_rate: Sweep | None,
    raw_rate: Sweep | None,
    rate_subscribers: int,
) -> tuple[list[list[str]], list[tuple[str, bool | None]]]:
    """Table rows and (target, passed or None if not measured) pairs."""
    kits = twin.kits
    rates = None
    if twin_rate is not None and raw_rate is not None:
        rates = (twin_rate.best or 0.0, raw_rate.best or 0.0)
    rows = [
        [
            "p50 latency",
            f"{twin.pct(50):.2f} ms",
            f"{raw.pct(50):.2f} ms",
            f"{ratio(twin.pct(50), raw.pct(50)):.2f}",
        ],
        [
            "p99 latency",
            f"{twin.pct(99):.2f} ms",
            f"{raw.pct(99):.2f} ms",
            f"{ratio(twin.pct(99), raw.pct(99)):.2f}",
        ],
        [
            "max latency",
            f"{twin.max_ms:.2f} ms",
            f"{raw.max_ms:.2f} ms",
            f"{ratio(twin.max_ms, raw.max_ms):.2f}",
        ],
        [
            "messages received / expected",
            f"{twin.received} / {twin.expected}",
            f"{raw.received} / {raw.expected}",
            "",
        ],
        ["lost / sequence gaps", f"{twin.lost} / {twin.gaps}", f"{raw.lost} / {raw.gaps}", ""],
        [
            "publish rate achieved",
            f"{twin.achieved_hz:.1f} msg/s",
            f"{raw.achieved_hz:.1f} msg/s",
            "",
        ],
        ["CPU, % of a core: broker / pub / sub / others", cpu_cell(twin), cpu_cell(raw), ""],
        [
            f"max zero-loss rate ({rate_subscribers} subscribers)",
            fmt_rate(twin_rate, kits),
            fmt_rate(raw_rate, kits),
            ""
            if rates is None
            else f"{ratio(*rates):.2f}"
            + (" (bound)" if twin_rate.capped or raw_rate.capped else ""),
        ],
    ]
    checks: list[tuple[str, bool | None]] = [
        (
            f"twin p99 ≤ {P99_TARGET_MS:g} ms ({kits} kits x {twin.rate_hz:g} Hz, "
            f"{twin.subscribers} subscribers)",
            twin.pct(99) <= P99_TARGET_MS,
        ),
        (f"twin p50 within {RATIO_TARGET:g}x raw", twin.pct(50) <= RATIO_TARGET * raw.pct(50)),
        (f"twin p99 within {RATIO_TARGET:g}x raw", twin.pct(99) <= RATIO_TARGET * raw.pct(99)),
        (
            f"twin max zero-loss rate within {RATIO_TARGET:g}x raw",
            None if rates is None else rates[0] * RATIO_TARGET >= rates[1],
        ),
        ("no message lost at the nominal load (twins)", twin.lost == 0 and twin.received > 0),
    ]
    return rows, checks


SPLIT_HEADER = [
    "publishers -> subscribers",
    "p50",
    "p99",
    "p99 ms of each window (others' CPU %)",
    "max",
    "lost",
    "CPU, % of a core: broker / pub / sub / others",
]


def split_rows(results: list[PhaseResult]) -> list[list[str]]:
    return [
        [
            r.label,
            f"{r.pct(50):.2f} ms",
            f"{r.pct(99):.2f} ms",
            " / ".join(f"{x:.0f} ({o:.0f})" for x, o in r.rounds),
            f"{r.max_ms:.2f} ms",
            str(r.lost),
            cpu_cell(r),
        ]
        for r in results
    ]


def sweep_rows(
    sweeps: dict[Combo, Sweep], steps: list[float], kits: int
) -> tuple[list[str], list[list[str]]]:
    header = ["Hz per kit (msg/s)", *(c.name for c in sweeps)]
    rows = []
    for rate in steps:
        cells = []
        for sweep in sweeps.values():
            r = sweep.steps.get(rate)
            if r is None:
                cells.append("-")
            elif r.ok:
                cells.append(f"ok, p99 {r.pct(99):.1f} ms")
            else:
                why = [f"lost {r.lost}"] if r.lost else []
                if r.achieved_hz < MIN_RATE_FRACTION * r.target_hz:
                    why.append(f"sent {r.achieved_hz / r.target_hz:.0%} of rate")
                why += r.errors[:1]
                cells.append("FAIL: " + ", ".join(why or ["no message"]))
        if any(c != "-" for c in cells):
            rows.append([f"{rate:g} ({rate * kits:g})", *cells])
    return header, rows


def verdict(ok: bool | None) -> str:
    return "n/a " if ok is None else "PASS" if ok else "FAIL"


def kit_templates(kits: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    """One real twin sample per kit, so raw lines are the size of twin messages."""
    from hardware_kits.descriptor import load_models
    from hardware_kits.twins.base import twin_class

    models = load_models()
    out = {}
    for i, (kit_id, model) in enumerate(kits):
        twin = twin_class(model)(models[model], seed=i + 1, start=time.time())
        twin.advance(0.05)
        out[kit_id] = {"values": twin.sample(), "sim": round(twin.t, 3)}
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="short smoke run (5 s windows, one round, fewer rate steps)",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="FILE",
        help=f"append/replace the section {SECTION!r} in FILE",
    )
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument(
        "--sub-procs", type=int, default=4, help="processes the paho subscribers are spread over"
    )
    parser.add_argument(
        "--sub-loop",
        choices=["select", "threads"],
        default="select",
        help="paho subscribers: one selector loop per process (default) or "
        "connect_client's network thread per client",
    )
    parser.add_argument(
        "--sub-qos",
        type=int,
        choices=[0, 1],
        default=1,
        help="QoS of every subscription, paho and mosquitto_sub (default 1)",
    )
    parser.add_argument("--rate", type=float, default=20.0, help="per-kit rate, Hz (phases 1-2)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up per window, s")
    parser.add_argument(
        "--duration",
        type=float,
        default=None,
        help="measured time per combination, s (default 20, quick 5)",
    )
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="split --duration into this many interleaved windows so that the "
        "machine's noise hits twins and raw alike (default 4, quick 1)",
    )
    parser.add_argument(
        "--drain",
        type=float,
        default=2.0,
        help="how late after the window a message may still arrive, s",
    )
    parser.add_argument("--rate-subscribers", type=int, default=10)
    parser.add_argument(
        "--rate-steps",
        default=None,
        help="per-kit rates, Hz (default 20,50,100,200,400,800,1600; quick 20,100,400)",
    )
    parser.add_argument(
        "--rate-window",
        type=float,
        default=None,
        help="window per rate step, s (default 5, quick 3)",
    )
    parser.add_argument("--rate-warmup", type=float, default=1.0)
    parser.add_argument(
        "--kit-models",
        default=DEFAULT_MODELS,
        help="comma-separated kit models (default: one of each, two street-lighting)",
    )
    parser.add_argument(
        "--skip",
        choices=["rate", "cross"],
        action="append",
        default=[],
        help="leave out a phase (cross: the twins -> mosquitto_sub and "
        "mosquitto_pub -> paho runs that split the difference)",
    )
    args = parser.parse_args(argv)
    args.duration = args.duration or (5.0 if args.quick else 20.0)
    args.rounds = args.rounds or (1 if args.quick else 4)
    args.rate_window = args.rate_window or (3.0 if args.quick else 5.0)
    steps = args.rate_steps or ("20,100,400" if args.quick else "20,50,100,200,400,800,1600")
    args.rate_steps = [float(x) for x in steps.split(",")]
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(
        [".venv/bin/python", "bench/telemetry.py", *(sys.argv[1:] if argv is None else argv)]
    )
    models = args.kit_models.split(",")
    kits: list[tuple[str, str]] = []
    for model in models:
        n = sum(1 for _, m in kits if m == model) + 1
        kits.append((f"bench-{model}-{n}", model))
    templates = kit_templates(kits)

    root = Path(tempfile.mkdtemp(prefix="smartlab-bench-"))
    root.chmod(0o711)  # the broker drops to the `mosquitto` account; it must reach its folder
    broker = Broker(root / "broker", port=free_port())
    started = datetime.now(UTC)

    def interrupted(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    combos = [TWINS, RAW] + ([] if "cross" in args.skip else CROSS)
    n, rate = args.subscribers, args.rate
    bench = None
    sweeps: dict[Combo, Sweep] = {}
    try:
        broker.start()
        creds = broker.provision_kits([k for k, _ in kits] + [PROBE_KIT])
        bench = Bench(
            args,
            broker,
            root,
            kits,
            {k: creds[k] for k, _ in kits},
            broker.provision_user("bench-observer"),
            creds[PROBE_KIT],
            templates,
        )
        progress(f"broker on {broker.host}:{broker.port}; kits: {', '.join(k for k, _ in kits)}")
        progress(
            f"phases 1-2: {len(kits)} kits x {rate:g} Hz, {n} subscribers (paho: "
            f"{min(args.sub_procs, n)} processes, {args.sub_loop} loop), "
            f"{args.rounds} x ({args.warmup:g} s warm-up + "
            f"{args.duration / args.rounds:g} s) per combination: "
            + "; ".join(c.name for c in combos)
        )
        results = nominal(bench, combos)
        for combo in combos:
            progress(f"  pooled {results[combo].line()}")
        if "rate" not in args.skip:
            progress(
                f"phase 3: zero-loss rate, {args.rate_subscribers} subscribers, steps "
                f"{','.join(f'{s:g}' for s in args.rate_steps)} Hz/kit, "
                f"{args.rate_window:g} s each"
            )
            sweeps = rate_sweep(bench, combos)
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    finally:
        if bench is not None:
            bench.reap()
        broker.stop()
        shutil.rmtree(root, ignore_errors=True)

    twin, raw = results[TWINS], results[RAW]
    rows, checks = report(twin, raw, sweeps.get(TWINS), sweeps.get(RAW), args.rate_subscribers)
    split = split_rows([results[c] for c in combos])
    sweep_header, sweep_table = (
        sweep_rows(sweeps, args.rate_steps, len(kits)) if sweeps else ([], [])
    )
    verdicts = [f"{verdict(ok)}  {name}" for name, ok in checks]
    print()
    print(common.text_table(rows, HEADER))
    print()
    print("\n".join(verdicts))
    if split:
        print()
        print(common.text_table(split, SPLIT_HEADER))
    if sweep_table:
        print()
        print(common.text_table(sweep_table, sweep_header))
    if args.markdown:
        notes = [
            f"{len(kits)} kits ({', '.join(models)}) at {rate:g} Hz each; {n} subscribers, QoS "
            f"{args.sub_qos} on `{SUB_FILTER}`; {args.rounds} interleaved windows of "
            f"{args.duration / args.rounds:g} s per combination (after {args.warmup:g} s "
            f"warm-up each), pooled; a message counts if it arrives within {args.drain:g} s "
            "after its window.",
            "Twins: `KitRunner`s in one process; paho v5 subscribers in "
            f"{min(args.sub_procs, n)} processes ({args.sub_loop} loop); latency = receive wall "
            "time - the message's `ts`.",
            "Raw: `mosquitto_pub -l -q 1 -V mqttv5 --nodelay` per kit, fed same-size JSON lines "
            "carrying the send time by a feeder thread that starts the kits' ticks with the "
            f"offsets the twins had ({offsets_text(bench.offsets)}); `mosquitto_sub -V mqttv5 "
            "--nodelay -F '%U %t %p'` (receive time stamped by mosquitto_sub itself); same "
            "broker, dynsec accounts and ACLs.",
            f"Zero-loss rate: {args.rate_subscribers} subscribers, per-kit steps "
            f"{', '.join(f'{s:g}' for s in args.rate_steps)} Hz, {args.rate_window:g} s window "
            f"each; a step passes with no loss and ≥ {MIN_RATE_FRACTION:.0%} of its target "
            "rate; '≥' = every step passed (the ratio is then a bound).",
        ]
        body = [
            f"Measured {started:%Y-%m-%d %H:%M} UTC on {common.machine()}, with",
            "",
            f"    {command}",
            "",
            common.markdown_table(rows, HEADER),
            "",
            *[f"- **{verdict(ok).strip()}** {name}" for name, ok in checks],
            "",
        ]
        if split:
            body += [
                "The same nominal load, each kind of publisher against each kind of "
                "subscriber (where a difference comes from); 'others' is the CPU the rest "
                "of the machine used meanwhile:",
                "",
                common.markdown_table(split, SPLIT_HEADER),
                "",
            ]
        if sweep_table:
            body += ["Rate steps:", "", common.markdown_table(sweep_table, sweep_header), ""]
        body += [f"- {note}" for note in notes]
        common.write_markdown(args.markdown, TITLE, "\n".join(body), progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
