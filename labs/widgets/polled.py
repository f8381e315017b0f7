"""A view refreshed from the lab service: fetch in the runner's pool, render on the loop.

Admin and instructor views share this: one fetch at a time (a slow service never piles up
requests), the service banner says when the service is unreachable while the last data stays
on screen, and any other refusal shows as one line in the view.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from labs.client import LabServiceUnavailable
from labs.widgets.live import Runner
from labs.widgets.markup import html
from labs.widgets.session_panel import ServiceBanner


class PolledView:
    """Subclasses build their widgets, then call `start_polling`; they define `fetch` (blocking,
    runs in the pool), `_render` (on the loop, from `self.data`) and `error_line`, the widget
    that shows a refusal."""

    error_line: W.HTML

    def __init__(self, runner: Runner, banner: ServiceBanner) -> None:
        self.runner = runner
        self.banner = banner
        self.data: dict[str, Any] | None = None
        self._busy = False
        self._stop = lambda: None

    def start_polling(self, refresh_s: float) -> None:
        self._stop = self.runner.every(refresh_s, self.refresh)

    def wants_data(self) -> bool:
        return True

    def fetch(self) -> dict[str, Any]:
        raise NotImplementedError

    def _render(self) -> None:
        raise NotImplementedError

    def refresh(self) -> None:
        if self._busy or not self.wants_data():
            return
        self._busy = True
        self.runner.submit(self.fetch, done=self._got, failed=self._failed)

    def _got(self, data: dict[str, Any]) -> None:
        self._busy = False
        self.banner.up()
        self.data = data
        self._render()

    def _failed(self, err: BaseException) -> None:
        self._busy = False
        if isinstance(err, LabServiceUnavailable):
            self.banner.down(err)
            return
        self.banner.up()  # it answered, with a refusal
        self.error_line.value = html("<span style='color:#b42318'>{}</span>", str(err))

    def close(self) -> None:
        self._stop()
