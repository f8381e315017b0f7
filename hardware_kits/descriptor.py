"""Kit model descriptors: one YAML file per kit model, validated here.

A descriptor is the single source of truth about a kit model: it feeds the twin, the firmware's
pin map, command validation, the broker's ACLs and the dashboards' widgets. Validation errors
name the file, the field and the reason on one line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hardware_kits import protocol as P
from hardware_kits.kitcore import KitCore

MODELS_DIR = Path(__file__).parent / "models"
HOMIE_ID = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")

Datatype = Literal["integer", "float", "boolean", "enum", "string", "json"]


DEFAULT_COMMANDS_PER_SECOND = 5.0


class DescriptorError(ValueError):
    """An invalid descriptor or site file; str() is the one-line message for the user."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Wording(_Strict):
    """A sensor's or actuator's text in Russian; `name` (English) stays Homie's `name`.

    `unit`: only where the Russian unit differs (lx -> лк); `values`: a Russian name for every
    value of an enum, and for the words inside a JSON value a page shows (a plan's approaches)."""

    name: str = Field(min_length=1)
    unit: str | None = None
    values: dict[str, str] = {}


class ModelWording(_Strict):
    """A kit model's name and description in Russian."""

    name: str = Field(min_length=1)
    description: str = ""


class PointSpec(_Strict):
    """What sensors and actuators share: a Homie property with its constraints."""

    name: str = Field(min_length=1)
    ru: Wording
    datatype: Datatype
    unit: str = ""
    min: float | None = None
    max: float | None = None
    step: float | None = None
    values: list[str] | None = None
    max_length: int | None = Field(default=None, ge=0)
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")

    @model_validator(mode="after")
    def _constraints_fit_datatype(self) -> PointSpec:
        numeric = self.datatype in ("integer", "float")
        if numeric and (self.min is None or self.max is None):
            raise ValueError(f"a {self.datatype} needs min and max")
        if numeric and self.min > self.max:
            raise ValueError(f"min {self.min} is above max {self.max}")
        if self.datatype == "enum" and not self.values:
            raise ValueError("an enum needs a non-empty list of values")
        if self.datatype == "json" and self.schema_ is None:
            raise ValueError("a json value needs a schema")
        if self.datatype == "string" and self.max_length is None:
            raise ValueError("a string needs max_length")
        missing = [v for v in self.values or () if v not in self.ru.values]
        if self.datatype == "enum" and missing:
            raise ValueError(f"ru.values has no Russian name for {', '.join(missing)}")
        return self

    def as_wire(self) -> dict[str, Any]:
        """Plain dict as kits and the protocol module use it (integers stay integers)."""
        data = self.model_dump(by_alias=True, exclude_none=True)
        if self.datatype == "integer":
            for key in ("min", "max", "step"):
                if key in data:
                    data[key] = int(data[key])
        return data


class SensorSpec(PointSpec):
    rate_hz: float = Field(gt=0, le=100)

    @model_validator(mode="after")
    def _float_has_unit(self) -> SensorSpec:
        if self.datatype == "float" and not self.unit:
            raise ValueError("a float sensor needs a unit")
        return self


class ActuatorSpec(PointSpec):
    safe: Any


class Interlock(_Strict):
    kind: Literal["requires", "exclusive", "index_into"]
    actuator: str
    when: dict[str, Any] | None = None
    field: str | None = None
    conflicts: list[tuple[str, str]] | None = None
    into: str | None = None


class Descriptor(_Strict):
    model: str
    name: str = Field(min_length=1)
    ru: ModelWording
    version: int = Field(ge=1)
    description: str = ""
    sensors: dict[str, SensorSpec] = Field(min_length=1)
    actuators: dict[str, ActuatorSpec] = Field(min_length=1)
    interlocks: list[Interlock] = []
    pins: dict[str, dict[str, int]] = {}
    twin: dict[str, Any] = {}
    # Actuator values while nobody holds the kit (its automatic operation), over the safe state.
    at_rest: dict[str, Any] = {}
    # The largest MQTT packet (a command with its topic and properties) a board of this model
    # can take; the broker never sends a kit more (MQTT v5 Maximum Packet Size in its CONNECT).
    max_packet_bytes: int = Field(
        default=P.DEFAULT_MAX_PACKET_BYTES, ge=P.MIN_MAX_PACKET_BYTES, le=1024 * 1024
    )
    # Commands a controller job may send a second (a sliding one-second window); beyond it the
    # job runner refuses them with reason `rate`, and the twin run of coursework does the same.
    max_commands_per_second: float = Field(default=DEFAULT_COMMANDS_PER_SECOND, gt=0, le=100)


