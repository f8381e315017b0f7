"""The Smart City Lab wire protocol: Homie 5 topics and values, plus the lab's extensions.

This is the one definition of topic names and payload shapes; kits, twins, the firmware, the
client library, services and tests all import it. It is written in the subset of Python that
MicroPython also runs (standard library `json` and `time` only, no typing imports), because the
firmware ships this very file to the board.

Extensions to Homie 5 (see docs/protocol.md):
- `$telemetry`: one JSON sample per tick with the kit's timestamp and a per-kit sequence number;
- commands on `.../set` carry MQTT v5 user properties `command-id` and `deadline` (epoch ms) and a
  response topic; the kit answers with an acknowledgement (`applied` or `rejected` + reason);
- `$safe-state/set`: put every actuator at its safe value; `$status`: counters and safe flag;
- `$at-rest/set`: the kit's automatic operation while nobody holds it (the descriptor's `at_rest`
  values over the safe state); `$status` says `at_rest` and any `fault` that keeps it safe;
- `$camera` (retained JSON: the streams on offer) and `$camera/<stream>`: JPEG frames stamped
  with the kit's clock and the telemetry seq they follow (MQTT v5 user properties).
"""

import json

HOMIE_PREFIX = "homie/5"
HOMIE_VERSION = "5.0"
# The lab's Homie extension, as `$description.extensions` names it: ID:semver:[Homie versions]
# (published in docs/protocol.md, "The lab's Homie extension").
PROTOCOL_EXTENSION = "org.smartcitylab.kit:1.3.0:[5.x]"

SENSORS_NODE = "sensors"
ACTUATORS_NODE = "actuators"

# Homie 5 device states.
STATE_INIT = "init"
STATE_READY = "ready"
STATE_DISCONNECTED = "disconnected"
STATE_LOST = "lost"

# MQTT v5 user property names carried by every command.
PROP_COMMAND_ID = "command-id"
PROP_DEADLINE = "deadline"

# Acknowledgement statuses.
APPLIED = "applied"
REJECTED = "rejected"

# Machine-readable rejection reasons.
R_MALFORMED = "malformed"  # payload is not a value of the actuator's datatype
R_OUT_OF_RANGE = "out_of_range"
R_UNKNOWN_ACTUATOR = "unknown_actuator"
R_OVERSIZE = "oversize"
R_WRONG_KIT = "wrong_kit"
R_STALE = "stale"  # deadline passed before the kit got the command
R_MISSING_ID = "missing_id"
R_MISSING_DEADLINE = "missing_deadline"
R_INTERLOCK = "interlock"
R_DEADLINE_TOO_FAR = "deadline_too_far"  # further ahead than MAX_DEADLINE_AHEAD_MS
R_BAD_RESPONSE_TOPIC = "bad_response_topic"  # not an MQTT topic name (wildcards, NUL, empty)
R_KIT_ERROR = "kit_error"  # the kit failed while deciding (a bug or a hardware fault): not applied
REASONS = (
    R_MALFORMED,
    R_OUT_OF_RANGE,
    R_UNKNOWN_ACTUATOR,
    R_OVERSIZE,
    R_WRONG_KIT,
    R_STALE,
    R_MISSING_ID,
    R_MISSING_DEADLINE,
    R_INTERLOCK,
    R_DEADLINE_TOO_FAR,
    R_BAD_RESPONSE_TOPIC,
    R_KIT_ERROR,
)

