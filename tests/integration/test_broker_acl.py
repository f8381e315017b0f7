"""Broker-enforced rights: a kit's credentials reach only that kit's own topics."""

from __future__ import annotations

import time
import uuid

import pytest

from hardware_kits import protocol as P
from hardware_kits.broker import ADMIN
from hardware_kits.kit_runner import KitRunner
from hardware_kits.mqtt import ConnectError, command_properties, connect_client
from hardware_kits.twins.base import twin_class
from labs.client import connect
from tests.conftest import wait_until

pytestmark = pytest.mark.broker
NOT_AUTHORIZED = 135


@pytest.fixture(scope="module")
def two_kits(broker, models):
    creds = broker.provision_kits(["acl-a", "acl-b"])
    runners = [
        KitRunner(
            kit,
            twin_class("smart-parking")(models["smart-parking"], seed=1),
            broker.address(creds[kit].username),
            rate_hz=10,
        ).start()
        for kit in ("acl-a", "acl-b")
    ]
    observer = broker.provision_user("acl-observer")
    lab = connect(broker.address(observer.username).url(), client_id="acl-observer")
    lab.wait_for_kits(["acl-a", "acl-b"], timeout=10)
    yield creds, lab
    lab.close()
    for runner in runners:
        runner.stop()


def publish_as(broker, creds, topic: str, payload: str, props=None) -> int:
    """Publish at QoS 1 with these credentials; return the PUBACK reason code."""
    codes: list[int] = []
    client = connect_client(broker.host, broker.port, creds, f"intruder-{uuid.uuid4().hex[:6]}")
    client.on_publish = lambda c, u, mid, reason, p: codes.append(reason.value)
    try:
        client.publish(topic, payload, qos=1, properties=props).wait_for_publish(5)
        wait_until(lambda: codes, timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0]


def test_kit_cannot_command_another_kit(broker, two_kits):
    creds, lab = two_kits
    target = lab.kit("acl-b")
    wait_until(lambda: target.status is not None, timeout=5)
    applied = target.status["applied"]
    acks: list = []
    unsubscribe_probe = _watch(broker, "homie/5/acl-b/$ack/#", acks)
    try:
        props = command_properties(
            uuid.uuid4().hex, P.ack_topic("acl-b", "intruder"), time.time() + 5
        )
        code = publish_as(broker, creds["acl-a"], P.set_topic("acl-b", "gate"), "open", props)
        assert code == NOT_AUTHORIZED
        time.sleep(0.5)  # give a wrongly delivered command time to show up
    finally:
        unsubscribe_probe()
    assert acks == []  # the kit never answered: it never received the command
    assert target.status["applied"] == applied
    assert target.actuators["gate"] == "closed"


def test_kit_cannot_spoof_another_kits_state_or_telemetry(broker, two_kits):
    creds, lab = two_kits
    assert publish_as(broker, creds["acl-a"], P.state_topic("acl-b"), "lost") == NOT_AUTHORIZED
    assert publish_as(broker, creds["acl-a"], P.telemetry_topic("acl-b"), "{}") == NOT_AUTHORIZED
    time.sleep(0.3)
    assert lab.kit("acl-b").state == P.STATE_READY


def test_kit_cannot_listen_to_another_kits_commands(broker, two_kits):
    creds, _ = two_kits
    with pytest.raises(ConnectError, match="refused a subscription"):
        connect_client(
            broker.host,
            broker.port,
            creds["acl-a"],
            "eavesdropper",
            subscribe=[(P.set_topic("acl-b", "+"), 1)],
        )


def test_anonymous_and_wrong_password_are_refused(broker):
    from hardware_kits.mqtt import Credentials

    with pytest.raises(ConnectError, match="refused"):
        connect_client(broker.host, broker.port, Credentials("kit-acl-a", "wrong"), "guess")


def _watch(broker, topic: str, sink: list):
    """Everything on `topic`, as the broker's admin (who alone reads every acknowledgement)."""
    watcher = broker.credentials(ADMIN)
    client = connect_client(
        broker.host,
        broker.port,
        watcher,
        f"watch-{uuid.uuid4().hex[:6]}",
        on_message=lambda c, u, m: sink.append(m),
        subscribe=[(topic, 1)],
    )

    def stop() -> None:
        client.disconnect()
        client.loop_stop()

    return stop
