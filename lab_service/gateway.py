"""The lab service's view of the kits over MQTT: who is online, safe-state handover, the state
at rest, acks, and each kit's health (its retained `$status` counters and when it last sent
telemetry).

The service's own MQTT account watches every kit and may publish only whole-kit commands (the
safe state, the state at rest; role `supervise_kits`, see hardware_kits.broker), never ordinary
actuator commands: least
privilege for the supervisor. Its one write to actuator command topics clears a retained command
a holder left there (an empty retained message), so that nothing can come back to a kit later.

A partner site's kits reach the centre over a bridge (hardware_kits/bridge.py). Their retained
`$state` stays `ready` at the centre when the bridge is cut, so a partner kit counts as online
only while its site's bridge says it is up: the one `online()` that grants, handovers and the
kit-offline ending of sessions already rely on fails closed for the whole site.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections import deque
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from hardware_kits import protocol as P
from hardware_kits.bridge import BRIDGE_STATE_FILTER, BRIDGE_UP, site_of_state_topic
from hardware_kits.mqtt import BrokerAddress, command_properties, connect_client

log = logging.getLogger(__name__)


COMMAND_FILTERS = (
    P.all_kits(P.ACTUATORS_NODE + "/+/set"),
    *(P.all_kits(whole + "/set") for whole in P.WHOLE_KIT_PROPERTIES),
)


class MqttKitGateway:
    """Implements the service's KitGateway over a single paho connection."""

    def __init__(
        self,
        address: BrokerAddress,
        deadline_s: float = 5.0,
        partner_kits: dict[str, str] | None = None,
    ) -> None:
        self.requester = address.credentials.username
        self.deadline_s = deadline_s
        self.partner_kits = dict(partner_kits or {})  # kit id -> partner site id
        self._bridges_up: set[str] = set()  # partner sites whose bridge said it is up
        self._lock = threading.Lock()
        self._states: dict[str, str] = {}
        self._confirmed: deque[str] = deque(maxlen=10_000)  # applied safe-state command ids
        # Answers to the service's whole-kit commands: command id -> applied / rejected.
        self._answers: dict[str, str] = {}
        self._answer_order: deque[str] = deque()
        self._acks: deque[dict[str, Any]] = deque(maxlen=100_000)  # for the command records
        self._status: dict[str, dict[str, Any]] = {}
        self._last_telemetry: dict[str, float] = {}
        self.malformed = 0
        self._client = connect_client(
            address.host,
            address.port,
            address.credentials,
            client_id=f"{self.requester}-{uuid.uuid4().hex[:6]}",
            on_message=self._on_message,
            subscribe=[
                (P.all_kits("$state"), 1),
                (BRIDGE_STATE_FILTER, 1),
                (P.all_kits("$ack/#"), 1),
                (P.all_kits("$status"), 1),
                (P.all_kits("$telemetry"), 0),
                # Retain-as-published: a live command keeps its retain flag, so one left
                # retained is seen (and cleared) when it is sent, not only at the next start.
                *[(t, SubscribeOptions(qos=1, retainAsPublished=True)) for t in COMMAND_FILTERS],
            ],
            **address.tls_options(),
        )

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        site = site_of_state_topic(msg.topic)
        if site is not None:
            self._bridge_state(site, msg.payload)
            return
        kit_id, rest = P.split_topic(msg.topic)
        if kit_id is None:
            return
        try:
            if rest.endswith("/set"):
                if msg.retain and msg.payload:
                    self._clear_retained(msg.topic)
            elif rest == "$telemetry":
                ts = float(P.decode_telemetry(msg.payload)["ts"])
                with self._lock:
                    self._last_telemetry[kit_id] = ts
            elif rest == "$state":
                with self._lock:
                    self._states[kit_id] = msg.payload.decode()
            elif rest == "$status":
                status = json.loads(msg.payload) if msg.payload else {}
                if not isinstance(status, dict):
                    raise KeyError("$status")
                with self._lock:
                    self._status[kit_id] = status
            elif rest.startswith("$ack/"):
                ack = P.decode_ack(msg.payload)
                # $ack/<account>/<connection>: the records name the MQTT account.
                requester = rest[len("$ack/") :].split("/", 1)[0]
                with self._lock:
                    self._acks.append({"kit": kit_id, "requester": requester, **ack})
                    if requester == self.requester and ack["target"] in P.WHOLE_KIT_PROPERTIES:
                        self._remember_answer(ack["id"], ack["status"])
                        if ack["target"] == P.SAFE_STATE_PROPERTY and ack["status"] == P.APPLIED:
                            self._confirmed.append(ack["id"])
        except (P.ProtocolError, ValueError, KeyError):
            with self._lock:
                self.malformed += 1

    def _bridge_state(self, site: str, payload: bytes) -> None:
        up = payload.decode(errors="replace") == BRIDGE_UP
        with self._lock:
            was_up = site in self._bridges_up
            (self._bridges_up.add if up else self._bridges_up.discard)(site)
        if up != was_up:  # down: that site's kits count as offline until it is back
            (log.info if up else log.warning)(
                "the bridge of site %s is %s", site, "up" if up else "down"
            )

    def _remember_answer(self, command_id: str, status: str) -> None:
        """Keep the last 10,000 answers (the lock is held)."""
        if command_id not in self._answers:
            self._answer_order.append(command_id)
        self._answers[command_id] = status
        while len(self._answer_order) > 10_000:
            self._answers.pop(self._answer_order.popleft(), None)

    def _clear_retained(self, topic: str) -> None:
        """A command left retained would reach every later subscriber: delete it (Homie: an
        empty retained message). Kits never take one anyway (retain handling 2)."""
        self._client.publish(topic, b"", qos=1, retain=True)
        log.warning("cleared a retained command on %s (kits never take retained commands)", topic)

    # ------------------------------------------------------------ KitGateway

    def online(self, kit_id: str) -> bool:
        with self._lock:
            site = self.partner_kits.get(kit_id)
            if site is not None and site not in self._bridges_up:
                return False  # its site is cut off: whatever state it last said is stale
            return self._states.get(kit_id) == P.STATE_READY

    def bridge_up(self, site_id: str) -> bool:
        with self._lock:
            return site_id in self._bridges_up

    def send_safe_state(self, kit_id: str) -> str:
        return self._send_whole(kit_id, P.safe_state_topic(kit_id), "the safe state")

    def send_at_rest(self, kit_id: str) -> str:
        return self._send_whole(kit_id, P.at_rest_topic(kit_id), "the state at rest")

    def _send_whole(self, kit_id: str, topic: str, what: str) -> str:
        command_id = uuid.uuid4().hex
        props = command_properties(
            command_id, P.ack_topic(kit_id, self.requester), time.time() + self.deadline_s
        )
        info = self._client.publish(topic, "", qos=1, properties=props)
        if info.rc != mqtt.MQTT_ERR_SUCCESS:
            raise ConnectionError(f"cannot send {what} to {kit_id}: {mqtt.error_string(info.rc)}")
        return command_id

    def confirmed_safe(self, kit_id: str, command_id: str) -> bool:
        with self._lock:
            return command_id in self._confirmed

    def answer(self, kit_id: str, command_id: str) -> str | None:
        """The kit's answer to one of the service's whole-kit commands (applied, rejected), or
        None while none has come."""
        with self._lock:
            return self._answers.get(command_id)

    def report(self, kit_id: str) -> dict[str, Any] | None:
        """What the kit last said of its state in `$status`: `safe`, `at_rest` (None if the kit
        does not say: firmware before extension 1.2) and `fault`; None before any `$status`."""
        with self._lock:
            status = self._status.get(kit_id)
        if not status:
            return None
        return {
            "safe": status.get("safe"),
            "at_rest": status.get("at_rest"),
            "fault": status.get("fault"),
        }

    def drain_acks(self) -> list[dict[str, Any]]:
        with self._lock:
            acks = list(self._acks)
            self._acks.clear()
        return acks

    def health(self, kit_id: str) -> dict[str, Any]:
        """What the kit says about itself: its Homie state, its last sample's time, and the
        counters of its retained `$status` (None before the kit has published any)."""
        with self._lock:
            state = self._states.get(kit_id)
            last = self._last_telemetry.get(kit_id)
            status = self._status.get(kit_id)
        counters = None
        if status:
            counters = {
                "applied": int(status.get("applied", 0)),
                "rejected": int(status.get("rejected", 0)),
                "rejections": dict(status.get("rejections") or {}),
                "errors": int(status.get("errors", 0)),
                "duplicates": int(status.get("duplicates", 0)),
                "uptime": float(status.get("uptime", 0.0)),
                "safe": status.get("safe"),
                "at_rest": status.get("at_rest"),
                "fault": status.get("fault"),
            }
        return {"mqtt_state": state, "last_telemetry_at": last, "counters": counters}

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
