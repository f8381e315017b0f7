"""Kits at rest run their own automatic operation: the twins behind the real command path."""

from __future__ import annotations

from typing import Any

from hardware_kits import protocol as P
from hardware_kits.descriptor import load_models
from hardware_kits.kitcore import KitCore
from hardware_kits.twins.base import TwinModel, twin_class
from hardware_kits.twins.parking import AUTO_FULL

MODELS = load_models()
MIDNIGHT = 1767225600.0  # 2026-01-01 00:00 UTC
KIT = "rest-test"


def at(hour: float) -> float:
    return MIDNIGHT + hour * 3600.0


class Kit:
    """A twin behind KitCore, with the runner's fault hand-over to the core."""

    def __init__(self, model: str, start: float, seed: int = 1) -> None:
        self.model: TwinModel = twin_class(model)(MODELS[model], seed=seed, start=start)
        self.core = KitCore(KIT, MODELS[model], clock=lambda: 0.0, apply_hook=self.model.apply)
        self.n = 0

    def whole(self, topic: str) -> dict[str, Any]:
        self.n += 1
        return self.core.handle_command(topic, "", f"w{self.n}", "1")

    def set(self, actuator: str, value: Any) -> dict[str, Any]:
        self.n += 1
        spec = MODELS[self.model.model]["actuators"][actuator]
        topic = P.set_topic(KIT, actuator)
        return self.core.handle_command(topic, P.encode_value(spec, value), f"c{self.n}", "1")

    def run(self, seconds: float, step: float = 1.0) -> None:
        for _ in range(round(seconds / step)):
            self.model.advance(step)
            self.core.fault = self.model.fault  # as kit_runner does every tick


def queue_after(minutes: int, resting: bool, hour: float) -> int:
    kit = Kit("intersection", at(hour))
    if resting:
        assert kit.whole(P.at_rest_topic(KIT))["status"] == P.APPLIED
    kit.run(minutes * 60)
    return sum(kit.model.queues.values())


def test_intersection_at_rest_keeps_its_queue_bounded() -> None:
    for hour in (8.0, 17.5):  # the morning and the evening peak
        safe, resting = queue_after(20, False, hour), queue_after(20, True, hour)
        print(
            f"intersection {hour:04.1f} h, queue after 20 min: safe state {safe}, at rest {resting}"
        )
        assert resting < 60 < 200 < safe
    kit = Kit("intersection", at(17.5))
    kit.whole(P.at_rest_topic(KIT))
    worst = 0
    for _ in range(120):  # two simulated hours
        kit.run(60)
        worst = max(worst, sum(kit.model.queues.values()))
    assert worst < 80 and kit.model.conflict_violations == 0
    assert kit.model.sample()["signal"] != "flashing-amber"


def test_parking_at_rest_parks_arriving_cars_and_shows_free_places() -> None:
    closed = Kit("smart-parking", at(9))
    closed.run(3600)
    assert closed.model.entered == 0  # the safe state: gate closed, nobody parks
    kit = Kit("smart-parking", at(9))
    kit.whole(P.at_rest_topic(KIT))
    texts, gates = set(), set()
    for _ in range(3 * 60):
        kit.run(60)
        free = 8 - kit.model.occupied
        texts.add(kit.model.display_text)
        gates.add(kit.model.sample()["gate-state"])
        assert kit.model.display_text == (
            AUTO_FULL if not free else f"СВОБОДНО {free} / FREE {free}"
        )
    print(f"parking at rest, 3 h from 09:00: {kit.model.entered} cars parked, {len(texts)} texts")
    assert kit.model.entered >= 20 and gates == {"open", "closed"}
    assert (
        kit.model.entered + kit.model.reneged + kit.model.balked + kit.model.waiting
        == kit.model.arrived
    )


def test_parking_holder_controls_the_gate_in_manual_mode() -> None:
    kit = Kit("smart-parking", at(9))
    kit.whole(P.at_rest_topic(KIT))
    kit.whole(P.safe_state_topic(KIT))  # the handover: manual, gate closed
    kit.run(600)
    assert kit.model.sample()["gate-state"] == "closed" and kit.model.display_text == ""
    assert kit.set("gate", "open")["status"] == P.APPLIED
    assert kit.set("display", "Hello")["status"] == P.APPLIED
    assert kit.model.sample()["gate-state"] == "open" and kit.model.display_text == "Hello"


def test_street_lights_at_rest_follow_the_photocell() -> None:
    kit = Kit("street-lighting", at(0))
    kit.set("mode", "manual")
    kit.set("dimming", 0)
    kit.whole(P.at_rest_topic(KIT))
    seen = []
    for _ in range(24):
        kit.run(3600, step=0.5)
        seen.append((kit.model.ambient_lx, kit.model.level))
    assert all(level > 0 for lux, level in seen if lux < 5)  # dark: on (dimmed or full)
    assert all(level == 0 for lux, level in seen if lux > 100)  # daylight: off
    assert any(lux < 5 for lux, _ in seen) and any(lux > 100 for lux, _ in seen)


def test_an_intersection_with_a_fault_stays_safe() -> None:
    kit = Kit("intersection", at(10))
    kit.whole(P.at_rest_topic(KIT))
    # A conflicting plan that bypassed KitCore: the conflict monitor trips.
    kit.model.apply(
        "phase-plan",
        [{"green": ["north", "east"], "seconds": 20}, {"green": ["west"], "seconds": 20}],
    )
    kit.run(120)
    assert kit.model.fault and kit.core.status()["fault"]
    kit.whole(P.safe_state_topic(KIT))  # the handover does not clear the latched fault
    refused = kit.whole(P.at_rest_topic(KIT))
    assert refused["status"] == P.REJECTED and refused["reason"] == P.R_INTERLOCK
    kit.run(600)
    assert kit.model.sample()["signal"] == "flashing-amber" and kit.core.is_safe()
