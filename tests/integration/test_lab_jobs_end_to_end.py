"""Experiment jobs as one feature: a student's client, the lab service in its own process, the
real runner (`smartlab jobs run`, root) confining each controller in the grading sandbox, the
real broker with dynamic security (the controller reaches it only through its Unix socket) and
twins of street-lighting kits. What the kit did is read from the kit's side.

Tests share one service, one runner and two kits, and run in file order; each leaves the kits
free and out of maintenance.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from coursework.controllers import lighting_score
from hardware_kits import protocol as P
from hardware_kits.broker import Broker
from hardware_kits.kit_runner import KitRunner
from hardware_kits.twins.base import twin_class
from hub_config.job_runner import trace_of
from labs.client import LabService
from tests.conftest import REPO, wait_until
from tests.stack import ServiceProcess, call_api, stop, token, with_tokens

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(os.geteuid() != 0, reason="the controller sandbox needs root"),
]

MODEL = "street-lighting"
KIT_1, KIT_2 = "je-lamp-1", "je-lamp-2"
COURSE, ASSIGNMENT = "smart-lighting", "02-adaptive-dimming"
USERS = {
    "admin": {"name": "lab-admin", "institution": "centre", "lab_admin": True},
    "alice": {"name": "alice", "institution": "univ-a", "courses": [COURSE]},
    "bob": {"name": "bob", "institution": "univ-b"},
    "runner": {"name": "jobs-runner", "institution": "centre", "job_runner": True},
}
JOB_SECONDS = 6


class Lab:
    def __init__(self, service: ServiceProcess, kits: dict[str, KitRunner], models: dict) -> None:
        self.service, self.kits, self.descriptor = service, kits, models[MODEL]

    def client(self, who: str) -> LabService:
        return LabService(self.service.url, token(who))

    def ok(self, method: str, path: str, who: str = "admin", body: Any = None) -> Any:
        status, answer = call_api(self.service.port, method, path, token(who), body, None, 10)
        assert 200 <= status < 300, f"{method} {path} as {who}: {status} {answer}"
        return answer

    def wait_free(self, kit_id: str) -> None:
        def free() -> bool:
            """every session of the kit released and the kit in its safe state"""
            sessions = [s for s in self.ok("GET", "/api/sessions") if s["kit"] == kit_id]
            return all(s["state"] == "released" for s in sessions) and self.is_safe(kit_id)

        wait_until(free, timeout=20, interval=0.1)

    def is_safe(self, kit_id: str) -> bool:
        """What the kit itself holds, not what the service believes."""
        return self.kits[kit_id].core.state == P.safe_state(self.descriptor)


class RunnerProcess:
    """`smartlab jobs run` as `smartlab up` starts it: its token, the lab URL and the broker's
    socket from the environment."""

    def __init__(self, service: ServiceProcess, broker: Broker, log_path: Any) -> None:
        self.service, self.broker, self.log_path = service, broker, log_path
        self.process: subprocess.Popen | None = None

    def start(self) -> RunnerProcess:
        env = {
            **os.environ,
            "SMARTLAB_TOKEN": token("runner"),
            "SMARTLAB_LAB_URL": self.service.url,
            "SMARTLAB_BROKER_SOCKET": str(self.broker.socket_path),
            "PYTHONUNBUFFERED": "1",
        }
        env.pop("SMARTLAB_RUNTIME", None)
        command = [sys.executable, "-m", "hub_config.cli", "jobs", "run"]
        command += ["--mqtt-port", str(self.broker.port), "--slots", "2"]
        with open(self.log_path, "a") as out:
            self.process = subprocess.Popen(
                command,
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def stop(self) -> None:
        stop(self.process)

    def output(self) -> str:
        return open(self.log_path, errors="replace").read()


@pytest.fixture(scope="module")
def lab(broker: Broker, models: dict, state_root) -> Iterator[Lab]:
    service = ServiceProcess(broker, state_root, with_tokens(USERS), name="lab-jobs-e2e").start()
    runner = RunnerProcess(service, broker, service.dir / "runner.log")
    kits: dict[str, KitRunner] = {}
    try:
        stack = Lab(service, kits, models)
        for kit_id in (KIT_1, KIT_2):
            stack.ok("POST", "/api/kits", "admin", {"id": kit_id, "model": MODEL})
            kits[kit_id] = KitRunner(
                kit_id,
                twin_class(MODEL)(models[MODEL], seed=7),
                broker.address(f"kit-{kit_id}"),
                rate_hz=4,
            ).start()
        wait_until(lambda: all(k["online"] for k in stack.ok("GET", "/api/kits")), timeout=10)
        runner.start()
        stack.runner = runner  # type: ignore[attr-defined]
        yield stack
    finally:
        runner.stop()
        service.stop()
        for kit in kits.values():
            kit.stop()


def finished(job: Any, timeout: float = 60) -> Any:
    lines: list[str] = []
    job.wait(timeout=timeout, progress=lines.append, poll_s=0.2)
    return job


# ---------------------------------------------------------------- (a) a job, end to end


def test_a_students_job_runs_on_a_twin_and_returns_its_trace_acked_commands_and_score(lab):
    alice = lab.client("alice")

    def dimmer(readings, t, level=30, **inputs):
        """Manual mode at once, then a level that follows presence."""
        if t == 0 or readings.get("mode") != "manual":
            return {"mode": "manual"}
        return {"dimming": 100 if readings.get("motion") else level}

    job = alice.submit_job(
        dimmer,
        kit=KIT_1,
        duration_s=JOB_SECONDS,
        inputs={"level": 40},
        course=COURSE,
        assignment=ASSIGNMENT,
    )
    assert job.state in ("queued", "running")
    finished(job)
    assert job.state == "finished", (job.view, lab.runner.output()[-2000:])
    assert job.view["outcome"] == "completed" and job.view["outcome_text"]
    # The runner scores the kit's recorded run after it ends: wait for the score to arrive.
    try:
        result = wait_until(
            lambda: (r := job.result()).score is not None and r, timeout=20, interval=0.2
        )
    except BaseException:
        print(lab.runner.output()[-3000:])
        raise
    t, lux = result.trace["ambient-light"]
    assert isinstance(t, np.ndarray) and isinstance(lux, np.ndarray)
    assert len(t) == len(lux) >= JOB_SECONDS * 2 and t[0] >= 0 and t[-1] <= JOB_SECONDS + 25
    # Every command the controller sent, with the kit's acknowledgement.
    sent = result.commands
    assert sent and all(c["outcome"] in ("applied", "rejected") for c in sent)
    assert any(c["outcome"] == "applied" and c["what"] == "mode" for c in sent)
    assert any(c["outcome"] == "applied" and c["what"] == "dimming" for c in sent)
    # The score is the assignment's scorer on what the service recorded, with the kit's lamp.
    twin = lab.descriptor["twin"]
    expected = lighting_score(
        trace_of(result.telemetry), lamp_min_w=twin["lamp_min_w"], lamp_max_w=twin["lamp_max_w"]
    )
    assert result.score == pytest.approx(expected) and 0.0 <= result.score <= 1.0
    lab.wait_free(KIT_1)


# ---------------------------------------------------------------- (b) controllers that fail


@pytest.mark.parametrize(
    ("source", "outcome", "words"),
    [
        (
            "def ctl(readings, t):\n"
            "    if t > 1:\n"
            "        return 1 / 0\n"
            "    return {'mode': 'manual', 'dimming': 5}\n",
            "crashed",
            "ZeroDivisionError",
        ),
        (
            "def ctl(readings, t):\n"
            "    if t > 1:\n"
            "        while True:\n"
            "            pass\n"
            "    return {'mode': 'manual', 'dimming': 5}\n",
            "overran",
            "longer than",
        ),
    ],
    ids=["crashing", "overrunning"],
)
def test_a_failing_controller_says_why_and_leaves_the_kit_safe_for_the_next_holder(
    lab, source, outcome, words
):
    alice = lab.client("alice")
    view = alice.request(
        "POST",
        "/api/jobs",
        {"kit": KIT_1, "duration_s": JOB_SECONDS, "controller": {"source": source, "entry": "ctl"}},
    )
    job = finished(alice.job(view["id"]))
    assert job.state == "failed" and job.view["outcome"] == outcome, job.view
    assert words in job.view["detail"]
    assert job.view["outcome_text"] and outcome not in job.view["outcome_text"]  # words, not codes
    # The kit itself is back in its safe state (dimmed to 5 % in manual before the failure).
    lab.wait_free(KIT_1)
    assert lab.is_safe(KIT_1)
    # The next person gets the kit.
    bob = lab.client("bob")
    entry = bob.request("POST", "/api/queue", {"kit": KIT_1})
    assert entry["session"]["state"] == "granted"
    bob.request("POST", f"/api/sessions/{entry['session']['id']}/release")
    lab.wait_free(KIT_1)


# ---------------------------------------------------------------- (c) maintenance and models


def test_a_job_for_a_kit_in_maintenance_waits_and_one_for_the_model_takes_another_kit(lab):
    alice = lab.client("alice")
    lab.ok("PUT", f"/api/kits/{KIT_2}/maintenance", "admin", {"on": True, "reason": "lamp"})
    source = "def ctl(readings, t):\n    return None\n"
    controller = {"source": source, "entry": "ctl"}
    body = {"duration_s": 5, "controller": controller}
    for_kit = alice.request("POST", "/api/jobs", {**body, "kit": KIT_2})
    for_model = alice.request("POST", "/api/jobs", {**body, "model": MODEL})
    model_job = finished(alice.job(for_model["id"]))
    assert model_job.state == "finished" and model_job.view["kit"] == KIT_1
    kit_job = alice.job(for_kit["id"])
    assert kit_job.state == "queued" and kit_job.view["started_at"] is None  # waits for its kit
    lab.ok("PUT", f"/api/kits/{KIT_2}/maintenance", "admin", {"on": False})
    kit_job = finished(kit_job)
    assert kit_job.state == "finished" and kit_job.view["kit"] == KIT_2
    lab.wait_free(KIT_1)
    lab.wait_free(KIT_2)
