"""A small MQTT v5 client for MicroPython (and CPython), shaped like umqtt.simple.

umqtt.simple speaks MQTT 3.1.1 only, while the lab protocol needs v5: user properties, response
topic and correlation data on commands, and reason codes (under 3.1.1 a refused publish is
silently dropped). This client covers what a kit needs and nothing more:

- CONNECT with clean start, session expiry, username/password and a last will (with properties);
  a refused CONNACK raises MQTTException with the reason;
- PUBLISH QoS 0 and 1 with properties; a QoS 1 publish waits for its PUBACK, and a PUBACK whose
  reason code is >= 0x80 (e.g. "not authorized") is counted in `refused` and returned;
- SUBSCRIBE (QoS 0/1) with SUBACK reason codes checked;
- received PUBLISH (QoS 0/1) goes to `callback(topic, msg, properties)`, with `topic` a str,
  `msg` bytes and `properties` a dict such as {"user_properties": {...}, "response_topic": "...",
  "correlation_data": b"..."}; QoS 1 messages are acknowledged after the callback returns;
- keepalive pings, and a broker that stops answering them is reported as an error.

Messages that arrive while the client waits for a PUBACK or SUBACK are queued and delivered by
the next check_msg()/wait_msg(), so the callback is never re-entered from its own publishes.
Not supported (a kit does not need them): QoS 2, topic aliases, AUTH.
TLS (mqtts) with `ca=` a CA certificate file: the broker's certificate and name are verified
(`ssl.SSLContext`, which MicroPython 1.23+ and CPython share).

Only `socket`, `select`, `struct` and `time` are used, in the subset MicroPython 1.22+ has.
"""

import socket
import time

try:
    import ustruct as struct
except ImportError:
    import struct

try:
    import select
except ImportError:
    import uselect as select

# ---------------------------------------------------------------- packet types

CONNECT = 0x10
CONNACK = 0x20
PUBLISH = 0x30
PUBACK = 0x40
SUBSCRIBE = 0x80
SUBACK = 0x90
PINGREQ = 0xC0
PINGRESP = 0xD0
DISCONNECT = 0xE0

# ---------------------------------------------------------------- properties

# Property identifier -> (name, type); the type tells how to encode and decode the value:
# B byte, H two-byte int, L four-byte int, V variable byte int, S UTF-8 string, D binary data,
# P UTF-8 string pair (user property). Every v5 property is listed so that a received packet
# can always be parsed to its end, even when it carries properties this client does not use.
PROPERTIES = {
    0x01: ("payload_format_indicator", "B"),
    0x02: ("message_expiry_interval", "L"),
    0x03: ("content_type", "S"),
    0x08: ("response_topic", "S"),
    0x09: ("correlation_data", "D"),
    0x0B: ("subscription_identifier", "V"),
    0x11: ("session_expiry_interval", "L"),
    0x12: ("assigned_client_identifier", "S"),
    0x13: ("server_keep_alive", "H"),
    0x15: ("authentication_method", "S"),
    0x16: ("authentication_data", "D"),
    0x17: ("request_problem_information", "B"),
    0x18: ("will_delay_interval", "L"),
    0x19: ("request_response_information", "B"),
    0x1A: ("response_information", "S"),
    0x1C: ("server_reference", "S"),
    0x1F: ("reason_string", "S"),
    0x21: ("receive_maximum", "H"),
    0x22: ("topic_alias_maximum", "H"),
    0x23: ("topic_alias", "H"),
    0x24: ("maximum_qos", "B"),
    0x25: ("retain_available", "B"),
    0x26: ("user_properties", "P"),
    0x27: ("maximum_packet_size", "L"),
    0x28: ("wildcard_subscription_available", "B"),
    0x29: ("subscription_identifier_available", "B"),
    0x2A: ("shared_subscription_available", "B"),
}
PROPERTY_IDS = {}
for _pid, (_name, _kind) in PROPERTIES.items():
    PROPERTY_IDS[_name] = _pid

