"""A kernel manager with a ceiling, for the Voilà page anyone may open (the public board).

Each visitor of a Voilà page gets a kernel of their own; anonymous visitors must not be able to
start them without bound. `BoundedKernelManager` refuses a kernel beyond `max_kernels` (the
preheated pool included) with HTTP 503 and one log line, and shuts down a visitor's kernel once
its page has been gone (no websocket) for `orphan_timeout` seconds, busy or not: the board's
kernels update their widgets all the time, so Jupyter's idle culler never finds them idle.
"""

from __future__ import annotations

import time
from typing import Any

from jupyter_server.services.kernels.kernelmanager import AsyncMappingKernelManager
from tornado import web
from traitlets import Float, Integer


class BoundedKernelManager(AsyncMappingKernelManager):
    max_kernels = Integer(
        0, config=True, help="Most kernels at once, preheated ones included; 0: no bound."
    )
    orphan_timeout = Float(
        120.0, config=True, help="Seconds a visitor's kernel lives on without its page."
    )

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._starting = 0  # starts under way: not yet in list_kernel_ids()
        self._unconnected_since: dict[str, float] = {}

    async def start_kernel(self, *args: Any, **kwargs: Any) -> str:
        running = len(self.list_kernel_ids()) + self._starting
        if self.max_kernels and running >= self.max_kernels:
            self.log.warning(
                "kernel refused: %d running or starting, the bound is %d "
                "(BoundedKernelManager.max_kernels)",
                running,
                self.max_kernels,
            )
            raise web.HTTPError(503, "too many visitors at once, try again in a minute")
        self._starting += 1
        try:
            return await super().start_kernel(*args, **kwargs)
        finally:
            self._starting -= 1

    async def shutdown_kernel(self, kernel_id: str, *args: Any, **kwargs: Any) -> None:
        self._unconnected_since.pop(kernel_id, None)
        await super().shutdown_kernel(kernel_id, *args, **kwargs)

    async def cull_kernel_if_idle(self, kernel_id: str) -> None:
        # Voilà's pool subclass returns before this for kernels still waiting in the pool.
        if self._kernel_connections.get(kernel_id, 0) > 0:
            self._unconnected_since.pop(kernel_id, None)
        else:
            since = self._unconnected_since.setdefault(kernel_id, time.monotonic())
            if time.monotonic() - since >= self.orphan_timeout:
                self._unconnected_since.pop(kernel_id, None)
                self.log.info("kernel %s: its page is gone, shutting it down", kernel_id)
                await self.shutdown_kernel(kernel_id)
                return
        await super().cull_kernel_if_idle(kernel_id)
