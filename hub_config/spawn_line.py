"""One fair line of server starts for the whole hub: at most K at once, first come first served.

A class logging in together on a small machine would otherwise start every server at once: the
cores are shared by all of them, so none is ready until nearly all are (bench/hub.py). In line,
servers come up one batch after another and the first students work within seconds.

A place is held from the start of `SiteSpawner.start()` until the server answers HTTP (the same
check JupyterHub makes after `start()` returns), or until the start fails, is cancelled or times
out: the `async with` always gives it back. The line keeps the durations of recent successful
starts (a moving average) to tell each waiting person an honest estimate.

Everything runs on the hub's one event loop: no locks, only futures.
"""

from __future__ import annotations

import asyncio
import heapq
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

from jupyterhub.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient

WINDOW = 10  # recent starts the estimate averages over
POLL_S = 0.2  # how often a started server is asked whether it answers


@dataclass(eq=False)
class Place:
    """One start in the line: waiting until `granted` is done, then starting."""

    key: object
    joined: float
    granted: asyncio.Future[None] = field(repr=False)
    began: float | None = None  # when the start was let go


@dataclass(frozen=True)
class Standing:
    """Where one start stands: `ahead` starts wait before it (0: it goes next), or it is
    `starting`; the estimates are seconds from now, None until a start has been measured."""

    ahead: int
    starting: bool
    slots: int
    wait_s: float | None
    ready_s: float | None


class SpawnLine:
    def __init__(self, slots: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.slots = slots
        self.clock = clock
        self._waiting: deque[Place] = deque()
        self._starting: list[Place] = []
        self._durations: deque[float] = deque(maxlen=WINDOW)
        self._change = asyncio.Event()

    @asynccontextmanager
    async def place(self, key: object) -> AsyncIterator[Place]:
        """Wait for a turn, hold it for the body, give it back however the body ends."""
        place = Place(key, self.clock(), asyncio.get_running_loop().create_future())
        self._waiting.append(place)
        self._admit()
        succeeded = False
        try:
            await place.granted
            yield place
            succeeded = True
        finally:
            # Cancelled while waiting, or after the turn was given but before it was taken:
            # either way the place goes, and the next in line moves up.
            if place in self._waiting:
                self._waiting.remove(place)
            if place in self._starting:
                self._starting.remove(place)
                if succeeded and place.began is not None:
                    self._durations.append(self.clock() - place.began)
            self._admit()

    def _admit(self) -> None:
        while self._waiting and len(self._starting) < self.slots:
            place = self._waiting.popleft()
            if place.granted.done():  # its waiter was cancelled
                continue
            place.began = self.clock()
            self._starting.append(place)
            place.granted.set_result(None)
        self._changed()

    def _changed(self) -> None:
        self._change.set()
        self._change = asyncio.Event()

    async def changed(self, timeout: float) -> None:
        """Return when someone moved in the line, or after `timeout` seconds."""
        with suppress(TimeoutError):
            await asyncio.wait_for(self._change.wait(), timeout)

    def average(self) -> float | None:
        """Seconds a start has recently taken, from its turn until it answered."""
        return sum(self._durations) / len(self._durations) if self._durations else None

    def standing(self, key: object) -> Standing | None:
        """Where the start of `key` stands, None if it is not in the line."""
        now, average = self.clock(), self.average()
        for place in self._starting:
            if place.key == key:
                left = None if average is None else max(average - (now - place.began), 0.0)
                return Standing(0, True, self.slots, 0.0, left)
        for ahead, place in enumerate(self._waiting):
            if place.key == key:
                if average is None:
                    return Standing(ahead, False, self.slots, None, None)
                wait = self._turn_in(ahead, average, now)
                return Standing(ahead, False, self.slots, wait, wait + average)
        return None

    def _turn_in(self, ahead: int, average: float, now: float) -> float:
        """Seconds until the start with `ahead` starts before it gets a turn: each start now
        running ends after the average, each one waiting then takes the average again."""
        free = [max(average - (now - p.began), 0.0) for p in self._starting]
        free += [0.0] * max(self.slots - len(free), 0)
        heapq.heapify(free)
        for _ in range(ahead):
            heapq.heappush(free, heapq.heappop(free) + average)
        return free[0]


_line: SpawnLine | None = None


def hub_line(slots: int) -> SpawnLine:
    """The hub's one line (made on first use); `slots` follows the spawner's setting."""
    global _line
    if _line is None:
        _line = SpawnLine(slots)
    _line.slots = max(slots, 1)
    return _line


def place(spawner: Any) -> Any:
    """`async with spawn_line.place(spawner):` this spawner's turn to start a server."""
    return hub_line(spawner.concurrent_starts).place(spawner)


def standing(spawner: Any) -> Standing | None:
    return hub_line(spawner.concurrent_starts).standing(spawner)


class ServerGone(RuntimeError):
    """The server's process ended before it answered."""


async def answered(spawner: Any, url: Any, poll_s: float = POLL_S) -> Any:
    """Wait until the started server answers HTTP, as JupyterHub checks it next (any answer
    below 500 from its `api` under the server's base URL); return `url` (what start() returns).

    Gives up when the process ends (ServerGone) or after the spawner's http_timeout."""
    if not isinstance(url, str):  # LocalProcessSpawner returns (ip, port)
        ip, port = url
        url = f"http://[{ip}]:{port}" if ":" in ip else f"http://{ip}:{port}"
    target = url.rstrip("/") + url_path_join(spawner.server.base_url, "api")
    client = AsyncHTTPClient()
    async with asyncio.timeout(spawner.http_timeout):
        while True:
            with suppress(Exception):  # refused or reset: not there yet
                reply = await client.fetch(
                    target, raise_error=False, follow_redirects=False, request_timeout=10
                )
                if reply.code < 500:
                    return url
            if await spawner.poll() is not None:
                raise ServerGone(f"{spawner.user.name}'s server ended before it answered")
            await asyncio.sleep(poll_s)
