"""MQTT trust boundaries, tried as a student would: a command left retained on the broker for
whoever holds the kit next, reading other people's command acknowledgements, and an LMS user
named like one of the platform's own accounts. Real Mosquitto with dynamic security, a real
twin and the lab service in their own processes (tests/stack.py)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from hardware_kits import protocol as P
from hardware_kits.broker import ADMIN, Broker
from hardware_kits.mqtt import BrokerAddress, ConnectError, command_properties, connect_client
from hub_config.lti.platforms import Platform, ReservedUsername
from labs.client import LabService, connect
from site_config.platform_accounts import RESERVED_NAMES, RESERVED_PREFIXES
from tests.conftest import wait_until
from tests.stack import ServiceProcess, TwinProcess, token, with_tokens

pytestmark = pytest.mark.broker

KIT, MODEL = "bound-lamp-1", "street-lighting"
USERS = {
    "admin": {"name": "lab-admin", "institution": "centre", "lab_admin": True},
    "alice": {"name": "alice", "institution": "univ-a"},
    "bob": {"name": "bob", "institution": "univ-b"},
}


@dataclass
class Lab:
    broker: Broker
    service: ServiceProcess
    twin: TwinProcess

    def api(self, who: str) -> LabService:
        return LabService(self.service.url, token(who), timeout=30)

    def urls(self, who: str) -> dict[str, BrokerAddress]:
        return {k: BrokerAddress.from_url(v) for k, v in self.api(who).mqtt_urls().items()}


@pytest.fixture(scope="module")
def lab(broker: Broker, state_root) -> Iterator[Lab]:
    service = ServiceProcess(broker, state_root, with_tokens(USERS), name="mqtt-bounds").start()
    twin = None
    try:
        admin = LabService(service.url, token("admin"), timeout=30)
        admin.register_kit(KIT, MODEL, "boundary kit")
        twin = TwinProcess(KIT, MODEL, broker.address(f"kit-{KIT}").url()).start()
        wait_until(lambda: admin.kit(KIT)["online"], 15)
        yield Lab(broker, service, twin)
    finally:
        if twin is not None:
            twin.stop()
        service.stop()


class Watcher:
    """A raw MQTT connection that records every message it is sent."""

    def __init__(self, address: BrokerAddress, filters: list[str]) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.client = connect_client(
            address.host,
            address.port,
            address.credentials,
            f"watch-{uuid.uuid4().hex[:8]}",
            on_message=lambda c, u, m: self.messages.append(m),
            subscribe=[(f, 1) for f in filters],
        )

    def topics(self, part: str) -> list[str]:
        return [m.topic for m in list(self.messages) if part in m.topic]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def retained_on(broker: Broker, topic: str) -> list[bytes]:
    """What a new subscriber is given at once on `topic` (the retained message, if any)."""
    watcher = Watcher(broker.address(ADMIN), [topic])
    try:
        time.sleep(0.5)
        return [m.payload for m in watcher.messages if m.retain and m.payload]
    finally:
        watcher.close()


def hold(lab: Lab, who: str) -> dict[str, Any]:
    entry = lab.api(who).join(kit=KIT)

    def granted() -> dict | None:
        """the queue entry is served"""
        e = lab.api(who).queue_entry(entry["id"])
        return e["session"] if e["state"] == "served" else None

    return entry["session"] if entry["state"] == "served" else wait_until(granted, 15)


def release(lab: Lab, who: str, session: dict[str, Any]) -> None:
    lab.api(who).release(session["id"])

    def released() -> bool:
        """the session is released (its safe state acknowledged)"""
        return any(
            s["id"] == session["id"] and s["state"] == "released" for s in lab.api(who).sessions()
        )

    wait_until(released, 15)


def test_a_retained_command_is_cleared_and_never_applied_after_handover(lab: Lab):
    session = hold(lab, "alice")
    control = lab.urls("alice")["control"]
    topic = P.set_topic(KIT, "mode")
    watch = connect(lab.broker.address(ADMIN).url())
    raw = connect_client(control.host, control.port, control.credentials, "retainer")
    try:
        watch.wait_for_kits([KIT], timeout=10)
        kit = watch.kit(KIT)
        props = command_properties(
            uuid.uuid4().hex, P.ack_topic(KIT, control.credentials.username), time.time() + 300
        )
        raw.publish(topic, "manual", qos=1, retain=True, properties=props).wait_for_publish(5)
        wait_until(lambda: kit.actuators.get("mode") == "manual", 5)  # the holder's own, live
        # The service saw the retain flag and deleted the message, saying so in one line.
        line = f"cleared a retained command on {topic}"
        wait_until(lambda: line in lab.service.output(), 10)
        assert retained_on(lab.broker, topic) == []

        release(lab, "alice", session)  # the handover: safe state, then bob
        bob = hold(lab, "bob")
        wait_until(lambda: kit.actuators.get("mode") == "auto", 5)
        applied = kit.status.get("applied", 0)
        lab.twin.kill()  # the kit comes back and subscribes anew: nothing retained to get
        wait_until(lambda: kit.state == P.STATE_LOST, 10)
        lab.twin.start()
        wait_until(lambda: kit.state == P.STATE_READY, 20)
        time.sleep(1.5)
        assert kit.actuators["mode"] == "auto"
        assert kit.status.get("applied", 0) <= applied  # a restarted twin counts from 0
        release(lab, "bob", bob)
    finally:
        raw.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)
        raw.disconnect()
        raw.loop_stop()
        watch.close()


def test_acknowledgements_reach_only_their_requester(lab: Lab):
    alice, bob = lab.urls("alice"), lab.urls("bob")
    observer = lab.broker.provision_user(f"observer-{uuid.uuid4().hex[:6]}")
    everything = [P.HOMIE_PREFIX + "/#"]
    # Asking for acknowledgements outright is refused, for watchers and other students alike.
    for address in (lab.broker.address(observer.username), bob["watch"], bob["control"]):
        with pytest.raises(ConnectError, match="refused a subscription"):
            Watcher(address, [P.all_kits("$ack/#")])
    with pytest.raises(ConnectError, match="refused a subscription"):
        Watcher(bob["control"], [P.all_kits(f"$ack/{alice['control'].credentials.username}/#")])
    watchers = {
        "observer": Watcher(lab.broker.address(observer.username), everything),
        "bob watch": Watcher(bob["watch"], everything),
        "bob control": Watcher(bob["control"], everything),
        "alice watch": Watcher(alice["watch"], everything),  # her other account: not the sender
    }
    session = hold(lab, "alice")
    try:
        with connect(alice["control"].url()) as mine:
            mine.wait_for_kits([KIT], timeout=10)
            ack = mine.kit(KIT).set("mode", "manual")
            assert ack.status == P.APPLIED  # the requester has its acknowledgement
            wait_until(lambda: mine.kit(KIT).status.get("applied"), 5)  # the kit is done
        # They do receive the kit's messages (its new value among them), only no acks.
        wait_until(lambda: all(w.topics("/actuators/mode") for w in watchers.values()), 10)
        time.sleep(0.5)
        seen = {name: w.topics("/$ack/") for name, w in watchers.items()}
        assert seen == {name: [] for name in watchers}
    finally:
        for w in watchers.values():
            w.close()
        release(lab, "alice", session)


def _platform(key: str) -> Platform:
    return Platform(key, "univ-a", "https://lms", ("c",), ("d",), "a", "t", "j", "t", {})


def test_an_lti_mapping_never_produces_a_platform_account_name():
    """Whatever the site says, an LMS user is never named like a platform account (the site
    check refuses such username prefixes; the mapping itself refuses too)."""
    probes = [name.split("-", 1) for name in RESERVED_NAMES if "-" in name]
    probes += [(prefix.rstrip("-"), "x1") for prefix in RESERVED_PREFIXES if prefix.endswith("-")]
    probes += [("smartlab", "sb1")]  # the sandbox accounts' prefix has no trailing "-"
    for prefix, sub in probes:
        with pytest.raises(ReservedUsername, match="the platform's own accounts"):
            _platform(prefix).username(sub)
    assert _platform("univa").username("42") == "univa-42"
