"""Property-based fuzzing of the kit side: what any client may put in a command.

The decoder (`protocol.decode_value`) and a kit's whole decision on a received message
(`KitCore.receive`, which the twins and the board firmware both run) are driven with arbitrary
payload bytes, deep nesting, huge sizes and arbitrary user properties and response topics, for
every kit model with its real twin applying the commands. Properties: nothing raises; every
message is ignored (an empty plain `/set`), applied once, or refused with a reason, and each
outcome is counted exactly once in `$status`; a command id is applied at most once; the answer
always goes to a topic the kit may publish to.
"""

from __future__ import annotations

import json
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hardware_kits import protocol as P
from hardware_kits.descriptor import load_models
from hardware_kits.kitcore import KitCore
from hardware_kits.twins.base import twin_class
from tests.kit_examples import example_value, prerequisites

MODELS = load_models()
KIT = "fuzz-kit"
NOW = 1_767_254_400.0
NOW_MS = int(NOW * 1000)
# Bounded and reproducible in CI: the same examples every run, no per-example time limit.
FUZZ = settings(
    derandomize=True,
    deadline=None,
    max_examples=250,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

# ------------------------------------------------------------------ strategies

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=20,
)


@st.composite
def nested(draw: st.DrawFn) -> bytes:
    """Brackets nested up to 3,000 deep, closed or not, inside and outside strings."""
    depth = draw(st.integers(min_value=1, max_value=3000))
    opener = draw(st.sampled_from(["[", '{"a":', '["x",', '"[', "[{"]))
    closed = draw(st.booleans())
    tail = {"[": "]", '{"a":': "}", '["x",': "]", '"[': "", "[{": "}]"}[opener] * depth
    return (opener * depth + ("1" + tail if closed else "")).encode()


def payloads_for(descriptor: dict[str, Any]) -> st.SearchStrategy[bytes]:
    """Arbitrary bytes, arbitrary JSON, deep nesting, oversize, and valid values of the model."""
    valid = [
        P.encode_value(spec, value).encode()
        for spec in descriptor["actuators"].values()
        for value in (spec["safe"], example_value(spec))
    ]
    return st.one_of(
        st.binary(max_size=300),
        st.text(max_size=200).map(str.encode),
        json_values.map(lambda v: json.dumps(v).encode()),
        nested(),
        st.integers(min_value=P.MAX_COMMAND_BYTES - 2, max_value=300_000).map(lambda n: b"[" * n),
        st.sampled_from([b"", P.EMPTY_STRING.encode(), b"\xff\xfe", b"\xed\xa0\x80", *valid]),
    )


def topics_for(descriptor: dict[str, Any]) -> st.SearchStrategy[str]:
    names = [*descriptor["actuators"], "no-such-actuator", "a/b", ""]
    return st.one_of(
        st.sampled_from([P.set_topic(KIT, name) for name in names]),
        st.just(P.safe_state_topic(KIT)),
        st.sampled_from([P.set_topic("other-kit", "mode"), "homie/5", "x", ""]),
        st.text(max_size=40).map(lambda t: P.device_topic(KIT) + "/" + t),
    )


DEADLINES = st.one_of(
    st.none(),
    st.integers(min_value=-(10**6), max_value=2 * P.MAX_DEADLINE_AHEAD_MS).map(
        lambda d: str(NOW_MS + d)
    ),
    st.sampled_from(
        [
            "",
            f" {NOW_MS + 5000}",
            f"{NOW_MS + 5000} ",
            f"+{NOW_MS + 5000}",
            f"{(NOW_MS + 5000) // 1000}_000",
            "١٧٦٧٢٥٤٤٠٥٠٠٠",  # other scripts' digits: int() takes them
            "9" * 400,
            "1" + "0" * 5000,
            str(NOW_MS + 10**12),
        ]
    ),
    st.text(max_size=30),
)
COMMAND_IDS = st.one_of(
    st.none(),
    st.sampled_from(["c1", "c2", "c3", "", "x" * 64, "x" * 65, "y" * 70_000]),
    st.text(max_size=80),
)
ACK_BASE = P.ack_topic(KIT, "")
RESPONSE_TOPICS = st.one_of(
    st.none(),
    st.sampled_from(
        [
            ACK_BASE + "tester/conn",
            ACK_BASE + "#",
            ACK_BASE + "tester/+",
            ACK_BASE + "a\x00b",
            "",
            "#",
            "elsewhere/topic",
            P.set_topic(KIT, "mode"),
        ]
    ),
    st.text(max_size=40).map(lambda t: ACK_BASE + t),
    st.text(alphabet=string.printable, max_size=40),
)


@st.composite
def messages(draw: st.DrawFn, descriptor: dict[str, Any]) -> dict[str, Any]:
    user: dict[str, str] = {}
    command_id = draw(COMMAND_IDS)
    deadline = draw(DEADLINES)
    if command_id is not None:
        user[P.PROP_COMMAND_ID] = command_id
    if deadline is not None:
        user[P.PROP_DEADLINE] = deadline
    user.update(draw(st.dictionaries(st.text(max_size=10), st.text(max_size=10), max_size=2)))
    return {
        "topic": draw(topics_for(descriptor)),
        "payload": draw(payloads_for(descriptor)),
        "user": user,
        "response_topic": draw(RESPONSE_TOPICS),
    }


# ------------------------------------------------------------------ decoder


def actuator_specs() -> list[tuple[str, dict[str, Any]]]:
    return [
        (f"{model}/{name}", spec)
        for model, descriptor in sorted(MODELS.items())
        for name, spec in descriptor["actuators"].items()
    ]


