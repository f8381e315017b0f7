"""Small helpers the instructor and admin views share: HTML tables and bar charts."""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence
from typing import Any

import bqplot as bq
import ipywidgets as W
import numpy as np


def when(t: float | None) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%d.%m %H:%M:%S") if t else "–"


def table(
    headers: Sequence[str],
    rows: Sequence[Sequence[Any]],
    *,
    css: str = "",
    row_classes: Sequence[str] | None = None,
) -> str:
    """An HTML table; cells are escaped unless wrapped in `Raw`."""
    head = "".join(
        f"<th style='text-align:left;padding:2px 8px'>{html.escape(h)}</th>" for h in headers
    )
    body = []
    for i, row in enumerate(rows):
        cls = f" class='{row_classes[i]}'" if row_classes else ""
        cells = "".join(
            f"<td style='padding:2px 8px'>"
            f"{c.html if isinstance(c, Raw) else html.escape(str(c))}</td>"
            for c in row
        )
        body.append(f"<tr{cls}>{cells}</tr>")
    return (
        f"<table class='{css}' style='border-collapse:collapse'><thead>{head}</thead>"
        f"<tbody>{''.join(body)}</tbody></table>"
    )


def heading(texts: Any, key: str) -> W.HTML:
    """A section heading that follows the page's language."""
    widget = W.HTML()
    widget.add_class("smartlab-heading")
    texts.bind(
        lambda: setattr(
            widget, "value", f"<h4 style='margin:10px 0 4px'>{html.escape(texts(key))}</h4>"
        )
    )
    return widget


class Raw:
    """A table cell that is already HTML."""

    def __init__(self, markup: str) -> None:
        self.html = markup


class BarChart:
    """Horizontal categories, one bar each; `show()` changes only the marks' traits."""

    def __init__(self, height: str = "220px") -> None:
        self.x_scale = bq.OrdinalScale()
        self.y_scale = bq.LinearScale(min=0)
        self.bars = bq.Bars(
            x=[], y=[], scales={"x": self.x_scale, "y": self.y_scale}, colors=["#4c78a8"]
        )
        self.title = W.HTML()
        self.figure = bq.Figure(
            marks=[self.bars],
            axes=[
                bq.Axis(scale=self.x_scale),
                bq.Axis(scale=self.y_scale, side="left", num_ticks=4),
            ],
            animation_duration=0,
            min_aspect_ratio=0.01,
            max_aspect_ratio=100,
            fig_margin={"top": 10, "bottom": 40, "left": 50, "right": 10},
            layout=W.Layout(width="100%", height=height),
        )
        self.widget = W.VBox([self.title, self.figure], layout=W.Layout(width="48%"))

    def show(self, title: str, labels: Sequence[str], values: Sequence[float]) -> None:
        self.title.value = f"<b>{html.escape(title)}</b>"
        with self.bars.hold_sync():
            self.bars.x = list(labels)
            self.bars.y = np.asarray(values, dtype=np.float64)