# Reason codes worth a readable name in an error message.
REASONS = {
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x93: "receive maximum exceeded",
    0x95: "packet too large",
    0x97: "quota exceeded",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA2: "wildcard subscriptions not supported",
}


def reason_name(code):
    if code is None:
        return "client error"
    return "0x%02X %s" % (code, REASONS.get(code, "unknown reason"))


class MQTTException(Exception):
    """A refusal by the broker (`code`: the v5 reason code) or a client-side failure (None)."""

    def __init__(self, code, message=None):
        # super(), not Exception.__init__(self, ...): MicroPython's built-in exception types
        # have no __init__ attribute to call that way.
        super().__init__(message or reason_name(code))
        self.code = code


# ---------------------------------------------------------------- encoding primitives


def _bytes(value):
    if isinstance(value, str):
        return value.encode()
    return bytes(value)


def encode_varint(n):
    """MQTT variable byte integer (1 to 4 bytes, 7 bits each, low group first)."""
    if n < 0 or n > 268435455:
        raise ValueError("variable byte integer out of range: %d" % n)
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def decode_varint(buf, offset=0):
    """Return (value, offset after it)."""
    value = 0
    shift = 0
    for i in range(4):
        if offset + i >= len(buf):
            raise MQTTException(None, "truncated variable byte integer")
        byte = buf[offset + i]
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, offset + i + 1
        shift += 7
    raise MQTTException(None, "malformed variable byte integer")


def encode_string(s):
    """UTF-8 string or binary data: two-byte length, then the bytes."""
    data = _bytes(s)
    if len(data) > 65535:
        raise ValueError("string longer than 65535 bytes")
    return struct.pack(">H", len(data)) + data


def decode_binary(buf, offset):
    if offset + 2 > len(buf):
        raise MQTTException(None, "truncated length prefix")
    n = struct.unpack(">H", buf[offset : offset + 2])[0]
    end = offset + 2 + n
    if end > len(buf):
        raise MQTTException(None, "truncated string or binary data")
    return bytes(buf[offset + 2 : end]), end


def decode_string(buf, offset):
    data, offset = decode_binary(buf, offset)
    return data.decode(), offset


def encode_properties(props):
    """Property section (length prefix included) from a dict keyed by property name.

    "user_properties" may be a dict or a list of (name, value) pairs; strings may be str or
    bytes. None or {} gives the empty section (a single zero byte)."""
    out = bytearray()
    if props:
        for name, value in props.items():
            if value is None:
                continue
            pid = PROPERTY_IDS.get(name)
            if pid is None:
                raise ValueError("unknown MQTT property " + name)
            kind = PROPERTIES[pid][1]
            if kind == "P":
                pairs = value.items() if isinstance(value, dict) else value
                for key, item in pairs:
                    out.append(pid)
                    out.extend(encode_string(key))
                    out.extend(encode_string(item))
                continue
            out.extend(encode_varint(pid))
            if kind == "B":
                out.append(value)
            elif kind == "H":
                out.extend(struct.pack(">H", value))
            elif kind == "L":
                out.extend(struct.pack(">I", value))
            elif kind == "V":
                out.extend(encode_varint(value))
            else:  # S and D share the length-prefixed form
                out.extend(encode_string(value))
    return encode_varint(len(out)) + bytes(out)


