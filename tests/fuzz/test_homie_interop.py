"""A third-party Homie 5 controller (ebus-sdk; it speaks MQTT 3.1.1) against the demo site's
twins on a real Mosquitto.

Generic Homie tools must discover every kit from the wire alone, and one that holds a kit's
rights (a control account the lab service's `BrokerRights` granted, as for a session) must be
able to change an actuator with a plain Homie `/set` (no lab user properties); without the
rights the broker stops the same `/set` before it reaches the kit.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from ebus_sdk import Controller
from ebus_sdk.homie import ebus_cfg_add_auth

from hardware_kits import protocol as P
from hardware_kits.broker import Broker
from hardware_kits.mqtt import Credentials, connect_client
from lab_service.rights import BrokerRights
from site_config.kits import load_kits
from site_config.runtime import free_port
from tests.conftest import REPO, wait_until
from tests.stack import TwinProcess

pytestmark = pytest.mark.broker
NOT_AUTHORIZED = 135
DEMO_SITE = REPO / "site_config" / "demo-site.yaml"
# The holder's target: a parking gate (no interlock), closed in the safe state.
KIT, NODE, ACTUATOR, NEW_VALUE = "parking-1", P.ACTUATORS_NODE, "gate", "open"


class Platform:
    """A broker of its own with every demo-site kit running as a twin process."""

    def __init__(self, root: Path) -> None:
        self.broker = Broker(root / "broker", port=free_port()).start()
        self.kits = {k.id: k for k in load_kits(DEMO_SITE)}
        creds = self.broker.provision_kits(list(self.kits))
        self.twins = [
            TwinProcess(k.id, k.model, self.broker.address(creds[k.id].username).url(), k.seed)
            for k in self.kits.values()
        ]
        for twin in self.twins:
            twin.start()
        self.rights = BrokerRights(self.broker.admin, self.broker.credentials)

    def controller(self, creds: Credentials) -> Controller:
        """ebus-sdk's controller on the kits' Homie domain (`homie/5/...`), as that account."""
        cfg = ebus_cfg_add_auth(
            {"host": self.broker.host, "port": self.broker.port}, creds.username, creds.password
        )
        return Controller(mqtt_cfg=cfg, homie_domain=P.HOMIE_PREFIX.split("/")[0])

    def stop(self) -> None:
        self.rights.close()
        for twin in self.twins:
            twin.stop()
        self.broker.stop()


class StatusWatch:
    """The kit's retained `$status`, read by a watch account (counts applied and rejected)."""

    def __init__(self, broker: Broker, creds: Credentials, kit_id: str) -> None:
        self.latest: dict[str, Any] | None = None
        self.client = connect_client(
            broker.host,
            broker.port,
            creds,
            f"status-{uuid.uuid4().hex[:6]}",
            on_message=lambda c, u, m: setattr(self, "latest", json.loads(m.payload)),
            subscribe=[(P.status_topic(kit_id), 1)],
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _plain_set_v5(broker: Broker, creds: Credentials) -> int:
    """PUBACK reason of a plain Homie /set (no properties) at QoS 1 over MQTT v5."""
    codes: list[int] = []
    client = connect_client(broker.host, broker.port, creds, f"plain-{uuid.uuid4().hex[:6]}")
    client.on_publish = lambda c, u, mid, reason, p: codes.append(reason.value)
    try:
        client.publish(P.set_topic(KIT, ACTUATOR), NEW_VALUE, qos=1).wait_for_publish(5)
        wait_until(lambda: codes, timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0]


@pytest.fixture(scope="module")
def platform(state_root: Path) -> Iterator[Platform]:
    running = Platform(state_root / "homie-interop")
    yield running
    running.stop()


@pytest.fixture(scope="module")
def observer(platform: Platform) -> Iterator[tuple[Controller, list[str]]]:
    """A discovering controller on a watch account of every kit, and the SDK's warnings."""
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("ebus_sdk").addHandler(handler)
    controller = platform.controller(platform.rights.watch_account("interop-watch", None))
    controller.start_discovery()
    wait_until(lambda: _ready(controller, platform.kits), timeout=60)
    yield controller, warnings
    controller.stop()
    logging.getLogger("ebus_sdk").removeHandler(handler)


def _ready(controller: Controller, kits: dict) -> bool:
    """Every kit known, `ready`, described and with every actuator's value."""
    for kit_id in kits:
        device = controller.get_device(kit_id)
        if device is None or device.state != P.STATE_READY or device.description is None:
            return False
        actuators = device.description["nodes"][NODE]["properties"]
        if any(device.get_property(NODE, name) is None for name in actuators):
            return False
    return True


def test_a_generic_controller_discovers_every_kit(platform, observer):
    controller, warnings = observer
    assert set(controller.get_all_devices()) >= set(platform.kits)
    for kit_id, kit in platform.kits.items():
        description = controller.get_device(kit_id).description
        assert description["homie"] == P.HOMIE_VERSION
        assert description["type"] == kit.model
        assert P.PROTOCOL_EXTENSION in description["extensions"]
        # Every actuator is settable and announced with its value, as Homie 5 asks.
        for name, prop in description["nodes"][NODE]["properties"].items():
            assert prop["settable"] is True, (kit_id, name)
    assert [w for w in warnings if "invalid Homie" in w] == []


def test_without_the_rights_a_plain_set_is_stopped_by_the_broker(platform, observer):
    controller, _ = observer
    watch = StatusWatch(platform.broker, platform.rights.watch_account("interop-watch", None), KIT)
    outsider_creds = platform.rights.control_account("interop-outsider")
    outsider = platform.controller(outsider_creds)
    try:
        before = wait_until(lambda: watch.latest, timeout=10)
        wait_until(outsider.mqttc.is_connected, timeout=10)
        assert outsider.set_property(KIT, NODE, ACTUATOR, NEW_VALUE)  # MQTT 3.1.1: no answer
        # The same plain /set over MQTT v5 gets the broker's refusal: 135, not authorized.
        assert _plain_set_v5(platform.broker, outsider_creds) == NOT_AUTHORIZED
        time.sleep(1.5)  # time for a wrongly delivered command to be answered
        assert controller.get_device(KIT).get_property(NODE, ACTUATOR) == "closed"
        # Not even counted as a rejection: the kit never received it (PUBACK 135 at the broker).
        counts = ("applied", "rejected", "duplicates")
        assert {k: watch.latest[k] for k in counts} == {k: before[k] for k in counts}
    finally:
        outsider.stop()
        watch.close()


def test_the_holder_changes_an_actuator_with_a_plain_set(platform, observer):
    controller, _ = observer
    platform.rights.grant("interop-holder", KIT)  # before connecting: a grant kicks the account
    watch = StatusWatch(platform.broker, platform.rights.watch_account("interop-watch", None), KIT)
    holder = platform.controller(platform.rights.control_account("interop-holder"))
    try:
        before = wait_until(lambda: watch.latest, timeout=10)
        wait_until(holder.mqttc.is_connected, timeout=10)
        assert holder.set_property(KIT, NODE, ACTUATOR, NEW_VALUE)
        wait_until(
            lambda: controller.get_device(KIT).get_property(NODE, ACTUATOR) == NEW_VALUE,
            timeout=5,
        )
        time.sleep(0.5)  # a second application would show in the next $status
        assert watch.latest["applied"] == before["applied"] + 1  # applied once
    finally:
        holder.stop()
        watch.close()
        platform.rights.revoke("interop-holder", KIT)
