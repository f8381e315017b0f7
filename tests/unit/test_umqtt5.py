"""Unit tests of the firmware's MQTT v5 client: encodings, packet framing, and the client's
handling of acknowledgements, refusals, queued messages and keepalive against a scripted peer."""

from __future__ import annotations

import socket
import time

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hardware_kits.firmware import umqtt5 as U

# ---------------------------------------------------------------- primitives


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2097151, b"\xff\xff\x7f"),
        (2097152, b"\x80\x80\x80\x01"),
        (268435455, b"\xff\xff\xff\x7f"),
    ],
)
def test_varint_round_trip(value: int, encoded: bytes) -> None:
    assert U.encode_varint(value) == encoded
    assert U.decode_varint(b"\xaa" + encoded + b"\xbb", 1) == (value, 1 + len(encoded))


def test_varint_limits() -> None:
    with pytest.raises(ValueError):
        U.encode_varint(268435456)
    with pytest.raises(ValueError):
        U.encode_varint(-1)
    with pytest.raises(U.MQTTException):
        U.decode_varint(b"\x80\x80", 0)  # truncated
    with pytest.raises(U.MQTTException):
        U.decode_varint(b"\xff\xff\xff\xff\x01", 0)  # a fifth byte is not allowed


def test_strings_are_length_prefixed_utf8() -> None:
    assert U.encode_string("MQTT") == b"\x00\x04MQTT"
    encoded = U.encode_string("Straßenlicht ☀")
    assert U.decode_string(encoded + b"rest", 0) == ("Straßenlicht ☀", len(encoded))
    assert U.decode_binary(U.encode_string(b"\x00\xff"), 0) == (b"\x00\xff", 4)
    with pytest.raises(U.MQTTException):
        U.decode_string(b"\x00\x05abc", 0)


# ---------------------------------------------------------------- properties

ALL_KINDS = {
    "payload_format_indicator": 1,
    "message_expiry_interval": 70000,
    "content_type": "application/json",
    "response_topic": "homie/5/k/$ack/me",
    "correlation_data": b"\x00\x01corr",
    "subscription_identifier": 300,
    "topic_alias": 7,
    "user_properties": {"command-id": "c-1", "deadline": "1700000000000"},
}


def test_properties_round_trip_every_type() -> None:
    encoded = U.encode_properties(ALL_KINDS)
    decoded, end = U.decode_properties(encoded + b"payload", 0)
    assert decoded == ALL_KINDS
    assert end == len(encoded)


def test_empty_properties_are_one_zero_byte() -> None:
    assert U.encode_properties(None) == b"\x00"
    assert U.encode_properties({}) == b"\x00"
    assert U.decode_properties(b"\x00", 0) == ({}, 1)


def test_user_properties_accept_pairs_and_keep_order_on_the_wire() -> None:
    encoded = U.encode_properties({"user_properties": [("a", "1"), ("b", "2")]})
    assert encoded == b"\x0e&\x00\x01a\x00\x011&\x00\x01b\x00\x012"
    assert U.decode_properties(encoded, 0)[0] == {"user_properties": {"a": "1", "b": "2"}}


def test_unknown_properties_are_errors() -> None:
    with pytest.raises(ValueError):
        U.encode_properties({"colour": "red"})
    with pytest.raises(U.MQTTException):
        U.decode_properties(b"\x02\x7f\x00", 0)
    with pytest.raises(U.MQTTException):
        U.decode_properties(b"\x05\x01\x01", 0)  # length runs past the buffer


def test_properties_match_paho() -> None:
    """Cross-check the encoding with paho-mqtt's own, both ways."""
    theirs = Properties(PacketTypes.PUBLISH)
    theirs.ResponseTopic = "homie/5/k/$ack/me"
    theirs.CorrelationData = b"abc"
    theirs.UserProperty = [("command-id", "c-9"), ("deadline", "123")]
    theirs.MessageExpiryInterval = 30
    ours = {
        "message_expiry_interval": 30,
        "response_topic": "homie/5/k/$ack/me",
        "correlation_data": b"abc",
        "user_properties": [("command-id", "c-9"), ("deadline", "123")],
    }
    decoded = U.decode_properties(theirs.pack(), 0)[0]
    assert decoded == {**ours, "user_properties": dict(ours["user_properties"])}
    back = Properties(PacketTypes.PUBLISH)
    back.unpack(U.encode_properties(ours))
    assert back.ResponseTopic == "homie/5/k/$ack/me"
    assert back.CorrelationData == b"abc"
    assert back.UserProperty == [("command-id", "c-9"), ("deadline", "123")]
    assert back.MessageExpiryInterval == 30


