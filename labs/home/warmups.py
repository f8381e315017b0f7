"""The class warm-ups the hub did before booked slots (hub_config/class_warmup.py records them
in a JSON file of the state folder): the latest per course, for its instructors' line."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def latest_by_course(record: Path | None) -> dict[str, dict[str, Any]]:
    """{course: its latest warm-up (booking, starts_at, at, started, ...)}; {} if none."""
    if record is None:
        return {}
    try:
        fd = os.open(record, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, "rb") as src:
            data = json.loads(src.read(1_000_000))
    except (OSError, ValueError):
        return {}
    found: dict[str, dict[str, Any]] = {}
    for item in data if isinstance(data, list) else []:
        if isinstance(item, dict) and isinstance(item.get("course"), str):
            found[item["course"]] = item  # the record is in time order: the last one wins
    return found