MAX_COMMAND_BYTES = 4096
# The largest MQTT packet a kit takes (descriptor field `max_packet_bytes`): the kit names it in
# its CONNECT (MQTT v5 Maximum Packet Size) and the broker drops, instead of sending, anything
# larger, so a huge command never reaches a board's small heap. The floor leaves room for a
# command of MAX_COMMAND_BYTES with its topic and properties, which the kit itself answers
# ("oversize" above MAX_COMMAND_BYTES).
DEFAULT_MAX_PACKET_BYTES = 16384
MIN_MAX_PACKET_BYTES = MAX_COMMAND_BYTES + 1024
# MQTT v5 subscription option "retain handling" of a kit's command subscriptions: 2, never send
# a retained message at subscribe time. A command left retained on the broker (by a holder
# before a handover) would otherwise reach the kit again at its next (re)subscription.
COMMAND_RETAIN_HANDLING = 2
MAX_COMMAND_ID_CHARS = 64
# A deadline is epoch milliseconds in ASCII digits (no sign, spaces or separators), at most this
# many digits, and at most MAX_DEADLINE_AHEAD_MS ahead of the kit's clock: a command meant for
# "any time in the next year" would defeat the deadline's purpose (and clocks drift less).
MAX_DEADLINE_DIGITS = 16
MAX_DEADLINE_AHEAD_MS = 10 * 60 * 1000
# JSON payloads nested deeper than this are refused before parsing: the parsers recurse, and a
# payload of a thousand "[" would exhaust CPython's recursion limit or a board's C stack.
MAX_JSON_DEPTH = 16
# The id a kit gives a plain Homie set (one without the lab's user properties) in its
# acknowledgement: "homie-<kit start, epoch ms>-<n>".
PLAIN_SET_ID_PREFIX = "homie-"
SAFE_STATE_PROPERTY = "$safe-state"
# The lab's whole-kit commands: the safe state (handover, fault) and the state at rest (nobody
# holds the kit: its own automatic operation). Either replaces every actuator value at once.
AT_REST_PROPERTY = "$at-rest"
WHOLE_KIT_PROPERTIES = (SAFE_STATE_PROPERTY, AT_REST_PROPERTY)
# Homie 5: an empty payload deletes a retained message, so an empty string travels as one NUL.
EMPTY_STRING = "\x00"

# The camera: `$camera` says which streams a kit's picture has (retained; EMPTY_STRING: none),
# `$camera/<stream>` carries one JPEG per message, not retained, QoS 0 (a late frame is worth
# nothing: the next one replaces it). A viewer subscribes to the one stream it shows, so the
# broker sends a thumbnail viewer only thumbnails.
CAMERA_PROPERTY = "$camera"
STREAM_FULL = "full"
STREAM_THUMB = "thumb"
CAMERA_STREAMS = {
    STREAM_FULL: {"fps": 10, "width": 320, "height": 240},
    STREAM_THUMB: {"fps": 1, "width": 96, "height": 72},
}
CAMERA_SOURCES = ("synthetic", "device")
# Receivers drop (and count) larger frames and anything that does not start like a JPEG.
MAX_FRAME_BYTES = 256 * 1024
JPEG_MAGIC = b"\xff\xd8"
# MQTT v5 user properties of every frame: the kit's clock (epoch ms), the `$telemetry` seq whose
# state the frame shows, the per-stream frame counter. All ASCII digits.
PROP_FRAME_TS = "ts"
PROP_FRAME_SEQ = "seq"
PROP_FRAME_COUNTER = "frame"
MAX_FRAME_PROPERTY_DIGITS = 16


class ProtocolError(ValueError):
    """A message that breaks the protocol; `reason` is one of REASONS."""

    def __init__(self, reason, detail):
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


# ---------------------------------------------------------------- topics


def device_topic(kit_id):
    return HOMIE_PREFIX + "/" + kit_id


def state_topic(kit_id):
    return device_topic(kit_id) + "/$state"


def description_topic(kit_id):
    return device_topic(kit_id) + "/$description"


def telemetry_topic(kit_id):
    return device_topic(kit_id) + "/$telemetry"


def status_topic(kit_id):
    return device_topic(kit_id) + "/$status"


def property_topic(kit_id, node, prop):
    return device_topic(kit_id) + "/" + node + "/" + prop


def set_topic(kit_id, actuator):
    """Where a command for one actuator goes (Homie's settable property topic)."""
    return property_topic(kit_id, ACTUATORS_NODE, actuator) + "/set"


def safe_state_topic(kit_id):
    return device_topic(kit_id) + "/" + SAFE_STATE_PROPERTY + "/set"


def at_rest_topic(kit_id):
    return device_topic(kit_id) + "/" + AT_REST_PROPERTY + "/set"


def ack_topic(kit_id, requester):
    """Response topic a requester names for a kit's acknowledgements.

    It lies inside the kit's own tree so that a kit needs no publish right outside it."""
    return device_topic(kit_id) + "/$ack/" + requester


