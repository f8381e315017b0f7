"""Kits at rest: the service's rules, with kits whose own KitCore answers (no MQTT here; the
same rules run against a real broker and twins in tests/integration/test_at_rest.py)."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pytest

from hardware_kits import protocol as P
from hardware_kits.descriptor import load_models
from hardware_kits.kitcore import KitCore
from lab_service.policy import SharingPolicy
from lab_service.service import KitSharing
from lab_service.store import NEEDS_ATTENTION, SharingStore
from tests.unit.test_lab_service import ADMIN, ALICE, BOB, Clock, Rights, advance

MODELS = load_models()


class CoreKits:
    """The service's KitGateway over in-process KitCores; `log` records every command and
    every grant in one order (shared with the rights stand-in)."""

    def __init__(self, models: dict[str, str], log: list) -> None:
        self.cores = {k: KitCore(k, MODELS[m]) for k, m in models.items()}
        self.log = log
        self.mute: set[str] = set()  # never answer
        self._ids = itertools.count()
        self._answers: dict[str, str] = {}

    def online(self, kit_id: str) -> bool:
        return True

    def _send(self, kit_id: str, topic: str, what: str) -> str:
        command_id = f"{what}-{next(self._ids)}"
        self.log.append((what, kit_id))
        if kit_id not in self.mute:
            deadline = str(int((time.time() + 5) * 1000))  # the cores keep the real time
            ack = self.cores[kit_id].handle_command(topic, "", command_id, deadline)
            self._answers[command_id] = ack["status"]
        return command_id

    def send_safe_state(self, kit_id: str) -> str:
        return self._send(kit_id, P.safe_state_topic(kit_id), "safe")

    def send_at_rest(self, kit_id: str) -> str:
        return self._send(kit_id, P.at_rest_topic(kit_id), "rest")

    def confirmed_safe(self, kit_id: str, command_id: str) -> bool:
        return self._answers.get(command_id) == P.APPLIED

    def answer(self, kit_id: str, command_id: str) -> str | None:
        return self._answers.get(command_id)

    def report(self, kit_id: str) -> dict[str, Any] | None:
        status = self.cores[kit_id].status()
        return {key: status[key] for key in ("safe", "at_rest", "fault")}

    def drain_acks(self) -> list[dict]:
        return []


class LoggedRights(Rights):
    def __init__(self, log: list) -> None:
        super().__init__()
        self.log = log


@pytest.fixture
def lab(database_url):
    clock, log = Clock(), []
    rights, kits = LoggedRights(log), CoreKits({"x1": "intersection", "l1": "street-lighting"}, log)
    clock.now += 9 * 3600  # a weekday morning
    store = SharingStore(database_url)
    service = KitSharing(store, SharingPolicy(), rights, kits, clock=clock)
    service.register_kit(ADMIN, "x1", "intersection")
    service.register_kit(ADMIN, "l1", "street-lighting")
    yield service, clock, rights, kits, log
    store.close()


def test_a_free_kit_goes_to_rest_once(lab):
    service, clock, _rights, kits, log = lab
    advance(service, clock, 30)
    assert kits.cores["x1"].state["mode"] == "fixed" and kits.cores["x1"].status()["at_rest"]
    # The street lights rest in their safe state (the photocell): nothing to send.
    assert log == [("rest", "x1")]


def test_a_kit_at_rest_is_granted_at_once_in_its_safe_state(lab):
    service, clock, rights, kits, log = lab
    advance(service, clock, 10)
    log.clear()
    session = service.request(ALICE, kit_id="x1")["session"]
    assert session["state"] == "granted"
    # The safe state goes out before the holder's right.
    assert log == [("safe", "x1"), ("grant", "alice", "x1")]
    assert kits.cores["x1"].is_safe()
    advance(service, clock, 30)
    assert rights.held == {"x1": "alice"} and ("rest", "x1") not in log


def test_after_a_session_the_kit_passes_through_safe_to_rest(lab):
    service, clock, _rights, kits, log = lab
    session = service.request(ALICE, kit_id="x1")["session"]
    log.clear()
    ended = service.release(ALICE, session["id"])
    assert ended["state"] == "safe"
    advance(service, clock, 10)
    assert log == [("revoke", "alice", "x1"), ("safe", "x1"), ("rest", "x1")]
    assert kits.cores["x1"].status()["at_rest"]


def test_with_someone_waiting_the_kit_goes_from_safe_to_the_next_holder(lab):
    service, clock, rights, _kits, log = lab
    session = service.request(ALICE, kit_id="x1")["session"]
    service.request(BOB, kit_id="x1")
    log.clear()
    service.release(ALICE, session["id"])
    advance(service, clock, 10)
    assert log == [("revoke", "alice", "x1"), ("safe", "x1"), ("grant", "bob", "x1")]
    assert rights.held == {"x1": "bob"}


def test_a_kit_with_a_fault_or_out_of_the_pool_stays_safe(lab):
    service, clock, _rights, kits, log = lab
    kits.cores["x1"].fault = "the conflict monitor tripped"
    advance(service, clock, 120)
    assert ("rest", "x1") not in log and kits.cores["x1"].is_safe()
    kits.cores["x1"].fault = None
    advance(service, clock, 10)
    assert log[-1] == ("rest", "x1")
    service.set_maintenance(ADMIN, "x1", on=True, reason="new signal heads")
    advance(service, clock, 10)
    assert log[-1] == ("safe", "x1") and kits.cores["x1"].is_safe()
    advance(service, clock, 120)
    assert log.count(("safe", "x1")) == 1


def test_a_kit_that_does_not_confirm_when_granted_needs_attention(lab):
    service, clock, rights, kits, _log = lab
    advance(service, clock, 10)
    kits.mute.add("x1")
    session = service.request(ALICE, kit_id="x1")["session"]
    advance(service, clock, 30)
    kit = next(k for k in service.kits() if k["id"] == "x1")
    assert kit["pool"] == NEEDS_ATTENTION and "when it was granted" in kit["reason"]
    (ended,) = service.sessions(ALICE)
    assert ended["id"] == session["id"] and ended["state"] == "released"
    assert "x1" not in rights.held
