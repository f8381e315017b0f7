"""Recorded ranges of a kit, from the lab service's history (never from the live kit): the same
timeline the dashboard's replay mode shows, for notebooks that analyse a recorded experiment::

    rec = lab.kit("streetlight-1").replay(start, end)   # epoch seconds or datetimes
    t, power = rec.series("lamp-power")                # numpy arrays, oldest first
    rec.commands                                       # [{"ts", "who", "what", "value",
                                                       #   "outcome", "reason"}, ...]
    rec.frames                                         # [{"ts", "seq", "url"}, ...]
    state = rec.at(t[0] + 30)                          # the readings shown at that moment
"""

from __future__ import annotations

import bisect
import datetime as dt
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from labs.client.recorded_frames import RestCaller


def epoch(when: float | dt.datetime) -> float:
    """Epoch seconds of a number or a datetime (naive means UTC, as the service reads it)."""
    if isinstance(when, dt.datetime):
        if when.tzinfo is None:
            when = when.replace(tzinfo=dt.UTC)
        return when.timestamp()
    return float(when)


@dataclass
class Replay:
    """One recorded range: `telemetry` [{"ts", "seq", "values"}], `commands`, `frames`.

    `start`/`end` are the part of the asked range the viewer may see (the service cuts a wider
    request to the viewer's sessions and course slots)."""

    kit: str
    start: float
    end: float
    telemetry: list[dict[str, Any]]
    commands: list[dict[str, Any]]
    frames: list[dict[str, Any]]
    _times: list[float] = field(default_factory=list, repr=False)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Replay:
        return cls(
            body["kit"],
            float(body["start"]),
            float(body["end"]),
            body["telemetry"],
            body["commands"],
            body["frames"],
            [row["ts"] for row in body["telemetry"]],
        )

    def series(self, sensor: str) -> tuple[np.ndarray, np.ndarray]:
        """(t, v) of a numeric or boolean sensor as float64 arrays (NaN: no reading)."""
        t = np.fromiter(self._times, np.float64, len(self._times))
        v = np.fromiter(
            (_number(row["values"].get(sensor)) for row in self.telemetry),
            np.float64,
            len(self.telemetry),
        )
        return t, v

    def index_at(self, ts: float) -> int | None:
        """The index of the last sample at or before `ts` (None: before the first)."""
        i = bisect.bisect_right(self._times, ts) - 1
        return i if i >= 0 else None

    def at(self, ts: float) -> dict[str, Any]:
        """The values of the last sample at or before `ts` ({} before the first)."""
        i = self.index_at(ts)
        return {} if i is None else dict(self.telemetry[i]["values"])

    def commands_until(self, ts: float) -> list[dict[str, Any]]:
        return [c for c in self.commands if c["ts"] <= ts]

    def frame_at(self, ts: float) -> dict[str, Any] | None:
        """The last recorded frame at or before `ts`, if any."""
        times = [f["ts"] for f in self.frames]
        i = bisect.bisect_right(times, ts) - 1
        return self.frames[i] if i >= 0 else None


def _number(value: Any) -> float:
    if isinstance(value, bool | int | float):
        return float(value)
    return float("nan")


def fetch_replay(
    service: RestCaller, kit_id: str, start: float | dt.datetime, end: float | dt.datetime
) -> Replay:
    """A recorded range of a kit (`service`: a LabService); LabServiceError (403) outside the
    caller's rights."""
    query = {"start": repr(epoch(start)), "end": repr(epoch(end))}
    path = f"/api/kits/{urllib.parse.quote(kit_id, safe='')}/replay"
    return Replay.from_json(service.request("GET", path, query=query))
