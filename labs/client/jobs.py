"""Experiment jobs from a notebook: submit a controller to run on a kit, wait, read the result.

    job = lab.submit_job(controller, kit="streetlight-1", duration_s=30, inputs={"target": 300})
    job.wait()                              # prints the queue position and estimated start
    result = job.result()
    t, lux = result.trace["ambient-light"]  # numpy arrays, t in seconds since the job started

The result is the lab service's own record of the job's session (telemetry, every command with
its outcome, the camera frames' index), not anything the controller reported.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labs.client.controller_source import controller_source
from labs.client.errors import LabTimeout
from labs.client.recorded_frames import RestCaller

Progress = Callable[[str], None]
ENDED = ("finished", "failed", "cancelled")


def controller_payload(controller: Any) -> dict[str, str]:
    """{"source", "entry"} of a function, a class, a (source, entry) pair or such a dict."""
    if isinstance(controller, dict):
        return {"source": controller["source"], "entry": controller["entry"]}
    if isinstance(controller, tuple):
        source, entry = controller
        return {"source": source, "entry": entry}
    source, entry = controller_source(controller)
    return {"source": source, "entry": entry}


def submit_job(
    service: RestCaller,
    controller: Any,
    kit: str | None = None,
    model: str | None = None,
    duration_s: float = 30,
    inputs: dict[str, Any] | None = None,
    course: str | None = None,
    assignment: str | None = None,
) -> Job:
    body = {
        "kit": kit,
        "model": model,
        "duration_s": duration_s,
        "inputs": inputs or {},
        "controller": controller_payload(controller),
        "course": course,
        "assignment": assignment,
    }
    return Job(service, service.request("POST", "/api/jobs", body))


class Job:
    """A job as the lab service last said; `refresh()` asks again."""

    def __init__(self, service: RestCaller, view: dict[str, Any]) -> None:
        self._service = service
        self.view = view

    def __repr__(self) -> str:
        return f"<Job {self.id} {self.state} on {self.view['kit'] or self.view['model']}>"

    id = property(lambda self: self.view["id"])
    state = property(lambda self: self.view["state"])
    position = property(lambda self: self.view["position"])
    estimated_start = property(lambda self: self.view["estimated_start"])
    outcome = property(lambda self: self.view["outcome"])
    detail = property(lambda self: self.view["detail"])
    score = property(lambda self: self.view["score"])
    twin_score = property(lambda self: self.view["twin_score"])

    @property
    def done(self) -> bool:
        return self.state in ENDED

    def refresh(self) -> Job:
        self.view = self._service.request("GET", f"/api/jobs/{self.id}")
        return self

    def cancel(self) -> Job:
        self.view = self._service.request("POST", f"/api/jobs/{self.id}/cancel")
        return self

    def wait(
        self, timeout: float | None = None, progress: Progress | None = print, poll_s: float = 1.0
    ) -> Job:
        """Wait until the job has ended; `progress` gets a line whenever its position, estimate
        or state changes. LabTimeout after `timeout` s (the job goes on)."""
        say = progress or (lambda _line: None)
        deadline = None if timeout is None else time.monotonic() + timeout
        shown = None
        while True:
            line = _progress_line(self.view)
            if line != shown:
                say(line)
                shown = line
            if self.done:
                return self
            if deadline is not None and time.monotonic() >= deadline:
                raise LabTimeout(f"job {self.id} has not ended within {timeout} s ({line})")
            time.sleep(poll_s)
            self.refresh()

    def result(self) -> JobResult:
        body = self._service.request("GET", f"/api/jobs/{self.id}/result")
        self.view = body["job"]
        return JobResult.from_json(body)


@dataclass
class JobResult:
    """What the service recorded of the job's session."""

    job: dict[str, Any]
    telemetry: list[dict[str, Any]]
    commands: list[dict[str, Any]]  # ts, who, what, value, outcome (applied/rejected), reason
    frames: list[dict[str, Any]]  # the frames' index: ts, seq, url
    trace: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    outcome = property(lambda self: self.job["outcome"])
    detail = property(lambda self: self.job["detail"])
    score = property(lambda self: self.job["score"])
    twin_score = property(lambda self: self.job["twin_score"])

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> JobResult:
        started = body["job"]["started_at"]
        t0 = dt.datetime.fromisoformat(started).timestamp() if started else 0.0
        return cls(
            body["job"],
            body["telemetry"],
            body["commands"],
            body["frames"],
            _trace(body["telemetry"], t0),
        )


def _trace(rows: list[dict[str, Any]], t0: float) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """sensor -> (t, v) float64 arrays of the samples that have it; t since `t0`."""
    sensors = sorted({name for row in rows for name in row["values"]})
    trace = {}
    for sensor in sensors:
        have = [
            (row["ts"] - t0, float(v))
            for row in rows
            if isinstance(v := row["values"].get(sensor), bool | int | float)
        ]
        if have:
            t, v = zip(*have, strict=True)
            trace[sensor] = (np.array(t, np.float64), np.array(v, np.float64))
    return trace


def _progress_line(view: dict[str, Any]) -> str:
    where = view["kit"] or f"a {view['model']} kit"
    if view["state"] == "queued":
        if not view.get("position"):
            return f"job {view['id']} waiting for {where}: no kit available now"
        wait = view.get("wait_seconds")
        when = "an unknown time" if wait is None else _minutes(wait)
        return (
            f"job {view['id']} waiting for {where}: position {view['position']}, starts in {when}"
        )
    if view["state"] == "running":
        return f"job {view['id']} running on {view['kit']} for {view['duration_s']:g} s"
    text = view.get("outcome_text") or view["state"]
    detail = f" ({view['detail']})" if view.get("detail") else ""
    return f"job {view['id']} {view['state_text']}: {text}{detail}"


def _minutes(seconds: float) -> str:
    return "under a minute" if seconds < 60 else f"about {round(seconds / 60)} min"
