"""`smartlab jobs run`: the runner of controller jobs (root, beside the lab service).

A loop over the lab service's job API (the runner's identity has `job_runner: true`): claim a
job whose session was granted, heartbeat its session while its controller runs in the grading
sandbox (grader/controller_run.py), finish it with the outcome (the service then revokes the
job's broker account, commands the safe state and hands the kit over), read the job's recorded
run back from the service (its own records: a controller cannot forge them) and score it with
the assignment's scoring function, if the course has one.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import threading
import time
from typing import Any

import numpy as np

from coursework.controllers import score_job
from grader.controller_run import (
    ControllerLimits,
    ControllerOutcome,
    ControllerRun,
    ControllerRunError,
    MqttAccess,
    run_controller,
)
from hub_config import job_confirm
from labs.client.errors import LabError
from labs.client.rest_service import SERVICE_URL_ENV, LabService
from site_config.paths import default_state_dir
from site_config.runtime import BROKER_SOCKET_ENV, Runtime, broker_socket_path

log = logging.getLogger("smartlab.jobs")

HEARTBEAT_SECONDS = 10.0
IDLE_SECONDS = 0.25  # between claims when idle: a kit handed over waits for this (bench.jobs)
START_SECONDS = 15.0  # the wall time a run gets beyond its duration (start-up, leaving)
Trace = dict[str, tuple[np.ndarray, np.ndarray]]
PLATFORM_ERROR = "platform-error"  # the sandbox could not start: nothing of the student ran
RECORD_SETTLE_SECONDS, RECORD_POLL_SECONDS = 10.0, 1.0
STOP_WAIT_SECONDS = 5.0  # a run that ends this soon after a stop still reports its outcome


def limits_for(duration_s: float) -> ControllerLimits:
    return ControllerLimits(
        cpu_seconds=duration_s + 10.0,
        wall_seconds=duration_s + START_SECONDS,
    )


def trace_of(telemetry: list[dict[str, Any]]) -> Trace:
    """sensor -> (t, v) float arrays from a replay's telemetry rows; t from the first row."""
    if not telemetry:
        return {}
    t = np.array([float(row["ts"]) for row in telemetry])
    t -= t[0]
    sensors = sorted({name for row in telemetry for name in row.get("values", {})})
    trace: Trace = {}
    for name in sensors:
        values = [row["values"].get(name) for row in telemetry]
        trace[name] = (t, np.array([_number(v) for v in values], dtype=np.float64))
    return trace


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    return float(value) if isinstance(value, int | float) else float("nan")


