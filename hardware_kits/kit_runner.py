"""Puts one kit on the wire: a digital twin model driven by `KitCore` over paho-mqtt.

The runner does what the firmware does on a board: announce the kit (Homie `$state`,
`$description`, actuator values) with a last will of `lost`, answer every command with an
acknowledgement to the requester's response topic, publish telemetry at the kit's rate with its
timestamp and sequence number, mirror sensor values as Homie property values and report `$status`.
Beside the telemetry, a synthetic camera (`twins/camera.py`) publishes the twin's picture as a
real camera would: `$camera/full` and `$camera/thumb` frames stamped with the kit's clock and the
seq of the last telemetry, at the rates `$camera` announces.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.subscribeoptions import SubscribeOptions

from hardware_kits import protocol as P
from hardware_kits.kitcore import KitCore
from hardware_kits.mqtt import (
    BrokerAddress,
    connect_client,
    connect_properties,
    frame_publish_properties,
    reply_properties,
    user_properties,
)
from hardware_kits.twins.base import TwinModel
from hardware_kits.twins.camera import RENDERERS, SyntheticCamera

log = logging.getLogger(__name__)


class KitRunner:
    """One twin on the broker. `rate_hz` overrides the model's telemetry rate; `speed` > 1 runs
    simulated time faster than the wall clock (telemetry keeps its wall-clock rate)."""

    def __init__(
        self,
        kit_id: str,
        model: TwinModel,
        address: BrokerAddress,
        rate_hz: float | None = None,
        speed: float = 1.0,
        qos: int = 1,
        status_every: float = 5.0,
        mirror_every: float = 1.0,
        camera: bool = True,
    ) -> None:
        self.kit_id = kit_id
        self.model = model
        self.descriptor = model.descriptor
        self.address = address
        self.rate_hz = rate_hz
        self.speed = speed
        self.qos = qos
        self.status_every = status_every
        self.mirror_every = mirror_every
        self.core = KitCore(kit_id, self.descriptor, apply_hook=model.apply)
        self._lock = threading.Lock()  # model and core are shared by paho's thread and ours
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.client: mqtt.Client | None = None
        self.camera = SyntheticCamera(model) if camera and model.model in RENDERERS else None
        self._camera_thread: threading.Thread | None = None
        self.frames_sent = {P.STREAM_FULL: 0, P.STREAM_THUMB: 0}

    # ---------------------------------------------------------------- lifecycle

    def start(self) -> KitRunner:
        self.client = connect_client(
            self.address.host,
            self.address.port,
            self.address.credentials,
            client_id=f"kit-{self.kit_id}",
            will=(P.state_topic(self.kit_id), P.STATE_LOST, 1, True),
            on_connect=self._announce,
            on_message=self._on_command,
            subscribe=[
                (topic, SubscribeOptions(qos=1, retainHandling=P.COMMAND_RETAIN_HANDLING))
                for topic in P.command_subscriptions(self.kit_id)
            ],
            # The broker drops commands larger than the model's boards can take, as for a board.
            properties=connect_properties(P.max_packet_bytes(self.descriptor)),
            **self.address.tls_options(),
        )
        self._thread = threading.Thread(target=self._run, name=f"kit-{self.kit_id}", daemon=True)
        self._thread.start()
        if self.camera is not None:
            self._camera_thread = threading.Thread(
                target=self._run_camera, name=f"camera-{self.kit_id}", daemon=True
            )
            self._camera_thread.start()
        return self

    def stop(self) -> None:
        """Stop cleanly: say `disconnected` (a crash leaves the will, `lost`)."""
        self._stop.set()
        for thread in (self._thread, self._camera_thread):
            if thread is not None:
                thread.join(5)
        if self.client is not None:
            self.client.publish(
                P.state_topic(self.kit_id), P.STATE_DISCONNECTED, qos=1, retain=True
            ).wait_for_publish(2)
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    def __enter__(self) -> KitRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- announcing

    def _publish_retained(self, client: mqtt.Client, topic: str, payload: str) -> None:
        client.publish(topic, payload, qos=1, retain=True)

    def _announce(self, client: mqtt.Client) -> None:
        kit = self.kit_id
        self._publish_retained(client, P.state_topic(kit), P.STATE_INIT)
        self._publish_retained(
            client, P.description_topic(kit), json.dumps(P.homie_description(kit, self.descriptor))
        )
        with self._lock:
            self._publish_actuators(client, self.core.state)
            self._publish_retained(client, P.status_topic(kit), json.dumps(self.core.status()))
        camera = P.camera_info("synthetic") if self.camera is not None else P.EMPTY_STRING
        self._publish_retained(client, P.camera_info_topic(kit), camera)
        self._publish_retained(client, P.state_topic(kit), P.STATE_READY)

    def _publish_actuators(self, client: mqtt.Client, values: dict[str, Any]) -> None:
        for name, value in values.items():
            spec = self.descriptor["actuators"][name]
            self._publish_retained(
                client,
                P.property_topic(self.kit_id, P.ACTUATORS_NODE, name),
                P.encode_value(spec, value),
            )

    # ---------------------------------------------------------------- commands

    def _on_command(self, client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            with self._lock:
                answer = self.core.receive(
                    msg.topic,
                    msg.payload,
                    user_properties(msg.properties),
                    getattr(msg.properties, "ResponseTopic", None),
                )
                status = json.dumps(self.core.status())
            if answer is not None:
                reply, ack = answer
                client.publish(
                    reply, json.dumps(ack), qos=1, properties=reply_properties(msg.properties)
                )
                if ack["status"] == P.APPLIED and not ack.get("duplicate"):
                    changed = (
                        ack["value"]
                        if ack["target"] in P.WHOLE_KIT_PROPERTIES
                        else {ack["target"]: ack["value"]}
                    )
                    self._publish_actuators(client, changed)
            self._publish_retained(client, P.status_topic(self.kit_id), status)
        except Exception:  # a kit must survive anything a client sends
            log.exception("kit %s: error while handling %s", self.kit_id, msg.topic)
            with self._lock:
                self.core.errors += 1

    # ---------------------------------------------------------------- telemetry

    def _period(self) -> float:
        return 1.0 / self.rate_hz if self.rate_hz else self.model.period()

    def _run(self) -> None:
        next_tick = time.monotonic()
        next_mirror = next_status = next_tick
        while not self._stop.is_set():
            period = self._period()
            with self._lock:
                self.model.advance(period * self.speed)
                self.core.fault = self.model.fault  # a tripped monitor keeps the kit from rest
                values = self.model.sample()
                payload = self.core.telemetry(values, sim=round(self.model.t, 3))
                status = json.dumps(self.core.status()) if next_tick >= next_status else None
            client = self.client
            if client is None:
                break
            client.publish(P.telemetry_topic(self.kit_id), payload, qos=self.qos)
            if next_tick >= next_mirror:
                self._mirror(client, values)
                next_mirror = next_tick + self.mirror_every
            if status is not None:
                self._publish_retained(client, P.status_topic(self.kit_id), status)
                next_status = next_tick + self.status_every
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay < -1.0:  # fell far behind (a paused process): resynchronise, do not burst
                next_tick = time.monotonic()
            elif delay > 0:
                self._stop.wait(delay)

    def _mirror(self, client: mqtt.Client, values: dict[str, Any]) -> None:
        """Homie property values for generic MQTT tools, at most once a second."""
        for name, value in values.items():
            spec = self.descriptor["sensors"][name]
            client.publish(
                P.property_topic(self.kit_id, P.SENSORS_NODE, name),
                P.encode_value(spec, value),
                qos=0,
                retain=True,
            )

    # ---------------------------------------------------------------- camera

    def _run_camera(self) -> None:
        """Frames at the `full` stream's rate; every `thumb_every`-th one also as a thumbnail.

        The scene is read under the lock with the seq of the last telemetry, so a frame shows
        exactly the state that sample reported; drawing and encoding happen outside it."""
        assert self.camera is not None
        full_fps = P.CAMERA_STREAMS[P.STREAM_FULL]["fps"]
        thumb_every = max(1, round(full_fps / P.CAMERA_STREAMS[P.STREAM_THUMB]["fps"]))
        period = 1.0 / full_fps
        next_tick = time.monotonic()
        count = 0
        while not self._stop.is_set():
            with self._lock:
                scene = self.camera.scene(time.time())
                seq, ts_ms = self.core.seq, int(self.core.clock() * 1000)
            full, thumb = self.camera.frames(scene)
            client = self.client
            if client is None:
                break
            self._publish_frame(client, P.STREAM_FULL, full, ts_ms, seq)
            if count % thumb_every == 0:
                self._publish_frame(client, P.STREAM_THUMB, thumb, ts_ms, seq)
            count += 1
            next_tick += period
            delay = next_tick - time.monotonic()
            if delay < -1.0:  # fell far behind: skip frames rather than burst
                next_tick = time.monotonic()
            elif delay > 0:
                self._stop.wait(delay)

    def _publish_frame(
        self, client: mqtt.Client, stream: str, jpeg: bytes, ts_ms: int, seq: int
    ) -> None:
        self.frames_sent[stream] += 1
        props = frame_publish_properties(ts_ms, seq, self.frames_sent[stream])
        client.publish(P.camera_topic(self.kit_id, stream), jpeg, qos=0, properties=props)
