"""Message size limits enforced by the broker: the platform's and each kit model's.

A holder of a kit's rights tries what an attacker (or a buggy notebook) would: a command far
larger than a board can hold, and a message over the platform's limit. The twin and the board
firmware (on CPython) are both tried: each names its model's `max_packet_bytes` in its CONNECT.
"""

from __future__ import annotations

import time
import uuid

import pytest
from paho.mqtt.properties import Properties

from hardware_kits import protocol as P
from hardware_kits.broker import MAX_PACKET_BYTES
from hardware_kits.firmware import umqtt5
from hardware_kits.firmware_bundle import build_bundle, run_under_cpython
from hardware_kits.mqtt import command_properties, connect_client
from tests.conftest import ChildProcess, KitProcess, wait_until

pytestmark = pytest.mark.broker
PACKET_TOO_LARGE = 0x95  # MQTT v5 reason 149
# implementation: (model, actuator, two valid values). Both models' max_packet_bytes: 8192.
KITS = {
    "twin": ("smart-parking", "display", b"before", b"after"),
    "firmware": ("street-lighting", "mode", b"manual", b"auto"),  # the board's model
}


class _Firmware(ChildProcess):
    def __init__(self, bundle) -> None:
        self.bundle = bundle

    def start(self) -> _Firmware:
        self.process = run_under_cpython(self.bundle)
        return self


class Holder:
    """An account granted one kit's command role, reading its own acknowledgements."""

    def __init__(self, broker, kit_id: str, actuator: str) -> None:
        self.broker, self.kit_id, self.actuator = broker, kit_id, actuator
        self.creds = broker.provision_user(f"holder-{kit_id}", command_kits=[kit_id])
        self.reply_to = P.ack_topic(kit_id, self.creds.username) + "/limits"
        self.acks: list = []
        self.values: list[bytes] = []  # the actuator's retained value, as the kit publishes it
        value_topic = P.property_topic(kit_id, P.ACTUATORS_NODE, actuator)

        def on_message(_c, _u, msg) -> None:
            if msg.topic == value_topic:
                self.values.append(msg.payload)
            else:
                self.acks.append(P.decode_ack(msg.payload))

        self.client = connect_client(
            broker.host,
            broker.port,
            self.creds,
            f"holder-{uuid.uuid4().hex[:6]}",
            on_message=on_message,
            subscribe=[(self.reply_to, 1), (value_topic, 1)],
        )

    def props(self, command_id: str) -> Properties:
        return command_properties(command_id, self.reply_to, time.time() + 10)

    def send(self, payload: bytes, props: Properties) -> None:
        self.client.publish(
            P.set_topic(self.kit_id, self.actuator), payload, qos=1, properties=props
        ).wait_for_publish(10)

    def ack(self, command_id: str, timeout: float = 5.0) -> dict | None:
        """The acknowledgement of `command_id`, or None if none came within `timeout`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = next((a for a in self.acks if a["id"] == command_id), None)
            if found is not None:
                return found
            time.sleep(0.02)
        return None

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture(scope="module", params=["twin", "firmware"])
def held(request, broker, state_root, models):
    kit_id = f"lim-{request.param}"
    model, actuator, first, second = KITS[request.param]
    creds = broker.provision_kits([kit_id])[kit_id]
    if request.param == "twin":
        kit = KitProcess(broker, state_root, {"id": kit_id, "model": model, "rate_hz": 5})
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
        kit = _Firmware(bundle)
    kit.start()
    holder = Holder(broker, kit_id, actuator)
    # A first command proves the kit is up and answering before anything is measured.
    wait_until(lambda: _probe(holder, second), timeout=30, interval=0.5)
    yield holder, first, second
    holder.close()
    kit.stop()


def _probe(holder: Holder, value: bytes) -> bool:
    command_id = uuid.uuid4().hex
    holder.send(value, holder.props(command_id))
    ack = holder.ack(command_id, timeout=0.5)
    return ack is not None and ack["status"] == P.APPLIED


def _answered(holder: Holder, payload: bytes) -> dict:
    command_id = uuid.uuid4().hex
    holder.send(payload, holder.props(command_id))
    ack = holder.ack(command_id)
    assert ack is not None, f"no acknowledgement of a {len(payload)}-byte command"
    return ack


def test_a_command_over_the_models_limit_never_reaches_the_kit(held):
    holder, before, after = held
    # Under the model's limit, over the kit's own payload limit: the kit answers it itself.
    assert _answered(holder, b"x" * (P.MAX_COMMAND_BYTES + 1))["reason"] == P.R_OVERSIZE
    assert _answered(holder, before)["status"] == P.APPLIED
    wait_until(lambda: holder.values and holder.values[-1] == before, timeout=5)
    for size in (100_000, 200_000):  # over the model's 8 KiB, under the platform's limit
        command_id = uuid.uuid4().hex
        holder.send(b"y" * size, holder.props(command_id))
        assert holder.ack(command_id, timeout=1.5) is None  # the kit never got it
    assert holder.values[-1] == before  # nothing changed the value in between
    assert _answered(holder, after)["status"] == P.APPLIED  # and the kit still answers
    wait_until(lambda: holder.values[-1] == after, timeout=5)


def test_a_message_over_the_platform_limit_is_refused_by_the_broker(broker, held):
    holder, before, _ = held
    client = umqtt5.MQTTClient(
        f"big-{uuid.uuid4().hex[:6]}",
        broker.host,
        broker.port,
        holder.creds.username,
        holder.creds.password,
    )
    client.connect()
    assert client.server_properties["maximum_packet_size"] == MAX_PACKET_BYTES
    command_id = uuid.uuid4().hex
    props = {
        "response_topic": holder.reply_to,
        "correlation_data": command_id.encode(),
        "user_properties": {P.PROP_COMMAND_ID: command_id, P.PROP_DEADLINE: str(_ms(10))},
    }
    with pytest.raises(umqtt5.MQTTException) as refused:  # over the limit: sender dropped
        client.publish(
            P.set_topic(holder.kit_id, holder.actuator),
            b"z" * (MAX_PACKET_BYTES + 10_000),
            qos=1,
            properties=props,
        )
    client.close()
    assert refused.value.code == PACKET_TOO_LARGE, refused.value
    assert holder.ack(command_id, timeout=1.5) is None
    assert _answered(holder, before)["status"] == P.APPLIED


def test_invalid_utf8_declared_as_utf8_is_malformed_at_the_kit(held):
    """Mosquitto 2.0.11 does not check payload-format-indicator 1 payloads (it forwards them):
    the kit's decoder does, and answers `malformed`."""
    holder, _, _ = held
    command_id = uuid.uuid4().hex
    props = holder.props(command_id)
    props.PayloadFormatIndicator = 1
    holder.send(b"\xff\xfe\xc0ok", props)
    ack = holder.ack(command_id)
    assert ack is not None
    assert (ack["status"], ack["reason"]) == (P.REJECTED, P.R_MALFORMED)


def _ms(seconds_ahead: float) -> int:
    return int((time.time() + seconds_ahead) * 1000)
