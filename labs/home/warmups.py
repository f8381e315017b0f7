"""The class warm-ups the hub did before booked slots (hub_config/class_warmup.py records them
in a JSON file of the state folder): the latest per course, for its instructors' line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from labs.home.exchange import read_json


def latest_by_course(record: Path | None) -> dict[str, dict[str, Any]]:
    """{course: its latest warm-up (booking, starts_at, at, started, ...)}; {} if none."""
    data = read_json(record)
    found: dict[str, dict[str, Any]] = {}
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict) and isinstance(item.get("course"), str):
            found[item["course"]] = item  # the record is in time order: the last one wins
    return found
