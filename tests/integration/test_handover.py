"""Safe handover with real kits: the next user gets a kit only after it confirms its safe state.

The service runs in-process with the real broker rights and the real MQTT kit gateway."""

from __future__ import annotations

import time

import pytest

from hardware_kits import protocol as P
from hardware_kits.kit_runner import KitRunner
from hardware_kits.twins.base import twin_class
from lab_service.gateway import MqttKitGateway
from lab_service.policy import SharingPolicy
from lab_service.rights import BrokerRights
from lab_service.service import KitSharing, User
from lab_service.store import NEEDS_ATTENTION, SharingStore
from labs.client import connect
from site_config.platform_accounts import SERVICE_ACCOUNT
from tests.conftest import wait_until

pytestmark = pytest.mark.broker
ADMIN = User("ho-admin", "centre", lab_admin=True)
ALICE, BOB = User("ho-alice", "univ-a"), User("ho-bob", "univ-b")


class JammedGate(twin_class("smart-parking")):
    """A parking kit whose gate motor has failed: it cannot be put into its safe state."""

    def apply(self, target, value):
        if target == P.SAFE_STATE_PROPERTY:
            raise RuntimeError("gate motor does not respond")
        super().apply(target, value)


@pytest.fixture
def lab(broker, models, state_root):
    kits = {"ho-good": twin_class("smart-parking"), "ho-jammed": JammedGate}
    creds = broker.provision_kits(list(kits))
    runners = {
        k: KitRunner(
            k, cls(models["smart-parking"], seed=3), broker.address(creds[k].username), rate_hz=5
        ).start()
        for k, cls in kits.items()
    }
    broker.provision_supervisor(SERVICE_ACCOUNT)
    store = SharingStore(f"sqlite:///{state_root / f'handover-{time.time_ns()}.db'}")
    rights = BrokerRights(broker.admin, broker.credentials)
    gateway = MqttKitGateway(broker.address(SERVICE_ACCOUNT))
    policy = SharingPolicy(safe_confirm_timeout_seconds=1.0, offline_grace_seconds=1.0)
    service = KitSharing(store, policy, rights, gateway)
    for kit_id in kits:
        service.register_kit(ADMIN, kit_id, "smart-parking")
    wait_until(lambda: all(gateway.online(k) for k in kits), timeout=10)
    yield service, runners, rights
    gateway.close()
    rights.close()
    for runner in runners.values():
        runner.stop()
    store.close()


def ticking(service: KitSharing, until, timeout: float = 10.0):
    """Tick the service (as its event loop does) until `until()` holds."""

    def step():
        service.tick()
        return until()

    return wait_until(step, timeout=timeout, interval=0.05)


def test_handover_waits_for_the_kits_confirmation(lab, broker):
    service, runners, rights = lab
    session = service.request(ALICE, kit_id="ho-good")["session"]
    service.heartbeat(ALICE, session["id"])
    control = connect(
        broker.address(rights.control_account(ALICE.name).username).url(), client_id="ho-alice-ctl"
    )
    try:
        assert control.kit("ho-good").set("gate", "open").value == "open"
    finally:
        control.close()
    service.request(BOB, kit_id="ho-good")
    service.release(ALICE, session["id"])
    ticking(service, lambda: any(s["state"] == "granted" for s in service.sessions(BOB)))
    (ended,) = service.sessions(ALICE)
    assert ended["state"] == "released"
    assert runners["ho-good"].core.state["gate"] == "closed"  # the kit really is safe


def test_kit_that_never_confirms_needs_attention_and_is_not_granted(lab):
    service, runners, rights = lab
    session = service.request(ALICE, kit_id="ho-jammed")["session"]
    service.request(BOB, kit_id="ho-jammed")
    service.release(ALICE, session["id"])

    def flagged():
        return next(k for k in service.kits() if k["id"] == "ho-jammed")["pool"] == NEEDS_ATTENTION

    ticking(service, flagged)
    kit = next(k for k in service.kits() if k["id"] == "ho-jammed")
    assert "did not confirm its safe state" in kit["reason"]
    for _ in range(20):
        service.tick()
        time.sleep(0.02)
    assert service.sessions(BOB) == []  # never handed an unsafe kit
    assert "ho-jammed" not in rights.held().get(BOB.name, set())
    assert runners["ho-jammed"].core.errors >= 1


def test_kit_going_offline_ends_the_session_and_fails_closed(lab):
    service, runners, _ = lab
    session = service.request(ALICE, kit_id="ho-good")["session"]
    service.heartbeat(ALICE, session["id"])
    runners["ho-good"].stop()
    ticking(service, lambda: service.sessions(ALICE)[0]["end_reason"] == "kit-offline")
    ticking(
        service,
        lambda: next(k for k in service.kits() if k["id"] == "ho-good")["pool"] == NEEDS_ATTENTION,
    )