# ---------------------------------------------------------------- packet framing


def test_minimal_connect_packet() -> None:
    pkt = U.connect_packet("kit-a", 30)
    body = b"\x00\x04MQTT\x05\x02\x00\x1e\x00" + b"\x00\x05kit-a"
    assert pkt == bytes([0x10, len(body)]) + body


def test_connect_packet_with_will_and_credentials() -> None:
    will = ("homie/5/a/$state", "lost", True, 1, {"will_delay_interval": 0})
    pkt = U.connect_packet("c", 60, True, "user", "pw", will, {"session_expiry_interval": 10})
    first, length = pkt[0], U.decode_varint(pkt, 1)
    assert first == 0x10
    body = pkt[length[1] :]
    assert len(body) == length[0]
    assert body[:7] == b"\x00\x04MQTT\x05"
    flags = body[7]
    assert flags == 0x80 | 0x40 | 0x20 | (1 << 3) | 0x04 | 0x02
    assert body[8:10] == b"\x00\x3c"
    props, offset = U.decode_properties(body, 10)
    assert props == {"session_expiry_interval": 10}
    client_id, offset = U.decode_string(body, offset)
    will_props, offset = U.decode_properties(body, offset)
    will_topic, offset = U.decode_string(body, offset)
    will_msg, offset = U.decode_binary(body, offset)
    user, offset = U.decode_string(body, offset)
    password, offset = U.decode_binary(body, offset)
    assert (client_id, will_props, will_topic, will_msg, user, password) == (
        "c",
        {"will_delay_interval": 0},
        "homie/5/a/$state",
        b"lost",
        "user",
        b"pw",
    )
    assert offset == len(body)


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("retain", [False, True])
def test_publish_round_trip(qos: int, retain: bool) -> None:
    props = {"response_topic": "r/t", "correlation_data": b"\x01", "user_properties": {"k": "v"}}
    pkt = U.publish_packet("a/b", b"\x00payload\xff", qos, retain, 513 if qos else 0, props)
    assert pkt[0] == 0x30 | (qos << 1) | int(retain)
    length, offset = U.decode_varint(pkt, 1)
    assert len(pkt) - offset == length
    assert U.parse_publish(pkt[0], pkt[offset:]) == (
        "a/b",
        b"\x00payload\xff",
        qos,
        retain,
        513 if qos else 0,
        props,
    )


def test_large_publish_uses_multibyte_length() -> None:
    pkt = U.publish_packet("t", "x" * 5000)
    length, offset = U.decode_varint(pkt, 1)
    assert offset == 3 and length == 2 + 1 + 1 + 5000


def test_acknowledgements() -> None:
    assert U.puback_packet(5) == b"\x40\x02\x00\x05"
    assert U.puback_packet(5, 0x10) == b"\x40\x03\x00\x05\x10"
    assert U.parse_ack(b"\x00\x05") == (5, 0, {})
    assert U.parse_ack(b"\x00\x05\x87") == (5, 0x87, {})
    assert U.parse_ack(b"\x00\x05\x87" + U.encode_properties({"reason_string": "no"})) == (
        5,
        0x87,
        {"reason_string": "no"},
    )
    assert U.subscribe_packet(1, "a/+", 1) == b"\x82\x09\x00\x01\x00\x00\x03a/+\x01"
    # retain handling 2 (bits 4-5 of the options): no retained message at subscribe time
    assert U.subscribe_packet(1, "a/+", 1, 2) == b"\x82\x09\x00\x01\x00\x00\x03a/+\x21"
    assert U.parse_suback(b"\x00\x01\x00\x01\x80") == (1, [1, 0x80], {})
    assert U.parse_connack(b"\x01\x00\x03\x21\x00\x0a") == (True, 0, {"receive_maximum": 10})
    assert U.parse_connack(b"\x00\x86") == (False, 0x86, {})
    assert U.disconnect_packet() == b"\xe0\x00"
    assert U.disconnect_packet(0x04) == b"\xe0\x02\x04\x00"


