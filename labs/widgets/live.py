"""Live updates on the kernel's event loop: hand-over from other threads, blocking calls in a
worker pool, periodic tasks and coalesced flushes.

Widget updates from other threads are unreliable (Voilà #431, #532; ipywidgets #2358, #3260), so
a dashboard changes widget traits only on the kernel's asyncio loop:

- paho's network thread only calls `Runner.from_thread(fn, ...)` (`loop.call_soon_threadsafe`);
- REST calls and commands (which block until their answer) run in a small thread pool through
  `Runner.submit`, and their results come back to the loop the same way;
- `Coalescer` turns a stream of "something changed" marks into at most `max_rate` flushes per
  second (leading edge: an isolated change is shown at once; a burst waits for the next slot).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_MAX_RATE = 10.0  # flushes per second per plot (the default)


class Runner:
    """The kernel's asyncio loop plus a worker pool; everything it calls back runs on the loop.

    Create it on the loop (in a notebook cell: the kernel's loop is running there). `close()`
    cancels periodic tasks and stops the pool; callbacks arriving after that are dropped."""

    def __init__(self, loop: asyncio.AbstractEventLoop | None = None, workers: int = 4) -> None:
        self.loop = loop or asyncio.get_running_loop()
        self._pool = concurrent.futures.ThreadPoolExecutor(
            workers, thread_name_prefix="smartlab-dash"
        )
        self._handles: set[asyncio.Handle | asyncio.TimerHandle] = set()
        self._closed = False
        self.errors = 0  # callbacks that raised (logged)

    @property
    def closed(self) -> bool:
        return self._closed

    def from_thread(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run `fn(*args)` on the loop soon; safe from any thread (paho's network thread)."""
        if self._closed:
            return
        # RuntimeError: the loop is closed, the kernel is shutting down.
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._guarded, fn, args)

    def soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """On the loop, from the loop."""
        if not self._closed:
            self.loop.call_soon(self._guarded, fn, args)

    def later(self, delay: float, fn: Callable[..., Any], *args: Any) -> asyncio.TimerHandle:
        handle: asyncio.TimerHandle

        def fire() -> None:
            self._handles.discard(handle)
            self._guarded(fn, args)

        handle = self.loop.call_later(delay, fire)
        self._handles.add(handle)
        return handle

    def every(
        self, seconds: float, fn: Callable[[], Any], *, now: bool = True
    ) -> Callable[[], None]:
        """Call `fn()` on the loop every `seconds` (first call at once if `now`); returns a stop
        function. A call that raises is logged; the next one still comes."""
        state = {"stopped": False, "handle": None}

        def tick() -> None:
            if state["stopped"] or self._closed:
                return
            self._guarded(fn, ())
            state["handle"] = self.later(seconds, tick)

        def stop() -> None:
            state["stopped"] = True
            handle = state["handle"]
            if handle is not None:
                handle.cancel()
                self._handles.discard(handle)

        if now:
            self.soon(tick)
        else:
            state["handle"] = self.later(seconds, tick)
        return stop

    def submit(
        self,
        fn: Callable[..., Any],
        *args: Any,
        done: Callable[[Any], Any] | None = None,
        failed: Callable[[BaseException], Any] | None = None,
    ) -> None:
        """Run the blocking `fn(*args)` in the pool; then `done(result)` or `failed(error)` on
        the loop."""
        if self._closed:
            return
        try:
            future = self._pool.submit(fn, *args)
        except RuntimeError:  # pool shut down
            return

        def finished(f: concurrent.futures.Future) -> None:
            error = f.exception()
            if error is not None:
                if failed is not None:
                    self.from_thread(failed, error)
                else:
                    log.warning("background call %s failed: %s", getattr(fn, "__name__", fn), error)
            elif done is not None:
                self.from_thread(done, f.result())

        future.add_done_callback(finished)

    def run_blocking(self, fn: Callable[..., Any], *args: Any, timeout: float = 5.0) -> Any:
        """Run `fn` in the pool and wait for it (for clean-up at exit, not on the loop)."""
        return self._pool.submit(fn, *args).result(timeout)

    def close(self) -> None:
        self._closed = True
        for handle in list(self._handles):
            handle.cancel()
        self._handles.clear()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _guarded(self, fn: Callable[..., Any], args: tuple) -> None:
        if self._closed:
            return
        try:
            fn(*args)
        except Exception:  # a dashboard bug must not stop the loop's other callbacks
            self.errors += 1
            log.exception("dashboard callback %s failed", getattr(fn, "__name__", fn))


class Coalescer:
    """Calls `flush()` on the loop at most `max_rate` times a second after `mark()` calls.

    The first mark after a quiet spell flushes on the loop's next turn (so marks arriving in the
    same turn share one flush); later marks wait for the next free slot. The last mark is always
    followed by a flush, so the screen ends up showing the latest state."""

    def __init__(
        self,
        runner: Runner,
        flush: Callable[[], Any],
        max_rate: float = DEFAULT_MAX_RATE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_rate <= 0:
            raise ValueError("max_rate must be positive")
        self.runner = runner
        self._flush = flush
        self.interval = 1.0 / max_rate
        self._clock = clock
        self._last = -float("inf")
        self._scheduled = False
        self.flushes = 0

    def mark(self) -> None:
        """Something changed (call on the loop)."""
        if self._scheduled:
            return
        self._scheduled = True
        wait = self._last + self.interval - self._clock()
        if wait <= 0:
            self.runner.soon(self._run)
        else:
            self.runner.later(wait, self._run)

    def _run(self) -> None:
        self._scheduled = False
        self._last = self._clock()
        self.flushes += 1
        self._flush()