def decode_properties(buf, offset):
    """Return (properties dict, offset after the section). User properties become a dict."""
    length, offset = decode_varint(buf, offset)
    end = offset + length
    if end > len(buf):
        raise MQTTException(None, "truncated properties")
    props = {}
    while offset < end:
        pid, offset = decode_varint(buf, offset)
        entry = PROPERTIES.get(pid)
        if entry is None:
            raise MQTTException(0x81, "unknown property identifier 0x%02X" % pid)
        name, kind = entry
        if kind == "B":
            value = buf[offset]
            offset += 1
        elif kind == "H":
            value = struct.unpack(">H", buf[offset : offset + 2])[0]
            offset += 2
        elif kind == "L":
            value = struct.unpack(">I", buf[offset : offset + 4])[0]
            offset += 4
        elif kind == "V":
            value, offset = decode_varint(buf, offset)
        elif kind == "S":
            value, offset = decode_string(buf, offset)
        elif kind == "D":
            value, offset = decode_binary(buf, offset)
        else:
            key, offset = decode_string(buf, offset)
            item, offset = decode_string(buf, offset)
            props.setdefault(name, {})[key] = item
            continue
        props[name] = value
    if offset != end:
        raise MQTTException(0x81, "properties overrun their length")
    return props, end


def packet(first_byte, body):
    """Frame a packet: fixed header byte, remaining length, body."""
    return bytes([first_byte]) + encode_varint(len(body)) + bytes(body)


# ---------------------------------------------------------------- packet builders


def connect_packet(
    client_id, keepalive, clean_start=True, user=None, password=None, will=None, properties=None
):
    """`will` is None or (topic, msg, retain, qos, will_properties)."""
    flags = 0x02 if clean_start else 0
    payload = bytearray(encode_string(client_id))
    if will is not None:
        topic, msg, retain, qos, will_props = will
        flags |= 0x04 | (qos << 3) | (0x20 if retain else 0)
        payload.extend(encode_properties(will_props))
        payload.extend(encode_string(topic))
        payload.extend(encode_string(msg))
    if user is not None:
        flags |= 0x80
        payload.extend(encode_string(user))
    if password is not None:
        flags |= 0x40
        payload.extend(encode_string(password))
    body = bytearray(encode_string("MQTT"))
    body.append(5)  # protocol level: MQTT 5.0
    body.append(flags)
    body.extend(struct.pack(">H", keepalive))
    body.extend(encode_properties(properties))
    body.extend(payload)
    return packet(CONNECT, body)


def publish_packet(topic, msg, qos=0, retain=False, pid=0, properties=None, dup=False):
    first = PUBLISH | (qos << 1) | (0x01 if retain else 0) | (0x08 if dup else 0)
    body = bytearray(encode_string(topic))
    if qos:
        body.extend(struct.pack(">H", pid))
    body.extend(encode_properties(properties))
    body.extend(_bytes(msg))
    return packet(first, body)


def parse_publish(first, body):
    """Return (topic, msg, qos, retain, pid, properties) of a received PUBLISH."""
    qos = (first >> 1) & 0x03
    topic, offset = decode_string(body, 0)
    pid = 0
    if qos:
        pid = struct.unpack(">H", body[offset : offset + 2])[0]
        offset += 2
    props, offset = decode_properties(body, offset)
    return topic, bytes(body[offset:]), qos, bool(first & 0x01), pid, props


def puback_packet(pid, reason=0):
    # The short form (no reason code) means success; both forms are valid v5.
    if reason == 0:
        return packet(PUBACK, struct.pack(">H", pid))
    return packet(PUBACK, struct.pack(">HB", pid, reason))


def parse_ack(body):
    """(pid, reason code, properties) of a PUBACK; a 2-byte body means success."""
    pid = struct.unpack(">H", body[0:2])[0]
    if len(body) < 3:
        return pid, 0, {}
    props = {}
    if len(body) > 3:
        props = decode_properties(body, 3)[0]
    return pid, body[2], props


def subscribe_packet(pid, topic, qos=0, retain_handling=0):
    body = bytearray(struct.pack(">H", pid))
    body.extend(encode_properties(None))
    body.extend(encode_string(topic))
    # Subscription options: QoS, no-local 0, retain-as-published 0, retain handling.
    body.append(qos | (retain_handling << 4))
    return packet(SUBSCRIBE | 0x02, body)


