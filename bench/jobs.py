"""Experiment jobs back to back: how much of the kits' time controllers use, and the gap between
one job's controller and the next on a kit.

N jobs of D seconds are queued at once (one per student, for the model, so the service places
them on any of the K twin kits) on the real stack: Mosquitto with dynamic security and its Unix
socket listener, the lab service in its own process with its production policy (tick 0.25 s),
the real runner (`hub_config.job_runner.JobRunner`, processes as root, the grading sandbox).
Each job's controller sends its kit a command on every telemetry sample, tagged with its job, so
the kit's acknowledgements say which controller was running when:

- kit side (the figures against the targets): a controller ran from its first acknowledged
  command to its last one (seen by an admin subscriber on every kit's `$ack` topics);
  utilisation = the sum of those spans / (K x the window from the submissions to the last
  controller's end); a gap = the next controller's first command - the previous one's last
  command on the kit (runner noticing the end, finish, safe state, handover, claim, sandbox
  start, the first sample). Resolution: one telemetry sample (1/rate).
- service side: the lab service's records, the job's `started_at` (session granted) to
  `ended_at` (finish reported), the same arithmetic.
- breakdown of each gap: last command -> finish recorded -> next job granted (safe state and
  handover) -> its first command (claim, sandbox start, connect, first sample).

Baseline, in the same run: the same K kits of the model under interactive sessions, from
`bench/capacity.py`'s virtual-clock model of one course's week (`course_week`: the course's
booked class, walk-ins, batch runs) on the service's own scheduler; its utilisation over the
weekday teaching hours and over the week.

    .venv/bin/python -m bench.jobs --jobs 40 --seconds 30 --kits 5 [--markdown docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import itertools
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench import capacity, common
from hardware_kits import protocol as P
from hardware_kits.broker import ADMIN, Broker
from hardware_kits.descriptor import load_models
from hardware_kits.kit_runner import KitRunner
from hardware_kits.mqtt import make_client
from hardware_kits.twins.base import twin_class
from site_config.runtime import broker_socket_path, free_port
from tests.stack import REPO, ServiceProcess, call_api, stop, token, with_tokens

TITLE = "Experiment jobs back to back"
MODEL = "smart-parking"
TAG = "job-"  # the display text a bench controller sends: its tag, so acks name the job
SOURCE = "def tagged(readings, t, tag):\n    return {'display': tag}\n"
FINAL = ("finished", "failed", "cancelled")
TARGET_UTILISATION = 0.90
TARGET_GAP_P99_S = 2.0
# One runner in its own process, as root: the module's loop (claim, run, finish, score), with
# its claim interval optionally overridden to measure it, and as many concurrent runs (`slots`)
# as asked where the runner has them (a runner without them runs one job at a time).
RUNNER_SCRIPT = """
import inspect, logging, signal, sys
import hub_config.job_runner as jr
from labs.client.rest_service import LabService
url, sock, host, port, idle, slots = sys.argv[1:7]
if idle:
    jr.IDLE_SECONDS = float(idle)
logging.basicConfig(level=logging.INFO, format="%(asctime)s runner %(message)s")
extra = {"slots": int(slots)} if "slots" in inspect.signature(jr.JobRunner).parameters else {}
runner = jr.JobRunner(LabService(url), sock, host, int(port), **extra)
signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
runner.serve()
"""


# ============================================================== the arithmetic


@dataclass(frozen=True)
class Run:
    """One controller's time on a kit (seconds, one clock)."""

    kit: str
    job: str
    start: float
    end: float


def utilisation(runs: Iterable[Run], kits: int, window: tuple[float, float]) -> float:
    """Share of `kits` kits' time within `window` that a controller was running."""
    lo, hi = window
    busy = sum(max(0.0, min(r.end, hi) - max(r.start, lo)) for r in runs)
    return busy / (kits * (hi - lo)) if hi > lo and kits else float("nan")


def consecutive(runs: Iterable[Run]) -> list[tuple[Run, Run]]:
    """Each kit's runs in order, paired with the next one on the same kit."""
    by_kit: dict[str, list[Run]] = defaultdict(list)
    for r in runs:
        by_kit[r.kit].append(r)
    pairs = []
    for kit_runs in by_kit.values():
        kit_runs.sort(key=lambda r: r.start)
        pairs.extend(itertools.pairwise(kit_runs))
    return pairs


