"""The `kits:` section of the site file: which kits a site has, of which models, twins or real
boards. Kits and the broker run from it without the hub."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hardware_kits.descriptor import HOMIE_ID, DescriptorError, load_models, read_yaml


class KitWording(BaseModel):
    """A kit's name in Russian beside its (English) `name`, as descriptors carry it."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)


class KitEntry(BaseModel):
    """One physical kit or twin of the site."""

    model_config = ConfigDict(extra="forbid")

    id: str
    model: str
    name: str = ""
    ru: KitWording | None = None  # the kit's name in Russian (pages in Russian show it)
    location: str = ""
    twin: bool = True  # False: a real board runs the firmware for this kit
    site: str = ""  # the site hosting the kit (site_config/sites.py); "": the centre
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