def camera_info_topic(kit_id):
    """Retained description of a kit's camera (`camera_info`), or EMPTY_STRING: no camera."""
    return device_topic(kit_id) + "/" + CAMERA_PROPERTY


def camera_topic(kit_id, stream):
    """Where the frames of one stream (STREAM_FULL, STREAM_THUMB) go."""
    return camera_info_topic(kit_id) + "/" + stream


def camera_filters(kit_id):
    """Everything a camera may publish: its description and its streams (the camera account's
    whole right, see hardware_kits/broker.py)."""
    return [camera_info_topic(kit_id), camera_info_topic(kit_id) + "/#"]


def command_subscriptions(kit_id):
    """The topic filters a kit subscribes to (and the only ones its broker role allows)."""
    return [set_topic(kit_id, "+"), safe_state_topic(kit_id), at_rest_topic(kit_id)]


def kit_filter(kit_id):
    """Everything a kit may publish."""
    return device_topic(kit_id) + "/#"


def all_kits(suffix):
    """A filter over every kit, e.g. all_kits("$telemetry")."""
    return HOMIE_PREFIX + "/+/" + suffix


def split_topic(topic):
    """Return (kit_id, rest) for a topic under the Homie prefix, or (None, None)."""
    prefix = HOMIE_PREFIX + "/"
    if not topic.startswith(prefix):
        return None, None
    parts = topic[len(prefix) :].split("/", 1)
    if len(parts) < 2 or not parts[0]:
        return None, None
    return parts[0], parts[1]


def is_topic_name(topic):
    """True for a topic one may publish to: non-empty text without wildcards or NUL (MQTT v5
    4.7.3, 1.5.4). A response topic that is not one cannot be answered."""
    if not isinstance(topic, str) or not topic:
        return False
    return "+" not in topic and "#" not in topic and "\x00" not in topic


def command_target(kit_id, topic):
    """Name of the actuator a command topic addresses (SAFE_STATE_PROPERTY for the safe state,
    AT_REST_PROPERTY for the state at rest).

    Raises ProtocolError for a topic of another kit or one that is not a command topic."""
    target_kit, rest = split_topic(topic)
    if target_kit != kit_id:
        raise ProtocolError(
            R_WRONG_KIT, "command addressed to kit %r, this is %r" % (target_kit, kit_id)
        )
    for whole in WHOLE_KIT_PROPERTIES:
        if rest == whole + "/set":
            return whole
    parts = rest.split("/")
    if len(parts) != 3 or parts[0] != ACTUATORS_NODE or parts[2] != "set":
        raise ProtocolError(R_UNKNOWN_ACTUATOR, "not a command topic: " + topic)
    return parts[1]


# ---------------------------------------------------------------- values (Homie datatypes)


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(x):
    return x == x and x not in (float("inf"), float("-inf"))


def check_value(spec, value, name="value"):
    """Check a decoded value against a sensor/actuator spec; raise ProtocolError if it breaks it."""
    datatype = spec["datatype"]
    if datatype == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            raise ProtocolError(R_MALFORMED, "%s must be an integer" % name)
        _check_range(spec, value, name)
        step = spec.get("step")
        if step and (value - spec.get("min", 0)) % step:
            raise ProtocolError(R_OUT_OF_RANGE, "%s must be a multiple of %s" % (name, step))
    elif datatype == "float":
        if not _is_number(value) or not _finite(value):
            raise ProtocolError(R_MALFORMED, "%s must be a finite number" % name)
        _check_range(spec, value, name)
    elif datatype == "boolean":
        if not isinstance(value, bool):
            raise ProtocolError(R_MALFORMED, "%s must be true or false" % name)
    elif datatype == "enum":
        if value not in spec["values"]:
            raise ProtocolError(
                R_OUT_OF_RANGE, "%s must be one of %s" % (name, ", ".join(spec["values"]))
            )
    elif datatype == "string":
        if not isinstance(value, str):
            raise ProtocolError(R_MALFORMED, "%s must be text" % name)
        limit = spec.get("max_length")
        if limit is not None and len(value) > limit:
            raise ProtocolError(R_OUT_OF_RANGE, "%s is longer than %d characters" % (name, limit))
    elif datatype == "json":
        check_schema(spec.get("schema", {}), value, name)
    else:
        raise ProtocolError(R_MALFORMED, "unknown datatype " + datatype)


