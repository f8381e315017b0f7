"""The kits of a site: the `kits:` section of the site file, and running their twins.

The site file (institutions, courses, people, kits) is the platform's one source of configuration;
this module owns only its `kits:` entries so that kits and the broker run without the hub.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hardware_kits.descriptor import HOMIE_ID, DescriptorError, load_models, read_yaml
from hardware_kits.kit_runner import KitRunner
from hardware_kits.mqtt import BrokerAddress
from hardware_kits.twins.base import twin_class


class KitEntry(BaseModel):
    """One physical kit or twin of the site."""

    model_config = ConfigDict(extra="forbid")

    id: str
    model: str
    name: str = ""
    location: str = ""
    twin: bool = True  # False: a real board runs the firmware for this kit
    seed: int = 0
    rate_hz: float | None = Field(default=None, gt=0, le=100)
    speed: float = Field(default=1.0, gt=0, le=3600)
    start: datetime | None = None  # simulated start time; default: now

    @field_validator("id")
    @classmethod
    def _homie_id(cls, value: str) -> str:
        if not HOMIE_ID.match(value):
            raise ValueError("must be lowercase letters, digits and single hyphens")
        return value


def parse_kits(data: Any, source: str, models: dict[str, dict]) -> list[KitEntry]:
    """Validate the `kits:` list of a parsed site file."""
    if not isinstance(data, dict) or not isinstance(data.get("kits"), list):
        raise DescriptorError(f"{source}: kits: a site file needs a list of kits")
    entries: list[KitEntry] = []
    for i, raw in enumerate(data["kits"]):
        try:
            entry = KitEntry.model_validate(raw)
        except ValidationError as err:
            first = err.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise DescriptorError(f"{source}: kits.{i}.{where}: {first['msg']}") from None
        if entry.model not in models:
            raise DescriptorError(
                f"{source}: kits.{i}.model: no kit model {entry.model!r} "
                f"(known: {', '.join(sorted(models))})"
            )
        if any(e.id == entry.id for e in entries):
            raise DescriptorError(f"{source}: kits.{i}.id: {entry.id!r} is used twice")
        entries.append(entry)
    return entries


def load_kits(path: Path, models: dict[str, dict] | None = None) -> list[KitEntry]:
    return parse_kits(read_yaml(path), str(path), models or load_models())


class Fleet:
    """The twins of a site, each on its own connection with its own kit credentials."""

    def __init__(
        self, entries: list[KitEntry], models: dict[str, dict], addresses: dict[str, BrokerAddress]
    ) -> None:
        self.runners: list[KitRunner] = []
        for entry in entries:
            if not entry.twin:
                continue
            descriptor = models[entry.model]
            start = (entry.start or datetime.now().astimezone()).timestamp()
            model = twin_class(entry.model)(descriptor, seed=entry.seed, start=start)
            self.runners.append(
                KitRunner(
                    entry.id, model, addresses[entry.id], rate_hz=entry.rate_hz, speed=entry.speed
                )
            )

    def start(self) -> Fleet:
        for runner in self.runners:
            runner.start()
        return self

    def stop(self) -> None:
        for runner in self.runners:
            runner.stop()

    def __enter__(self) -> Fleet:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
