"""The one protocol suite: every kit model's twin and the board firmware, on a real Mosquitto.

Each implementation runs in its own process against the dynamic-security broker; the test
talks to it only over MQTT through the client library, as notebooks and dashboards do.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hardware_kits import protocol as P
from hardware_kits.descriptor import load_models
from hardware_kits.firmware_bundle import build_bundle, run_under_cpython, run_under_micropython
from hardware_kits.mqtt import command_properties, connect_client
from labs.client import CommandRejected, connect
from tests.conftest import ChildProcess, KitProcess, wait_until
from tests.kit_examples import (
    example_value,
    interlock_violation,
    malformed_payload,
    out_of_range_payload,
    prerequisites,
)

pytestmark = pytest.mark.broker

# MicroPython's Unix port (a dev dependency) runs the board's files on the board's interpreter.
MICROPYTHON = Path(sys.executable).with_name("micropython")
IMPLEMENTATIONS = [("twin", m) for m in sorted(load_models())] + [
    ("firmware", "street-lighting"),
    pytest.param(
        ("micropython", "street-lighting"),
        marks=pytest.mark.skipif(
            not MICROPYTHON.exists(), reason="MicroPython's Unix port is not installed"
        ),
    ),
]


class FirmwareProcess(ChildProcess):
    """The board firmware, unchanged, with a simulated `machine`, on CPython or MicroPython."""

    def __init__(self, bundle, micropython: bool) -> None:
        self.bundle = bundle
        self.micropython = micropython

    def start(self) -> FirmwareProcess:
        self.process = (
            run_under_micropython(self.bundle, str(MICROPYTHON))
            if self.micropython
            else run_under_cpython(self.bundle)
        )
        return self


@pytest.fixture(scope="module", params=IMPLEMENTATIONS, ids=lambda p: "-".join(p))
def kit(request, broker, state_root, models):
    impl, model = request.param
    kit_id = f"{impl}-{model}"
    creds = broker.provision_kits([kit_id])[kit_id]
    if impl == "twin":
        runner = KitProcess(
            broker, state_root, {"id": kit_id, "model": model, "seed": 7, "rate_hz": 20}
        )
    else:
        bundle = build_bundle(
            state_root / f"bundle-{kit_id}",
            kit_id,
            models[model],
            broker.host,
            broker.port,
            creds.username,
            creds.password,
        )
        runner = FirmwareProcess(bundle, micropython=impl == "micropython")
    runner.start()
    # A fresh account per kit: granting a role to a connected client makes dynsec kick it.
    user = broker.provision_user(f"tester-{kit_id}", command_kits=[kit_id])
    lab = connect(broker.address(user.username).url(), client_id=f"tester-{kit_id}")
    lab.wait_for_kits([kit_id], timeout=20)
    wait_until(lambda: lab.kit(kit_id).state == P.STATE_READY, timeout=20)
    yield lab.kit(kit_id), lab, runner
    lab.close()
    runner.stop()


def set_with_prerequisites(handle, actuator: str, value) -> dict:
    """Set an actuator after what its interlocks require; return every value now in force."""
    sent = dict(prerequisites(handle.descriptor, actuator))
    for name, wanted in sent.items():
        handle.set(name, wanted)
    ack = handle.set(actuator, value)
    assert ack.status == P.APPLIED and ack.value == value
    return {**sent, actuator: value}


def test_description_is_retained(kit, broker):
    handle, _, _ = kit
    got = {}
    observer = broker.provision_user("late-observer")
    client = connect_client(
        broker.host,
        broker.port,
        observer,
        f"late-{uuid.uuid4().hex[:6]}",
        on_message=lambda c, u, m: got.setdefault(m.topic, m),
        subscribe=[(P.description_topic(handle.kit_id), 1)],
    )
    try:
        message = wait_until(lambda: got.get(P.description_topic(handle.kit_id)), timeout=5)
        assert message.retain
        description = json.loads(message.payload)
        assert description["homie"] == P.HOMIE_VERSION
        assert description["smartlab"]["descriptor"] == handle.descriptor
        assert set(description["nodes"]["actuators"]["properties"]) == set(
            handle.descriptor["actuators"]
        )
    finally:
        client.disconnect()
        client.loop_stop()


def test_telemetry_has_no_sequence_gap_at_qos1(kit):
    handle, _, _ = kit
    samples = []
    unsubscribe = handle.subscribe(lambda kit_id, sample: samples.append(sample))
    try:
        wait_until(lambda: len(samples) >= 20, timeout=30)
    finally:
        unsubscribe()
    seqs = [s["seq"] for s in samples]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), seqs
    stamps = [s["ts"] for s in samples]
    assert stamps == sorted(stamps)
    for sample in samples:
        for name, value in sample["values"].items():
            P.check_value(handle.descriptor["sensors"][name], value, name)


def test_applied_ack_carries_value_in_force(kit):
    handle, _, _ = kit
    expected = {}
    for actuator, spec in handle.descriptor["actuators"].items():
        expected.update(set_with_prerequisites(handle, actuator, example_value(spec)))
    wait_until(lambda: handle.actuators == expected, timeout=5)
    assert not handle.status["safe"] or expected == P.safe_state(handle.descriptor)
    handle.safe_state()


def rejection(handle, actuator: str, payload, **kwargs) -> dict:
    with pytest.raises(CommandRejected) as err:
        handle.send_raw(actuator, payload, **kwargs)
    return err.value.ack


def test_bad_input_is_rejected_with_reason_and_kit_keeps_running(kit):
    handle, _, _ = kit
    before = handle.status.get("rejected", 0)
    actuator, spec = next(iter(handle.descriptor["actuators"].items()))
    expected = {
        P.R_UNKNOWN_ACTUATOR: rejection(handle, "no-such-actuator", "1"),
        P.R_OVERSIZE: rejection(handle, actuator, b"x" * (P.MAX_COMMAND_BYTES + 1)),
        P.R_MALFORMED: rejection(handle, actuator, malformed_payload(spec)),
        P.R_STALE: rejection(
            handle, actuator, P.encode_value(spec, spec["safe"]), deadline_s=time.time() - 5
        ),
    }
    ranged = next(
        (a, s)
        for a, s in handle.descriptor["actuators"].items()
        if out_of_range_payload(s) is not None
    )
    expected[P.R_OUT_OF_RANGE] = rejection(handle, ranged[0], out_of_range_payload(ranged[1]))
    for reason, ack in expected.items():
        assert ack.reason == reason, ack
        assert ack.detail
    received = handle.received
    wait_until(lambda: handle.received > received + 2, timeout=10)  # still publishing
    wait_until(lambda: handle.status.get("rejected", 0) >= before + len(expected), timeout=5)
    assert handle.status["safe"] is True


def test_duplicate_command_id_is_applied_once(kit):
    handle, _, _ = kit
    actuator, spec = next(
        (a, s)
        for a, s in handle.descriptor["actuators"].items()
        if not prerequisites(handle.descriptor, a)
    )
    value = example_value(spec)
    command_id = uuid.uuid4().hex
    wait_until(lambda: "applied" in handle.status, timeout=5)
    applied_before = handle.status["applied"]
    first = handle.send_raw(actuator, P.encode_value(spec, value), command_id=command_id)
    again = handle.send_raw(actuator, P.encode_value(spec, value), command_id=command_id)
    assert first.status == again.status == P.APPLIED
    assert not first.duplicate and again.duplicate
    wait_until(lambda: handle.status["applied"] == applied_before + 1, timeout=5)
    time.sleep(0.3)
    assert handle.status["applied"] == applied_before + 1
    handle.safe_state()


def test_interlock_refuses_unsafe_command(kit):
    handle, _, _ = kit
    violation = interlock_violation(handle.descriptor)
    if violation is None:
        pytest.skip(f"kit model {handle.descriptor['model']} declares no interlock")
    handle.safe_state()
    actuator, value = violation
    spec = handle.descriptor["actuators"][actuator]
    ack = rejection(handle, actuator, P.encode_value(spec, value))
    assert ack.reason == P.R_INTERLOCK
    assert handle.actuators[actuator] == spec["safe"]


def test_safe_state_restores_every_actuator(kit):
    handle, _, _ = kit
    for actuator, spec in handle.descriptor["actuators"].items():
        set_with_prerequisites(handle, actuator, example_value(spec))
    ack = handle.safe_state()
    assert ack.status == P.APPLIED and ack.value == P.safe_state(handle.descriptor)
    wait_until(lambda: handle.actuators == P.safe_state(handle.descriptor), timeout=5)
    wait_until(lambda: handle.status["safe"] is True, timeout=5)


def test_a_retained_command_is_never_applied(kit, broker):
    """A command left retained on the broker (a holder's, before a handover) would reach the kit
    again whenever it subscribes anew, long after it was meant: the kit never gets one."""
    handle, _, runner = kit
    descriptor = handle.descriptor
    actuator, spec = next(
        (name, spec)
        for name, spec in descriptor["actuators"].items()
        if not prerequisites(descriptor, name) and example_value(spec) != spec["safe"]
    )
    account = broker.provision_user(f"retainer-{handle.kit_id}", command_kits=[handle.kit_id])
    client = connect_client(broker.host, broker.port, account, f"ret-{uuid.uuid4().hex[:6]}")
    topic = P.set_topic(handle.kit_id, actuator)
    try:
        runner.kill()
        wait_until(lambda: handle.state == P.STATE_LOST, timeout=5)
        props = command_properties(
            uuid.uuid4().hex, P.ack_topic(handle.kit_id, account.username), time.time() + 300
        )
        client.publish(
            topic, P.encode_value(spec, example_value(spec)), qos=1, retain=True, properties=props
        ).wait_for_publish(5)
        runner.start()
        wait_until(lambda: handle.state == P.STATE_READY, timeout=20)
        wait_until(lambda: handle.actuators.get(actuator) == spec["safe"], timeout=5)
        time.sleep(1.5)  # a retained command would have been delivered at the subscription
        assert handle.actuators[actuator] == spec["safe"]
        assert handle.status.get("applied", 0) == 0, handle.status
    finally:
        client.publish(topic, b"", qos=1, retain=True).wait_for_publish(5)  # clear it
        client.disconnect()
        client.loop_stop()


def test_killed_kit_is_lost_then_recovers(kit):
    handle, _, runner = kit
    runner.kill()
    wait_until(lambda: handle.state == P.STATE_LOST, timeout=5)
    runner.start()
    wait_until(lambda: handle.state == P.STATE_READY, timeout=20)


def test_observer_cannot_command(kit, broker):
    handle, _, _ = kit
    observer = broker.provision_user("observer-only")
    refused = []
    client = connect_client(broker.host, broker.port, observer, f"obs-{uuid.uuid4().hex[:6]}")
    client.on_publish = lambda c, u, mid, reason, p: refused.append(reason)
    try:
        actuator, spec = next(iter(handle.descriptor["actuators"].items()))
        client.publish(
            P.set_topic(handle.kit_id, actuator), P.encode_value(spec, spec["safe"]), qos=1
        ).wait_for_publish(5)
        wait_until(lambda: refused, timeout=5)
        assert refused[0].value == 135  # MQTT v5 "Not authorized"
    finally:
        client.disconnect()
        client.loop_stop()


# ---------------------------------------------------------------- hostile and plain commands


class Listener:
    """An MQTT client of one account that keeps every message it may read."""

    def __init__(self, broker, creds, filters: list[str]) -> None:
        self.messages: list = []
        self.client = connect_client(
            broker.host,
            broker.port,
            creds,
            f"{creds.username}-{uuid.uuid4().hex[:6]}",
            on_message=lambda c, u, m: self.messages.append(m),
            subscribe=[(f, 1) for f in filters],
        )

    def acks(self, topic_prefix: str) -> list[dict]:
        return [P.decode_ack(m.payload) for m in list(self.messages) if m.topic == topic_prefix]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def holder(kit, broker):
    """The kit's holder (the tester account, with its command right) on a raw MQTT client, as a
    generic controller would connect, and the lab service's view of the anonymous answers."""
    handle, _, _ = kit
    handle.safe_state()
    creds = broker.credentials(f"tester-{handle.kit_id}")
    raw = Listener(broker, creds, [P.all_kits(f"$ack/{creds.username}/#")])
    watcher = Listener(
        broker, broker.provision_supervisor("kits21-ack-watcher"), [P.all_kits("$ack/anonymous")]
    )
    yield raw, watcher, creds.username
    raw.close()
    watcher.close()
    handle.safe_state()


def plain_actuator(descriptor: dict) -> tuple[str, dict]:
    """An actuator without prerequisites whose example value differs from its safe one."""
    return next(
        (name, spec)
        for name, spec in descriptor["actuators"].items()
        if not prerequisites(descriptor, name) and example_value(spec) != spec["safe"]
    )


def counted(handle, key: str, reason: str | None = None) -> int:
    status = handle.status or {}
    return status.get("rejections", {}).get(reason, 0) if reason else status.get(key, 0)


def test_wildcard_response_topic_is_refused_counted_and_not_applied(kit, holder):
    """A response topic with a wildcard cannot be answered on (the twin used to apply the
    command and then fail to publish, leaving no answer, no value and no record)."""
    handle, _, _ = kit
    raw, watcher, account = holder
    actuator, spec = plain_actuator(handle.descriptor)
    wait_until(lambda: handle.status is not None, timeout=5)
    before, applied = counted(handle, "", P.R_BAD_RESPONSE_TOPIC), counted(handle, "applied")
    anonymous = P.ack_topic(handle.kit_id, "anonymous")
    for wildcard in (f"{account}/#", f"{account}/+"):
        command_id = uuid.uuid4().hex
        props = command_properties(
            command_id, P.ack_topic(handle.kit_id, wildcard), time.time() + 5
        )
        raw.client.publish(
            P.set_topic(handle.kit_id, actuator),
            P.encode_value(spec, example_value(spec)),
            qos=1,
            properties=props,
        ).wait_for_publish(5)
        ack = wait_until(
            lambda cid=command_id: next((a for a in watcher.acks(anonymous) if a["id"] == cid), 0),
            timeout=5,
        )
        assert (ack["status"], ack["reason"]) == (P.REJECTED, P.R_BAD_RESPONSE_TOPIC)
    wait_until(lambda: counted(handle, "", P.R_BAD_RESPONSE_TOPIC) == before + 2, timeout=5)
    assert counted(handle, "applied") == applied
    assert handle.actuators[actuator] == spec["safe"]


def test_deeply_nested_payload_is_refused_and_counted(kit):
    """1,100 nested "[" used to raise RecursionError in protocol.decode_value: no answer."""
    handle, _, _ = kit
    parsed = [
        name
        for name, spec in handle.descriptor["actuators"].items()
        if spec["datatype"] in ("json", "integer", "float", "boolean")
    ]
    actuator = (parsed or list(handle.descriptor["actuators"]))[0]  # text actuators: as text
    wait_until(lambda: handle.status is not None, timeout=5)
    before = counted(handle, "rejected")
    ack = rejection(handle, actuator, "[" * 1100)
    if parsed:
        assert ack.reason == P.R_MALFORMED and "nested" in ack.detail
    wait_until(lambda: counted(handle, "rejected") == before + 1, timeout=5)
    assert handle.status["errors"] == 0


def test_far_future_deadline_is_refused(kit):
    handle, _, _ = kit
    actuator, spec = plain_actuator(handle.descriptor)
    payload = P.encode_value(spec, example_value(spec))
    ack = rejection(handle, actuator, payload, deadline_s=time.time() + 86400)
    assert ack.reason == P.R_DEADLINE_TOO_FAR
    assert handle.actuators[actuator] == spec["safe"]


def test_empty_retained_clear_is_ignored_quietly(kit, holder):
    """The lab service deletes a retained command with an empty retained message; the kit
    gets it live and takes it for what it is (used to count a missing_id rejection)."""
    handle, _, _ = kit
    raw, watcher, _ = holder
    actuator, _spec = plain_actuator(handle.descriptor)
    wait_until(lambda: handle.status is not None, timeout=5)
    ignored, rejected = counted(handle, "ignored"), counted(handle, "rejected")
    anonymous = P.ack_topic(handle.kit_id, "anonymous")
    answers = len(watcher.acks(anonymous))
    raw.client.publish(
        P.set_topic(handle.kit_id, actuator), b"", qos=1, retain=True
    ).wait_for_publish(5)
    wait_until(lambda: counted(handle, "ignored") == ignored + 1, timeout=5)
    time.sleep(0.3)
    assert counted(handle, "rejected") == rejected
    assert len(watcher.acks(anonymous)) == answers  # no answer for what is no command


def test_plain_homie_set_from_the_holder_is_applied_once(kit, holder):
    """A generic Homie 5 controller sends /set with the raw value and no lab properties."""
    handle, _, _ = kit
    raw, watcher, account = holder
    actuator, spec = plain_actuator(handle.descriptor)
    value = example_value(spec)
    wait_until(lambda: handle.status is not None, timeout=5)
    applied = counted(handle, "applied")
    anonymous = P.ack_topic(handle.kit_id, "anonymous")
    answers = len(watcher.acks(anonymous))
    raw.client.publish(
        P.set_topic(handle.kit_id, actuator), P.encode_value(spec, value), qos=1
    ).wait_for_publish(5)
    wait_until(lambda: handle.actuators[actuator] == value, timeout=5)
    wait_until(lambda: counted(handle, "applied") == applied + 1, timeout=5)
    ack = wait_until(lambda: watcher.acks(anonymous)[answers:], timeout=5)[0]
    assert ack["status"] == P.APPLIED and ack["value"] == value
    assert ack["id"].startswith(P.PLAIN_SET_ID_PREFIX)
    time.sleep(0.3)
    assert counted(handle, "applied") == applied + 1
    assert len(watcher.acks(anonymous)) == answers + 1
    # A Homie controller that names a response topic of its own gets its answer there.
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = P.ack_topic(handle.kit_id, f"{account}/homie")
    raw.client.publish(
        P.set_topic(handle.kit_id, actuator),
        P.encode_value(spec, spec["safe"]),
        qos=1,
        properties=props,
    ).wait_for_publish(5)
    mine = wait_until(lambda: raw.acks(props.ResponseTopic), timeout=5)
    assert mine[0]["status"] == P.APPLIED and mine[0]["value"] == spec["safe"]
    wait_until(lambda: handle.actuators[actuator] == spec["safe"], timeout=5)