def _check_range(spec, value, name):
    low, high = spec.get("min"), spec.get("max")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ProtocolError(R_OUT_OF_RANGE, "%s=%s is outside %s..%s" % (name, value, low, high))


_SCHEMA_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": _is_number,
    "boolean": lambda v: isinstance(v, bool),
}


def check_schema(schema, value, name="value"):
    """Validate against the subset of JSON Schema that kit descriptors use.

    Supported keywords: type, enum, minimum, maximum, maxLength, items, minItems, maxItems,
    uniqueItems, properties, required, additionalProperties (false)."""
    kind = schema.get("type")
    if kind is not None and not _SCHEMA_TYPES[kind](value):
        raise ProtocolError(R_MALFORMED, "%s must be of type %s" % (name, kind))
    if "enum" in schema and value not in schema["enum"]:
        raise ProtocolError(R_OUT_OF_RANGE, "%s must be one of %s" % (name, schema["enum"]))
    if _is_number(value):
        _check_schema_number(schema, value, name)
    if isinstance(value, str) and "maxLength" in schema and len(value) > schema["maxLength"]:
        raise ProtocolError(R_OUT_OF_RANGE, "%s is too long" % name)
    if isinstance(value, list):
        _check_schema_array(schema, value, name)
    if isinstance(value, dict):
        _check_schema_object(schema, value, name)


def _check_schema_number(schema, value, name):
    if not _finite(value):
        raise ProtocolError(R_MALFORMED, "%s must be finite" % name)
    if "minimum" in schema and value < schema["minimum"]:
        raise ProtocolError(R_OUT_OF_RANGE, "%s=%s is below %s" % (name, value, schema["minimum"]))
    if "maximum" in schema and value > schema["maximum"]:
        raise ProtocolError(R_OUT_OF_RANGE, "%s=%s is above %s" % (name, value, schema["maximum"]))


def _check_schema_array(schema, value, name):
    if len(value) < schema.get("minItems", 0):
        raise ProtocolError(
            R_OUT_OF_RANGE, "%s needs at least %d items" % (name, schema["minItems"])
        )
    if "maxItems" in schema and len(value) > schema["maxItems"]:
        raise ProtocolError(
            R_OUT_OF_RANGE, "%s has more than %d items" % (name, schema["maxItems"])
        )
    if schema.get("uniqueItems"):
        seen = []
        for item in value:
            if item in seen:
                raise ProtocolError(R_OUT_OF_RANGE, "%s repeats %r" % (name, item))
            seen.append(item)
    if "items" in schema:
        for i, item in enumerate(value):
            check_schema(schema["items"], item, "%s[%d]" % (name, i))


def _check_schema_object(schema, value, name):
    for key in schema.get("required", ()):
        if key not in value:
            raise ProtocolError(R_MALFORMED, "%s lacks %r" % (name, key))
    props = schema.get("properties", {})
    for key, item in value.items():
        if key in props:
            check_schema(props[key], item, "%s.%s" % (name, key))
        elif schema.get("additionalProperties") is False:
            raise ProtocolError(R_MALFORMED, "%s has unknown field %r" % (name, key))


def _nesting_within(text, limit):
    """True if no JSON array/object in `text` is nested deeper than `limit` (brackets inside
    strings do not count). Linear, no recursion: it runs before the recursive parser."""
    depth = 0
    in_string = False
    escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch == "[" or ch == "{":
            depth += 1
            if depth > limit:
                return False
        elif ch == "]" or ch == "}":
            depth -= 1
    return True


def loads(text, name="value", what="JSON"):
    """json.loads that raises nothing but ProtocolError(malformed): not for deep nesting (refused
    before parsing), nor for a parser's recursion or number limits."""
    if not _nesting_within(text, MAX_JSON_DEPTH):
        raise ProtocolError(
            R_MALFORMED, "%s is nested deeper than %d levels" % (name, MAX_JSON_DEPTH)
        )
    try:
        return json.loads(text)
    except (ValueError, TypeError, RuntimeError):  # RecursionError is a RuntimeError
        raise ProtocolError(R_MALFORMED, "%s is not valid %s" % (name, what)) from None