def parse_suback(body):
    """(pid, [reason codes], properties)."""
    pid = struct.unpack(">H", body[0:2])[0]
    props, offset = decode_properties(body, 2)
    return pid, list(body[offset:]), props


def parse_connack(body):
    """(session present, reason code, properties)."""
    props = {}
    if len(body) > 2:
        props = decode_properties(body, 2)[0]
    return bool(body[0] & 0x01), body[1], props


def disconnect_packet(reason=0):
    if reason == 0:
        return packet(DISCONNECT, b"")
    return packet(DISCONNECT, bytes([reason]) + encode_properties(None))


# ---------------------------------------------------------------- time

if hasattr(time, "ticks_ms"):  # MicroPython: wrapping millisecond ticks
    ticks_ms = time.ticks_ms
    ticks_diff = time.ticks_diff
    ticks_add = time.ticks_add
else:

    def ticks_ms():
        return int(time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, delta):
        return a + delta


# ---------------------------------------------------------------- the client


class MQTTClient:
    def __init__(
        self,
        client_id,
        server,
        port=1883,
        user=None,
        password=None,
        keepalive=60,
        timeout=10,
        ca=None,
    ):
        self.client_id = client_id
        self.ca = ca  # CA certificate file: connect with TLS and verify the broker against it
        self.server = server
        self.port = port
        self.user = user
        self.password = password
        self.keepalive = keepalive
        self.timeout = timeout  # seconds to wait for an acknowledgement or a packet's rest
        self.sock = None
        self.cb = None
        self.will = None
        self.pid = 0
        self.refused = 0  # publishes the broker acknowledged with a failure reason code
        self.last_refusal = None  # (topic, reason code) of the latest one
        self.server_properties = {}
        self.maximum_qos = 1
        self._queue = []  # (topic, msg, qos, pid, properties) received while waiting for an ack
        self._poller = None
        self._last_tx = 0
        self._ping_sent = None  # ticks of an unanswered PINGREQ

    # ------------------------------------------------------------ configuration

    def set_callback(self, f):
        """f(topic: str, msg: bytes, properties: dict) for every received message."""
        self.cb = f

    def set_last_will(self, topic, msg, retain=False, qos=0, properties=None):
        if qos not in (0, 1, 2):
            raise ValueError("will QoS must be 0, 1 or 2")
        self.will = (topic, msg, retain, qos, properties)

    # ------------------------------------------------------------ socket

    def _open_socket(self):
        last = None
        for info in socket.getaddrinfo(self.server, self.port, 0, socket.SOCK_STREAM):
            sock = socket.socket(info[0], info[1], info[2])
            try:
                sock.settimeout(self.timeout)
                sock.connect(info[-1])
            except OSError as err:  # try the next address (e.g. IPv6 first, broker on IPv4)
                sock.close()
                last = err
                continue
            return sock
        raise last or OSError("cannot resolve " + str(self.server))

    def _wrap_tls(self, sock):
        """TLS over `sock`, verifying the broker's certificate against `ca` and its name."""
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(cafile=self.ca)
        try:
            return ctx.wrap_socket(sock, server_hostname=self.server)
        except Exception:
            sock.close()
            raise

    def _set_nodelay(self):
        # Nagle plus delayed ACKs add tens of ms to each small packet; not every port has it.
        level = getattr(socket, "IPPROTO_TCP", None)
        option = getattr(socket, "TCP_NODELAY", None)
        if level is None or option is None:
            return
        try:
            self.sock.setsockopt(level, option, 1)
        except (OSError, AttributeError):
            pass

    def _send(self, data):
        view = memoryview(data)
        sent = 0
        while sent < len(data):
            n = self.sock.send(view[sent:])
            if not n:
                raise OSError("connection closed while sending")
            sent += n
        self._last_tx = ticks_ms()

    def _recv_exact(self, n):
        chunks = []
        got = 0
        while got < n:
            chunk = self.sock.recv(n - got)
            if not chunk:
                raise OSError("connection closed by the broker")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _readable(self, timeout_ms):
        """True if a packet starts arriving within timeout_ms (0: just look)."""
        if self._poller is None:
            return True
        pending = getattr(self.sock, "pending", None)  # TLS: bytes decrypted, not yet read
        if pending is not None and pending():
            return True
        events = self._poller.poll(timeout_ms)
        return bool(events)

    def _read_packet(self):
        """Block (up to `timeout` per read) for one packet: (first byte, body bytes)."""
        first = self._recv_exact(1)[0]
        length = 0
        shift = 0
        for _ in range(4):
            byte = self._recv_exact(1)[0]
            length |= (byte & 0x7F) << shift
            if not byte & 0x80:
                break
            shift += 7
        else:
            raise MQTTException(0x81, "malformed remaining length")
        body = self._recv_exact(length) if length else b""
        return first, body

    # ------------------------------------------------------------ connection

    def connect(self, clean_start=True, session_expiry=0, max_packet_size=None):
        """Open the connection; return True if the broker resumed a session.

        `max_packet_size` asks the broker not to send larger packets (it drops them instead),
        which keeps a board's RAM safe from huge messages. Raises MQTTException carrying the
        CONNACK reason code if the broker refuses."""
        self.close()  # a reconnect on the same client starts from a fresh socket
        self.sock = self._open_socket()
        self._set_nodelay()
        if self.ca:
            self.sock = self._wrap_tls(self.sock)
        props = {}
        if session_expiry:
            props["session_expiry_interval"] = session_expiry
        if max_packet_size:
            props["maximum_packet_size"] = max_packet_size
        try:
            self._send(
                connect_packet(
                    self.client_id,
                    self.keepalive,
                    clean_start,
                    self.user,
                    self.password,
                    self.will,
                    props,
                )
            )
            first, body = self._read_packet()
            if first != CONNACK:
                raise MQTTException(0x82, "expected CONNACK, got packet type 0x%02X" % first)
            present, reason, props = parse_connack(body)
        except Exception:
            self.close()
            raise
        if reason >= 0x80:
            self.close()
            text = "broker refused the connection: " + reason_name(reason)
            if "reason_string" in props:
                text += " (" + props["reason_string"] + ")"
            raise MQTTException(reason, text)
        self.server_properties = props
        if "server_keep_alive" in props:  # the broker's value overrides ours
            self.keepalive = props["server_keep_alive"]
        self.maximum_qos = min(1, props.get("maximum_qos", 1))
        if hasattr(select, "poll"):
            self._poller = select.poll()
            self._poller.register(self.sock, select.POLLIN)
        self._queue = []
        self._ping_sent = None
        return present

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None
        self._poller = None

    def disconnect(self, reason=0):
        """Send DISCONNECT (reason 0: normal, so the broker discards the will) and close."""
        try:
            if self.sock is not None:
                self._send(disconnect_packet(reason))
        finally:
            self.close()

    def ping(self):
        self._send(packet(PINGREQ, b""))
        if self._ping_sent is None:
            self._ping_sent = ticks_ms()

    def _next_pid(self):
        self.pid = self.pid % 65535 + 1
        return self.pid

    # ------------------------------------------------------------ publish / subscribe

    def publish(self, topic, msg, retain=False, qos=0, properties=None):
        """Publish; for QoS 1 wait for the PUBACK and return its reason code (0 = success).

        A reason code >= 0x80 (the broker refused, e.g. 0x87 not authorized) is counted in
        `refused` and recorded in `last_refusal` rather than raised: one refused message is no
        reason to drop the connection."""
        if qos not in (0, 1):
            raise ValueError("this client publishes with QoS 0 or 1")
        qos = min(qos, self.maximum_qos)
        pid = self._next_pid() if qos else 0
        self._send(publish_packet(topic, msg, qos, retain, pid, properties))
        if not qos:
            return None
        body = self._wait_for(PUBACK, pid)
        reason = parse_ack(body)[1]
        if reason >= 0x80:
            self.refused += 1
            self.last_refusal = (topic, reason)
        return reason

    def subscribe(self, topic, qos=0, retain_handling=0):
        """Subscribe and return the granted QoS; raise MQTTException if the broker refuses.
        `retain_handling` 2: the broker sends no retained message for this subscription."""
        if qos not in (0, 1):
            raise ValueError("this client subscribes with QoS 0 or 1")
        pid = self._next_pid()
        self._send(subscribe_packet(pid, topic, qos, retain_handling))
        codes = parse_suback(self._wait_for(SUBACK, pid))[1]
        if not codes or codes[0] >= 0x80:
            code = codes[0] if codes else 0x80
            raise MQTTException(code, "subscription to %s refused: %s" % (topic, reason_name(code)))
        return codes[0]

    # ------------------------------------------------------------ receiving

    def _wait_for(self, kind, pid):
        """Read packets until the acknowledgement `kind` for `pid`; return its body."""
        start = ticks_ms()
        limit = int(self.timeout * 1000)
        while True:
            left = limit - ticks_diff(ticks_ms(), start)
            if left <= 0 or not self._readable(left):
                raise MQTTException(
                    None, "no acknowledgement from the broker within %s s" % self.timeout
                )
            first, body = self._read_packet()
            if (first & 0xF0) == kind and struct.unpack(">H", body[0:2])[0] == pid:
                return body
            self._handle(first, body, queue=True)

    def _handle(self, first, body, queue=False):
        """Process one packet that is not an awaited acknowledgement; return its type."""
        kind = first & 0xF0
        if kind == PUBLISH:
            topic, msg, qos, _retain, pid, props = parse_publish(first, body)
            if qos > 1:
                raise MQTTException(0x9B, "received a QoS 2 message; subscribe with QoS <= 1")
            if queue:
                self._queue.append((topic, msg, qos, pid, props))
            else:
                self._deliver(topic, msg, qos, pid, props)
        elif kind == PINGRESP:
            self._ping_sent = None
        elif kind == DISCONNECT:
            reason = body[0] if body else 0
            props = decode_properties(body, 1)[0] if len(body) > 1 else {}
            self.close()
            text = "broker closed the connection: " + reason_name(reason)
            if "reason_string" in props:
                text += " (" + props["reason_string"] + ")"
            raise MQTTException(reason, text)
        # Stray PUBACK/SUBACK (e.g. after a timeout) are ignored.
        return kind

    def _deliver(self, topic, msg, qos, pid, props):
        try:
            if self.cb is not None:
                self.cb(topic, msg, props)
        finally:
            # Acknowledge even if the callback failed: otherwise the broker would hold the
            # message in flight for this session forever.
            if qos == 1:
                self._send(puback_packet(pid))

    def _keepalive(self):
        if not self.keepalive:
            return
        now = ticks_ms()
        period = self.keepalive * 1000
        if self._ping_sent is not None and ticks_diff(now, self._ping_sent) > period:
            raise MQTTException(None, "no PINGRESP within the keepalive period")
        if ticks_diff(now, self._last_tx) >= period * 3 // 4:
            self.ping()

    def check_msg(self, timeout_ms=0):
        """Handle at most one incoming packet, waiting up to timeout_ms for it (0: don't block).

        Returns the packet type handled (PUBLISH for a delivered message) or None."""
        if self.sock is None:
            raise OSError("not connected")
        if self._queue:
            self._deliver(*self._queue.pop(0))
            return PUBLISH
        self._keepalive()
        if not self._readable(timeout_ms):
            return None
        first, body = self._read_packet()
        return self._handle(first, body)

    def wait_msg(self):
        """Block until one packet has been handled (pinging as needed); return its type."""
        while True:
            step = 1000
            if self.keepalive:
                step = max(100, min(step, self.keepalive * 250))
            kind = self.check_msg(step)
            if kind is not None:
                return kind
