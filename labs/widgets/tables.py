"""Small helpers the instructor and admin views share: HTML tables and bar charts."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import bqplot as bq
import ipywidgets as W
import numpy as np

from labs.widgets.markup import Markup, html, join


def when(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%d.%m %H:%M:%S") if t else "–"


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    css: str = "",
    row_classes: Sequence[str] | None = None,
) -> Markup:
    """An HTML table; cells are escaped unless they are `Markup` (see labs.widgets.markup)."""
    head = join(html("<th style='text-align:left;padding:2px 8px'>{}</th>", h) for h in headers)
    body = join(
        html(
            "<tr class='{}'>{}</tr>",
            row_classes[i] if row_classes else "",
            join(html("<td style='padding:2px 8px'>{}</td>", c) for c in row),
        )
        for i, row in enumerate(rows)
    )
    return html(
        "<table class='{}' style='border-collapse:collapse'><thead>{}</thead>"
        "<tbody>{}</tbody></table>",
        css,
        head,
        body,
    )


def heading(texts: Any, key: str) -> W.HTML:
    """A section heading that follows the page's language."""
    widget = W.HTML()
    widget.add_class("smartlab-heading")
    texts.bind(
        lambda: setattr(widget, "value", html("<h4 style='margin:10px 0 4px'>{}</h4>", texts(key)))
    )
    return widget


class BarChart:
    """Horizontal categories, one bar each; `show()` changes only the marks' traits."""

    def __init__(self, height: str = "220px") -> None:
        self.x_scale = bq.OrdinalScale()
        self.y_scale = bq.LinearScale(min=0)
        self.bars = bq.Bars(
            x=[], y=[], scales={"x": self.x_scale, "y": self.y_scale}, colors=["#4c78a8"]
        )
        self.title = W.HTML()
        # Ticks from 0 to a round top (set in `show`): no negative or exponent labels
        # around bars that are all small or all zero.
        self.y_axis = bq.Axis(scale=self.y_scale, side="left", tick_format=".3~g")
        self.figure = bq.Figure(
            marks=[self.bars],
            axes=[bq.Axis(scale=self.x_scale), self.y_axis],
            animation_duration=0,
            min_aspect_ratio=0.01,
            max_aspect_ratio=100,
            fig_margin={"top": 10, "bottom": 40, "left": 50, "right": 10},
            layout=W.Layout(width="100%", height=height),
        )
        # overflow visible: a box that scrolls by a pixel of the figure is a scrollable region
        # no keyboard can reach (axe-core: scrollable-region-focusable).
        self.widget = W.VBox(
            [self.title, self.figure], layout=W.Layout(width="48%", overflow="visible")
        )

    def show(self, title: str, labels: Sequence[str], values: Sequence[float]) -> None:
        self.title.value = html("<b>{}</b>", title)
        top = round_top(max((float(v) for v in values), default=0.0))
        with self.y_scale.hold_sync():
            self.y_scale.min, self.y_scale.max = 0.0, top
        self.y_axis.tick_values = np.linspace(0.0, top, 5)
        with self.bars.hold_sync():
            self.bars.x = list(labels)
            self.bars.y = np.asarray(values, dtype=np.float64)


def round_top(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 × 10^k at or above `value` (1 for nothing to show)."""
    if not value > 0:
        return 1.0
    scale = 10.0 ** math.floor(math.log10(value))
    return next(m * scale for m in (1, 2, 2.5, 5, 10) if m * scale >= value * (1 - 1e-9))