def decode_value(spec, payload, name="value"):
    """Parse a Homie raw payload (bytes or str) into a checked Python value."""
    try:
        text = payload.decode() if isinstance(payload, (bytes, bytearray)) else payload
    except UnicodeError:
        raise ProtocolError(R_MALFORMED, "%s is not UTF-8 text" % name) from None
    datatype = spec["datatype"]
    value = "" if text == EMPTY_STRING else text
    if datatype in ("integer", "float", "boolean", "json"):
        value = loads(text, name, datatype)
        if datatype == "float" and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
    check_value(spec, value, name)
    return value


def encode_value(spec, value):
    """Homie raw payload for a value: plain text for strings and enums, JSON for the rest."""
    if spec["datatype"] in ("string", "enum"):
        return value or EMPTY_STRING
    return json.dumps(value)


# ---------------------------------------------------------------- payloads


def encode_telemetry(seq, ts, values, sim=None):
    """One telemetry sample. `ts` is the kit's wall clock (epoch s), `sim` its simulated time."""
    body = {"seq": seq, "ts": ts, "values": values}
    if sim is not None:
        body["sim"] = sim
    return json.dumps(body)


def decode_telemetry(payload):
    """Parse and check a telemetry message; raise ProtocolError if it is not one."""
    body = _loads_payload(payload, "telemetry")
    if not isinstance(body, dict):
        raise ProtocolError(R_MALFORMED, "telemetry must be a JSON object")
    seq, ts, values = body.get("seq"), body.get("ts"), body.get("values")
    if not isinstance(seq, int) or not _is_number(ts) or not isinstance(values, dict):
        raise ProtocolError(R_MALFORMED, "telemetry needs integer seq, numeric ts and values")
    return body


def _loads_payload(payload, name):
    try:
        text = payload.decode() if isinstance(payload, (bytes, bytearray)) else payload
    except UnicodeError:
        raise ProtocolError(R_MALFORMED, "%s is not UTF-8 text" % name) from None
    return loads(text, name)


def make_ack(command_id, target, status, ts, value=None, reason=None, detail=None):
    ack = {"id": command_id, "target": target, "status": status, "ts": ts}
    if status == APPLIED:
        ack["value"] = value
    else:
        ack["reason"] = reason
        ack["detail"] = detail
    return ack


def decode_ack(payload):
    ack = _loads_payload(payload, "acknowledgement")
    if not isinstance(ack, dict) or ack.get("status") not in (APPLIED, REJECTED):
        raise ProtocolError(R_MALFORMED, "acknowledgement lacks a valid status")
    return ack


# ---------------------------------------------------------------- description


def homie_format(spec):
    """Homie 5 `format` attribute for a property spec (None where Homie defines none)."""
    datatype = spec["datatype"]
    if datatype in ("integer", "float") and ("min" in spec or "max" in spec):
        text = "%s:%s" % (_fmt(spec.get("min")), _fmt(spec.get("max")))
        if spec.get("step"):
            text += ":" + _fmt(spec["step"])
        return text
    if datatype == "enum":
        return ",".join(spec["values"])
    if datatype == "json" and "schema" in spec:
        return json.dumps(spec["schema"])
    return None


def _fmt(x):
    return "" if x is None else str(x)


def _homie_property(spec, settable):
    prop = {
        "name": spec.get("name", ""),
        "datatype": spec["datatype"],
        "settable": settable,
        "retained": True,
    }
    if spec.get("unit"):
        prop["unit"] = spec["unit"]
    fmt = homie_format(spec)
    if fmt is not None:
        prop["format"] = fmt
    return prop


def homie_description(kit_id, descriptor, name=None):
    """The retained `$description` document of a kit, built from its descriptor.

    The full descriptor travels along under "smartlab" so that clients and dashboards can render
    any kit from the wire alone."""
    sensors = {key: _homie_property(spec, False) for key, spec in descriptor["sensors"].items()}
    actuators = {key: _homie_property(spec, True) for key, spec in descriptor["actuators"].items()}
    return {
        "homie": HOMIE_VERSION,
        "version": descriptor.get("version", 1),
        "name": name or descriptor.get("name", kit_id),
        "type": descriptor["model"],
        "extensions": [PROTOCOL_EXTENSION],
        "nodes": {
            SENSORS_NODE: {"name": "Sensors", "properties": sensors},
            ACTUATORS_NODE: {"name": "Actuators", "properties": actuators},
        },
        "smartlab": {"kit": kit_id, "descriptor": descriptor},
    }


