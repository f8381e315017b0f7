"""KitCore: every rule a kit applies to commands, without MQTT."""

from __future__ import annotations

import copy

import pytest

from hardware_kits import protocol as P
from hardware_kits.kitcore import KitCore

NOW = 1_767_254_400.0
LATER_MS = str(int((NOW + 5) * 1000))


def core_for(models: dict, model: str, kit_id: str = "kit-1") -> KitCore:
    return KitCore(kit_id, models[model], clock=lambda: NOW)


def send(
    core: KitCore,
    actuator: str,
    payload: str | bytes,
    command_id: str = "c1",
    deadline: str | None = LATER_MS,
) -> dict:
    return core.handle_command(P.set_topic(core.kit_id, actuator), payload, command_id, deadline)


def test_starts_in_safe_state(models):
    core = core_for(models, "street-lighting")
    assert core.state == {"mode": "auto", "dimming": 100}
    assert core.is_safe()


def test_applied_command_reports_value_in_force(models):
    core = core_for(models, "street-lighting")
    ack = send(core, "mode", "manual")
    assert ack["status"] == P.APPLIED and ack["value"] == "manual"
    ack = send(core, "dimming", "40", command_id="c2")
    assert ack["status"] == P.APPLIED and ack["value"] == 40
    assert core.state["dimming"] == 40 and not core.is_safe()


@pytest.mark.parametrize(
    ("actuator", "payload", "reason"),
    [
        ("mode", "sideways", P.R_OUT_OF_RANGE),
        ("mode", b"\xff\xfe", P.R_MALFORMED),
        ("nonexistent", "1", P.R_UNKNOWN_ACTUATOR),
        ("mode", "x" * (P.MAX_COMMAND_BYTES + 1), P.R_OVERSIZE),
    ],
)
def test_bad_commands_are_rejected_with_reason(models, actuator, payload, reason):
    core = core_for(models, "street-lighting")
    ack = send(core, actuator, payload)
    assert ack["status"] == P.REJECTED and ack["reason"] == reason
    assert ack["detail"]
    assert core.rejections == {reason: 1}
    assert core.is_safe()  # state unchanged


def test_wrong_types_and_ranges(models):
    core = core_for(models, "street-lighting")
    send(core, "mode", "manual")
    for i, payload in enumerate(["abc", "40.5", "true", "101", "-1", "{"]):
        ack = send(core, "dimming", payload, command_id=f"bad{i}")
        assert ack["status"] == P.REJECTED, payload
    assert core.state["dimming"] == 100


def test_command_for_another_kit_is_rejected(models):
    core = core_for(models, "street-lighting")
    ack = core.handle_command(P.set_topic("other-kit", "mode"), "manual", "c1", LATER_MS)
    assert ack["reason"] == P.R_WRONG_KIT
    assert core.state["mode"] == "auto"


def test_duplicate_id_applied_once(models):
    applied = []
    core = KitCore(
        "kit-1",
        models["street-lighting"],
        clock=lambda: NOW,
        apply_hook=lambda target, value: applied.append((target, value)),
    )
    first = send(core, "mode", "manual", command_id="same")
    again = send(core, "mode", "manual", command_id="same")
    assert applied == [("mode", "manual")]
    assert again["duplicate"] is True and again["status"] == first["status"]
    assert core.applied == 1 and core.duplicates == 1


def test_late_and_undated_commands_are_rejected(models):
    core = core_for(models, "street-lighting")
    stale = send(core, "mode", "manual", deadline=str(int((NOW - 1) * 1000)))
    assert stale["reason"] == P.R_STALE
    assert (
        send(core, "mode", "manual", command_id="c2", deadline=None)["reason"]
        == P.R_MISSING_DEADLINE
    )
    assert (
        send(core, "mode", "manual", command_id="c3", deadline="soon")["reason"]
        == P.R_MISSING_DEADLINE
    )
    assert send(core, "mode", "manual", command_id="")["reason"] == P.R_MISSING_ID
    assert core.state["mode"] == "auto"


def test_requires_interlock(models):
    core = core_for(models, "street-lighting")
    ack = send(core, "dimming", "10")
    assert ack["reason"] == P.R_INTERLOCK and "mode" in ack["detail"]