class JobRunner:
    """Claims granted jobs and runs each in its own thread, at most `slots` at once (the
    sandbox slots this runner may fill); the rest stay granted until a slot frees."""

    def __init__(
        self, service: LabService, socket_path: str, host: str, port: int, slots: int = 4
    ) -> None:
        self.service = service
        self.socket_path, self.host, self.port = socket_path, host, port
        self.slots = max(1, slots)
        self.free = threading.BoundedSemaphore(self.slots)
        self.stopping = threading.Event()
        self.running: set[threading.Thread] = set()

    def claim(self) -> dict[str, Any] | None:
        raw, _media = self.service.request_raw("POST", "/api/jobs/claim")
        if not raw.strip():  # 204: nothing granted and unclaimed
            return None
        return json.loads(raw)

    def run_one(self, claim: dict[str, Any]) -> ControllerOutcome:
        job = claim["job"]
        job_id = job["id"]
        run = ControllerRun(
            source=claim["source"],
            entry=claim["entry"],
            kit_id=claim["kit"],
            model=claim["model"],
            duration_s=float(claim["duration_s"]),
            inputs=claim.get("inputs") or {},
            mqtt=MqttAccess(
                self.socket_path,
                self.host,
                self.port,
                claim["mqtt"]["username"],
                claim["mqtt"]["password"],
            ),
            limits=limits_for(float(claim["duration_s"])),
        )
        done = threading.Event()
        beating = threading.Thread(target=self._heartbeat, args=(job_id, done), daemon=True)
        beating.start()
        try:
            outcome = run_controller(run)
        except ControllerRunError as err:  # no student code ran: the platform's fault
            log.error("job %s: %s", job_id, err)
            outcome = ControllerOutcome(PLATFORM_ERROR, str(err), 0, 0)
        finally:
            done.set()
            beating.join(5)
        self.service.request(
            "POST",
            f"/api/jobs/{job_id}/finish",
            {"outcome": outcome.outcome, "detail": outcome.detail[:300]},
        )
        log.info("job %s: %s (%s)", job_id, outcome.outcome, outcome.detail)
        if outcome.outcome != PLATFORM_ERROR:
            self.score(job)
        return outcome

    def _heartbeat(self, job_id: int, done: threading.Event) -> None:
        while not done.wait(HEARTBEAT_SECONDS):
            try:
                self.service.request("POST", f"/api/jobs/{job_id}/heartbeat")
            except LabError as err:  # the session may have ended (cancelled): the run ends too
                log.warning("job %s: heartbeat: %s", job_id, err)

    def score(self, job: dict[str, Any]) -> None:
        """Score the kit's recorded run with the assignment's scorer (coursework.controllers)."""
        if not job.get("course") or not job.get("assignment"):
            return
        result = self.recorded(job["id"])
        try:
            score = score_job(
                job["course"],
                job["assignment"],
                job["owner"],
                trace_of(result.get("telemetry", [])),
                float(job["duration_s"]),
            )
        except Exception as err:  # a course's scorer failing costs that score only
            log.error("job %s: scoring failed: %s: %s", job["id"], type(err).__name__, err)
            return
        if score is None:
            return
        # Only `score`: a twin score the course's instructors attach is theirs to keep.
        self.service.request("POST", f"/api/jobs/{job['id']}/score", {"score": score})

    def recorded(self, job_id: int) -> dict[str, Any]:
        """The job's result once the service has stored all of its window's telemetry: the
        last samples reach the store a moment after the session ended (read until two reads
        agree, within RECORD_SETTLE_SECONDS)."""
        result = self.service.request("GET", f"/api/jobs/{job_id}/result")
        deadline = time.monotonic() + RECORD_SETTLE_SECONDS
        while time.monotonic() < deadline:
            self.stopping.wait(RECORD_POLL_SECONDS)
            again = self.service.request("GET", f"/api/jobs/{job_id}/result")
            if len(again["telemetry"]) == len(result["telemetry"]):
                return again
            result = again
        return result

    def _run_in_slot(self, claim: dict[str, Any]) -> None:
        try:
            self.run_one(claim)
        except LabError as err:
            log.warning("job %s: %s", claim["job"]["id"], err)
        except Exception:  # one job's failure must not end the runner
            log.exception("job %s failed in the runner", claim["job"]["id"])
        finally:
            self.free.release()
            self.running.discard(threading.current_thread())

    def serve(self) -> None:
        """Until stopped: claim while a slot is free, one thread per claimed job."""
        while not self.stopping.is_set():
            if not self.free.acquire(timeout=IDLE_SECONDS):
                continue
            try:
                claim = self.claim()
            except LabError as err:
                log.warning("claiming a job: %s", err)
                claim = None
            if claim is None:
                self.free.release()
                self.stopping.wait(IDLE_SECONDS)
                continue
            # A daemon: stopping the runner (SIGTERM) does not wait for long runs; their
            # sandboxes die with it and the lab service ends their sessions (no heartbeat).
            worker = threading.Thread(
                target=self._run_in_slot,
                args=(claim,),
                name=f"job-{claim['job']['id']}",
                daemon=True,
            )
            self.running.add(worker)
            worker.start()
        for worker in list(self.running):
            worker.join(STOP_WAIT_SECONDS)


# ---------------------------------------------------------------- the command


def register(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "jobs", help="controller jobs: the runner; graded controllers confirmed on kits"
    )
    actions = parser.add_subparsers(dest="jobs_action", required=True, metavar="ACTION")
    run = actions.add_parser(
        "run",
        help="run granted controller jobs in the grading sandbox (as root)",
        description="Claim controller jobs from the lab service and run each in the grading "
        "sandbox; the lab service token comes from $SMARTLAB_TOKEN.",
    )
    run.add_argument(
        "--lab-url", help="the lab service (default: $SMARTLAB_LAB_URL, else the runtime's)"
    )
    run.add_argument("--state-dir", default=None, help="the state folder (the broker's socket)")
    run.add_argument("--mqtt-host", default="127.0.0.1")
    run.add_argument("--mqtt-port", type=int, default=None)
    run.add_argument(
        "--slots", type=int, default=4, help="jobs run at once (sandbox slots; default 4)"
    )
    run.set_defaults(run=_run)
    job_confirm.add_actions(actions)


def _run(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s jobs %(message)s")
    log.setLevel(logging.INFO)  # `smartlab` set the root logger to warnings first
    state_dir = args.state_dir or str(default_state_dir())
    runtime = Runtime.from_env("", state_dir)
    service = LabService(args.lab_url or os.environ.get(SERVICE_URL_ENV) or runtime.lab_url)
    socket_path = os.environ.get(BROKER_SOCKET_ENV) or str(broker_socket_path(runtime.state_dir))
    runner = JobRunner(
        service,
        socket_path,
        args.mqtt_host,
        args.mqtt_port or runtime.mqtt_port,
        slots=args.slots,
    )
    log.info("claiming jobs from %s, %d at once", service.url, runner.slots)
    # `smartlab up` (JupyterHub) stops the service with SIGTERM: finish the running jobs' reports.
    signal.signal(signal.SIGTERM, lambda *_: runner.stopping.set())
    with contextlib.suppress(KeyboardInterrupt):
        runner.serve()
    return 0
