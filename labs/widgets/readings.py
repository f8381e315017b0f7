"""The latest value of every sensor of a kit in one widget: what a person reads first on the
kit page, above the plots.

One widget for all sensors rather than a title per plot, because a sample usually changes
several sensors at once and every widget change is a message through the kernel, Voilà and the
browser, then a task and a layout in the page. One widget makes a sample one message whatever
the kit's number of sensors. With 20 pages of the street lights open at once (three sensors),
updating one title instead of three took the publish-to-screen delay from p50 241 / p99 425 ms
to 69 / 166 ms (docs/benchmarks.md). The same HTML is the page's server-rendered first paint.
"""

from __future__ import annotations

from typing import Any

import ipywidgets as W

from labs.i18n import Texts
from labs.widgets.markup import Markup, html, join
from labs.widgets.plots import format_value, sample_stamp

# Wide enough for a name and a value, so that a changing value does not reflow the row.
CHIP = "border:1px solid #ddd;padding:4px 8px;min-width:220px;flex:1 1 220px"


def reading_html(
    sensor: str, spec: dict[str, Any], value: Any, ts: float | None, texts: Texts
) -> Markup:
    """A sensor's name, latest value and its time."""
    return html(
        "<div style='display:flex;justify-content:space-between;gap:8px'>"
        "<span><b>{}</b>: <span class='smartlab-value'>{}</span></span>{}</div>",
        texts.name(spec, sensor),
        format_value(value, spec, texts),
        sample_stamp(ts, texts),
    )


class Readings:
    """The kit's sensors' latest values and their time, re-sent only when what a person reads
    changes (a value's text, the second, the language)."""

    def __init__(self, sensors: dict[str, dict[str, Any]], texts: Texts) -> None:
        self.sensors = sensors
        self.texts = texts
        self.latest: dict[str, Any] = {}
        self.ts: float | None = None
        self.widget = W.HTML(layout=W.Layout(width="100%"))
        self.widget.add_class("smartlab-readings")
        self._shown: tuple[Any, ...] | None = None
        texts.bind(self._render)

    def show(self, latest: dict[str, Any], ts: float | None) -> None:
        self.latest, self.ts = latest, ts
        self._render()

    def _render(self) -> None:
        # A 2 Hz kit whose values read the same within a second would otherwise re-send the
        # row for nothing; `data-ts` then stays on the first sample that showed this text.
        shown = (
            self.texts.language,
            None if self.ts is None else int(self.ts),
            *(
                format_value(self.latest.get(name), spec, self.texts)
                for name, spec in self.sensors.items()
            ),
        )
        if shown == self._shown:
            return
        self._shown = shown
        self.widget.value = self.html(self.latest, self.ts)

    def html(self, latest: dict[str, Any], ts: float | None) -> Markup:
        """The row of values as HTML (also the page's first paint)."""
        chips = join(
            html(
                "<div class='smartlab-reading' data-sensor='{}' style='{}'>{}</div>",
                name,
                CHIP,
                reading_html(name, spec, latest.get(name), ts, self.texts),
            )
            for name, spec in self.sensors.items()
        )
        return html("<div style='display:flex;flex-wrap:wrap;gap:4px;margin:2px'>{}</div>", chips)
