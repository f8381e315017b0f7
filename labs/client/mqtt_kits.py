"""Kits over MQTT: discover them, read their telemetry, command them (`connect`, `Lab`, `Kit`).

Threading and callbacks: see the package's documentation (labs.client).
"""

from __future__ import annotations

import copy
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import paho.mqtt.client as mqtt

from hardware_kits import protocol as P
from hardware_kits.mqtt import BrokerAddress, ConnectError, command_properties, connect_client
from labs.client.errors import (
    CommandError,
    CommandNotAuthorized,
    CommandRejected,
    CommandTimeout,
    LabClosed,
    LabConfigError,
    LabConnectionError,
    LabError,
    LabTimeout,
    UnknownKit,
)
from labs.client.recorded_frames import RestCaller, fetch_frames

log = logging.getLogger(__name__)

log = logging.getLogger(__name__)

URL_ENV = "SMARTLAB_MQTT_URL"
HOMIE_STATES = (P.STATE_INIT, P.STATE_READY, P.STATE_DISCONNECTED, P.STATE_LOST, "sleeping")
SAFE_STATE_PAYLOAD = "true"  # the kit ignores it; Homie wants some value on a `set` topic

SampleCallback = Callable[[str, dict[str, Any]], None]
StateCallback = Callable[[str, str | None], None]


# ---------------------------------------------------------------- public records


@dataclass(frozen=True)
class Ack:
    """A kit's acknowledgement of one command."""

    id: str
    target: str
    status: str  # protocol.APPLIED or protocol.REJECTED
    value: Any = None
    reason: str | None = None
    detail: str | None = None
    ts: float | None = None  # the kit's clock when it decided
    duplicate: bool = False  # the kit had seen this command id and answered it again
    round_trip_s: float | None = None  # publish to acknowledgement, on this client's clock
    kit: str = ""
    local: bool = False  # made up by the client: the command was never sent

    @classmethod
    def from_wire(cls, kit_id: str, body: dict[str, Any], round_trip_s: float) -> Ack:
        ts = body.get("ts")
        return cls(
            id=str(body.get("id")),
            target=str(body.get("target")),
            status=str(body.get("status")),
            value=body.get("value"),
            reason=body.get("reason"),
            detail=body.get("detail"),
            ts=float(ts) if isinstance(ts, (int, float)) else None,
            duplicate=bool(body.get("duplicate", False)),
            round_trip_s=round_trip_s,
            kit=kit_id,
        )


@dataclass(frozen=True)
class KitInfo:
    """What a kit announced about itself (retained `$description` and `$state`)."""

    kit_id: str
    model: str
    name: str
    state: str | None
    descriptor: dict[str, Any]


# ---------------------------------------------------------------- connect


def open_lab(
    url: str,
    *,
    client_id: str | None = None,
    history: int = 3600,
    timeout: float = 10.0,
    service: Callable[[], RestCaller] | None = None,
) -> Lab:
    """A `Lab` on the broker at `url` (mqtt://user:password@host:port); `service` makes the lab
    service's REST client (for recordings)."""
    try:
        address = BrokerAddress.from_url(url)
    except ValueError as err:
        raise LabConfigError(f"bad broker URL: {err}") from None
    return Lab(address, client_id=client_id, history=history, timeout=timeout, service=service)


# ---------------------------------------------------------------- internals


class _Ring:
    """Fixed-size history of one sensor: preallocated arrays, no per-sample allocation."""

    __slots__ = ("i", "n", "t", "v")

    def __init__(self, capacity: int, dtype: type) -> None:
        self.t = np.empty(capacity, np.float64)
        self.v = np.empty(capacity, dtype)
        self.i = 0  # next slot to write
        self.n = 0  # slots filled

    def append(self, t: float, v: Any) -> None:
        self.t[self.i] = t
        self.v[self.i] = v
        self.i = (self.i + 1) % len(self.t)
        self.n = min(self.n + 1, len(self.t))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """Copies, oldest first, so callers never see later writes."""
        if self.n < len(self.t):
            return self.t[: self.n].copy(), self.v[: self.n].copy()
        return (
            np.concatenate((self.t[self.i :], self.t[: self.i])),
            np.concatenate((self.v[self.i :], self.v[: self.i])),
        )


