"""The lab service's view of the kits over MQTT: who is online, safe-state handover, acks.

The service's own MQTT account watches every kit and may publish only safe-state commands
(role `supervise_kits`, see hardware_kits.broker), never ordinary actuator commands: least
privilege for the supervisor.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt

from hardware_kits import protocol as P
from hardware_kits.mqtt import BrokerAddress, command_properties, connect_client

log = logging.getLogger(__name__)

SERVICE_ACCOUNT = "lab-service"


class MqttKitGateway:
    """Implements the service's KitGateway over a single paho connection."""

    def __init__(self, address: BrokerAddress, deadline_s: float = 5.0) -> None:
        self.requester = address.credentials.username
        self.deadline_s = deadline_s
        self._lock = threading.Lock()
        self._states: dict[str, str] = {}
        self._confirmed: deque[str] = deque(maxlen=10_000)  # applied safe-state command ids
        self._acks: deque[dict[str, Any]] = deque(maxlen=100_000)  # for the command records
        self.malformed = 0
        self._client = connect_client(
            address.host,
            address.port,
            address.credentials,
            client_id=f"{self.requester}-{uuid.uuid4().hex[:6]}",
            on_message=self._on_message,
            subscribe=[(P.all_kits("$state"), 1), (P.all_kits("$ack/#"), 1)],
        )

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        kit_id, rest = P.split_topic(msg.topic)
        if kit_id is None:
            return
        try:
            if rest == "$state":
                with self._lock:
                    self._states[kit_id] = msg.payload.decode()
            elif rest.startswith("$ack/"):
                ack = P.decode_ack(msg.payload)
                requester = rest[len("$ack/") :]
                with self._lock:
                    self._acks.append({"kit": kit_id, "requester": requester, **ack})
                    if (
                        requester == self.requester
                        and ack["target"] == P.SAFE_STATE_PROPERTY
                        and ack["status"] == P.APPLIED
                    ):
                        self._confirmed.append(ack["id"])
        except (P.ProtocolError, UnicodeError, KeyError):
            with self._lock:
                self.malformed += 1

    # ------------------------------------------------------------ KitGateway

    def online(self, kit_id: str) -> bool:
        with self._lock:
            return self._states.get(kit_id) == P.STATE_READY

    def send_safe_state(self, kit_id: str) -> str:
        command_id = uuid.uuid4().hex
        props = command_properties(
            command_id, P.ack_topic(kit_id, self.requester), time.time() + self.deadline_s
        )
        info = self._client.publish(P.safe_state_topic(kit_id), "", qos=1, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(
                f"cannot send the safe state to {kit_id}: {mqtt.error_string(info.rc)}"
            )
        return command_id

    def confirmed_safe(self, kit_id: str, command_id: str) -> bool:
        with self._lock:
            return command_id in self._confirmed

    def drain_acks(self) -> list[dict[str, Any]]:
        with self._lock:
            acks = list(self._acks)
            self._acks.clear()
        return acks

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