def gaps(runs: Iterable[Run]) -> list[float]:
    """From one controller's end to the next one's start on the same kit."""
    return [b.start - a.end for a, b in consecutive(runs)]


def runs_from_acks(acks: Iterable[tuple[float, str, str]]) -> list[Run]:
    """Runs from (time, kit, tag) of applied commands: a job ran from its first to its last."""
    spans: dict[tuple[str, str], list[float]] = {}
    for t, kit, tag in acks:
        span = spans.setdefault((kit, tag), [t, t])
        span[0], span[1] = min(span[0], t), max(span[1], t)
    return [Run(kit, tag, lo, hi) for (kit, tag), (lo, hi) in spans.items()]


def spread(values: list[float]) -> tuple[float, float, float]:
    """p50, p99, max."""
    if not values:
        return float("nan"), float("nan"), float("nan")
    return common.percentile(values, 50), common.percentile(values, 99), max(values)


# ============================================================== the stack


class AckLog:
    """Every kit's applied acknowledgements of a tagged command, as (receive time, kit, tag)."""

    def __init__(self, broker: Broker) -> None:
        self.acks: list[tuple[float, str, str]] = []
        self.lock = threading.Lock()
        self.client = make_client("bench-jobs-acks", broker.credentials(ADMIN))
        self.client.on_message = self._message
        self.client.on_connect = lambda c, *_: c.subscribe(P.all_kits("$ack/#"), qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def _message(self, _client: Any, _userdata: Any, msg: Any) -> None:
        now = time.time()
        kit, _rest = P.split_topic(msg.topic)
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            ack = json.loads(msg.payload)
            value = ack.get("value")
            if ack.get("status") == P.APPLIED and isinstance(value, str) and value.startswith(TAG):
                with self.lock:
                    self.acks.append((now, kit or "", value))

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def start_runners(
    count: int, slots: int, url: str, socket_path: str, port: int, idle: str, log: Path
) -> list[subprocess.Popen]:
    env = {**os.environ, "SMARTLAB_TOKEN": token("runner"), "PYTHONUNBUFFERED": "1"}
    procs = []
    with log.open("a") as out:
        for _ in range(count):
            procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-c",
                        RUNNER_SCRIPT,
                        url,
                        socket_path,
                        "127.0.0.1",
                        str(port),
                        idle,
                        str(slots),
                    ],
                    cwd=REPO,
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    return procs


def runner_has_slots() -> bool:
    """Whether the runner runs several jobs at once (its `slots`)."""
    from hub_config.job_runner import JobRunner

    return "slots" in inspect.signature(JobRunner).parameters


def idle_seconds() -> float:
    """The runner's own interval between claims when idle."""
    from hub_config.job_runner import IDLE_SECONDS

    return IDLE_SECONDS


def _time(iso: str | None) -> float | None:
    return datetime.fromisoformat(iso).timestamp() if iso else None


@dataclass
class Measured:
    t0: float
    views: list[dict[str, Any]]
    acks: list[tuple[float, str, str]]
    wall_s: float


