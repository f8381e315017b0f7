"""The lab service as the front door calls it: with the person's own OAuth token and their
page's language (`Accept-Language`), concurrently, each call's failure kept as the one line
the service answered (it answers in the language asked for)."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from labs.home.model import sparkline

TIMEOUT_S = 5.0
SPARK_WINDOW_S = 600.0
SPARK_POINTS = 60


class LabUnreachable(Exception):
    """No answer at all (connection refused, timeout)."""


class LabRefused(Exception):
    """The service answered with an error: str() is its one line."""


async def call(base: str, path: str, token: str, lang: str) -> Any:
    try:
        answer = await AsyncHTTPClient().fetch(
            base.rstrip("/") + path,
            headers={"Authorization": f"token {token}", "Accept-Language": lang},
            request_timeout=TIMEOUT_S,
            connect_timeout=TIMEOUT_S,
        )
    except HTTPClientError as err:
        if err.response is None or err.code == 599:
            raise LabUnreachable(str(err)) from None
        try:
            line = json.loads(err.response.body)["error"]
        except (ValueError, KeyError, TypeError):
            line = f"HTTP {err.code}"
        raise LabRefused(str(line).splitlines()[0][:300] if line else f"HTTP {err.code}") from None
    except OSError as err:
        raise LabUnreachable(str(err)) from None
    return json.loads(answer.body)


async def gather(
    base: str,
    token: str,
    lang: str,
    *,
    usage: bool,
    spark_kits: list[str],
    recordings: bool = False,
    jobs: bool = False,
) -> dict[str, Any]:
    """{kits, queue, sessions, bookings[, usage, recordings, jobs], sparklines} or
    {error: one line, ...}."""
    paths = {
        "kits": "/api/kits",
        "queue": "/api/queue",
        "sessions": "/api/sessions?live=1",
        "bookings": "/api/bookings",
    }
    if usage:
        paths["usage"] = "/api/usage"
    if recordings:  # every own session, ended ones too: each is a replayable recording
        paths["recordings"] = "/api/sessions"
    if jobs:  # my experiment jobs: queued, running and ended
        paths["jobs"] = "/api/jobs"
    since = f"{time.time() - SPARK_WINDOW_S:.0f}"
    spark_paths = {k: f"/api/kits/{k}/history.json?from={since}" for k in spark_kits}
    keys = [*paths, *spark_paths]
    results = await asyncio.gather(
        *(call(base, p, token, lang) for p in [*paths.values(), *spark_paths.values()]),
        return_exceptions=True,
    )
    found: dict[str, Any] = {"sparklines": {}}
    for key, result in zip(keys, results, strict=True):
        if isinstance(result, LabUnreachable):
            found.setdefault("error", None)
            found["unreachable"] = True
        elif isinstance(result, LabRefused):
            if key in paths:
                found.setdefault("error", str(result))
        elif isinstance(result, BaseException):
            raise result
        elif key in paths:
            found[key] = result
        else:
            found["sparklines"][key] = spark_of(result)
    return found


def spark_of(rows: Any) -> dict[str, str] | None:
    """The kit's liveliest numeric sensor over its recent history (the widest range; the
    first in the kit's order on a tie) as sparkline points."""
    if not isinstance(rows, list):
        return None
    series: dict[str, list[float]] = {}
    for row in rows:
        values = row.get("values") if isinstance(row, dict) else None
        for name, value in (values or {}).items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                series.setdefault(name, []).append(float(value))
    if not series:
        return None
    sensor = max(series, key=lambda name: max(series[name]) - min(series[name]))
    values = series[sensor]
    step = max(1, -(-len(values) // SPARK_POINTS))  # at most SPARK_POINTS points
    points = sparkline(values[::step])
    return {"sensor": sensor, "points": points} if points else None