def _check_ids(desc: Descriptor) -> None:
    for section in ("sensors", "actuators"):
        for key in getattr(desc, section):
            if not HOMIE_ID.match(key):
                raise DescriptorError(f"{section}.{key}: not a Homie id (lowercase a-z, 0-9, -)")
    if not HOMIE_ID.match(desc.model):
        raise DescriptorError(f"model: {desc.model!r} is not a Homie id")


def _check_semantics(wire: dict[str, Any]) -> None:
    """Safe values must be valid values, and interlocks must name real actuators."""
    for key, spec in wire["actuators"].items():
        try:
            P.check_value(spec, spec["safe"], "safe value")
        except P.ProtocolError as err:
            raise DescriptorError(f"actuators.{key}.safe: {err.detail}") from None
    for i, rule in enumerate(wire["interlocks"]):
        for ref in (rule["actuator"], rule.get("into"), *(rule.get("when") or {})):
            if ref is not None and ref not in wire["actuators"]:
                raise DescriptorError(f"interlocks.{i}: no actuator named {ref!r}")
    core = KitCore("check", wire)  # starts in the safe state
    for key, value in wire["actuators"].items():
        try:
            # The safe state is applied as a whole, so `requires` (an ordering rule) is moot.
            core.check_interlocks(key, value["safe"], kinds=("exclusive", "index_into"))
        except P.ProtocolError as err:
            raise DescriptorError(
                f"actuators.{key}.safe: breaks an interlock: {err.detail}"
            ) from None
    _check_at_rest(wire)
    # Pins may name parts that are neither sensor nor actuator (a lamp driver, a status LED).
    for pin_name in wire["pins"]:
        if not HOMIE_ID.match(pin_name):
            raise DescriptorError(f"pins.{pin_name}: not a Homie id")


def _check_at_rest(wire: dict[str, Any]) -> None:
    """The state at rest names real actuators with valid values, and as a whole (it is applied
    at once, like the safe state) keeps the exclusive and index interlocks."""
    for key, value in wire["at_rest"].items():
        spec = wire["actuators"].get(key)
        if spec is None:
            raise DescriptorError(f"at_rest.{key}: no actuator named {key!r}")
        try:
            P.check_value(spec, value, "value at rest")
        except P.ProtocolError as err:
            raise DescriptorError(f"at_rest.{key}: {err.detail}") from None
    core = KitCore("check", wire)
    core.state = P.at_rest_state(wire)
    for key, value in core.state.items():
        try:
            core.check_interlocks(key, value, kinds=("exclusive", "index_into"))
        except P.ProtocolError as err:
            raise DescriptorError(f"at_rest.{key}: breaks an interlock: {err.detail}") from None


def _field_path(error: dict[str, Any]) -> str:
    return ".".join(str(part) for part in error["loc"] if part not in ("function-after",)) or "-"


def validate_descriptor(data: Any, source: str = "<descriptor>") -> dict[str, Any]:
    """Validate a parsed descriptor and return it as a plain dict (the wire form)."""
    try:
        desc = Descriptor.model_validate(data)
        _check_ids(desc)
        wire = desc.model_dump(exclude={"sensors", "actuators", "interlocks"})
        wire["sensors"] = {k: v.as_wire() for k, v in desc.sensors.items()}
        wire["actuators"] = {k: v.as_wire() for k, v in desc.actuators.items()}
        wire["interlocks"] = [r.model_dump(exclude_none=True) for r in desc.interlocks]
        _check_semantics(wire)
    except ValidationError as err:
        first = err.errors()[0]
        raise DescriptorError(f"{source}: {_field_path(first)}: {first['msg']}") from None
    except DescriptorError as err:
        raise DescriptorError(f"{source}: {err}") from None
    return wire


def read_yaml(path: Path) -> Any:
    """Parse a YAML file, turning every failure into a one-line DescriptorError."""
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise DescriptorError(f"{path}: cannot read: {err.strerror}") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "-"
        reason = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise DescriptorError(f"{path}: {where}: {reason}") from None


def load_descriptor(path: Path) -> dict[str, Any]:
    wire = validate_descriptor(read_yaml(path), str(path))
    if wire["model"] != path.stem:
        raise DescriptorError(
            f"{path}: model: {wire['model']!r} must match the file name {path.stem!r}"
        )
    return wire


def load_models(directory: Path = MODELS_DIR) -> dict[str, dict[str, Any]]:
    """Every kit model descriptor in a folder, keyed by model name."""
    return {path.stem: load_descriptor(path) for path in sorted(directory.glob("*.yaml"))}
