"""Kits at rest run their own automatic operation, with a real broker (dynsec), twins on the wire
(faster than real time) and the lab service's real rights and MQTT gateway, ticked in-process.

A kit nobody holds goes to rest (`$at-rest`, the descriptor's `at_rest` values): the
intersection runs its fixed-time default plan, the parking gate lets cars in while bays are
free, the street lights follow the photocell. A handover still passes through the safe state,
acknowledged; a kit with a fault, or out of the pool, stays safe."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import select

from hardware_kits import protocol as P
from hardware_kits.kit_runner import KitRunner
from hardware_kits.twins.base import twin_class
from lab_service.gateway import MqttKitGateway
from lab_service.policy import SharingPolicy
from lab_service.rights import BrokerRights
from lab_service.service import KitSharing, User
from lab_service.store import NEEDS_ATTENTION, CommandRow, SharingStore
from labs.client import connect
from labs.client.errors import CommandRejected
from site_config.platform_accounts import SERVICE_ACCOUNT
from tests.conftest import wait_until

pytestmark = pytest.mark.broker
ADMIN = User("ar-admin", "centre", lab_admin=True)
ALICE = User("ar-alice", "univ-a")
EVENING = 1767225600.0 + 17.5 * 3600  # 2026-01-01 17:30 UTC, simulated: the evening peak
MORNING = 1767225600.0 + 9 * 3600
SPEED = 120.0  # simulated seconds per wall-clock second
KITS = {  # kit: (model, simulated start, simulated seconds per wall-clock second)
    "ar-cross": ("intersection", EVENING, SPEED),  # in the pool: goes to rest
    "ar-cross-safe": ("intersection", EVENING, SPEED),  # in maintenance: stays safe (as before)
    "ar-park": ("smart-parking", MORNING, SPEED),
    "ar-lamp": ("street-lighting", EVENING - 2.5 * 3600, 600.0),  # from 15:00 through dusk
}


class Lab:
    def __init__(self, service: KitSharing, runners: dict[str, KitRunner], rights: BrokerRights):
        self.service, self.runners, self.rights = service, runners, rights

    def tick_until(self, until: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Tick the service (as its event loop does) until `until()` holds."""

        def step() -> Any:
            self.service.tick()
            return until()

        return wait_until(step, timeout=timeout, interval=0.05)

    def tick_for(self, seconds: float, every: Callable[[], None] = lambda: None) -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.service.tick()
            every()
            time.sleep(0.05)

    def read(self, kit_id: str, what: Callable[[Any], Any]) -> Any:
        runner = self.runners[kit_id]
        with runner._lock:  # the runner's thread advances the model
            return what(runner.model)

    def commands(self, kit_id: str) -> list[tuple[str, str]]:
        with self.service.store.transaction() as db:
            rows = db.scalars(
                select(CommandRow).where(CommandRow.kit_id == kit_id).order_by(CommandRow.id)
            )
            return [(row.target, row.status) for row in rows]


@pytest.fixture
def lab(broker, models, state_root) -> Iterator[Lab]:
    creds = broker.provision_kits(list(KITS))
    runners = {
        kit_id: KitRunner(
            kit_id,
            twin_class(model)(models[model], seed=7, start=start),
            broker.address(creds[kit_id].username),
            rate_hz=10,
            speed=speed,
        ).start()
        for kit_id, (model, start, speed) in KITS.items()
    }
    broker.provision_supervisor(SERVICE_ACCOUNT)
    store = SharingStore(f"sqlite:///{state_root / f'at-rest-{time.time_ns()}.db'}")
    rights = BrokerRights(broker.admin, broker.credentials)
    gateway = MqttKitGateway(broker.address(SERVICE_ACCOUNT))
    policy = SharingPolicy(safe_confirm_timeout_seconds=2.0, offline_grace_seconds=1.0)
    service = KitSharing(store, policy, rights, gateway)
    for kit_id, (model, _, _) in KITS.items():
        service.register_kit(ADMIN, kit_id, model)
    service.set_maintenance(ADMIN, "ar-cross-safe", on=True, reason="baseline: the safe state")
    wait_until(lambda: all(gateway.report(k) for k in KITS), timeout=10)
    yield Lab(service, runners, rights)
    gateway.close()
    rights.close()
    for runner in runners.values():
        runner.stop()
    store.close()


def queue(model: Any) -> int:
    return sum(model.queues.values())