def measure(args: argparse.Namespace, progress: Any) -> Measured:
    kit_ids = [f"jobs-park-{i}" for i in range(args.kits)]
    students = [f"student-{i}" for i in range(args.jobs)]
    users = {
        "admin": {"name": "lab-admin", "institution": "centre", "lab_admin": True},
        "runner": {"name": "jobs-runner", "institution": "centre", "job_runner": True},
        **{s: {"name": s, "institution": f"univ-{i % 3}"} for i, s in enumerate(students)},
    }
    models = load_models()
    with tempfile.TemporaryDirectory(prefix="bench-jobs-") as tmp:
        root = Path(tmp)
        os.chmod(
            root, 0o711
        )  # the broker and the sandbox's pool account reaches the socket below it
        socket_path = broker_socket_path(root)
        with Broker(root / "broker", port=free_port(), socket_path=socket_path) as broker:
            service = ServiceProcess(broker, root, with_tokens(users), "lab-jobs", settings="")
            service.start()
            twins: list[KitRunner] = []
            runners: list[subprocess.Popen] = []
            acks = AckLog(broker)

            def api(method: str, path: str, who: str, body: Any = None) -> Any:
                status, answer = call_api(service.port, method, path, token(who), body)
                if not 200 <= status < 300:
                    raise RuntimeError(f"{method} {path} as {who}: {status} {answer}")
                return answer

            try:
                for kit_id in kit_ids:
                    api("POST", "/api/kits", "admin", {"id": kit_id, "model": MODEL})
                    twin = twin_class(MODEL)(models[MODEL], seed=len(twins))
                    address = broker.address(f"kit-{kit_id}")
                    twins.append(KitRunner(kit_id, twin, address, rate_hz=args.rate).start())
                common.progress_printer("jobs")(f"{args.kits} twins started")
                deadline = time.monotonic() + 20
                while not all(k["online"] for k in api("GET", "/api/kits", "admin")):
                    if time.monotonic() > deadline:
                        raise RuntimeError("the twins did not come online")
                    time.sleep(0.2)
                runners = start_runners(
                    args.runners,
                    args.slots or args.kits,
                    service.url,
                    str(socket_path),
                    broker.port,
                    "" if args.claim_interval is None else str(args.claim_interval),
                    service.dir / "runner.log",
                )
                t0 = time.time()
                for student in students:
                    body = {
                        "model": MODEL,
                        "duration_s": args.seconds,
                        "inputs": {"tag": f"{TAG}{student}"},
                        "controller": {"source": SOURCE, "entry": "tagged"},
                    }
                    api("POST", "/api/jobs", student, body)
                progress(f"{args.jobs} jobs queued; waiting for them to end")
                limit = time.monotonic() + args.jobs * (args.seconds + 30) / args.kits + 120
                while True:
                    views = api("GET", "/api/jobs?all=1", "admin")
                    states = Counter(v["state"] for v in views)
                    if all(v["state"] in FINAL for v in views):
                        break
                    if time.monotonic() > limit:
                        progress(f"timed out: {dict(states)}")
                        break
                    progress(f"jobs: {dict(states)}")
                    time.sleep(10)
                wall = time.time() - t0
                time.sleep(1)  # the last acknowledgements arrive
                with acks.lock:
                    seen = list(acks.acks)
                return Measured(t0, views, seen, wall)
            finally:
                acks.close()
                for proc in runners:
                    stop(proc)
                for twin in twins:
                    twin.stop()
                service.stop()


# ============================================================== report


def service_runs(views: list[dict[str, Any]]) -> list[Run]:
    runs = []
    for v in views:
        start, end = _time(v.get("started_at")), _time(v.get("ended_at"))
        if start is not None and end is not None and v.get("kit"):
            runs.append(Run(v["kit"], f"{TAG}{v['owner']}", start, end))
    return runs


def breakdown(kit_runs: list[Run], views: list[dict[str, Any]]) -> dict[str, list[float]]:
    """Each kit-side gap cut at the service's records: finish recorded, next job granted."""
    by_tag = {f"{TAG}{v['owner']}": v for v in views}
    parts: dict[str, list[float]] = defaultdict(list)
    for a, b in consecutive(kit_runs):
        finished = _time(by_tag.get(a.job, {}).get("ended_at"))
        granted = _time(by_tag.get(b.job, {}).get("started_at"))
        if finished is None or granted is None:
            continue
        parts["last command -> finish recorded"].append(finished - a.end)
        parts["finish -> next job granted (safe state, handover)"].append(granted - finished)
        parts["granted -> first command (claim, sandbox, first sample)"].append(b.start - granted)
    return parts


