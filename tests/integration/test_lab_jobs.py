"""Experiment jobs end to end: `smartlab lab serve` in its own process, the real broker with
dynamic security, twins of smart-parking kits. The test plays the runner over REST (claim,
heartbeat, finish) and commands the kit with the job's own MQTT credential, as the sandboxed
controller would; what the kits received is read from the kits' side.

Tests share one service and run in file order; each leaves the kits free and the queue empty.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from hardware_kits import protocol as P
from hardware_kits.broker import ADMIN, Broker
from hardware_kits.kit_runner import KitRunner
from hardware_kits.mqtt import ConnectError, Credentials
from hardware_kits.twins.base import twin_class
from lab_service.rights import BrokerRights
from labs.client import LabService
from tests.conftest import wait_until
from tests.integration.test_rights import NOT_AUTHORIZED, Conn, applied
from tests.stack import ServiceProcess, call_api, token, with_tokens

pytestmark = pytest.mark.broker

KIT_A, KIT_B = "jb-park-a", "jb-park-b"
COURSE = "ctl101"
USERS = {
    "admin": {"name": "lab-admin", "institution": "centre", "lab_admin": True},
    "alice": {"name": "alice", "institution": "univ-a", "courses": [COURSE]},
    "bob": {"name": "bob", "institution": "univ-b"},
    "carol": {"name": "carol", "institution": "univ-a", "instructor_of": [COURSE]},
    "runner": {"name": "jobs-runner", "institution": "centre", "job_runner": True},
}
SOURCE = "def hold(readings, t, **inputs):\n    return {'display': 'job'}\n"


class Jobs:
    def __init__(self, broker: Broker, service: ServiceProcess, rights: BrokerRights) -> None:
        self.broker, self.service, self.rights = broker, service, rights

    def call(
        self, method: str, path: str, who: str = "alice", body: Any = None, lang: str | None = None
    ) -> tuple[int, Any]:
        return call_api(self.service.port, method, path, token(who), body, None, 10, lang)

    def ok(self, method: str, path: str, who: str = "alice", body: Any = None) -> Any:
        status, answer = self.call(method, path, who, body)
        assert 200 <= status < 300, f"{method} {path} as {who}: {status} {answer}"
        return answer

    def submit(self, who: str = "alice", **fields: Any) -> dict:
        body = {"kit": KIT_A, "duration_s": 30, "controller": {"source": SOURCE, "entry": "hold"}}
        return self.ok("POST", "/api/jobs", who, {**body, **fields})

    def claim(self) -> dict:
        status, answer = self.call("POST", "/api/jobs/claim", "runner")
        assert status == 200, f"claim: {status} {answer}"
        return answer

    def sessions(self, kit_id: str) -> list[dict]:
        return [s for s in self.ok("GET", "/api/sessions", "admin") if s["kit"] == kit_id]

    def wait_free(self, kit_id: str) -> None:
        def free() -> bool:
            """every session of the kit released"""
            return all(s["state"] == "released" for s in self.sessions(kit_id))

        wait_until(free, timeout=15, interval=0.05)

    def command_holders(self) -> dict[str, set[str]]:
        """kit -> every account that holds its command role right now (dynsec's word)."""
        holders: dict[str, set[str]] = {}
        for user, kits in self.rights.held().items():
            for kit in kits:
                holders.setdefault(kit, set()).add(f"ctl-{user}")
        for account in self.rights.job_accounts():
            for role in self.rights._client_roles(account):
                if role.startswith("command-"):
                    holders.setdefault(role.removeprefix("command-"), set()).add(account)
        return holders


@pytest.fixture(scope="module")
def jobs(broker, models, state_root) -> Iterator[Jobs]:
    service = ServiceProcess(broker, state_root, with_tokens(USERS), name="lab-jobs").start()
    runners: list[KitRunner] = []
    with BrokerRights(broker.admin, broker.credentials) as rights:
        stack = Jobs(broker, service, rights)
        try:
            for kit_id in (KIT_A, KIT_B):
                stack.ok("POST", "/api/kits", "admin", {"id": kit_id, "model": "smart-parking"})
                runners.append(
                    KitRunner(
                        kit_id,
                        twin_class("smart-parking")(models["smart-parking"], seed=5),
                        broker.address(f"kit-{kit_id}"),
                        rate_hz=5,
                    ).start()
                )
            wait_until(lambda: all(k["online"] for k in stack.ok("GET", "/api/kits")), timeout=10)
            stack.runners = {r.kit_id: r for r in runners}  # type: ignore[attr-defined]
            yield stack
        finally:
            service.stop()
            for runner in runners:
                runner.stop()


@pytest.fixture
def kit_side(broker: Broker) -> Iterator[Conn]:
    """What the kits send, acks included, seen as the broker's admin."""
    conn = Conn(broker, broker.credentials(ADMIN), [P.kit_filter(KIT_A), P.kit_filter(KIT_B)])
    yield conn
    conn.close()


def test_a_person_and_a_job_never_control_one_kit_at_once(jobs):
    entry = jobs.ok("POST", "/api/queue", "bob", {"kit": KIT_A})
    person = entry["session"]
    assert person["state"] == "granted"
    job = jobs.submit()
    assert job["state"] == "queued" and job["position"] == 1
    account = f"job-{job['id']}"
    assert jobs.command_holders().get(KIT_A) == {"ctl-bob"}
    assert account not in jobs.rights.job_accounts()  # no account, no right, while bob holds it
    assert jobs.call("POST", "/api/jobs/claim", "runner")[0] == 204  # nothing granted yet

    jobs.ok("POST", f"/api/sessions/{person['id']}/release", "bob")
    running = wait_until(
        lambda: (j := jobs.ok("GET", f"/api/jobs/{job['id']}"))["state"] == "running" and j,
        timeout=15,
        interval=0.05,
    )
    assert jobs.command_holders().get(KIT_A) == {account}  # bob's right went first
    kit = next(k for k in jobs.ok("GET", "/api/kits", "bob") if k["id"] == KIT_A)
    assert (kit["job"], kit["job_owner"]) == (job["id"], "alice")  # "job of alice"
    again = jobs.ok("POST", "/api/queue", "bob", {"kit": KIT_A})
    assert again["state"] == "waiting"  # the job holds it: bob waits in turn

    claim = jobs.claim()
    assert claim["session_id"] == running["session_id"] and claim["kit"] == KIT_A
    jobs.ok("POST", f"/api/jobs/{job['id']}/heartbeat", "runner")
    done = jobs.ok(
        "POST", f"/api/jobs/{job['id']}/finish", "runner", {"outcome": "completed", "detail": ""}
    )
    assert done["state"] == "finished" and done["outcome_text"] == "ran its full duration"
    bob_again = wait_until(
        lambda: (
            (e := jobs.ok("GET", f"/api/queue/{again['id']}", "bob"))["state"] == "served" and e
        ),
        timeout=15,
        interval=0.05,
    )
    assert jobs.command_holders().get(KIT_A) == {"ctl-bob"}
    assert account not in jobs.rights.job_accounts()  # deleted with its session
    sessions = sorted(jobs.sessions(KIT_A), key=lambda s: s["granted_at"])
    for before, after in itertools.pairwise(sessions):
        assert before["released_at"] is not None and before["released_at"] <= after["granted_at"]
    job_session = next(s for s in sessions if s["id"] == claim["session_id"])
    assert (job_session["job"], job_session["owner"], job_session["user"]) == (
        job["id"],
        "alice",
        account,
    )
    jobs.ok("POST", f"/api/sessions/{bob_again['session']['id']}/release", "bob")
    jobs.wait_free(KIT_A)


def test_a_jobs_credential_commands_its_kit_only_and_only_during_its_session(
    jobs, broker, kit_side
):
    job = jobs.submit()
    claim = jobs.claim()
    assert claim["job"]["id"] == job["id"]
    creds = Credentials(claim["mqtt"]["username"], claim["mqtt"]["password"])
    conn = Conn(broker, creds, reconnect_s=0.05)
    try:
        a, b = jobs.runners[KIT_A], jobs.runners[KIT_B]
        before_a, before_b = applied(a), applied(b)
        assert conn.puback(conn.command(KIT_A, "mine")) == 0
        wait_until(lambda: applied(a) == before_a + 1, timeout=5)
        assert conn.puback(conn.command(KIT_B, "not-mine")) == NOT_AUTHORIZED
        jobs.ok("POST", f"/api/jobs/{job['id']}/finish", "runner", {"outcome": "completed"})
        jobs.wait_free(KIT_A)
        after_a = applied(a)
        time.sleep(0.3)  # the kicked connection tries to reconnect: the account is gone
        sent = [conn.command(KIT_A, "after") for _ in range(3)]
        time.sleep(1.0)
        assert all(conn.pubacks.get(m) in (None, NOT_AUTHORIZED) for m in sent)
        assert applied(a) == after_a, "the kit applied a command of a job that had ended"
        assert applied(b) == before_b, "another kit applied a command of the job"
        seen = [  # the kits' acknowledgements of the job's commands: what reached a kit
            json.loads(m.payload)
            for m in kit_side.messages
            if f"/$ack/{creds.username}/" in m.topic
        ]
        assert {ack["status"] for ack in seen} == {P.APPLIED} and len(seen) == 1
    finally:
        conn.close()
    with pytest.raises(ConnectError):
        Conn(broker, creds)  # a fresh connection with the old password: no such account


def test_cancel_by_owner_and_admin_and_nobody_else(jobs):
    holding = jobs.submit(course=COURSE)  # runs at once (kit A is free)
    queued = jobs.submit(kit=KIT_A, assignment="a1")
    assert holding["state"] == "running" and queued["state"] == "queued"
    # bob knows nothing of alice's jobs; carol teaches the course of one of them
    assert jobs.call("GET", f"/api/jobs/{holding['id']}", "bob")[0] == 404
    assert jobs.call("POST", f"/api/jobs/{holding['id']}/cancel", "bob")[0] == 404
    assert jobs.ok("GET", f"/api/jobs/{holding['id']}", "carol")["owner"] == "alice"
    assert jobs.call("GET", f"/api/jobs/{queued['id']}", "carol")[0] == 404
    status, answer = jobs.call("POST", f"/api/jobs/{holding['id']}/cancel", "carol")
    assert status == 403 and answer["code"] == "job-cancel-forbidden"
    assert [j["id"] for j in jobs.ok("GET", f"/api/jobs?course={COURSE}", "carol")] == [
        holding["id"]
    ]
    assert jobs.call("GET", f"/api/jobs?course={COURSE}", "bob")[0] == 403
    assert jobs.call("GET", "/api/jobs?all=1", "alice")[0] == 403

    cancelled = jobs.ok("POST", f"/api/jobs/{queued['id']}/cancel", "alice")
    assert cancelled["state"] == "cancelled" and cancelled["state_text"] == "cancelled"
    by_admin = jobs.ok("POST", f"/api/jobs/{holding['id']}/cancel", "admin")
    assert by_admin["state"] == "cancelled" and "lab-admin" in by_admin["detail"]
    jobs.wait_free(KIT_A)
    assert f"job-{holding['id']}" not in jobs.rights.job_accounts()
    status, answer = jobs.call("POST", f"/api/jobs/{holding['id']}/cancel", "alice", lang="ru")
    assert status == 409 and "уже закончено" in answer["error"]
    ru = jobs.call("GET", f"/api/jobs/{queued['id']}", "alice", lang="ru")[1]
    assert ru["state_text"] == "отменено"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"duration_s": 1}, "duration_s"),
        ({"duration_s": 601}, "duration_s"),
        ({"controller": {"source": SOURCE, "entry": "1bad"}}, "controller.entry"),
        ({"controller": {"source": "x" * 66_000, "entry": "f"}}, "controller.source"),
        ({"controller": {"entry": "f"}}, "controller.source"),
        ({"inputs": {"big": "y" * 17_000}}, "inputs"),
        ({"inputs": [1, 2]}, "inputs"),
        ({"kit": None}, "kit"),
        ({"colour": "red"}, "colour"),
    ],
)
def test_bad_job_bodies_get_one_line_in_both_languages_and_queue_nothing(jobs, change, field):
    body = {"kit": KIT_A, "duration_s": 30, "controller": {"source": SOURCE, "entry": "hold"}}
    before = jobs.ok("GET", "/api/jobs")
    for lang in ("en", "ru"):
        status, answer = jobs.call("POST", "/api/jobs", "alice", {**body, **change}, lang)
        assert status == 400, answer
        assert "\n" not in answer["error"] and len(answer["error"]) < 300
        if field != "kit":
            assert field.split(".")[0] in answer["error"]
    assert jobs.ok("GET", "/api/jobs") == before