def test_conflicting_greens_refused(models):
    core = core_for(models, "intersection")
    plan = copy.deepcopy(models["intersection"]["actuators"]["phase-plan"]["safe"])
    plan[0]["green"] = ["north", "east"]
    ack = send(core, "phase-plan", P.encode_value({"datatype": "json"}, plan))
    assert ack["reason"] == P.R_INTERLOCK and "conflicting greens" in ack["detail"]
    ok_plan = [
        {"green": ["north", "south"], "seconds": 40},
        {"green": ["east", "west"], "seconds": 20},
    ]
    assert (
        send(core, "phase-plan", P.encode_value({"datatype": "json"}, ok_plan), command_id="c2")[
            "status"
        ]
        == P.APPLIED
    )


def test_stage_request_must_exist_in_plan(models):
    core = core_for(models, "intersection")
    send(core, "mode", "manual", command_id="m")
    assert send(core, "phase-request", "2", command_id="a")["status"] == P.APPLIED
    assert send(core, "phase-request", "4", command_id="b")["reason"] == P.R_INTERLOCK
    two = [{"green": ["north", "south"], "seconds": 40}, {"green": ["east", "west"], "seconds": 20}]
    ack = send(core, "phase-plan", P.encode_value({"datatype": "json"}, two), command_id="c")
    assert ack["reason"] == P.R_INTERLOCK  # would orphan the requested stage 2


def test_safe_state_restores_every_actuator(models):
    core = core_for(models, "smart-parking")
    send(core, "gate", "open")
    send(core, "display", "Welcome", command_id="c2")
    assert not core.is_safe()
    ack = core.handle_command(P.safe_state_topic("kit-1"), "", "c3", LATER_MS)
    assert ack["status"] == P.APPLIED and ack["value"] == {
        "mode": "manual",
        "gate": "closed",
        "display": "",
    }
    assert core.is_safe()


def test_telemetry_sequence_increases(models):
    core = core_for(models, "environment-station")
    seqs = [P.decode_telemetry(core.telemetry({"temperature": 1.0}))["seq"] for _ in range(5)]
    assert seqs == [1, 2, 3, 4, 5]


def test_remembered_ids_are_bounded(models):
    core = KitCore("kit-1", models["smart-parking"], clock=lambda: NOW, remember=3)
    for i in range(10):
        send(core, "display", f"m{i}", command_id=f"id{i}")
    assert len(core._recent) == 3


@pytest.mark.parametrize(
    "deadline",
    [f" {LATER_MS}", f"{LATER_MS} ", f"+{LATER_MS}", LATER_MS[:-3] + "_" + LATER_MS[-3:], "١٢"],
)
def test_deadline_format_is_strict(models, deadline):
    """int() takes spaces, signs, "_" and other scripts' digits: the protocol says ASCII digits."""
    core = core_for(models, "street-lighting")
    assert send(core, "mode", "manual", deadline=deadline)["reason"] == P.R_MISSING_DEADLINE
    assert core.state["mode"] == "auto"


def test_deadline_far_ahead_is_refused(models):
    core = core_for(models, "street-lighting")
    far = str(int(NOW * 1000) + P.MAX_DEADLINE_AHEAD_MS + 1)
    assert send(core, "mode", "manual", deadline=far)["reason"] == P.R_DEADLINE_TOO_FAR
    edge = str(int(NOW * 1000) + P.MAX_DEADLINE_AHEAD_MS)
    assert send(core, "mode", "manual", command_id="c2", deadline=edge)["status"] == P.APPLIED


@pytest.mark.parametrize("reply", ["homie/5/kit-1/$ack/u/#", "homie/5/kit-1/$ack/+/c", "a\x00", ""])
def test_unusable_response_topic_is_refused_before_applying(models, reply):
    applied = []
    core = KitCore(
        "kit-1",
        models["street-lighting"],
        clock=lambda: NOW,
        apply_hook=lambda *a: applied.append(a),
    )
    props = {P.PROP_COMMAND_ID: "c1", P.PROP_DEADLINE: LATER_MS}
    topic, ack = core.receive(P.set_topic("kit-1", "mode"), "manual", props, reply)
    assert topic == P.ack_topic("kit-1", "anonymous")
    assert (ack["status"], ack["reason"], ack["target"]) == (
        P.REJECTED,
        P.R_BAD_RESPONSE_TOPIC,
        "mode",
    )
    assert applied == [] and core.state["mode"] == "auto"
    assert core.status()["rejections"] == {P.R_BAD_RESPONSE_TOPIC: 1}
    # Not remembered: the same command with a usable topic is decided on its merits.
    topic, ack = core.receive(
        P.set_topic("kit-1", "mode"), "manual", props, P.ack_topic("kit-1", "u/c")
    )
    assert (topic, ack["status"]) == (P.ack_topic("kit-1", "u/c"), P.APPLIED)