@pytest.mark.parametrize(("name", "spec"), actuator_specs(), ids=[n for n, _ in actuator_specs()])
@FUZZ
@given(payload=st.one_of(st.binary(max_size=500), nested(), st.text(max_size=200)))
def test_decode_value_returns_a_checked_value_or_refuses_with_a_reason(
    name: str, spec: dict[str, Any], payload: bytes | str
) -> None:
    try:
        value = P.decode_value(spec, payload, name)
    except P.ProtocolError as err:
        assert err.reason in P.REASONS and err.detail
        return
    P.check_value(spec, value, name)  # what the decoder returns is a value of the actuator
    json.dumps(value)  # and can be acknowledged


@pytest.mark.parametrize("depth", [17, 1100, 100_000])
def test_deep_nesting_is_malformed_not_a_recursion_error(depth: int) -> None:
    spec = MODELS["intersection"]["actuators"]["phase-plan"]
    for payload in ("[" * depth, "[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth):
        with pytest.raises(P.ProtocolError) as err:
            P.decode_value(spec, payload, "phase-plan")
        assert err.value.reason == P.R_MALFORMED
    for decode in (P.decode_ack, P.decode_telemetry):
        with pytest.raises(P.ProtocolError):
            decode("[" * depth)


# ------------------------------------------------------------------ a kit's decision


class Recorder:
    """A kit model's twin behind KitCore, counting what reaches it."""

    def __init__(self, model: str) -> None:
        descriptor = MODELS[model]
        self.twin = twin_class(model)(descriptor, seed=1, start=0.0)
        self.calls: list[tuple[str, Any]] = []
        self.core = KitCore(KIT, descriptor, clock=lambda: NOW, apply_hook=self.apply)

    def apply(self, target: str, value: Any) -> None:
        self.calls.append((target, value))
        self.twin.apply(target, value)


def counters(core: KitCore) -> tuple[int, int, int, int]:
    status = core.status()
    return status["applied"], status["duplicates"], status["rejected"], status["ignored"]


def check_one(kit: Recorder, message: dict[str, Any], applied_ids: set[str]) -> None:
    core = kit.core
    before, calls = counters(core), len(kit.calls)
    state = dict(core.state)
    user, payload = message["user"], message["payload"]
    answer = core.receive(message["topic"], payload, user, message["response_topic"])
    after = counters(core)
    plain = P.PROP_COMMAND_ID not in user and P.PROP_DEADLINE not in user
    if answer is None:  # only an empty plain /set is ignored, and counted so
        assert plain and not payload
        assert after == (*before[:3], before[3] + 1) and core.state == state
        return
    reply, ack = answer
    json.dumps(ack)
    assert P.is_topic_name(reply) and reply.startswith(ACK_BASE)
    # Exactly one outcome, counted once.
    assert sum(after) == sum(before) + 1, (before, after, ack)
    if ack["status"] == P.APPLIED and not ack.get("duplicate"):
        assert after[0] == before[0] + 1 and len(kit.calls) == calls + 1
        assert message["response_topic"] is None or P.is_topic_name(message["response_topic"])
        if not plain:
            assert ack["id"] not in applied_ids, "a command id was applied twice"
            applied_ids.add(ack["id"])
            deadline = int(user[P.PROP_DEADLINE])
            assert NOW_MS <= deadline <= NOW_MS + P.MAX_DEADLINE_AHEAD_MS
        return
    assert len(kit.calls) == calls and core.state == state  # nothing applied
    if ack.get("duplicate"):
        assert after[1] == before[1] + 1
        return
    assert ack["status"] == P.REJECTED and ack["reason"] in P.REASONS and ack["detail"]
    assert ack["reason"] != P.R_KIT_ERROR, ack  # no input makes the kit itself fail
    assert after[2] == before[2] + 1
    if message["response_topic"] is not None and not P.is_topic_name(message["response_topic"]):
        assert ack["reason"] == P.R_BAD_RESPONSE_TOPIC


@pytest.mark.parametrize("model", sorted(MODELS))
@FUZZ
@given(data=st.data())
def test_every_command_is_applied_once_or_refused_and_counted(model: str, data: Any) -> None:
    kit = Recorder(model)
    applied_ids: set[str] = set()
    batch = data.draw(st.lists(messages(MODELS[model]), min_size=1, max_size=8))
    for message in batch:
        check_one(kit, message, applied_ids)
    status = kit.core.status()
    assert status["rejected"] == sum(status["rejections"].values())
    assert set(status["rejections"]) <= set(P.REASONS)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_valid_commands_reach_the_twin(model: str) -> None:
    """The fuzzing above is not vacuous: valid lab commands and plain sets are applied."""
    kit = Recorder(model)
    actuators = MODELS[model]["actuators"]
    deadline = str(NOW_MS + 5000)
    for i, name in enumerate(actuators):
        for other, wanted in prerequisites(MODELS[model], name):  # plain sets, as Homie sends
            payload = P.encode_value(actuators[other], wanted)
            _, ack = kit.core.receive(P.set_topic(KIT, other), payload, {}, None)
            assert ack["status"] == P.APPLIED and ack["id"].startswith(P.PLAIN_SET_ID_PREFIX)
        payload = P.encode_value(actuators[name], actuators[name]["safe"])
        user = {P.PROP_COMMAND_ID: f"c{i}", P.PROP_DEADLINE: deadline}
        _, ack = kit.core.receive(P.set_topic(KIT, name), payload, user, ACK_BASE + "t/c")
        assert ack["status"] == P.APPLIED, ack
    assert kit.core.applied >= len(actuators)
