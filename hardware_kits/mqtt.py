"""paho-mqtt 2 plumbing shared by twins, services, the client library, tests and benchmarks.

Always MQTT v5 (under 3.1.1 an unauthorised QoS 1 publish is acknowledged and silently dropped;
v5 answers "not authorized") and always TCP_NODELAY (Nagle and delayed ACKs otherwise add tens of
milliseconds to every command round trip).
"""

from __future__ import annotations

import os
import socket
import ssl
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

from hardware_kits import protocol as P


@dataclass(frozen=True)
class Credentials:
    username: str
    password: str

    def as_dict(self) -> dict[str, str]:
        return {"username": self.username, "password": self.password}


# The CA certificate that `mqtts://` URLs without `?ca=` verify the broker against (unset: the
# system's trust store).
CA_ENV = "SMARTLAB_MQTT_CA"
PLAIN_PORT, TLS_PORT = 1883, 8883


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    credentials: Credentials
    tls: bool = False
    ca: str | None = None  # CA certificate file verifying the broker (None: system trust)

    @classmethod
    def from_url(cls, url: str) -> BrokerAddress:
        """mqtt://user:password@host:port, or mqtts://user:password@host:8883?ca=/path/ca.crt"""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.username or parts.password is None:
            raise ValueError(
                "an MQTT URL looks like mqtt://user:password@host:port "
                "or mqtts://user:password@host:8883?ca=/path/ca.crt"
            )
        tls = parts.scheme == "mqtts"
        ca = (parse_qs(parts.query).get("ca") or [None])[0] if tls else None
        return cls(
            parts.hostname or "127.0.0.1",
            parts.port or (TLS_PORT if tls else PLAIN_PORT),
            Credentials(unquote(parts.username), unquote(parts.password)),
            tls,
            ca or (os.environ.get(CA_ENV) or None if tls else None),
        )

    def url(self) -> str:
        c = self.credentials
        scheme = "mqtts" if self.tls else "mqtt"
        query = f"?ca={quote(self.ca)}" if self.tls and self.ca else ""
        return f"{scheme}://{c.username}:{c.password}@{self.host}:{self.port}{query}"

    def tls_options(self) -> dict[str, Any]:
        """`connect_client` keyword arguments for this address's transport."""
        return {"tls": self.tls, "ca": self.ca}


class ConnectError(ConnectionError):
    """The broker refused or did not answer a connection."""


def _nodelay(_client: mqtt.Client, _userdata: Any, sock: Any) -> None:
    if hasattr(sock, "setsockopt"):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def make_client(
    client_id: str, creds: Credentials, tls: bool = False, ca: str | None = None
) -> mqtt.Client:
    """A paho v5 client (callback API v2) with credentials and TCP_NODELAY set; with `tls`, it
    verifies the broker's certificate (against `ca`, else the system's trust store) and name."""
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5
    )
    client.username_pw_set(creds.username, creds.password)
    client.on_socket_open = _nodelay
    if tls:
        try:
            client.tls_set(ca_certs=ca, cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ssl.SSLError) as err:
            raise ConnectError(f"cannot use the CA certificate {ca!r} for mqtts: {err}") from None
    return client


def _unreachable(host: str, port: int, err: OSError, ca: str | None) -> ConnectError:
    """One line on why a connection failed; a TLS verification failure says so plainly."""
    if isinstance(err, ssl.SSLCertVerificationError):
        trust = ca or "the system's trust store"
        return ConnectError(
            f"the MQTT broker at {host}:{port} failed TLS verification against {trust}: "
            f"{err.verify_message or err.reason}"
        )
    if isinstance(err, ssl.SSLError):
        return ConnectError(f"TLS with the MQTT broker at {host}:{port} failed: {err.reason}")
    return ConnectError(f"cannot reach the MQTT broker at {host}:{port}: {err}")