def max_packet_bytes(descriptor):
    """The largest MQTT packet a kit of this model asks the broker to send it."""
    return descriptor.get("max_packet_bytes") or DEFAULT_MAX_PACKET_BYTES


def safe_state(descriptor):
    """Actuator values that make up the kit's safe state."""
    return {key: spec["safe"] for key, spec in descriptor["actuators"].items()}


def at_rest_state(descriptor):
    """Actuator values of the kit at rest: its safe state with the descriptor's `at_rest` values
    over it (a model without `at_rest` rests in its safe state)."""
    state = safe_state(descriptor)
    state.update(descriptor.get("at_rest") or {})
    return state


def whole_state(descriptor, target):
    """The values a whole-kit command (one of WHOLE_KIT_PROPERTIES) puts the actuators at."""
    if target == AT_REST_PROPERTY:
        return at_rest_state(descriptor)
    return safe_state(descriptor)


# ---------------------------------------------------------------- camera


def camera_info(source, streams=None):
    """The `$camera` document: who makes the frames and each stream's rate and size."""
    if source not in CAMERA_SOURCES:
        raise ValueError("camera source must be one of " + ", ".join(CAMERA_SOURCES))
    return json.dumps({"source": source, "streams": streams or CAMERA_STREAMS})


def frame_properties(ts_ms, seq, frame):
    """A frame's user properties as (name, value) pairs, ready for MQTT v5 UserProperty."""
    return [
        (PROP_FRAME_TS, str(int(ts_ms))),
        (PROP_FRAME_SEQ, str(int(seq))),
        (PROP_FRAME_COUNTER, str(int(frame))),
    ]


def _digits(props, name):
    text = props.get(name)
    if not isinstance(text, str) or not text.isdigit() or len(text) > MAX_FRAME_PROPERTY_DIGITS:
        raise ProtocolError(R_MALFORMED, "frame property %s must be ASCII digits" % name)
    return int(text)


def parse_frame_properties(props):
    """(ts_ms, seq, frame) from a frame's user properties (a dict or (name, value) pairs);
    ProtocolError(malformed) if one is missing or not digits."""
    if not isinstance(props, dict):
        props = dict(props or ())
    return (
        _digits(props, PROP_FRAME_TS),
        _digits(props, PROP_FRAME_SEQ),
        _digits(props, PROP_FRAME_COUNTER),
    )


def check_frame(payload):
    """Raise ProtocolError unless `payload` may be a frame: at most MAX_FRAME_BYTES and a JPEG's
    start (the receiver's cheap check; decoding is the viewer's business)."""
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolError(R_OVERSIZE, "frame larger than %d bytes" % MAX_FRAME_BYTES)
    if payload[:2] != JPEG_MAGIC:
        raise ProtocolError(R_MALFORMED, "frame is not a JPEG image")


def decode_frame(topic, payload, props):
    """One received frame as a dict {kit, stream, ts (epoch s), ts_ms, seq, frame, jpeg}.

    The one check every receiver runs (lab service recorder, dashboards, tests): a topic of a
    known stream, a JPEG within MAX_FRAME_BYTES, stamps in digits. Raises ProtocolError; the
    receiver drops the frame and counts it (`dropped_frames`)."""
    kit_id, rest = split_topic(topic)
    stream = None
    if rest is not None and rest.startswith(CAMERA_PROPERTY + "/"):
        stream = rest[len(CAMERA_PROPERTY) + 1 :]
    if stream not in CAMERA_STREAMS:
        raise ProtocolError(R_MALFORMED, "not a camera stream topic: " + topic)
    check_frame(payload)
    ts_ms, seq, frame = parse_frame_properties(props)
    return {
        "kit": kit_id,
        "stream": stream,
        "ts": ts_ms / 1000.0,
        "ts_ms": ts_ms,
        "seq": seq,
        "frame": frame,
        "jpeg": bytes(payload),
    }