def test_only_the_runner_claims_and_reports(jobs):
    job = jobs.submit()
    for path in ("claim", f"{job['id']}/heartbeat"):
        status, answer = jobs.call("POST", f"/api/jobs/{path}", "alice")
        assert status == 403 and answer["code"] == "job-runner-only"
    status, answer = jobs.call(
        "POST", f"/api/jobs/{job['id']}/finish", "runner", {"outcome": "exploded"}
    )
    assert status == 400 and "outcome" in answer["error"]
    jobs.claim()
    jobs.ok(
        "POST",
        f"/api/jobs/{job['id']}/finish",
        "runner",
        {"outcome": "crashed", "detail": "ZeroDivisionError"},
    )
    scored = jobs.ok(
        "POST", f"/api/jobs/{job['id']}/score", "runner", {"score": 0.5, "twin_score": 0.75}
    )
    assert scored["state"] == "failed" and scored["detail"] == "ZeroDivisionError"
    assert (scored["score"], scored["twin_score"]) == (0.5, 0.75)
    jobs.wait_free(KIT_A)
    result = jobs.ok("GET", f"/api/jobs/{job['id']}/result")
    assert result["job"]["id"] == job["id"]
    assert set(result) == {"job", "telemetry", "commands", "frames"}
    assert jobs.call("GET", f"/api/jobs/{job['id']}/result", "bob")[0] == 404


