"""Kit sharing benchmark: the lab service's queue under a burst of requests, and the holder's
command round trip while 100 observers watch every kit.

One run starts its own Mosquitto (dynamic security, a free port, a temporary state folder),
`smartlab lab serve` as a subprocess (production defaults: SQLite in the state folder, 0.25 s
tick) and 5 kits as twins (`KitRunner`, 20 Hz; the target kit in its own process, the other four
in another), and measures:

1. queue burst: 150 distinct users each send `POST /api/queue {"kit": ...}` (30 users per kit),
   all released at the same instant, each on its own new connection as `labs.client.LabService`
   does; latency of each request = its connect to the last byte of its answer. 3 rounds with
   fresh users; between rounds the waiting entries leave the queue and the granted sessions are
   ended, so every round starts with 5 free kits and an empty queue. In-run baseline: the same
   150 requests (other fresh users, same starting state) sent one after another; the ratio
   concurrent/sequential is the queueing inside the single-threaded service. The load generator
   is one non-blocking socket loop (it costs the machine far less than an HTTP client library);
   a cross-check round uses tornado's AsyncHTTPClient (max_clients=150) instead.
2. command round trip: one user holds the smart-parking kit through the service (queue ->
   granted -> control URL from /api/me/mqtt, with `LabService.session`) and toggles its gate
   with `kit.set`, timed by `Ack.round_trip_s` (publish to acknowledgement); with 100 paho v5
   observers (one select loop per process) subscribed QoS 1 to every kit's telemetry and all 5
   twins at 20 Hz, against a baseline with no observers and only the target twin; each
   condition is split into 2 rounds, and in each round the baseline runs before and after the
   observed blocks, so that drift hits every condition alike. A diagnostic block repeats the
   observed one with the observers at nice 19 (they then take only CPU the rest leaves).

Results go to stdout (with `--markdown FILE` also into the section "## Kit sharing (issue 3)" of
that file); progress goes to stderr. The exit status is 0 whatever the figures: it is a
benchmark, not a test. `--profile` runs the service under cProfile and prints where its event
loop thread spends its time (the decisions: the HTTP
front-end processes are not profiled).

    .venv/bin/python -m bench.sharing [--quick] [--markdown docs/benchmarks.md] [--profile]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import io
import json
import multiprocessing as mp
import os
import pstats
import random
import selectors
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from bench import common
from hardware_kits import protocol as P
from hardware_kits.broker import Broker
from hardware_kits.mqtt import Credentials
from site_config.runtime import free_port
from tests.stack import ServiceProcess, call_api

REPO = Path(__file__).resolve().parent.parent
TITLE = "Kit sharing (issue 3)"
SECTION = f"## {TITLE}"
TARGET = "bench-park-1"
KITS = [
    (TARGET, "smart-parking"),
    ("bench-lamp-1", "street-lighting"),
    ("bench-lamp-2", "street-lighting"),
    ("bench-cross-1", "intersection"),
    ("bench-env-1", "environment-station"),
]
OBSERVER = "bench-observer"
OBSERVE_FILTER = P.all_kits("$telemetry")
INSTITUTIONS = 6
QUEUE_P99_TARGET_MS = 100.0
COMMAND_P99_TARGET_MS = 30.0
NICE = 19  # the diagnostic block: observers yield the CPU to the broker, kit and holder
WEBLAB = "WebLab-Deusto's published best: mean ≈ 0.05 s, max ≈ 0.3 s (Redis, 5 processes)"
progress = common.progress_printer("sharing")


# ============================================================== measuring helpers


def ms(x: float) -> str:
    return "-" if x != x else f"{x:.1f} ms"


def ratio(a: float, b: float) -> str:
    return "-" if not b or a != a or b != b else f"{a / b:.2f}"


# ============================================================== HTTP load generator


def http_request(
    method: str, path: str, port: int, token: str | None = None, body: Any = None
) -> bytes:
    """One HTTP/1.1 request with `Connection: close`, as bytes ready to send."""
    data = b"" if body is None else json.dumps(body).encode()
    lines = [
        f"{method} {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Connection: close",
        "Accept: application/json",
        f"Content-Length: {len(data)}",
    ]
    if token:
        lines.append(f"Authorization: token {token}")
    if body is not None:
        lines.append("Content-Type: application/json")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


@dataclass
class Reply:
    index: int
    status: int  # 0: no HTTP answer
    latency_s: float
    started: float  # perf_counter when its connect began
    body: Any = None
    error: str | None = None


@dataclass
class _Conn:
    index: int
    sock: socket.socket
    request: bytes
    started: float
    sent: int = 0
    buffer: bytearray = field(default_factory=bytearray)
    expected: int | None = None  # length of the whole answer, once the headers are in


def _parse(raw: bytes) -> tuple[int, Any]:
    head, _, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    kind = next(
        (
            line.split(":", 1)[1].strip()
            for line in lines[1:]
            if line.lower().startswith("content-type:")
        ),
        "",
    )
    if kind.startswith("application/json"):
        try:
            return status, json.loads(body)
        except ValueError:
            return status, body.decode(errors="replace")
    return status, body.decode(errors="replace")


def _answer_length(buffer: bytearray) -> int | None:
    end = buffer.find(b"\r\n\r\n")
    if end < 0:
        return None
    for line in bytes(buffer[:end]).decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            return end + 4 + int(value)
    return None  # read to EOF


def fire(port: int, requests: list[bytes], in_flight: int, timeout: float = 60.0) -> list[Reply]:
    """Send `requests` to 127.0.0.1:port, each on a new connection, at most `in_flight` at a
    time (len(requests): all started in one tight loop; 1: one after another)."""
    selector = selectors.DefaultSelector()
    replies: list[Reply | None] = [None] * len(requests)
    queue = list(enumerate(requests))[::-1]
    active: dict[int, _Conn] = {}

    def finish(conn: _Conn, error: str | None = None) -> None:
        done = time.perf_counter()
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(conn.sock)
        conn.sock.close()
        del active[conn.index]
        status, body = 0, None
        if error is None:
            try:
                status, body = _parse(bytes(conn.buffer))
            except (ValueError, IndexError) as err:
                error = f"unreadable answer: {err}"
        replies[conn.index] = Reply(
            conn.index, status, done - conn.started, conn.started, body, error
        )

    def new_socket() -> socket.socket:
        sock = socket.socket()
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    # The first wave's sockets are made beforehand: the burst itself is only the connects.
    spare = [new_socket() for _ in range(min(in_flight, len(requests)))]

    def start() -> None:
        index, request = queue.pop()
        sock = spare.pop() if spare else new_socket()
        conn = _Conn(index, sock, request, time.perf_counter())
        active[index] = conn
        rc = sock.connect_ex(("127.0.0.1", port))
        if rc not in (0, errno.EINPROGRESS):
            finish(conn, f"connect: {os.strerror(rc)}")
            return
        selector.register(sock, selectors.EVENT_WRITE, conn)

    while queue and len(active) < in_flight:
        start()
    deadline = time.monotonic() + timeout
    while active:
        left = deadline - time.monotonic()
        if left <= 0:
            for conn in list(active.values()):
                finish(conn, f"no answer within {timeout:g} s")
            break
        for key, mask in selector.select(timeout=min(left, 1.0)):
            conn = key.data
            try:
                if mask & selectors.EVENT_WRITE:
                    err = conn.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        finish(conn, f"connect: {os.strerror(err)}")
                        continue
                    conn.sent += conn.sock.send(conn.request[conn.sent :])
                    if conn.sent == len(conn.request):
                        selector.modify(conn.sock, selectors.EVENT_READ, conn)
                    continue
                chunk = conn.sock.recv(65536)
            except BlockingIOError:
                continue
            except OSError as err:
                finish(conn, f"{type(err).__name__}: {err}")
                continue
            if not chunk:
                finish(conn, None if conn.buffer else "connection closed without an answer")
                continue
            conn.buffer += chunk
            if conn.expected is None:
                conn.expected = _answer_length(conn.buffer)
            if conn.expected is not None and len(conn.buffer) >= conn.expected:
                finish(conn)
        while queue and len(active) < in_flight:
            start()
    selector.close()
    return [r for r in replies if r is not None]


def fire_tornado(port: int, requests: list[tuple[str, dict]], timeout: float = 60.0) -> list[Reply]:
    """The same burst with tornado's AsyncHTTPClient (max_clients = the burst size): every
    request waits on one asyncio.Event, set once all are ready."""
    from tornado.httpclient import AsyncHTTPClient, HTTPRequest

    async def run() -> list[Reply]:
        client = AsyncHTTPClient(force_instance=True, max_clients=len(requests))
        release = asyncio.Event()
        url = f"http://127.0.0.1:{port}/api/queue"

        async def one(index: int, token: str, body: dict) -> Reply:
            request = HTTPRequest(
                url,
                method="POST",
                body=json.dumps(body),
                headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
                connect_timeout=timeout,
                request_timeout=timeout,
            )
            await release.wait()
            started = time.perf_counter()
            answer = await client.fetch(request, raise_error=False)
            done = time.perf_counter()
            error = None if answer.code != 599 else str(answer.error)
            parsed = None
            if answer.body:
                with contextlib.suppress(ValueError):
                    parsed = json.loads(answer.body)
            return Reply(index, 0 if error else answer.code, done - started, started, parsed, error)

        tasks = [
            asyncio.create_task(one(i, token, body)) for i, (token, body) in enumerate(requests)
        ]
        for _ in range(3):
            await asyncio.sleep(0)  # every task is waiting on the event
        release.set()
        try:
            return list(await asyncio.gather(*tasks))
        finally:
            client.close()

    return asyncio.run(run())


# ============================================================== child processes


def observer_worker(
    conn: Connection,
    index: int,
    count: int,
    host: str,
    port: int,
    creds: dict[str, str],
    qos: int,
    niceness: int,
) -> None:
    """`count` paho v5 clients subscribed to every kit's telemetry, driven by one selector loop;
    counts what they receive between "mark" and "stop"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if niceness:
        os.nice(niceness)
    received = [0]
    mark = [0, time.monotonic()]  # count and time at the last "mark"

    def on_message(_client: Any, _userdata: int, _msg: Any) -> None:
        received[0] += 1

    def on_control(what: str) -> bool:
        if what == "mark":
            mark[:] = [received[0], time.monotonic()]
            return False
        conn.send(("result", received[0] - mark[0], time.monotonic() - mark[1]))  # "stop"
        return True

    try:
        client_ids = [f"{OBSERVER}-{index}-{j}" for j in range(count)]
        common.select_loop(
            conn,
            client_ids,
            host,
            port,
            Credentials(**creds),
            OBSERVE_FILTER,
            qos,
            on_message,
            on_control,
        )
    except Exception as err:
        conn.send(("error", f"{type(err).__name__}: {err}"))