def _ring_dtype(spec: dict[str, Any] | None, value: Any) -> type | None:
    """numpy dtype for a sensor's history, from its spec or (no descriptor yet) its value."""
    datatype = spec.get("datatype") if spec else None
    if datatype is None:
        if isinstance(value, bool):
            datatype = "boolean"
        elif isinstance(value, (int, float)):
            datatype = "float"
    if datatype in ("float", "integer"):
        return np.float64
    if datatype == "boolean":
        return np.bool_
    return None  # enums, strings and JSON keep only their latest value


def _storable(ring: _Ring, value: Any) -> Any:
    """The value as the ring stores it, or None when it does not fit (a protocol breach)."""
    if ring.v.dtype == np.bool_:
        return value if isinstance(value, bool) else None
    if value is None:
        return np.nan  # a sensor that reports no reading
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value
    return None


@dataclass
class _Pending:
    """One command waiting for its acknowledgement."""

    kit_id: str
    target: str
    command_id: str
    done: threading.Event
    mid: int | None = None
    sent_at: float = 0.0
    ack: dict[str, Any] | None = None
    acked_at: float = 0.0
    refused: str | None = None  # the broker's PUBACK reason
    closed: bool = False


def _requester_id(client_id: str) -> str:
    """A topic level (no wildcards or slashes) that names this client in ack topics."""
    return re.sub(r"[^a-z0-9-]+", "-", client_id.lower()).strip("-") or uuid.uuid4().hex


def _plain(value: Any) -> Any:
    """numpy scalars (what notebooks compute) as the Python values the protocol checks want."""
    return value.item() if isinstance(value, np.generic) else value


# ---------------------------------------------------------------- Lab