def test_the_client_submits_a_notebook_controller_and_reads_the_result(jobs):
    alice = LabService(jobs.service.url, token("alice"))
    runner = LabService(jobs.service.url, token("runner"))

    def hold(readings, t, **inputs):
        return {"display": "client"}

    job = alice.submit_job(hold, kit=KIT_B, duration_s=5, inputs={"k": 1})
    assert job.state == "running"
    claim = runner.request("POST", "/api/jobs/claim")
    assert claim["entry"] == "hold" and "def hold" in claim["source"]
    conforms(jobs, "JobClaim", claim)
    conforms(jobs, "JobView", jobs.ok("GET", "/api/jobs", "alice"), many=True)
    assert claim["inputs"] == {"k": 1}
    time.sleep(1.0)  # a second of telemetry in the job's window
    runner.request("POST", f"/api/jobs/{job.id}/finish", {"outcome": "completed"})
    lines: list[str] = []
    job.wait(timeout=10, progress=lines.append, poll_s=0.1)
    assert job.state == "finished" and lines[-1].startswith(f"job {job.id} finished")
    result = wait_until(lambda: (r := job.result()).trace and r, timeout=10, interval=0.2)
    assert result.outcome == "completed"
    t, v = next(iter(result.trace.values()))
    assert len(t) == len(v) >= 2 and (t >= 0).all()
    assert [j.id for j in alice.jobs()][-1] == job.id
    assert alice.job(job.id).state == "finished"
    jobs.wait_free(KIT_B)