# ============================================================== the stack


@dataclass
class User:
    name: str
    token: str
    institution: str


def make_users(prefix: str, n: int) -> list[User]:
    return [
        User(
            f"{prefix}-{i:03d}",
            f"bench-token-{prefix}-{i:03d}-{os.urandom(6).hex()}",
            f"univ-{i % INSTITUTIONS}",
        )
        for i in range(n)
    ]


class Stack:
    """Broker, lab service, twins and observers; every child is stopped by its own handle."""

    def __init__(self, args: argparse.Namespace, root: Path, users: list[User]) -> None:
        self.args = args
        self.root = root
        self.broker = Broker(root / "broker", port=free_port())
        self.users = users
        self.admin = next(u for u in users if u.name == "bench-admin")
        self.profile_path = root / "service.prof"
        users_by_token = {
            u.token: {
                "name": u.name,
                "institution": u.institution,
                "lab_admin": u.name == "bench-admin",
            }
            for u in users
        }
        extra = () if args.http_processes is None else (f"--http-processes={args.http_processes}",)
        launcher = () if args.profile is None else ("-m", "cProfile", "-o", str(self.profile_path))
        # The service as configured by default (its own policy, not the tests' fast one).
        self.service = ServiceProcess(
            self.broker, root, users_by_token, "service", "", extra, launcher, 30.0
        )
        self.port, self.url = self.service.port, self.service.url
        self.kit_creds: dict[str, dict[str, str]] = {}
        self.observer_creds: dict[str, str] = {}
        self.ctx = mp.get_context("spawn")
        self.twins: dict[str, tuple[Any, Connection, int]] = {}  # group -> process, pipe, pid
        self.observers: list[tuple[Any, Connection, int]] = []

    # ------------------------------------------------------------ start and stop

    def start(self) -> None:
        self.broker.start()
        creds = self.broker.provision_kits([k for k, _ in KITS])
        self.kit_creds = {k: c.as_dict() for k, c in creds.items()}
        self.observer_creds = self.broker.provision_user(OBSERVER).as_dict()
        # The service writes the broker's credential file from now on: the benchmark only
        # uses what it read above.
        self.service.start()
        for kit_id, model in KITS:
            self.ok(
                "POST",
                "/api/kits",
                self.admin,
                {"id": kit_id, "model": model, "name": f"bench {kit_id}"},
            )
        self.start_twins("target", [TARGET])
        self.start_twins("others", [k for k, _ in KITS if k != TARGET])
        self.wait_kits_free()

    def service_output(self) -> str:
        return self.service.output(lines=30)

    def stop(self) -> None:
        self.stop_observers()
        for group in list(self.twins):
            self.stop_twins(group)
        self.service.stop()
        self.broker.stop()

    @property
    def service_pid(self) -> int:
        assert self.service.process is not None
        return self.service.process.pid

    def front_end_pids(self) -> list[int]:
        """The service's HTTP front-end processes (its children that are not a helper)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                cmdline = (stat.parent / "cmdline").read_bytes()
            except OSError:
                continue
            if int(fields[1]) == self.service_pid and b"spawn_main" in cmdline:
                found.append(int(stat.parent.name))
        return found

    # ------------------------------------------------------------ children

    def _spawn(self, target: Any, *args: Any) -> tuple[Any, Connection]:
        return common.spawn(self.ctx, target, *args)

    @staticmethod
    def _expect(proc: Any, conn: Connection, what: str, timeout: float) -> Any:
        if not conn.poll(timeout):
            proc.terminate()
            raise TimeoutError(f"{what}: no answer within {timeout:g} s")
        answer = conn.recv()
        if answer[0] == "error":
            raise RuntimeError(f"{what}: {answer[1]}")
        return answer

    @staticmethod
    def _end(proc: Any, conn: Connection) -> None:
        with contextlib.suppress(OSError):
            conn.send("stop")
        proc.join(15)
        if proc.is_alive():
            proc.terminate()
            proc.join(5)
        if proc.is_alive():
            proc.kill()
            proc.join()

    def start_twins(self, group: str, kit_ids: list[str]) -> None:
        models = dict(KITS)
        kits = [(k, models[k], self.kit_creds[k]) for k in kit_ids]
        proc, conn = self._spawn(
            common.twin_worker, self.broker.host, self.broker.port, kits, self.args.rate
        )
        _, pid = self._expect(proc, conn, f"twins {group}", 30)
        self.twins[group] = (proc, conn, pid)

    def stop_twins(self, group: str) -> None:
        proc, conn, _ = self.twins.pop(group)
        self._end(proc, conn)

    def start_observers(self, niceness: int = 0) -> None:
        n, procs = self.args.observers, max(1, min(self.args.observer_procs, self.args.observers))
        started = []
        for i in range(procs):
            count = n // procs + (1 if i < n % procs else 0)
            started.append(
                self._spawn(
                    observer_worker,
                    i,
                    count,
                    self.broker.host,
                    self.broker.port,
                    self.observer_creds,
                    self.args.qos,
                    niceness,
                )
            )
        for i, (proc, conn) in enumerate(started):
            try:
                _, pid = self._expect(proc, conn, f"observer process {i}", 90)
            except Exception:
                self.observers += [(p, c, 0) for p, c in started[i:]]
                raise
            self.observers.append((proc, conn, pid))

    def mark_observers(self) -> None:
        for _, conn, _ in self.observers:
            conn.send("mark")

    def stop_observers(self) -> tuple[int, float]:
        """Stop the observers; (messages received since the mark, seconds since the mark)."""
        total, elapsed = 0, 0.0
        for proc, conn, _ in self.observers:
            with contextlib.suppress(OSError, EOFError):
                conn.send("stop")
                if conn.poll(30):
                    answer = conn.recv()
                    if answer[0] == "result":
                        total += answer[1]
                        elapsed = max(elapsed, answer[2])
            self._end(proc, conn)
        self.observers = []
        return total, elapsed

    # ------------------------------------------------------------ REST

    def call(self, method: str, path: str, user: User | None, body: Any = None) -> tuple[int, Any]:
        return call_api(self.port, method, path, user.token if user else None, body)

    def ok(self, method: str, path: str, user: User | None, body: Any = None) -> Any:
        status, answer = self.call(method, path, user, body)
        if not 200 <= status < 300:
            raise RuntimeError(
                f"{method} {path} as {user.name if user else None}: {status} {answer}"
            )
        return answer

    def wait_kits_free(self, timeout: float = 60.0) -> None:
        """Until every kit is in the pool, online, held by nobody, with nobody waiting."""
        deadline = time.monotonic() + timeout
        while True:
            kits = self.ok("GET", "/api/kits", self.admin)
            busy = [
                k["id"]
                for k in kits
                if k["pool"] != "in-pool"
                or not k["online"]
                or k["session_state"] is not None
                or k["queue_length"]
            ]
            if not busy and len(kits) == len(KITS):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"kits not free within {timeout:g} s: {kits}")
            time.sleep(0.1)

    def reset_queue(self, users: list[User], replies: list[Reply]) -> None:
        """Leave every waiting entry of `users`, end every live session, wait for free kits."""
        by_index = {r.index: r for r in replies}
        for i, user in enumerate(users):
            reply = by_index.get(i)
            body = reply.body if reply is not None and isinstance(reply.body, dict) else None
            if body is not None and reply.status == 201:
                entries = [body] if body.get("state") == "waiting" else []
            else:  # unknown outcome: ask the service
                entries = self.ok("GET", "/api/queue", user)
            for entry in entries:
                status, answer = self.call("DELETE", f"/api/queue/{entry['id']}", user)
                if status not in (200, 409):
                    raise RuntimeError(f"leaving queue entry {entry['id']}: {status} {answer}")
        for session in self.ok("GET", "/api/sessions?live=1", self.admin):
            if session["state"] in ("granted", "active"):
                self.ok("POST", f"/api/sessions/{session['id']}/end", self.admin)
        self.wait_kits_free()


# ============================================================== phase 1: queue burst


@dataclass
class QueueRun:
    label: str
    mode: str  # concurrent / sequential / tornado
    latencies_ms: np.ndarray
    errors: list[str]
    granted: int
    waiting: int
    makespan_s: float
    send_spread_s: float
    service_cpu_s: float  # the service process and its HTTP front ends
    requests: int
    by_index: np.ndarray = field(repr=False)  # latency of request i in ms, NaN if it failed
    decider_cpu_s: float = 0.0  # the service process alone (decisions, ticks, MQTT)
    batches: int = 0  # transactions that decided the burst (distinct `enqueued_at`)

    @classmethod
    def pooled(cls, runs: list[QueueRun], label: str) -> QueueRun:
        return cls(
            label,
            runs[0].mode,
            np.concatenate([r.latencies_ms for r in runs]),
            [e for r in runs for e in r.errors],
            sum(r.granted for r in runs),
            sum(r.waiting for r in runs),
            sum(r.makespan_s for r in runs),
            max(r.send_spread_s for r in runs),
            sum(r.service_cpu_s for r in runs),
            sum(r.requests for r in runs),
            np.vstack([r.by_index for r in runs]),
            sum(r.decider_cpu_s for r in runs),
            sum(r.batches for r in runs),
        )

    def mean_of(self, start: int, stop: int) -> float:
        """Mean latency of requests start..stop-1 of each burst (sent in that order)."""
        part = np.atleast_2d(self.by_index)[:, start:stop]
        return float(np.nanmean(part)) if part.size else float("nan")

    def p(self, q: float) -> float:
        return common.percentile(self.latencies_ms, q)

    @property
    def max_ms(self) -> float:
        return float(self.latencies_ms.max()) if len(self.latencies_ms) else float("nan")

    @property
    def mean_ms(self) -> float:
        return float(self.latencies_ms.mean()) if len(self.latencies_ms) else float("nan")

    def row(self) -> list[str]:
        return [
            self.label,
            str(self.requests),
            str(len(self.errors)),
            f"{self.granted} / {self.waiting}",
            ms(self.p(50)),
            ms(self.p(95)),
            ms(self.p(99)),
            ms(self.max_ms),
            ms(self.mean_ms),
            f"{self.makespan_s * 1000:.0f} ms",
            f"{self.service_cpu_s * 1000 / max(self.requests, 1):.2f} ms",
        ]


QUEUE_HEADER = [
    "run",
    "requests",
    "errors",
    "granted / waiting",
    "p50",
    "p95",
    "p99",
    "max",
    "mean",
    "wall time (all requests)",
    "service CPU per request",
]


def queue_run(stack: Stack, label: str, mode: str, users: list[User]) -> QueueRun:
    kit_ids = [k for k, _ in KITS]
    bodies = [{"kit": kit_ids[i % len(kit_ids)]} for i in range(len(users))]
    pids = [stack.service_pid, *stack.front_end_pids()]
    cpu0 = common.cpu_seconds(pids)
    cpu_split0 = common.cpu_seconds(pids[:1])
    t0 = time.perf_counter()
    if mode == "tornado":
        replies = fire_tornado(
            stack.port, [(u.token, b) for u, b in zip(users, bodies, strict=True)]
        )
    else:
        requests = [
            http_request("POST", "/api/queue", stack.port, u.token, b)
            for u, b in zip(users, bodies, strict=True)
        ]
        replies = fire(stack.port, requests, len(requests) if mode == "concurrent" else 1)
    t1 = time.perf_counter()
    service_cpu = common.cpu_seconds(pids) - cpu0
    decider_cpu = common.cpu_seconds(pids[:1]) - cpu_split0
    errors = [
        f"#{r.index}: {r.error or r.status} {str(r.body)[:120]}"
        for r in replies
        if r.error or r.status != 201
    ]
    states = Counter(
        r.body.get("state") for r in replies if r.status == 201 and isinstance(r.body, dict)
    )
    good = np.array([r.latency_s * 1000 for r in replies if not r.error and r.status == 201])
    starts = [r.started for r in replies]
    by_index = np.full(len(users), np.nan)
    for r in replies:
        if not r.error and r.status == 201:
            by_index[r.index] = r.latency_s * 1000
    run = QueueRun(
        label,
        mode,
        good,
        errors,
        states.get("served", 0),
        states.get("waiting", 0),
        t1 - t0,
        max(starts) - min(starts) if mode != "sequential" else 0.0,
        service_cpu,
        len(users),
        by_index,
        decider_cpu,
        len(
            {r.body["enqueued_at"] for r in replies if r.status == 201 and isinstance(r.body, dict)}
        ),
    )
    progress(
        f"  {label}: p50 {ms(run.p(50))}, p99 {ms(run.p(99))}, max {ms(run.max_ms)}, "
        f"errors {len(errors)}, granted {run.granted}, waiting {run.waiting}, wall "
        f"{run.makespan_s * 1000:.0f} ms, {run.batches} batches"
        + (f"; first error {errors[0]}" if errors else "")
    )
    stack.reset_queue(users, replies)
    return run


def queue_phase(
    stack: Stack, args: argparse.Namespace, users: dict[str, list[User]]
) -> tuple[list[QueueRun], list[QueueRun], QueueRun | None]:
    progress("phase 1: warm-up")
    queue_run(stack, "warm-up concurrent", "concurrent", users["wc"])
    queue_run(stack, "warm-up sequential", "sequential", users["ws"])
    concurrent, sequential = [], []
    for r in range(1, args.rounds + 1):
        order = ["concurrent", "sequential"] if r % 2 else ["sequential", "concurrent"]
        progress(
            f"phase 1 round {r}/{args.rounds}: {args.requests} requests, {' then '.join(order)}"
        )
        for mode in order:
            key = f"{mode[0]}{r}"
            run = queue_run(stack, f"{mode}, round {r}", mode, users[key])
            (concurrent if mode == "concurrent" else sequential).append(run)
    cross = None
    if not args.no_tornado:
        progress("phase 1 cross-check: the burst from tornado's AsyncHTTPClient")
        cross = queue_run(stack, "concurrent, tornado AsyncHTTPClient", "tornado", users["t1"])
    return concurrent, sequential, cross


# ============================================================== phase 1b: where the time goes


class _NoRights:
    def grant(self, user: str, kit_id: str) -> None: ...
    def revoke(self, user: str, kit_id: str) -> None: ...


class _AllOnline:
    def online(self, kit_id: str) -> bool:
        return True

    def send_safe_state(self, kit_id: str) -> str:
        return "bench"

    def confirmed_safe(self, kit_id: str, command_id: str) -> bool:
        return True

    def drain_acks(self) -> list[dict[str, Any]]:
        return []

    def send_at_rest(self, kit_id: str) -> str:
        return "bench"

    def answer(self, kit_id: str, command_id: str) -> str | None:
        return "applied"

    def report(self, kit_id: str) -> dict[str, Any] | None:
        return None


STEPS = ("identity", "body", "decision", "answer")  # timed inside the breakdown server


def breakdown_server(
    conn: Connection, port: int, db_path: str, users: dict[str, dict[str, Any]]
) -> None:
    """The lab service's REST API served by one process (as with http_processes = 0), its
    broker rights and kit gateway stubbed, with a thread-CPU timer around each step of a
    request: identity, body validation, the queue decision (one `request_many` per batch), the
    answer (JSON and writing it). "start"/"stop" on `conn` bracket a burst."""
    from tornado.httpserver import HTTPServer
    from tornado.ioloop import PeriodicCallback

    from lab_service import api_http, api_identity, api_routes
    from lab_service.policy import SharingPolicy
    from lab_service.service import KitSharing
    from lab_service.store import SharingStore, sqlite_url

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    spent: Counter[str] = Counter()
    batches: list[int] = []

    def timed(step: str, f: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return f(*args, **kwargs)
            finally:
                spent[step] += time.thread_time() - t0

        return wrapper

    service = KitSharing(
        SharingStore(sqlite_url(db_path)), SharingPolicy(), _NoRights(), _AllOnline()
    )
    identity = api_identity.TokenIdentity(users)
    identity.user_for = timed("identity", identity.user_for)  # type: ignore[method-assign]
    api_http.parse_body = timed("body", api_http.parse_body)
    api_http.ApiHandler._answer = timed("answer", api_http.ApiHandler._answer)  # type: ignore[method-assign]
    request_many = service.request_many

    def decide(requests: list) -> list:
        batches.append(len(requests))
        return request_many(requests)

    service.request_many = timed("decision", decide)  # type: ignore[method-assign]
    ops = api_http.Operations(
        api_routes.ApiContext(
            service=service,
            accounts=None,  # type: ignore[arg-type]
            mqtt_url=str,
            provision_kits=lambda _kits: None,
        )
    )

    async def serve() -> None:
        server = HTTPServer(
            api_http.make_app(identity, ops.invoke),
            xheaders=True,
            max_body_size=api_http.MAX_BODY_BYTES,
        )
        server.listen(port, "127.0.0.1", backlog=1024)
        PeriodicCallback(service.tick, 250).start()
        stop = asyncio.Event()
        t0 = [0.0]

        def on_command() -> None:
            command = conn.recv()
            if command == "start":
                spent.clear()
                batches.clear()
                t0[0] = time.thread_time()
            elif command == "stop":
                conn.send(("result", time.thread_time() - t0[0], dict(spent), list(batches)))
            else:
                stop.set()

        asyncio.get_running_loop().add_reader(conn.fileno(), on_command)
        conn.send(("ready", os.getpid()))
        await stop.wait()

    asyncio.run(serve())


@dataclass
class Breakdown:
    requests: int  # over all bursts
    total_ms: float  # the server thread's CPU over the bursts
    steps_ms: dict[str, float]
    batches: list[int]
    p99_ms: list[float]  # each burst's p99 against this one-process server


def service_breakdown(args: argparse.Namespace, root: Path, ctx: Any) -> Breakdown:
    """The same concurrent bursts against `breakdown_server` (3 of them, after a warm-up)."""
    groups = [make_users(f"b{r}", args.requests) for r in range(4)]
    admin = make_users("bench-admin", 1)[0]
    users = {admin.token: {"name": "bench-admin", "institution": "centre", "lab_admin": True}}
    users.update(
        {u.token: {"name": u.name, "institution": u.institution} for group in groups for u in group}
    )
    port = free_port()
    proc, conn = common.spawn(ctx, breakdown_server, port, str(root / "breakdown.sqlite"), users)
    try:
        Stack._expect(proc, conn, "breakdown server", 60)
        stack = _ApiOnly(port, admin)
        for kit_id, model in KITS:
            stack.ok("POST", "/api/kits", admin, {"id": kit_id, "model": model})
        kit_ids = [k for k, _ in KITS]
        total, steps, batches, p99 = 0.0, Counter(), [], []
        for r, group in enumerate(groups):
            requests = [
                http_request(
                    "POST", "/api/queue", port, u.token, {"kit": kit_ids[i % len(kit_ids)]}
                )
                for i, u in enumerate(group)
            ]
            conn.send("start")
            replies = fire(port, requests, len(requests))
            conn.send("stop")
            _, cpu, spent, sizes = Stack._expect(proc, conn, "breakdown server", 30)
            stack.reset_queue(group, replies)
            if r == 0:
                continue  # warm-up
            total += cpu
            steps.update(spent)
            batches += sizes
            p99.append(common.percentile(np.array([x.latency_s * 1000 for x in replies]), 99))
        n = args.requests * (len(groups) - 1)
        return Breakdown(n, total * 1000, {k: v * 1000 for k, v in steps.items()}, batches, p99)
    finally:
        Stack._end(proc, conn)


class _ApiOnly(Stack):
    """`Stack`'s REST helpers for a server with no broker, twins or observers."""

    def __init__(self, port: int, admin: User) -> None:  # not Stack's: nothing to start
        self.port = port
        self.admin = admin

    def wait_kits_free(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while any(
            k["session_state"] or k["queue_length"] for k in self.ok("GET", "/api/kits", self.admin)
        ):
            if time.monotonic() > deadline:
                raise TimeoutError("the breakdown server's kits did not become free")
            time.sleep(0.05)


STEP_NAMES = {
    "identity": "identity: the token's user (TokenIdentity)",
    "body": "body validation (pydantic, strict)",
    "decision": "queue decision: `KitSharing.request_many`, one transaction per batch",
    "answer": "answer: JSON and writing the response",
}


def breakdown_rows(b: Breakdown, c_all: QueueRun) -> list[list[str]]:
    per = b.requests or 1
    rows = [
        [
            f"**one process serving HTTP itself** ({per} requests in "
            f"{len(b.p99_ms)} bursts; p99 {', '.join(f'{x:.0f}' for x in b.p99_ms)} ms)",
            "",
            "",
        ]
    ]
    for step in STEPS:
        ms_ = b.steps_ms.get(step, 0.0)
        rows.append([STEP_NAMES[step], f"{ms_ / per:.3f} ms", f"{ms_ / b.total_ms:.0%}"])
    http = b.total_ms - sum(b.steps_ms.get(step, 0.0) for step in STEPS)
    rows.append(
        [
            "HTTP: accepting, reading, parsing, routing, closing (tornado, asyncio; the "
            "rest of the thread's time)",
            f"{http / per:.3f} ms",
            f"{http / b.total_ms:.0%}",
        ]
    )
    rows.append(["total, CPU per request", f"{b.total_ms / per:.3f} ms", "100%"])
    if b.batches:
        rows.append(
            [
                f"batches per burst: {len(b.batches) / len(b.p99_ms):.1f}, requests per "
                f"batch: mean {np.mean(b.batches):.0f}, max {max(b.batches)}",
                "",
                "",
            ]
        )
    front = c_all.service_cpu_s - c_all.decider_cpu_s
    rows.append(
        [
            f"**the service as run** (concurrent bursts above, {c_all.requests} requests):"
            " HTTP front-end processes",
            f"{front * 1000 / c_all.requests:.3f} ms",
            "",
        ]
    )
    bursts = max(len(c_all.by_index), 1)  # one row per burst
    rows.append(
        [
            f"the service process: decisions ({c_all.batches / bursts:.1f} batches per "
            "burst), ticks, MQTT, the front ends' channel",
            f"{c_all.decider_cpu_s * 1000 / c_all.requests:.3f} ms",
            "",
        ]
    )
    return rows


BREAKDOWN_HEADER = ["where a queue request's time goes", "CPU per request", "share"]


# ============================================================== phase 2: command round trip


@dataclass
class CommandBlock:
    label: str
    rtt_ms: list[float] = field(default_factory=list)
    out_ms: list[float] = field(default_factory=list)  # send -> the kit decides (ack ts)
    back_ms: list[float] = field(default_factory=list)  # the kit decides -> ack received
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    cpu: dict[str, float] = field(default_factory=dict)  # time-weighted over the parts
    delivered: int | None = None  # observer messages
    delivered_s: float = 0.0
    parts_p99: list[float] = field(default_factory=list)  # p99 of each measured part, in order

    def add(self, other: CommandBlock) -> None:
        total = self.seconds + other.seconds
        names = set(self.cpu) | set(other.cpu)
        self.cpu = (
            {
                n: (self.cpu.get(n, 0.0) * self.seconds + other.cpu.get(n, 0.0) * other.seconds)
                / total
                for n in names
            }
            if total
            else {}
        )
        self.rtt_ms += other.rtt_ms
        self.out_ms += other.out_ms
        self.back_ms += other.back_ms
        self.errors += other.errors
        self.seconds = total
        self.parts_p99.append(other.p(99))

    def p(self, q: float, which: str = "rtt") -> float:
        return common.percentile(np.array(getattr(self, f"{which}_ms")), q)

    @property
    def max_ms(self) -> float:
        return max(self.rtt_ms) if self.rtt_ms else float("nan")


def run_commands(
    kit: Any, n: int, label: str, gap_s: float, rng: random.Random, state: dict[str, str]
) -> CommandBlock:
    """`n` gate toggles, one after another, each waiting for its acknowledgement."""
    from labs.client import CommandError

    block = CommandBlock(label)
    t0 = time.monotonic()
    for _ in range(n):
        state["gate"] = "open" if state["gate"] == "closed" else "closed"
        sent = time.time()
        try:
            ack = kit.set("gate", state["gate"], timeout=2.0)
        except CommandError as err:
            block.errors.append(f"{type(err).__name__}: {err}")
            continue
        done = time.time()
        block.rtt_ms.append(ack.round_trip_s * 1000)
        if ack.ts is not None:
            block.out_ms.append((ack.ts - sent) * 1000)
            block.back_ms.append((done - ack.ts) * 1000)
        if gap_s:
            time.sleep(rng.uniform(0, gap_s))
    block.seconds = time.monotonic() - t0
    return block


def split(n: int, parts: int) -> list[int]:
    """n as `parts` near-equal whole numbers that add up to n."""
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def command_phase(
    stack: Stack, args: argparse.Namespace, holder: User
) -> tuple[CommandBlock, CommandBlock, CommandBlock | None]:
    from labs.client import LabService

    stack.stop_twins("others")
    progress(f"phase 2: {holder.name} queues for {TARGET} through the service")
    rng = random.Random(7)
    service = LabService(stack.url, holder.token)
    base = CommandBlock(f"baseline: {TARGET}'s twin only, no observers")
    loaded = CommandBlock(f"{args.observers} observers, {len(KITS)} twins at {args.rate:g} Hz")
    niced = CommandBlock(f"the same, observers at nice {NICE}") if args.nice_check else None
    rounds = args.cmd_rounds
    base_parts = split(args.commands, 2 * rounds)  # before and after each observed block
    loaded_parts = split(args.commands, rounds)

    def groups() -> dict[str, list[int]]:
        return {
            "broker": [stack.broker.process.pid],
            "service": [stack.service_pid],
            "target twin": [stack.twins["target"][2]],
            "other twins": [stack.twins["others"][2]] if "others" in stack.twins else [],
            "observers": [pid for _, _, pid in stack.observers],
            "holder": [os.getpid()],
        }

    def measured(block: CommandBlock, n: int, what: str) -> None:
        meter = common.CpuMeter(groups())
        part = run_commands(kit, n, block.label, args.gap, rng, gate)
        part.cpu = meter.stop()
        progress(
            f"  {what}: {n} commands, p50 {ms(part.p(50))}, p99 {ms(part.p(99))}, "
            f"max {ms(part.max_ms)}, errors {len(part.errors)}"
        )
        block.add(part)

    with service.session(
        TARGET,
        progress=lambda line: progress(f"  holder: {line}"),
        heartbeat_s=10.0,
        poll_s=0.2,
        wait_timeout=60,
    ) as kit:
        gate = {"gate": kit.actuators.get("gate", "closed")}
        run_commands(kit, args.warmup_commands, "warm-up", args.gap, rng, gate)
        for r in range(rounds):
            what = f"round {r + 1}/{rounds}"
            measured(base, base_parts[2 * r], f"{what}, baseline")
            progress(
                f"  {what}: starting the other {len(KITS) - 1} twins and "
                f"{args.observers} observers in {args.observer_procs} processes"
            )
            stack.start_twins("others", [k for k, _ in KITS if k != TARGET])
            for block, niceness in ((loaded, 0), (niced, NICE)):
                if block is None:
                    continue
                stack.start_observers(niceness)
                time.sleep(args.settle)
                run_commands(kit, args.warmup_commands, "warm-up", args.gap, rng, gate)
                stack.mark_observers()
                measured(block, loaded_parts[r], f"{what}, observers at nice {niceness}")
                got, seconds = stack.stop_observers()
                block.delivered = (block.delivered or 0) + got
                block.delivered_s += seconds
                progress(f"  observers received {got} messages in {seconds:.1f} s; stopped them")
            stack.stop_twins("others")
            time.sleep(args.settle)
            run_commands(kit, args.warmup_commands, "warm-up", args.gap, rng, gate)
            measured(base, base_parts[2 * r + 1], f"{what}, baseline")
    return base, loaded, niced


# ============================================================== report

TARGET_CHECK, SANITY = "target", "check"


def verdict(kind: str, ok: bool) -> str:
    if kind == TARGET_CHECK:
        return "PASS" if ok else "FAIL"
    return "ok" if ok else "NOT OK"


def verdict_lines(checks: list[tuple[str, str, bool]], markdown: bool = False) -> list[str]:
    if markdown:
        return [f"- **{verdict(kind, ok)}** {kind}: {name}" for kind, name, ok in checks]
    return [f"{verdict(kind, ok):<6}  {kind}: {name}" for kind, name, ok in checks]


def queue_tables(
    concurrent: list[QueueRun], sequential: list[QueueRun], cross: QueueRun | None
) -> tuple[list[list[str]], list[tuple[str, str, bool]], list[list[str]]]:
    c_all = QueueRun.pooled(concurrent, "concurrent, pooled")
    s_all = QueueRun.pooled(sequential, "sequential, pooled")
    rows = [r.row() for r in concurrent] + [c_all.row()]
    rows += [r.row() for r in sequential] + [s_all.row()]
    if cross is not None:
        rows.append(cross.row())
    ratios = [
        [
            "concurrent / sequential (pooled)",
            ratio(c_all.p(50), s_all.p(50)),
            ratio(c_all.p(95), s_all.p(95)),
            ratio(c_all.p(99), s_all.p(99)),
            ratio(c_all.max_ms, s_all.max_ms),
            ratio(c_all.mean_ms, s_all.mean_ms),
        ]
    ]
    if cross is not None:
        ratios.append(
            [
                "tornado client / socket client (concurrent)",
                ratio(cross.p(50), c_all.p(50)),
                ratio(cross.p(95), c_all.p(95)),
                ratio(cross.p(99), c_all.p(99)),
                ratio(cross.max_ms, c_all.max_ms),
                ratio(cross.mean_ms, c_all.mean_ms),
            ]
        )
    n, k = s_all.requests // len(sequential), len(KITS)
    early, late = s_all.mean_of(k, k + 10), s_all.mean_of(n - 10, n)
    ratios.append(
        [
            f"sequential: requests {n - 10}-{n - 1} / requests {k}-{k + 9} (mean; queue "
            f"{n - 10 - k}-{n - 1 - k} vs 0-9 long)",
            "",
            "",
            "",
            "",
            f"{ratio(late, early)} ({late:.1f} vs {early:.1f} ms)",
        ]
    )
    rounds = ", ".join(f"{r.p(99):.0f}" for r in concurrent)
    checks = [
        (
            TARGET_CHECK,
            f"queue burst p99 ≤ {QUEUE_P99_TARGET_MS:g} ms ({c_all.requests} "
            f"concurrent requests pooled: p99 {c_all.p(99):.1f} ms; per round: {rounds} ms)",
            c_all.p(99) <= QUEUE_P99_TARGET_MS and not c_all.errors,
        ),
        (
            TARGET_CHECK,
            f"every round's p99 ≤ {QUEUE_P99_TARGET_MS:g} ms",
            all(r.p(99) <= QUEUE_P99_TARGET_MS for r in concurrent),
        ),
        (
            SANITY,
            "no failed request (concurrent and sequential)",
            not c_all.errors and not s_all.errors,
        ),
        (
            SANITY,
            f"each burst granted exactly {len(KITS)} kits and queued the rest",
            all(
                r.granted == len(KITS) and r.waiting == r.requests - len(KITS)
                for r in concurrent + sequential
            ),
        ),
    ]
    return rows, checks, ratios


RATIO_HEADER = ["", "p50", "p95", "p99", "max", "mean"]


def command_tables(
    base: CommandBlock, loaded: CommandBlock, niced: CommandBlock | None, args: argparse.Namespace
) -> tuple[list[str], list[list[str]], list[tuple[str, str, bool]]]:
    blocks = [base, loaded] + ([niced] if niced is not None else [])
    header = ["", "baseline", "with observers"]
    header += [f"observers at nice {NICE} (diagnostic)"] if niced is not None else []
    header += ["observers/baseline"]
    header += [f"nice {NICE}/baseline"] if niced is not None else []

    def row(name: str, f: Any) -> list[str]:
        values = [f(b) for b in blocks]
        return [name, *map(ms, values), *(ratio(v, values[0]) for v in values[1:])]

    def text(name: str, f: Any) -> list[str]:
        return [name, *(f(b) for b in blocks), *([""] * (len(blocks) - 1))]

    expected = args.observers * len(KITS) * args.rate
    names = ["broker", "service", "target twin", "other twins", "observers", "holder", "others"]

    def delivered(b: CommandBlock) -> str:
        if b.delivered is None or not b.delivered_s:
            return "-"
        return f"{b.delivered / b.delivered_s:.0f}/s of {expected:.0f}/s"

    rows = [
        text("commands (errors)", lambda b: f"{len(b.rtt_ms)} ({len(b.errors)})"),
        row("p50", lambda b: b.p(50)),
        row("p95", lambda b: b.p(95)),
        row("p99", lambda b: b.p(99)),
        row("max", lambda b: b.max_ms),
        row("mean", lambda b: float(np.mean(b.rtt_ms)) if b.rtt_ms else float("nan")),
        text(
            "p99 of each part, in order",
            lambda b: " / ".join(f"{x:.1f}" for x in b.parts_p99) + " ms",
        ),
        row("holder -> kit, p50 (ack ts - send)", lambda b: b.p(50, "out")),
        row("holder -> kit, p99", lambda b: b.p(99, "out")),
        row("kit -> holder, p50 (receive - ack ts)", lambda b: b.p(50, "back")),
        row("kit -> holder, p99", lambda b: b.p(99, "back")),
        text(
            "CPU, % of a core: " + " / ".join(names),
            lambda b: " / ".join(f"{b.cpu.get(n, 0):.0f}" for n in names),
        ),
        text("observer deliveries", delivered),
    ]
    got = loaded.delivered / loaded.delivered_s if loaded.delivered_s else float("nan")
    checks = [
        (
            TARGET_CHECK,
            f"holder's command p99 ≤ {COMMAND_P99_TARGET_MS:g} ms with "
            f"{args.observers} observers (p99 {loaded.p(99):.1f} ms)",
            loaded.p(99) <= COMMAND_P99_TARGET_MS and not loaded.errors,
        ),
        (
            SANITY,
            f"baseline p99 ≤ {COMMAND_P99_TARGET_MS:g} ms too (p99 {base.p(99):.1f} ms)",
            base.p(99) <= COMMAND_P99_TARGET_MS and not base.errors,
        ),
        (SANITY, "every command acknowledged as applied", not any(b.errors for b in blocks)),
        (
            SANITY,
            "observers took ≥ 95 % of the telemetry they subscribed to as it came (less: "
            "they fell behind and the broker queued for them)",
            got >= 0.95 * expected,
        ),
    ]
    if niced is not None:
        checks.append(
            (
                SANITY,
                f"diagnostic: p99 ≤ {COMMAND_P99_TARGET_MS:g} ms with the "
                f"observers at nice {NICE} (p99 {niced.p(99):.1f} ms)",
                niced.p(99) <= COMMAND_P99_TARGET_MS and not niced.errors,
            )
        )
    return header, rows, checks


def profile_text(path: Path, top: int = 25) -> str:
    out = io.StringIO()
    stats = pstats.Stats(str(path), stream=out)
    stats.strip_dirs().sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    # Where the service process's time goes, one level down each time (the HTTP front ends
    # are other processes: the breakdown table shows their share).
    for name in (
        r"api_routes.py:\d+\(_decide\)",
        r"service.py:\d+\(request_many\)",
        r"service.py:\d+\(_estimates\)",
        r"service.py:\d+\(_assign\)",
        r"frontend.py:\d+\(reply\)",
        r"service.py:\d+\(tick\)",
    ):
        stats.sort_stats("cumulative").print_callees(name)
    return out.getvalue()


# ============================================================== main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 1 round, 100 commands, 20 observers in 2 processes, "
        "no tornado cross-check",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        metavar="FILE",
        help=f"append/replace the section {SECTION!r} in FILE",
    )
    parser.add_argument(
        "--profile",
        nargs="?",
        const="",
        default=None,
        metavar="FILE",
        help="run the service under cProfile and print its hot spots (and "
        "keep the raw stats in FILE, if given)",
    )
    parser.add_argument("--requests", type=int, default=150, help="users per queue burst")
    parser.add_argument(
        "--http-processes",
        type=int,
        metavar="N",
        help="the service's HTTP front-end processes (default: the service's "
        "default, 2; 0: it serves HTTP itself)",
    )
    parser.add_argument("--rounds", type=int, default=None, help="bursts (default 3, quick 1)")
    parser.add_argument(
        "--no-tornado",
        action="store_true",
        help="skip the cross-check burst from tornado's AsyncHTTPClient",
    )
    parser.add_argument(
        "--commands", type=int, default=None, help="commands per condition (default 500, quick 100)"
    )
    parser.add_argument("--warmup-commands", type=int, default=20)
    parser.add_argument(
        "--cmd-rounds",
        type=int,
        default=None,
        help="split each condition into this many interleaved parts (default 2, quick 1)",
    )
    parser.add_argument("--observers", type=int, default=None, help="default 100, quick 20")
    parser.add_argument("--observer-procs", type=int, default=None, help="default 4, quick 2")
    parser.add_argument(
        "--qos", type=int, choices=[0, 1], default=1, help="QoS of the observers' subscriptions"
    )
    parser.add_argument("--rate", type=float, default=20.0, help="telemetry per kit, Hz")
    parser.add_argument(
        "--gap", type=float, default=0.02, help="random pause of 0..GAP s between two commands"
    )
    parser.add_argument(
        "--no-nice-check",
        dest="nice_check",
        action="store_false",
        help=f"skip the diagnostic block with the observers at nice {NICE}",
    )
    parser.add_argument(
        "--settle", type=float, default=2.0, help="pause after starting/stopping the observers, s"
    )
    args = parser.parse_args(argv)
    args.rounds = args.rounds or (1 if args.quick else 3)
    args.commands = args.commands or (100 if args.quick else 500)
    args.cmd_rounds = args.cmd_rounds or (1 if args.quick else 2)
    args.observers = args.observers or (20 if args.quick else 100)
    args.observer_procs = args.observer_procs or (2 if args.quick else 4)
    args.no_tornado = args.no_tornado or args.quick
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    command = shlex.join(
        [".venv/bin/python", "bench/sharing.py", *(sys.argv[1:] if argv is None else argv)]
    )
    groups = {"wc": 30, "ws": 30, "t1": args.requests}
    for r in range(1, args.rounds + 1):
        groups[f"c{r}"] = groups[f"s{r}"] = args.requests
    users = {g: make_users(g, n) for g, n in groups.items()}
    admin, holder = make_users("bench-admin", 1)[0], make_users("bench-holder", 1)[0]
    admin.name, holder.name = "bench-admin", "bench-holder"
    everyone = [admin, holder, *(u for group in users.values() for u in group)]

    root = Path(tempfile.mkdtemp(prefix="smartlab-bench-sharing-"))
    root.chmod(0o711)  # the broker drops to the `mosquitto` account; it must reach its folder
    started = datetime.now(UTC)
    load_before = os.getloadavg()  # the machine is shared: say how busy it was

    def interrupted(_sig: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupted)
    stack = Stack(args, root, everyone)
    profile = None
    try:
        progress(
            f"starting broker, lab service and {len(KITS)} twins at {args.rate:g} Hz "
            f"({len(everyone)} users configured)"
            + (" - service under cProfile" if args.profile is not None else "")
        )
        stack.start()
        progress(f"broker on port {stack.broker.port}, service on {stack.url}")
        concurrent, sequential, cross = queue_phase(stack, args, users)
        progress(
            "phase 1b: the same bursts against one process serving HTTP itself, each step timed"
        )
        breakdown = service_breakdown(args, root, stack.ctx)
        base, loaded, niced = command_phase(stack, args, holder)
    except KeyboardInterrupt:
        progress("interrupted")
        return 130
    except Exception:
        progress(f"failed; the service's log ends with:\n{stack.service_output()}")
        raise
    finally:
        stack.stop()
        if args.profile is not None and stack.profile_path.exists():
            profile = profile_text(stack.profile_path)
            if args.profile:
                shutil.copyfile(stack.profile_path, args.profile)
        shutil.rmtree(root, ignore_errors=True)

    load_after = os.getloadavg()
    load = (
        f"load average (1, 5, 15 min) at the start {', '.join(f'{x:.2f}' for x in load_before)}"
        f", at the end {', '.join(f'{x:.2f}' for x in load_after)} (2 cores)"
    )
    queue_rows, queue_checks, ratios = queue_tables(concurrent, sequential, cross)
    cmd_header, cmd_rows, cmd_checks = command_tables(base, loaded, niced, args)
    c_all = QueueRun.pooled(concurrent, "")
    parts = breakdown_rows(breakdown, c_all)
    checks = queue_checks + cmd_checks
    print()
    print(load)
    print(f"1. queue burst: {args.requests} users, {len(KITS)} kits; {WEBLAB}")
    print(common.text_table(queue_rows, QUEUE_HEADER))
    print()
    print(common.text_table(ratios, RATIO_HEADER))
    print()
    print(common.text_table(parts, BREAKDOWN_HEADER))
    print()
    print(f"2. holder's command round trip ({TARGET}, gate toggles)")
    print(common.text_table(cmd_rows, cmd_header))
    print()
    print("\n".join(verdict_lines(checks)))
    if profile:
        print("\nservice profile (event loop thread):\n" + profile)
    if args.markdown:
        spread = max(r.send_spread_s for r in concurrent) * 1000
        notes = [
            f"Queue burst: {args.requests} distinct users per burst, {args.requests // len(KITS)}"
            f' per kit, `POST /api/queue {{"kit": ...}}` each on a new connection (as '
            "`labs.client.LabService` does), all connects started in one tight loop of one "
            f"non-blocking socket client (at most {spread:.1f} ms between the first and the "
            "last); latency = connect to the last byte of the answer. Fresh users every "
            "burst; before each burst the queue is empty and the 5 kits are free (the "
            "previous burst's entries leave the queue and its sessions are ended); "
            "concurrent and sequential bursts alternate in order round by round. The service "
            "is `smartlab lab serve` with its defaults ("
            + (
                "2 HTTP front-end processes"
                if args.http_processes is None
                else f"but {args.http_processes} HTTP front-end processes"
            )
            + f", SQLite in the state folder, 0.25 s tick); the {len(KITS)} twins publish at "
            f"{args.rate:g} Hz meanwhile.",
            f"Reference: {WEBLAB}.",
            "Breakdown: the same concurrent bursts (a warm-up, then "
            f"{len(breakdown.p99_ms)}) against the REST API served by one process alone (as "
            "`c.LabServiceApp.http_processes = 0`; fresh SQLite database, broker rights and kit "
            "gateway stubbed) with a thread-CPU timer around each step; HTTP is the rest of "
            "that thread's CPU time. One thread does all of it one request after another, so a "
            "burst's last answer comes after about requests x CPU per request: hence the HTTP "
            "front-end processes of the service as run, which spread the HTTP work over the "
            "cores while the service process alone decides (batches of queue requests, one "
            "transaction each, every answer sent as soon as its batch commits).",
            "Sequential: the same burst (other fresh users, same starting state) one request "
            "after another. Service CPU per request = the CPU time of the service process and "
            "its front ends during the burst / requests (ticks included).",
            "Python's garbage collector: a full collection in the service or a front end used "
            "to walk every start-up object (33-76 ms measured with `gc.callbacks`), and when it "
            "fell inside a burst that burst's p99 rose to 105-145 ms. Both processes now "
            "`gc.freeze()` their start-up objects once serving; bursts since: 61-81 ms.",
            *(
                [
                    "Cross-check: one burst from tornado's `AsyncHTTPClient(max_clients="
                    f"{args.requests})`, every request released by one asyncio.Event: the same "
                    "order of magnitude, so the figures are not an artefact of the load generator "
                    "(one burst only: its ratio to the other bursts moves with the machine's "
                    "load)."
                ]
                if cross
                else []
            ),
            f"Command round trip: `LabService.session({TARGET!r})` (queue -> granted -> "
            "`/api/me/mqtt` control URL), then `kit.set('gate', open/closed)` one after "
            f"another with a random 0-{args.gap * 1000:.0f} ms pause, timed by "
            "`Ack.round_trip_s`; holder -> kit / kit -> holder split by the ack's `ts` (same "
            f"clock). {args.commands} commands per condition in {args.cmd_rounds} round(s); "
            "in each round the baseline runs before and after the observed block(s) (twins "
            "and observers started for them and stopped after). Observers: paho v5, QoS "
            f"{args.qos} on `{OBSERVE_FILTER}`, one select loop per process, "
            f"{args.observer_procs} processes; twins: target kit in one process, the other "
            "four in another. 'others' CPU = the rest of the machine meanwhile.",
        ]
        if niced is not None:
            notes.append(
                f"Diagnostic block: the same {args.observers} observers started again "
                f"at nice {NICE}, so that they only get the CPU the broker, the kits "
                "and the holder leave, as if they ran on the students' own machines; "
                "the broker still has to deliver them every message."
            )
        if args.profile is not None:
            notes.append("This run had the service under cProfile (slower than normal).")
        body = [
            f"Measured {started:%Y-%m-%d %H:%M} UTC on {common.machine()}; {load}; with",
            "",
            f"    {command}",
            "",
            f"**1. {args.requests} simultaneous queue requests** ({len(KITS)} kits):",
            "",
            common.markdown_table(queue_rows, QUEUE_HEADER),
            "",
            common.markdown_table(ratios, RATIO_HEADER),
            "",
            *verdict_lines(queue_checks, markdown=True),
            "",
            common.markdown_table(parts, BREAKDOWN_HEADER),
            "",
            f"**2. Holder's command round trip with {args.observers} observers** "
            f"({TARGET}, client -> broker -> kit -> acknowledgement):",
            "",
            common.markdown_table(cmd_rows, cmd_header),
            "",
            *verdict_lines(cmd_checks, markdown=True),
            "",
            *[f"- {note}" for note in notes],
        ]
        common.write_markdown(args.markdown, TITLE, "\n".join(body), progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