def test_reason_names() -> None:
    assert U.reason_name(0x87) == "0x87 not authorized"
    assert "unknown" in U.reason_name(0xFE)
    err = U.MQTTException(0x86)
    assert err.code == 0x86 and "bad user name or password" in str(err)


# ---------------------------------------------------------------- the client, scripted peer


class Peer:
    """The broker's end of a socketpair: send scripted packets, read what the client sent."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(2)

    def send(self, first: int, body: bytes) -> None:
        self.sock.sendall(U.packet(first, body))

    def recv_exact(self, n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "client closed the connection"
            data += chunk
        return data

    def read(self) -> tuple[int, bytes]:
        first = self.recv_exact(1)[0]
        length, shift = 0, 0
        while True:
            byte = self.recv_exact(1)[0]
            length |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                break
        return first, self.recv_exact(length)


@pytest.fixture
def pair(monkeypatch: pytest.MonkeyPatch):
    mine, theirs = socket.socketpair()
    client = U.MQTTClient("kit-t", "unused", 1883, "u", "p", keepalive=30, timeout=2)
    monkeypatch.setattr(client, "_open_socket", lambda: mine)
    peer = Peer(theirs)
    yield client, peer
    client.close()
    theirs.close()


def connected(pair):
    client, peer = pair
    peer.send(U.CONNACK, b"\x00\x00\x00")
    assert client.connect() is False
    assert peer.read()[0] == U.CONNECT
    return client, peer


def test_connect_sends_credentials_and_will(pair) -> None:
    client, peer = pair
    client.set_last_will("homie/5/t/$state", "lost", retain=True, qos=1)
    peer.send(U.CONNACK, b"\x01\x00" + U.encode_properties({"server_keep_alive": 20}))
    assert client.connect(clean_start=True) is True
    first, body = peer.read()
    assert U.packet(first, body) == U.connect_packet(
        "kit-t", 30, True, "u", "p", ("homie/5/t/$state", "lost", True, 1, None), {}
    )
    assert client.keepalive == 20


def test_connack_refusal_raises_with_reason(pair) -> None:
    client, peer = pair
    peer.send(U.CONNACK, b"\x00\x86" + U.encode_properties({"reason_string": "who are you"}))
    with pytest.raises(U.MQTTException) as info:
        client.connect()
    assert info.value.code == 0x86
    assert "bad user name or password" in str(info.value)
    assert "who are you" in str(info.value)
    assert client.sock is None


def test_qos1_publish_waits_for_puback_and_counts_refusals(pair) -> None:
    client, peer = connected(pair)
    peer.send(U.PUBACK, b"\x00\x01")  # success, short form
    peer.send(U.PUBACK, b"\x00\x02\x87\x00")  # not authorized
    assert client.publish("a", "1", qos=1) == 0
    assert client.publish("b", "2", qos=1, properties={"user_properties": {"x": "y"}}) == 0x87
    assert client.refused == 1
    assert client.last_refusal == ("b", 0x87)
    assert client.publish("c", "3") is None  # QoS 0: nothing to wait for
    first, body = peer.read()
    assert U.parse_publish(first, body)[:5] == ("a", b"1", 1, False, 1)
    first, body = peer.read()
    assert U.parse_publish(first, body)[5] == {"user_properties": {"x": "y"}}
    first, body = peer.read()
    assert U.parse_publish(first, body)[:3] == ("c", b"3", 0)


def test_publish_times_out_without_puback(pair) -> None:
    client = connected(pair)[0]
    client.timeout = 0.2
    with pytest.raises(U.MQTTException, match="no acknowledgement"):
        client.publish("a", "1", qos=1)


def test_subscribe_checks_suback(pair) -> None:
    client, peer = connected(pair)
    peer.send(U.SUBACK, b"\x00\x01\x00\x01")
    peer.send(U.SUBACK, b"\x00\x02\x00\x87")
    assert client.subscribe("a/+", 1) == 1
    with pytest.raises(U.MQTTException) as info:
        client.subscribe("forbidden/#", 1)
    assert info.value.code == 0x87
    first, body = peer.read()
    assert first == 0x82 and U.decode_string(body, 3)[0] == "a/+"


def test_received_messages_are_delivered_and_acknowledged(pair) -> None:
    client, peer = connected(pair)
    got = []
    client.set_callback(lambda topic, msg, props: got.append((topic, msg, props)))
    assert client.check_msg() is None  # nothing there: returns at once
    props = {"response_topic": "r", "correlation_data": b"c", "user_properties": {"k": "v"}}
    peer.sock.sendall(U.publish_packet("x/y", b"hello", 1, False, 42, props))
    peer.sock.sendall(U.publish_packet("x/z", b"q0", 0))
    assert client.check_msg(1000) == U.PUBLISH
    assert got == [("x/y", b"hello", props)]
    assert peer.read() == (U.PUBACK, b"\x00\x2a")
    assert client.wait_msg() == U.PUBLISH
    assert got[1] == ("x/z", b"q0", {})


def test_messages_arriving_during_a_publish_are_queued(pair) -> None:
    """The callback must not run inside publish(): it publishes itself (re-entrancy)."""
    client, peer = connected(pair)
    got = []
    client.set_callback(lambda topic, msg, props: got.append(topic))
    peer.sock.sendall(U.publish_packet("cmd/1", b"a", 1, False, 9))
    peer.send(U.PUBACK, b"\x00\x01")
    assert client.publish("t", "x", qos=1) == 0
    assert got == []
    assert client.check_msg() == U.PUBLISH
    assert got == ["cmd/1"]
    peer.read()  # our PUBLISH
    assert peer.read() == (U.PUBACK, b"\x00\x09")


def test_puback_is_sent_even_if_the_callback_fails(pair) -> None:
    client, peer = connected(pair)

    def broken(topic, msg, props):
        raise RuntimeError("bug")

    client.set_callback(broken)
    peer.sock.sendall(U.publish_packet("x", b"a", 1, False, 3))
    with pytest.raises(RuntimeError):
        client.check_msg(1000)
    assert peer.read() == (U.PUBACK, b"\x00\x03")


def test_keepalive_pings_and_detects_a_dead_broker(pair) -> None:
    client, peer = connected(pair)
    client.keepalive = 1
    client.check_msg()
    client._last_tx -= 1000  # nothing sent for a whole keepalive period
    client.check_msg()
    assert peer.read() == (U.PINGREQ, b"")
    peer.send(U.PINGRESP, b"")
    assert client.check_msg(1000) == U.PINGRESP
    assert client._ping_sent is None
    client.ping()
    assert peer.read() == (U.PINGREQ, b"")
    client._ping_sent -= 2000  # no PINGRESP for too long
    with pytest.raises(U.MQTTException, match="PINGRESP"):
        client.check_msg()


def test_server_disconnect_raises_with_reason(pair) -> None:
    client, peer = connected(pair)
    peer.send(U.DISCONNECT, b"\x8e\x00")
    with pytest.raises(U.MQTTException) as info:
        client.check_msg(1000)
    assert info.value.code == 0x8E
    assert client.sock is None


def test_closed_connection_is_an_oserror(pair) -> None:
    client, peer = connected(pair)
    peer.sock.close()
    with pytest.raises(OSError):
        client.check_msg(1000)


def test_check_msg_does_not_block() -> None:
    mine, theirs = socket.socketpair()
    client = U.MQTTClient("c", "unused")
    client._open_socket = lambda: mine
    theirs.sendall(U.packet(U.CONNACK, b"\x00\x00\x00"))
    client.connect()
    start = time.monotonic()
    for _ in range(100):
        assert client.check_msg() is None
    assert time.monotonic() - start < 0.5
    assert client.check_msg(50) is None
    client.disconnect()
    assert theirs.recv(100).endswith(b"\xe0\x00")
    theirs.close()
