"""Value codecs, the JSON-schema subset and the Homie description."""

from __future__ import annotations

import json

import pytest

from hardware_kits import protocol as P


@pytest.mark.parametrize(
    ("spec", "payload", "value"),
    [
        ({"datatype": "integer", "min": 0, "max": 100}, "42", 42),
        ({"datatype": "float", "min": 0, "max": 1}, "1", 1.0),
        ({"datatype": "boolean"}, "true", True),
        ({"datatype": "enum", "values": ["a", "b"]}, "b", "b"),
        ({"datatype": "string", "max_length": 5}, "héllo", "héllo"),
        (
            {"datatype": "json", "schema": {"type": "array", "items": {"type": "integer"}}},
            "[1,2]",
            [1, 2],
        ),
    ],
)
def test_decode_round_trip(spec, payload, value):
    assert P.decode_value(spec, payload) == value
    assert P.decode_value(spec, P.encode_value(spec, value)) == value


@pytest.mark.parametrize(
    ("spec", "payload", "reason"),
    [
        ({"datatype": "integer", "min": 0, "max": 100}, "4.5", P.R_MALFORMED),
        ({"datatype": "integer", "min": 0, "max": 100, "step": 5}, "42", P.R_OUT_OF_RANGE),
        ({"datatype": "float", "min": 0, "max": 1}, "NaN", P.R_MALFORMED),
        ({"datatype": "float", "min": 0, "max": 1}, "1e9", P.R_OUT_OF_RANGE),
        ({"datatype": "boolean"}, "1", P.R_MALFORMED),
        ({"datatype": "string", "max_length": 3}, "long", P.R_OUT_OF_RANGE),
        (
            {"datatype": "json", "schema": {"type": "object", "required": ["a"]}},
            "{}",
            P.R_MALFORMED,
        ),
        (
            {"datatype": "json", "schema": {"type": "object", "additionalProperties": False}},
            '{"x": 1}',
            P.R_MALFORMED,
        ),
        (
            {"datatype": "json", "schema": {"type": "array", "maxItems": 1}},
            "[1, 2]",
            P.R_OUT_OF_RANGE,
        ),
    ],
)
def test_decode_rejects(spec, payload, reason):
    with pytest.raises(P.ProtocolError) as err:
        P.decode_value(spec, payload)
    assert err.value.reason == reason


def test_empty_string_survives_retained_messages():
    spec = {"datatype": "string", "max_length": 8}
    assert P.encode_value(spec, "") == "\x00"  # an empty payload would delete the retained value
    assert P.decode_value(spec, b"\x00") == ""


def test_topics_and_split():
    assert P.set_topic("k1", "mode") == "homie/5/k1/actuators/mode/set"
    assert P.split_topic("homie/5/k1/$state") == ("k1", "$state")
    assert P.split_topic("other/5/k1") == (None, None)
    assert P.command_target("k1", P.safe_state_topic("k1")) == P.SAFE_STATE_PROPERTY
    with pytest.raises(P.ProtocolError):
        P.command_target("k1", "homie/5/k1/sensors/x/set")


def test_description_is_homie_5(models):
    desc = P.homie_description("sl-1", models["street-lighting"])
    assert desc["homie"] == "5.0" and desc["type"] == "street-lighting"
    dimming = desc["nodes"]["actuators"]["properties"]["dimming"]
    assert dimming == {
        "name": "Dimming level",
        "datatype": "integer",
        "settable": True,
        "retained": True,
        "unit": "%",
        "format": "0:100:1",
    }
    assert desc["nodes"]["sensors"]["properties"]["motion"]["settable"] is False
    assert desc["smartlab"]["descriptor"] == models["street-lighting"]
    json.dumps(desc)  # must be serialisable as is


def test_telemetry_decoding_rejects_garbage():
    for payload in ("nope", "[]", '{"seq": "1", "ts": 1, "values": {}}'):
        with pytest.raises(P.ProtocolError):
            P.decode_telemetry(payload)
