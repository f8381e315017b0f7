"""Recorded camera frames from the lab service's history, as numpy arrays.

The client has no database access: frames come over the service's REST API
(`/api/kits/<kit>/frames.json`, a page at a time), with the caller's own token and rights, the
way recorded telemetry does.
"""

from __future__ import annotations

import base64
import io
import urllib.parse
from typing import Any, Protocol

import numpy as np
from PIL import Image


class RestCaller(Protocol):
    def request(
        self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
    ) -> Any: ...


PAGE_STEP_S = 1e-6  # the next page starts just after the last frame's ts (ranges are half-open)


def decode_jpeg(jpeg: bytes) -> np.ndarray:
    """An image as a HxWx3 uint8 array (RGB)."""
    with Image.open(io.BytesIO(jpeg)) as img:
        return np.asarray(img.convert("RGB"))


def fetch_frames(
    service: RestCaller, kit_id: str, start: float, end: float
) -> list[tuple[float, np.ndarray]]:
    """Every recorded frame of a kit with start <= ts < end, oldest first, as (ts, array)."""
    path = f"/api/kits/{urllib.parse.quote(kit_id, safe='')}/frames.json"
    out: list[tuple[float, np.ndarray]] = []
    since = start
    while since < end:
        rows = service.request("GET", path, query={"from": f"{since:.6f}", "to": f"{end:.6f}"})
        out += [(float(r["ts"]), decode_jpeg(base64.b64decode(r["jpeg"]))) for r in rows]
        if not rows:  # the service answers a page at a time: an empty one is past the last
            break
        since = float(rows[-1]["ts"]) + PAGE_STEP_S
    return out