def connect_client(
    host: str,
    port: int,
    creds: Credentials,
    client_id: str,
    on_message: Callable[[mqtt.Client, Any, mqtt.MQTTMessage], None] | None = None,
    subscribe: Iterable[tuple[str, int | SubscribeOptions]] = (),
    will: tuple[str, str, int, bool] | None = None,
    on_connect: Callable[[mqtt.Client], None] | None = None,
    keepalive: int = 30,
    timeout: float = 10.0,
    tls: bool = False,
    ca: str | None = None,
    properties: Properties | None = None,
) -> mqtt.Client:
    """Connect, wait for CONNACK, (re)subscribe on every connect, and run paho's network thread.

    `on_connect(client)` runs after each (re)connection, before the subscriptions are sent:
    kits announce themselves there. `properties`: the CONNECT's MQTT v5 properties (see
    `connect_properties`). Raises ConnectError with the broker's reason on refusal."""
    client = make_client(client_id, creds, tls, ca)
    if will is not None:
        topic, payload, qos, retain = will
        client.will_set(topic, payload, qos=qos, retain=retain)
    if on_message is not None:
        client.on_message = on_message
    filters = list(subscribe)
    outcome: dict[str, Any] = {}
    ready = threading.Event()

    def handle_connect(c: mqtt.Client, _u: Any, _f: Any, reason: Any, _p: Any) -> None:
        outcome["reason"] = reason
        if not reason.is_failure:
            if on_connect is not None:
                on_connect(c)
            if filters:
                outcome["mid"] = c.subscribe(filters)[1]
                return  # ready once SUBACK arrives
        ready.set()

    def handle_subscribe(_c: mqtt.Client, _u: Any, mid: int, reasons: list, _p: Any) -> None:
        refused = [str(r) for r in reasons if r.is_failure]
        if refused:
            outcome["refused"] = refused
        if mid == outcome.get("mid"):
            ready.set()

    client.on_connect = handle_connect
    client.on_subscribe = handle_subscribe
    try:
        client.connect(host, port, keepalive=keepalive, properties=properties)
    except OSError as err:
        raise _unreachable(host, port, err, ca) from None
    client.loop_start()
    if not ready.wait(timeout):
        client.loop_stop()
        raise ConnectError(f"no answer from the MQTT broker at {host}:{port} within {timeout} s")
    reason = outcome.get("reason")
    if reason is not None and reason.is_failure:
        client.loop_stop()
        raise ConnectError(f"the broker refused {creds.username!r}: {reason}")
    if "refused" in outcome:
        client.disconnect()
        client.loop_stop()
        raise ConnectError(
            f"the broker refused a subscription of {creds.username!r}: "
            + ", ".join(outcome["refused"])
        )
    return client


def connect_properties(max_packet_bytes: int | None = None) -> Properties:
    """CONNECT properties; `max_packet_bytes`: the broker sends this client no larger packet
    (it drops it for this client instead), as a kit asks with its descriptor's limit."""
    props = Properties(PacketTypes.CONNECT)
    if max_packet_bytes:
        props.MaximumPacketSize = max_packet_bytes
    return props


def command_properties(command_id: str, response_topic: str, deadline_s: float) -> Properties:
    """MQTT v5 properties of a command: id and deadline as user properties, reply address."""
    props = Properties(PacketTypes.PUBLISH)
    props.ResponseTopic = response_topic
    props.CorrelationData = command_id.encode()
    props.UserProperty = [
        (P.PROP_COMMAND_ID, command_id),
        (P.PROP_DEADLINE, str(int(deadline_s * 1000))),
    ]
    return props


def frame_publish_properties(ts_ms: int, seq: int, frame: int) -> Properties:
    """MQTT v5 properties of one camera frame (protocol.frame_properties as user properties)."""
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = P.frame_properties(ts_ms, seq, frame)
    return props


def user_properties(props: Properties | None) -> dict[str, str]:
    if props is None:
        return {}
    return dict(getattr(props, "UserProperty", None) or [])


def reply_properties(request: Properties | None) -> Properties | None:
    """Properties for a response: the request's correlation data echoed."""
    data = getattr(request, "CorrelationData", None) if request is not None else None
    if data is None:
        return None
    props = Properties(PacketTypes.PUBLISH)
    props.CorrelationData = data
    return props