def conforms(jobs: Jobs, schema_name: str, instance: Any, many: bool = False) -> None:
    """The answer matches the schema the OpenAPI document gives for it."""
    document = jobs.ok("GET", "/api/openapi.json")
    ref = {"$ref": f"#/components/schemas/{schema_name}"}
    schema = {"type": "array", "items": ref} if many else ref
    jsonschema.Draft202012Validator({**schema, "components": document["components"]}).validate(
        instance
    )


def test_reconcile_deletes_job_accounts_of_ended_sessions_and_remakes_live_ones(jobs, broker):
    """After a crash the broker may keep a job's account whose session has ended, or lack the
    account of a live one: start-up reconciliation aligns both."""
    rights = jobs.rights
    rights.grant("job-999001", KIT_B)  # left over: its session ended while the service was down
    assert "job-999001" in rights.job_accounts()
    notes = rights.reconcile({KIT_A: "job-999002"})  # a live job session, account missing
    assert "job-999001" not in rights.job_accounts()
    assert any("job-999001" in note for note in notes)
    assert any("made job-999002" in note for note in notes)
    assert jobs.command_holders().get(KIT_A) == {"job-999002"}
    password = rights.job_password("job-999002")
    conn = Conn(broker, Credentials("job-999002", password))
    try:
        assert conn.puback(conn.command(KIT_B, "other kit")) == NOT_AUTHORIZED
        assert rights.reconcile({KIT_A: "job-999002"}) == []  # intact: left alone
        assert conn.disconnects == 0  # the runner's connection was not cut
    finally:
        conn.close()
    rights.reconcile({})
    assert rights.job_accounts() == set()