def test_plain_homie_set_is_applied_once_and_an_empty_one_ignored(models):
    core = core_for(models, "street-lighting")
    topic, ack = core.receive(P.set_topic("kit-1", "mode"), b"manual", {}, None)
    assert topic == P.ack_topic("kit-1", "anonymous")
    assert ack["status"] == P.APPLIED and ack["id"].startswith(P.PLAIN_SET_ID_PREFIX)
    _, second = core.receive(
        P.set_topic("kit-1", "dimming"), b"40", {}, P.ack_topic("kit-1", "u/c")
    )
    assert second["status"] == P.APPLIED and second["id"] != ack["id"]
    assert core.state == {"mode": "manual", "dimming": 40} and core.applied == 2
    # Interlocks hold for plain sets too.
    core.receive(P.set_topic("kit-1", "mode"), b"auto", {}, None)
    _, refused = core.receive(P.set_topic("kit-1", "dimming"), b"10", {}, None)
    assert refused["reason"] == P.R_INTERLOCK
    # An empty retained-clear is no command: no answer, no rejection, counted as ignored.
    assert core.receive(P.set_topic("kit-1", "mode"), b"", {}, None) is None
    assert core.receive(P.safe_state_topic("kit-1"), b"", {}, None) is None
    status = core.status()
    assert (status["ignored"], status["rejected"], status["applied"]) == (2, 1, 3)
    # A lab command with an empty payload is still a command (the safe state's is empty).
    props = {P.PROP_COMMAND_ID: "s1", P.PROP_DEADLINE: LATER_MS}
    assert core.receive(P.safe_state_topic("kit-1"), b"", props, None)[1]["status"] == P.APPLIED


def test_a_failing_apply_hook_is_answered_and_counted(models):
    def broken(_target, _value):
        raise OSError("relay driver fault")

    core = KitCore("kit-1", models["street-lighting"], clock=lambda: NOW, apply_hook=broken)
    props = {P.PROP_COMMAND_ID: "c1", P.PROP_DEADLINE: LATER_MS}
    _, ack = core.receive(P.set_topic("kit-1", "mode"), "manual", props, None)
    assert (ack["status"], ack["reason"]) == (P.REJECTED, P.R_KIT_ERROR)
    assert core.errors == 1 and core.status()["rejections"] == {P.R_KIT_ERROR: 1}
    assert core.state["mode"] == "auto"


def rest(core: KitCore, command_id: str = "r1") -> dict:
    return core.handle_command(P.at_rest_topic(core.kit_id), "", command_id, LATER_MS)


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("intersection", {"mode": "fixed"}),
        ("smart-parking", {"mode": "auto", "gate": "closed", "display": ""}),
        ("street-lighting", {"mode": "auto", "dimming": 100}),
        ("environment-station", {"ventilation": False, "sampling-interval": 1}),
    ],
)
def test_at_rest_applies_the_descriptors_values_over_the_safe_state(models, model, expected):
    core = core_for(models, model)
    ack = rest(core)
    assert ack["status"] == P.APPLIED and ack["target"] == P.AT_REST_PROPERTY
    assert expected.items() <= ack["value"].items()
    assert core.state == P.at_rest_state(models[model])
    status = core.status()
    assert status["at_rest"] is True and status["fault"] is None
    # A model whose rest is its safe state is both at once; the others are not safe at rest.
    assert status["safe"] is (P.at_rest_state(models[model]) == P.safe_state(models[model]))


def test_a_holder_after_rest_still_meets_the_interlocks(models):
    core = core_for(models, "smart-parking")
    rest(core)
    refused = send(core, "gate", "open")
    assert refused["status"] == P.REJECTED and refused["reason"] == P.R_INTERLOCK
    assert send(core, "mode", "manual", command_id="c2")["status"] == P.APPLIED
    assert send(core, "gate", "open", command_id="c3")["status"] == P.APPLIED
    assert core.status()["at_rest"] is False
    assert core.handle_command(P.safe_state_topic("kit-1"), "", "c4", LATER_MS)["value"] == {
        "mode": "manual",
        "gate": "closed",
        "display": "",
    }


def test_a_kit_with_a_fault_refuses_to_rest(models):
    core = core_for(models, "intersection")
    core.fault = "the conflict monitor tripped"
    ack = rest(core)
    assert ack["status"] == P.REJECTED and ack["reason"] == P.R_INTERLOCK
    assert "conflict monitor" in ack["detail"]
    assert core.is_safe() and core.status()["at_rest"] is False