def report(args: argparse.Namespace, m: Measured, progress: Any) -> tuple[str, str]:
    kit_runs = runs_from_acks(m.acks)
    svc_runs = service_runs(m.views)
    ends = [r.end for r in kit_runs] or [m.t0]
    window = (m.t0, max(ends))
    svc_window = (m.t0, max([r.end for r in svc_runs] or [m.t0]))
    kit_util = utilisation(kit_runs, args.kits, window)
    svc_util = utilisation(svc_runs, args.kits, svc_window)
    kit_gap = spread(gaps(kit_runs))
    svc_gap = spread(gaps(svc_runs))
    outcomes = Counter(v.get("outcome") or v["state"] for v in m.views)
    for v in [v for v in m.views if v.get("outcome") != "completed"][:3]:
        progress(f"job of {v['owner']}: {v['state']} {v.get('outcome')}: {v.get('detail')}")
    mean_run = sum(r.end - r.start for r in kit_runs) / max(len(kit_runs), 1)

    progress(f"baseline: the capacity model, one course of {args.students} on {args.kits} kits")
    term = capacity.course_week(MODEL, args.students, args.kits)
    outcome = capacity.simulate(term)
    base_teach = capacity.utilisation(outcome, term, teaching_hours=True)[MODEL]
    base_week = capacity.utilisation(outcome, term)[MODEL]

    def ok(passed: bool) -> str:
        return "PASS" if passed else "FAIL"

    rows = [
        [
            "utilisation, kit side (first -> last command)",
            f"{100 * kit_util:.1f} %",
            ">= 90 %",
            ok(kit_util >= TARGET_UTILISATION),
        ],
        ["utilisation, service records (granted -> finished)", f"{100 * svc_util:.1f} %", "", ""],
        [
            "gap, kit side, p50 / p99 / max",
            "{:.2f} / {:.2f} / {:.2f} s".format(*kit_gap),
            "p99 <= 2 s",
            ok(kit_gap[1] <= TARGET_GAP_P99_S),
        ],
        [
            "gap, service records, p50 / p99 / max",
            "{:.2f} / {:.2f} / {:.2f} s".format(*svc_gap),
            "",
            "",
        ],
    ]
    for name, values in breakdown(kit_runs, m.views).items():
        rows.append([f"  {name}, p50 / p99", "{:.2f} / {:.2f} s".format(*spread(values)), "", ""])
    rows += [
        [
            f"baseline: interactive sessions (capacity model, {args.students} students), "
            "teaching hours / week",
            f"{100 * base_teach:.1f} % / {100 * base_week:.1f} %",
            "",
            "",
        ],
        [
            "jobs utilisation / baseline teaching hours",
            f"{kit_util / base_teach:.2f}x" if base_teach else "-",
            "",
            "",
        ],
    ]
    header = ["figure", "value", "target", ""]
    slots = f"{args.slots or args.kits} slots" if runner_has_slots() else "one run at a time each"
    claim = f"{args.claim_interval} s" if args.claim_interval is not None else f"{idle_seconds()} s"
    setting = (
        f"{args.jobs} jobs x {args.seconds} s on {args.kits} twin kits ({MODEL}, {args.rate} Hz "
        f"telemetry, a command per sample), {args.runners} runner process(es) ({slots}), "
        "claim interval "
        f"{claim}; {len(kit_runs)} controllers seen on the kits, mean run {mean_run:.1f} s; "
        f"outcomes {dict(outcomes)}; wall {m.wall_s:.0f} s"
    )
    text = f"{setting}\n\n{common.text_table(rows, header)}"
    body = (
        f"`python -m bench.jobs {' '.join(sys.argv[1:]) or '(defaults)'}` on {common.machine()}, "
        f"{time.strftime('%Y-%m-%d')}.\n\n{setting}.\n\n{common.markdown_table(rows, header)}\n\n"
        "Kit side: from the kits' acknowledgements of each controller's tagged commands (the "
        "first and the last), so a controller's time includes nothing of the platform's; the "
        "resolution is one telemetry sample. Service records: the job's session granted to its "
        "finish. Baseline: `bench/capacity.py`'s virtual-clock model of one course's week on "
        "the same number of kits (`course_week`), interactive holds and the course's booked "
        "class on the service's own scheduler.\n"
    )
    return text, body


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--jobs", type=int, default=200, help="jobs queued at once (200)")
    parser.add_argument("--seconds", type=int, default=30, help="each job's duration (30)")
    parser.add_argument("--kits", type=int, default=5, help="twin kits of the model (5)")
    parser.add_argument("--rate", type=float, default=2.0, help="the twins' telemetry, Hz (2)")
    parser.add_argument("--runners", type=int, default=1, help="runner processes (1)")
    parser.add_argument(
        "--slots", type=int, default=0, help="concurrent runs per runner (default: the kits)"
    )
    parser.add_argument(
        "--claim-interval",
        type=float,
        default=None,
        help="the runner's seconds between claims when idle (default: the runner's own)",
    )
    parser.add_argument("--students", type=int, default=40, help="the baseline course's size")
    parser.add_argument("--markdown", type=Path, help="write the section into this file")
    args = parser.parse_args(argv)
    progress = common.progress_printer("jobs")
    if os.geteuid() != 0:
        print("the controller sandbox needs root: run this benchmark as root", file=sys.stderr)
        return 0
    measured = measure(args, progress)
    text, body = report(args, measured, progress)
    print(text)
    if args.markdown:
        common.write_markdown(args.markdown, TITLE, body, progress)
    return 0


if __name__ == "__main__":
    sys.exit(main())
