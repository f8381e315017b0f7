"""Commands derived from a descriptor, so protocol tests work for any kit model unchanged."""

from __future__ import annotations

import copy
from typing import Any


def example_value(spec: dict[str, Any]) -> Any:
    """A valid value, different from the safe one wherever the datatype allows."""
    safe, datatype = spec["safe"], spec["datatype"]
    if datatype == "enum":
        return next(v for v in spec["values"] if v != safe)
    if datatype == "boolean":
        return not safe
    if datatype in ("integer", "float"):
        low, high = spec["min"], spec["max"]
        middle = (low + high) // 2 if datatype == "integer" else (low + high) / 2
        return middle if middle != safe else high
    if datatype == "string":
        return "hello"[: spec["max_length"]]
    return copy.deepcopy(safe)  # json: the safe value is the one valid value we know


def prerequisites(descriptor: dict[str, Any], actuator: str) -> list[tuple[str, Any]]:
    """Commands that `requires` interlocks want before `actuator` may be set."""
    needed = []
    for rule in descriptor.get("interlocks", []):
        if rule["kind"] == "requires" and rule["actuator"] == actuator:
            needed += list(rule["when"].items())
    return needed


def malformed_payload(spec: dict[str, Any]) -> bytes:
    """A payload that is not a value of the actuator's datatype at all."""
    if spec["datatype"] in ("integer", "float", "boolean", "json"):
        return b"{not json"
    return b"\xff\xfe not utf-8"


def out_of_range_payload(spec: dict[str, Any]) -> str | None:
    datatype = spec["datatype"]
    if datatype in ("integer", "float"):
        return str(spec["max"] + 1)
    if datatype == "enum":
        return "no-such-value"
    if datatype == "string":
        return "x" * (spec["max_length"] + 1)
    return None


def interlock_violation(descriptor: dict[str, Any]) -> tuple[str, Any] | None:
    """A command that an interlock of the model must refuse from the safe state, if any."""
    actuators = descriptor["actuators"]
    for rule in descriptor.get("interlocks", []):
        if rule["kind"] == "requires":
            other, wanted = next(iter(rule["when"].items()))
            if actuators[other]["safe"] != wanted:
                return rule["actuator"], example_value(actuators[rule["actuator"]])
        if rule["kind"] == "exclusive":
            plan = copy.deepcopy(actuators[rule["actuator"]]["safe"])
            plan[0][rule["field"]] = list(rule["conflicts"][0])
            return rule["actuator"], plan
    return None