def test_idle_kits_run_their_automatic_operation(lab: Lab) -> None:
    lab.tick_until(
        lambda: all(lab.runners[k].core.status()["at_rest"] for k in ("ar-cross", "ar-park"))
    )
    assert lab.runners["ar-cross"].core.state["mode"] == "fixed"
    assert lab.runners["ar-park"].core.state["mode"] == "auto"
    assert lab.runners["ar-cross-safe"].core.is_safe()  # out of the pool: no rest
    start = {k: lab.read(k, lambda m: m.t) for k in ("ar-cross", "ar-cross-safe")}
    lamp: list[tuple[float, float]] = []

    def twenty_minutes() -> bool:
        lamp.append(lab.read("ar-lamp", lambda m: (m.ambient_lx, m.level)))
        return all(lab.read(k, lambda m: m.t) - t0 >= 20 * 60 for k, t0 in start.items())

    lab.tick_until(twenty_minutes, timeout=30)
    resting, safe = lab.read("ar-cross", queue), lab.read("ar-cross-safe", queue)
    print(
        f"\nintersection, 20 simulated minutes from 17:30: queue {safe} in the safe state "
        f"(flashing amber), {resting} at rest (fixed-time default plan)"
    )
    assert resting < 60 and safe > 150
    assert lab.read("ar-cross", lambda m: m.conflict_violations) == 0
    # The parking lot parked cars that arrived; the display shows the free places.
    parked, text, occupied = lab.read("ar-park", lambda m: (m.entered, m.display_text, m.occupied))
    print(
        f"parking at rest, 20 simulated minutes from 09:00: {parked} cars parked, display {text!r}"
    )
    assert parked >= 3 and (str(8 - occupied) in text or "FULL" in text)

    # The street lights follow the photocell: off in daylight, on after dusk.
    def after_dusk() -> bool:
        lamp.append(lab.read("ar-lamp", lambda m: (m.ambient_lx, m.level)))
        return lamp[-1][0] < 5 and lamp[-1][1] > 0

    lab.tick_until(after_dusk, timeout=60)
    assert all(level == 0 for lux, level in lamp if lux > 100)
    assert any(lux > 100 for lux, _ in lamp)


def test_after_a_session_the_kit_passes_through_safe_then_rests(lab: Lab, broker) -> None:
    lab.tick_until(lambda: lab.runners["ar-cross"].core.status()["at_rest"])
    session = lab.service.request(ALICE, kit_id="ar-cross")["session"]
    assert session["state"] == "granted"  # at once, as for any free kit
    lab.tick_until(lambda: lab.runners["ar-cross"].core.is_safe())  # asked for safe at the grant
    lab.service.heartbeat(ALICE, session["id"])
    control = connect(
        broker.address(lab.rights.control_account(ALICE.name).username).url(),
        client_id="ar-alice-ctl",
    )
    try:
        kit = control.kit("ar-cross")
        assert kit.set("mode", "manual").status == P.APPLIED  # the holder controls it fully
        with pytest.raises(CommandRejected) as refused:  # and the interlocks still hold
            kit.set("phase-request", 4, timeout=5)  # the plan has three stages
        assert refused.value.ack.reason == P.R_INTERLOCK
        assert kit.set("phase-request", 1).status == P.APPLIED
    finally:
        control.close()
    lab.service.release(ALICE, session["id"])
    lab.tick_until(lambda: lab.runners["ar-cross"].core.status()["at_rest"])
    lab.tick_until(lambda: (P.AT_REST_PROPERTY, P.APPLIED) in lab.commands("ar-cross")[-1:])
    history = lab.commands("ar-cross")
    # rest, safe (grant), the holder's three, safe (handover), rest: each acknowledged.
    whole = [entry for entry in history if entry[0] in P.WHOLE_KIT_PROPERTIES]
    assert whole == [
        (P.AT_REST_PROPERTY, P.APPLIED),
        (P.SAFE_STATE_PROPERTY, P.APPLIED),
        (P.SAFE_STATE_PROPERTY, P.APPLIED),
        (P.AT_REST_PROPERTY, P.APPLIED),
    ]
    assert history.index(("mode", P.APPLIED)) < len(history) - 2
    assert lab.service.sessions(ALICE)[0]["state"] == "released"


def test_a_kit_with_a_fault_stays_safe(lab: Lab) -> None:
    lab.tick_until(lambda: lab.runners["ar-cross"].core.status()["at_rest"])
    runner = lab.runners["ar-cross"]
    with runner._lock:  # a conflicting plan that bypassed KitCore: the monitor trips
        runner.model.apply(
            "phase-plan",
            [{"green": ["north", "east"], "seconds": 20}, {"green": ["west"], "seconds": 20}],
        )
    lab.tick_until(lambda: runner.core.status()["fault"])
    session = lab.service.request(ALICE, kit_id="ar-cross")["session"]
    lab.service.release(ALICE, session["id"])
    lab.tick_until(lambda: lab.service.sessions(ALICE)[0]["state"] == "released")
    lab.tick_for(2.0)  # time enough to be put at rest, if the service would
    assert runner.core.is_safe() and not runner.core.status()["at_rest"]
    assert lab.read("ar-cross", lambda m: m.sample()["signal"]) == "flashing-amber"
    assert lab.commands("ar-cross")[-1] == (P.SAFE_STATE_PROPERTY, P.APPLIED)


def test_a_kit_lost_during_a_session_stays_safe_when_it_returns(lab: Lab, broker, models) -> None:
    lab.tick_until(lambda: lab.runners["ar-park"].core.status()["at_rest"])
    session = lab.service.request(ALICE, kit_id="ar-park")["session"]
    lab.service.heartbeat(ALICE, session["id"])
    lab.runners["ar-park"].stop()
    lab.tick_until(
        lambda: (
            next(k for k in lab.service.kits() if k["id"] == "ar-park")["pool"] == NEEDS_ATTENTION
        )
    )
    creds = broker.provision_kits(["ar-park"])
    lab.runners["ar-park"] = back = KitRunner(
        "ar-park",
        twin_class("smart-parking")(models["smart-parking"], seed=7, start=MORNING),
        broker.address(creds["ar-park"].username),
        rate_hz=10,
        speed=SPEED,
    ).start()
    lab.tick_for(2.0)
    assert back.core.is_safe() and back.core.state["mode"] == "manual"
    assert lab.read("ar-park", lambda m: m.sample()["gate-state"]) == "closed"