class Lab:
    """A connection to the lab's broker and the live picture of every kit on it."""

    def __init__(
        self,
        address: BrokerAddress,
        *,
        client_id: str | None = None,
        history: int = 3600,
        timeout: float = 10.0,
        service: Callable[[], RestCaller] | None = None,
    ) -> None:
        if history < 0:
            raise ValueError("history must be 0 or more samples")
        self.address = address
        self.history = history
        # Makes the lab service's REST client, for what the broker does not keep (recordings).
        self._service_factory = service
        self._service: RestCaller | None = None
        self.client_id = client_id or f"smartlab-lab-{uuid.uuid4().hex[:12]}"
        # $ack/<account>/<connection>: the broker lets only this account read it.
        self.requester = address.credentials.username + "/" + _requester_id(self.client_id)
        self.malformed = 0  # messages ignored (in whole or in part) because they break protocol
        self.callback_errors = 0
        self._cond = threading.Condition()  # guards every kit's state and the fields below
        self._kits: dict[str, Kit] = {}
        self._state_callbacks: tuple[StateCallback, ...] = ()  # replaced, never mutated
        self._pending: dict[str, _Pending] = {}  # by command id
        self._by_mid: dict[int, _Pending] = {}
        self._early_refusals: dict[int, str] = {}  # PUBACK before publish() returned
        self._net_thread: int | None = None
        self._closed = False
        subscriptions = [
            (P.all_kits(s), 1)
            for s in (
                "$description",
                "$state",
                "$telemetry",
                "$status",
                P.ACTUATORS_NODE + "/+",
                "$ack/" + self.requester,
            )
        ]
        creds = address.credentials
        try:
            self._client = connect_client(
                address.host,
                address.port,
                creds,
                self.client_id,
                on_message=self._on_message,
                subscribe=subscriptions,
                on_connect=self._on_connect,
                timeout=timeout,
                **address.tls_options(),
            )
        except ConnectError as err:
            raise LabConnectionError(str(err)) from None
        self._client.on_publish = self._on_publish
        self._client.on_disconnect = self._on_disconnect
        # The broker disconnects a control account whenever its rights change: come back at
        # once, so that the next command gets the broker's verdict rather than a timeout.
        self._client.reconnect_delay_set(0.05, 1)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"{len(self.kits())} kits"
        user = self.address.credentials.username
        return f"<Lab {user}@{self.address.host}:{self.address.port} {state}>"

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Disconnect and stop the network thread; commands still waiting raise LabClosed."""
        with self._cond:
            if self._closed:
                return
            self._closed = True
            for pending in self._pending.values():
                pending.closed = True
                pending.done.set()
            self._cond.notify_all()
        self._client.disconnect()
        self._client.loop_stop()  # joins paho's thread (unless called from it)

    @property
    def closed(self) -> bool:
        return self._closed

    # ------------------------------------------------------------ discovery

    def kits(self) -> dict[str, KitInfo]:
        """Every kit that has announced a description, by kit id."""
        with self._cond:
            return {
                kit_id: kit._info()
                for kit_id, kit in sorted(self._kits.items())
                if kit._descriptor is not None
            }

    def wait_for_kits(
        self, kits: int | str | Iterable[str] = 1, timeout: float = 10.0, *, ready: bool = True
    ) -> dict[str, KitInfo]:
        """Wait until `kits` (a count, or kit ids) are announced (and `ready`); return kits()."""
        wanted = kits if isinstance(kits, int) else {kits} if isinstance(kits, str) else set(kits)

        def present() -> set[str]:
            return {
                kit_id
                for kit_id, kit in self._kits.items()
                if kit._descriptor is not None and (not ready or kit._state == P.STATE_READY)
            }

        def satisfied() -> bool:
            have = present()
            return len(have) >= wanted if isinstance(wanted, int) else wanted <= have

        with self._cond:
            if not self._cond.wait_for(lambda: self._closed or satisfied(), timeout):
                have = present()
                need = (
                    f"{wanted} kits"
                    if isinstance(wanted, int)
                    else ", ".join(sorted(wanted - have))
                )
                what = "ready" if ready else "announced"
                raise LabTimeout(
                    f"waited {timeout} s for {need} to be {what}; "
                    f"{what}: {', '.join(sorted(have)) or 'none'}"
                )
            self._check_open()
        return self.kits()

    def kit(self, kit_id: str, timeout: float = 5.0) -> Kit:
        """The kit of that id, waiting up to `timeout` s for its description to arrive."""
        with self._cond:
            self._cond.wait_for(lambda: self._closed or self._has_description(kit_id), timeout)
            self._check_open()
            if not self._has_description(kit_id):
                known = ", ".join(sorted(k for k in self._kits if self._has_description(k)))
                raise UnknownKit(
                    f"no kit {kit_id!r} has announced itself on the broker "
                    f"(known: {known or 'none'})"
                )
            return self._kits[kit_id]

    def on_state(self, callback: StateCallback) -> Callable[[], None]:
        """Call `callback(kit_id, state)` on every kit state change (on the network thread).

        Returns a function that removes the callback."""
        with self._cond:
            self._state_callbacks = (*self._state_callbacks, callback)

        def unsubscribe() -> None:
            with self._cond:
                self._state_callbacks = tuple(c for c in self._state_callbacks if c is not callback)

        return unsubscribe

    def lab_service(self) -> RestCaller:
        """The lab service's REST client this lab reads recordings through (made on first use:
        `connect()` gives the one of the environment, $SMARTLAB_LAB_URL and the token)."""
        if self._service is None:
            if self._service_factory is None:
                raise LabConfigError(
                    "recordings come from the lab service: open the lab with connect(), or "
                    "pass service=LabService(url, token)"
                )
            self._service = self._service_factory()
        return self._service

    def _has_description(self, kit_id: str) -> bool:
        kit = self._kits.get(kit_id)
        return kit is not None and kit._descriptor is not None

    def _check_open(self) -> None:
        if self._closed:
            raise LabClosed("the lab connection is closed")

    # ------------------------------------------------------------ network thread

    def _on_connect(self, _client: mqtt.Client) -> None:
        # Remembered so that a command sent from a callback fails instead of deadlocking.
        self._net_thread = threading.get_ident()

    def _on_disconnect(self, _c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        if not self._closed:
            log.warning("lost the connection to the broker (%s); paho reconnects", reason)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Never raise here: an exception would end paho's network thread.
        try:
            self._dispatch(msg)
        except Exception:  # a bug here must not take the connection down
            log.exception("cannot handle a message on %s", msg.topic)
            self._count_malformed()

    def _dispatch(self, msg: mqtt.MQTTMessage) -> None:
        kit_id, rest = P.split_topic(msg.topic)
        if kit_id is None:
            return
        if rest.startswith("$ack/"):
            self._handle_ack(kit_id, msg)
            return
        with self._cond:
            kit = self._kits.get(kit_id)
            if kit is None:
                kit = self._kits[kit_id] = Kit(self, kit_id)
        if rest == "$telemetry":
            kit._handle_telemetry(msg.payload)
        elif rest == "$state":
            kit._handle_state(msg.payload)
        elif rest == "$description":
            kit._handle_description(msg.payload)
        elif rest == "$status":
            kit._handle_status(msg.payload)
        elif rest.startswith(P.ACTUATORS_NODE + "/"):
            kit._handle_actuator(rest.split("/", 1)[1], msg.payload)

    def _count_malformed(self, n: int = 1) -> None:
        with self._cond:
            self.malformed += n

    def _run_callbacks(self, callbacks: Iterable[Callable[..., None]], *args: Any) -> None:
        for callback in callbacks:
            try:
                callback(*args)
            except Exception:
                log.exception("callback %r failed", callback)
                with self._cond:
                    self.callback_errors += 1

    def _state_changed(self, kit_id: str, state: str | None) -> None:
        self._run_callbacks(self._state_callbacks, kit_id, state)

    # ------------------------------------------------------------ commands

    def _handle_ack(self, kit_id: str, msg: mqtt.MQTTMessage) -> None:
        try:
            body = P.decode_ack(msg.payload)
        except P.ProtocolError:
            self._count_malformed()
            return
        received = time.monotonic()
        correlation = getattr(msg.properties, "CorrelationData", None) if msg.properties else None
        with self._cond:
            pending = self._pending.get(str(body.get("id")))
            if pending is None and correlation:
                pending = self._pending.get(correlation.decode(errors="replace"))
            if pending is None or pending.kit_id != kit_id or pending.ack is not None:
                return  # an answer to a command that timed out, or to another Lab
            pending.ack, pending.acked_at = body, received
            pending.done.set()

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        # QoS 1: `reason` is the broker's PUBACK reason code (v5), e.g. "Not authorized".
        failed = reason is not None and reason.is_failure
        with self._cond:
            pending = self._by_mid.pop(mid, None)
            if pending is None:
                if failed:
                    self._early_refusals[mid] = str(reason)
            elif failed:
                pending.refused = str(reason)
                pending.done.set()

    def _command(
        self,
        kit_id: str,
        target: str,
        topic: str,
        payload: bytes | str,
        command_id: str | None,
        deadline_s: float | None,
        timeout: float,
    ) -> Ack:
        """Publish one command (QoS 1) and wait for its acknowledgement."""
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        if threading.get_ident() == self._net_thread:
            raise LabError(
                "commands cannot be sent from a callback: it runs on the MQTT "
                "network thread, which must stay free to receive the acknowledgement"
            )
        command_id = command_id or uuid.uuid4().hex
        deadline_s = time.time() + timeout if deadline_s is None else deadline_s
        pending = _Pending(kit_id, target, command_id, threading.Event())
        with self._cond:
            self._check_open()
            if command_id in self._pending:
                raise ValueError(f"command id {command_id!r} is already waiting for an ack")
            self._pending[command_id] = pending
        try:
            return self._send_and_wait(pending, topic, payload, deadline_s, timeout)
        finally:
            with self._cond:
                self._pending.pop(command_id, None)
                if pending.mid is not None and self._by_mid.get(pending.mid) is pending:
                    del self._by_mid[pending.mid]

    def _send_and_wait(
        self, pending: _Pending, topic: str, payload: bytes | str, deadline_s: float, timeout: float
    ) -> Ack:
        props = command_properties(
            pending.command_id, P.ack_topic(pending.kit_id, self.requester), deadline_s
        )
        pending.sent_at = time.monotonic()
        info = self._client.publish(topic, payload, qos=1, properties=props)
        if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):  # NO_CONN: queued
            raise CommandError(f"cannot send to kit {pending.kit_id}: {mqtt.error_string(info.rc)}")
        with self._cond:
            # The PUBACK may have been handled before publish() returned: check for it here.
            pending.mid = info.mid
            refusal = self._early_refusals.pop(info.mid, None)
            if refusal is not None:
                pending.refused = refusal
            elif not pending.done.is_set():
                self._by_mid[info.mid] = pending
        if not pending.done.wait(timeout):
            raise CommandTimeout(
                f"kit {pending.kit_id} did not acknowledge {pending.target} "
                f"(command {pending.command_id}) within {timeout} s"
            )
        return self._outcome(pending)

    def _outcome(self, pending: _Pending) -> Ack:
        if pending.refused is not None:
            user = self.address.credentials.username
            raise CommandNotAuthorized(
                f"the broker refused {user!r}'s command for "
                f"{pending.target} on kit {pending.kit_id}: "
                f"{pending.refused}"
            )
        if pending.ack is None:  # woken by close()
            raise LabClosed(
                f"the lab was closed while {pending.target} on kit "
                f"{pending.kit_id} waited for its acknowledgement"
            )
        ack = Ack.from_wire(pending.kit_id, pending.ack, pending.acked_at - pending.sent_at)
        if ack.status != P.APPLIED:
            raise CommandRejected(ack)
        return ack


# ---------------------------------------------------------------- Kit


class Kit:
    """One kit as seen from the broker: what it announced, its telemetry, and its commands.

    Created by `Lab` (use `lab.kit(kit_id)`); every property returns a copy, safe to keep."""

    def __init__(self, lab: Lab, kit_id: str) -> None:
        self.lab = lab
        self.kit_id = kit_id
        self._lock = lab._cond  # one lock for the lab: cheap, and no lock-ordering questions
        self._description: dict[str, Any] | None = None
        self._descriptor: dict[str, Any] | None = None
        self._state: str | None = None
        self._status: dict[str, Any] | None = None
        self._latest: dict[str, Any] = {}
        self._latest_ts: float | None = None
        self._actuators: dict[str, Any] = {}
        self._raw_actuators: dict[str, bytes] = {}  # arrived before the descriptor
        self._rings: dict[str, _Ring | None] = {}  # None: the sensor keeps no history
        self._last_seq: int | None = None
        self._seq_gaps = 0
        self._received = 0
        self._subscribers: tuple[SampleCallback, ...] = ()  # replaced, never mutated

    def __repr__(self) -> str:
        with self._lock:
            model = self._descriptor["model"] if self._descriptor else "?"
            return f"<Kit {self.kit_id} {model} {self._state}, {self._received} samples>"

    # ------------------------------------------------------------ reading

    @property
    def descriptor(self) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self._descriptor)

    @property
    def model(self) -> str | None:
        with self._lock:
            return self._descriptor["model"] if self._descriptor else None

    @property
    def state(self) -> str | None:
        """Homie state: "init", "ready", "disconnected", "lost" (None: never announced)."""
        with self._lock:
            return self._state

    @property
    def latest(self) -> dict[str, Any]:
        """Latest value of every sensor that reported one."""
        with self._lock:
            return dict(self._latest)

    @property
    def latest_ts(self) -> float | None:
        """The kit's timestamp (epoch s) of the latest sample."""
        with self._lock:
            return self._latest_ts

    @property
    def actuators(self) -> dict[str, Any]:
        """Latest actuator values the kit announced (retained Homie property values)."""
        with self._lock:
            return dict(self._actuators)

    @property
    def status(self) -> dict[str, Any] | None:
        with self._lock:
            return copy.deepcopy(self._status)

    @property
    def seq_gaps(self) -> int:
        """Telemetry sequence numbers that never arrived (since this client connected)."""
        with self._lock:
            return self._seq_gaps

    @property
    def received(self) -> int:
        """Telemetry samples received."""
        with self._lock:
            return self._received

    def history(self, sensor: str) -> tuple[np.ndarray, np.ndarray]:
        """(t, v) of the last `lab.history` samples of a numeric or boolean sensor, oldest first.

        `t` is the kit's timestamp (epoch s, float64); `v` is float64 (NaN: no reading) or bool."""
        with self._lock:
            ring = self._rings.get(sensor)
            if ring is not None:
                return ring.arrays()
            spec = (self._descriptor or {}).get("sensors", {}).get(sensor)
            seen = sensor in self._rings  # reported, but keeps no history
        if spec is None and not seen:
            raise KeyError(f"kit {self.kit_id} has no sensor {sensor!r}")
        dtype = _ring_dtype(spec, None) if spec is not None else None
        if dtype is None:
            kind = spec["datatype"] if spec else "not numeric"
            raise ValueError(
                f"sensor {sensor!r} of kit {self.kit_id} is {kind}: "
                "only numeric and boolean sensors keep a history"
            )
        return np.empty(0, np.float64), np.empty(0, dtype)  # no sample yet (or history=0)

    def frames(
        self, start: float, end: float, service: RestCaller | None = None
    ) -> list[tuple[float, np.ndarray]]:
        """The kit's recorded camera frames with start <= ts < end (epoch seconds, the kit's
        clock), oldest first, as (ts, HxWx3 uint8 RGB array); from the lab service's history
        (`service`, default `lab.lab_service()`), which keeps about one frame a second."""
        return fetch_frames(service or self.lab.lab_service(), self.kit_id, start, end)

    def subscribe(self, callback: SampleCallback) -> Callable[[], None]:
        """Call `callback(kit_id, sample)` for every telemetry sample (on the network thread).

        `sample` is the decoded `$telemetry` message: {"seq", "ts", "values"[, "sim"]}.
        Returns a function that removes the callback."""
        with self._lock:
            self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(c for c in self._subscribers if c is not callback)

        return unsubscribe

    # ------------------------------------------------------------ commands

    def set(
        self, actuator: str, value: Any, timeout: float = 2.0, deadline: float | None = None
    ) -> Ack:
        """Set an actuator and wait for the kit's acknowledgement.

        The value is checked against the descriptor first; an invalid one raises
        CommandRejected (ack.local) without being sent. `deadline` is epoch seconds (default
        now + timeout). Raises CommandRejected, CommandTimeout or CommandNotAuthorized."""
        value = _plain(value)
        spec = self._actuator_spec(actuator)
        if spec is None:
            raise CommandRejected(
                self._local_ack(
                    actuator,
                    P.R_UNKNOWN_ACTUATOR,
                    f"kit model {self.model} has no actuator {actuator!r}",
                )
            )
        try:
            P.check_value(spec, value, actuator)
        except P.ProtocolError as err:
            raise CommandRejected(self._local_ack(actuator, err.reason, err.detail)) from None
        return self.lab._command(
            self.kit_id,
            actuator,
            P.set_topic(self.kit_id, actuator),
            P.encode_value(spec, value),
            None,
            deadline,
            timeout,
        )

    def send_raw(
        self,
        actuator: str,
        payload: bytes | str,
        command_id: str | None = None,
        deadline_s: float | None = None,
        timeout: float = 2.0,
    ) -> Ack:
        """Send a payload as is, without local checks (to test the kit's own validation)."""
        return self.lab._command(
            self.kit_id,
            actuator,
            P.set_topic(self.kit_id, actuator),
            payload,
            command_id,
            deadline_s,
            timeout,
        )

    def safe_state(self, timeout: float = 2.0) -> Ack:
        """Put every actuator at its safe value; the Ack's value is the whole safe state."""
        return self.lab._command(
            self.kit_id,
            P.SAFE_STATE_PROPERTY,
            P.safe_state_topic(self.kit_id),
            SAFE_STATE_PAYLOAD,
            None,
            None,
            timeout,
        )

    def _actuator_spec(self, actuator: str) -> dict[str, Any] | None:
        with self._lock:
            if self._descriptor is None:
                raise UnknownKit(f"kit {self.kit_id} has no description on the broker")
            return self._descriptor["actuators"].get(actuator)

    def _local_ack(self, target: str, reason: str, detail: str) -> Ack:
        return Ack(
            id="",
            target=target,
            status=P.REJECTED,
            reason=reason,
            detail=detail,
            ts=time.time(),
            kit=self.kit_id,
            local=True,
        )

    # ------------------------------------------------------------ network thread

    def _info(self) -> KitInfo:
        desc = self._description or {}
        descriptor = self._descriptor or {}
        return KitInfo(
            self.kit_id,
            str(descriptor.get("model", "")),
            str(desc.get("name") or descriptor.get("name", self.kit_id)),
            self._state,
            copy.deepcopy(descriptor),
        )

    def _handle_telemetry(self, payload: bytes) -> None:
        try:
            body = P.decode_telemetry(payload)
        except P.ProtocolError:
            self.lab._count_malformed()
            return
        with self._lock:
            self._count_seq(body["seq"])
            self._received += 1
            self._latest_ts = body["ts"]
            self._latest.update(body["values"])
            bad = self._record(body["ts"], body["values"])
            if bad:
                self.lab.malformed += 1
            subscribers = self._subscribers
        self.lab._run_callbacks(subscribers, self.kit_id, body)

    def _count_seq(self, seq: int) -> None:
        last = self._last_seq
        if last is not None and seq > last + 1:
            self._seq_gaps += seq - last - 1
        # seq <= last: the kit restarted (KitCore numbers from 1 again); start counting anew.
        self._last_seq = seq

    def _record(self, ts: float, values: dict[str, Any]) -> bool:
        """Append to the history rings; True if some value does not fit its sensor's type."""
        if self.lab.history == 0:
            return False
        bad = False
        sensors = (self._descriptor or {}).get("sensors", {})
        for name, value in values.items():
            ring = self._rings.get(name)
            if ring is None:
                if name in self._rings:
                    continue  # a sensor without history
                dtype = _ring_dtype(sensors.get(name), value)
                ring = self._rings[name] = (
                    _Ring(self.lab.history, dtype) if dtype is not None else None
                )
                if ring is None:
                    continue
            stored = _storable(ring, value)
            if stored is None:
                bad = True
            else:
                ring.append(ts, stored)
        return bad

    def _handle_state(self, payload: bytes) -> None:
        state = payload.decode(errors="replace") or None  # empty: the kit was removed
        if state is not None and state not in HOMIE_STATES:
            self.lab._count_malformed()
            return
        with self._lock:
            changed = state != self._state
            self._state = state
            self._lock.notify_all()
        if changed:
            self.lab._state_changed(self.kit_id, state)

    def _handle_description(self, payload: bytes) -> None:
        if not payload:  # retained message cleared: the kit is gone
            with self._lock:
                self._description = self._descriptor = None
            return
        try:
            description = json.loads(payload)
            descriptor = description["smartlab"]["descriptor"]
            ok = (
                description["smartlab"].get("kit", self.kit_id) == self.kit_id
                and isinstance(descriptor["sensors"], dict)
                and isinstance(descriptor["actuators"], dict)
                and isinstance(descriptor["model"], str)
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            ok = False
        if not ok:
            self.lab._count_malformed()
            return
        with self._lock:
            self._description, self._descriptor = description, descriptor
            raw, self._raw_actuators = self._raw_actuators, {}
            self._lock.notify_all()
        for name, value in raw.items():  # values that came before the description
            self._handle_actuator(name, value)

    def _handle_actuator(self, name: str, payload: bytes) -> None:
        with self._lock:
            if self._descriptor is None:
                self._raw_actuators[name] = payload
                return
            spec = self._descriptor["actuators"].get(name)
        if not payload:
            return  # a cleared retained value
        try:
            if spec is None:
                raise P.ProtocolError(P.R_UNKNOWN_ACTUATOR, name)
            value = P.decode_value(spec, payload, name)
        except P.ProtocolError:
            self.lab._count_malformed()
            return
        with self._lock:
            self._actuators[name] = value

    def _handle_status(self, payload: bytes) -> None:
        try:
            status = json.loads(payload)
        except ValueError:
            status = None
        if not isinstance(status, dict):
            self.lab._count_malformed()
            return
        with self._lock:
            self._status = status
