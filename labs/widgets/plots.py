"""bqplot views of sensor histories: a live plot per sensor and a small sparkline.

Both only change traits (`x`, `y`, the scale's window) inside `hold_sync()`, so one update is one
widget message; they never re-render an image. Long windows are thinned to `max_points` so a
message stays small whatever the window.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import math
from typing import Any

import bqplot as bq
import ipywidgets as W
import numpy as np

from labs.i18n import Texts

MAX_POINTS = 600
PLOTTED = ("float", "integer", "boolean", "enum")  # datatypes drawn as lines


def plotted(spec: dict[str, Any]) -> bool:
    return spec.get("datatype") in PLOTTED


def thin(t: np.ndarray, v: np.ndarray, max_points: int = MAX_POINTS
         ) -> tuple[np.ndarray, np.ndarray]:
    """At most `max_points` samples, evenly spread, always keeping the newest."""
    n = len(t)
    if n <= max_points:
        return t, v
    keep = np.linspace(0, n - 1, max_points).round().astype(np.int64)
    return t[keep], v[keep]


def window_slice(t: np.ndarray, v: np.ndarray, start: float) -> tuple[np.ndarray, np.ndarray]:
    """The samples at or after `start` (t is sorted)."""
    i = int(np.searchsorted(t, start, side="left"))
    return t[i:], v[i:]


def as_dates(t: np.ndarray) -> np.ndarray:
    return (t * 1000.0).astype("datetime64[ms]")


def format_value(value: Any, spec: dict[str, Any] | None, texts: Texts) -> str:
    """A value as the page shows it: rounded to the sensor's scale, with its unit."""
    if value is None:
        return "–"
    spec = spec or {}
    unit = spec.get("unit", "")
    if isinstance(value, bool):
        text = texts("true" if value else "false")
    elif isinstance(value, float):
        if math.isnan(value):
            return "–"
        span = abs(float(spec.get("max", 100)) - float(spec.get("min", 0))) or 1.0
        digits = max(0, min(3, 3 - math.floor(math.log10(span))))
        text = f"{value:.{digits}f}"
    elif isinstance(value, list) and value and all(isinstance(x, bool) for x in value):
        text = "".join("■" if x else "□" for x in value)  # e.g. parking bays
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, separators=(",", ":"))
        text = text if len(text) <= 60 else text[:57] + "…"
    else:
        text = str(value)
    return f"{text} {unit}".strip()


def sample_stamp(ts: float | None, texts: Texts) -> str:
    """HTML of a sample's time; `data-ts` carries the kit's timestamp for measurements."""
    if ts is None:
        return f'<span class="smartlab-ts">{html.escape(texts("no_value"))}</span>'
    clock = dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S")
    return (f'<span class="smartlab-ts" data-ts="{ts:.3f}">'
            f'{html.escape(texts("at", time=clock))}</span>')


class SensorPlot:
    """One sensor: title with the latest value, and its history over the chosen window."""

    def __init__(self, sensor: str, spec: dict[str, Any], texts: Texts,
                 height: str = "170px") -> None:
        self.sensor = sensor
        self.spec = spec
        self.texts = texts
        datatype = spec.get("datatype")
        self.levels: list[str] = list(spec.get("values") or []) if datatype == "enum" else []
        self.x_scale = bq.DateScale()
        if datatype == "boolean":
            self.y_scale = bq.LinearScale(min=-0.1, max=1.1)
        elif self.levels:
            self.y_scale = bq.LinearScale(min=-0.5, max=len(self.levels) - 0.5)
        else:
            self.y_scale = bq.LinearScale()
        stepped = datatype in ("boolean", "enum", "integer")
        self.line = bq.Lines(x=np.empty(0, "datetime64[ms]"), y=np.empty(0),
                             scales={"x": self.x_scale, "y": self.y_scale},
                             interpolation="step-after" if stepped else "linear",
                             stroke_width=1.5)
        ticks: dict[str, Any] = {"num_ticks": 4}
        if datatype == "boolean":
            ticks = {"tick_values": [0, 1]}
        elif self.levels:
            ticks = {"tick_values": list(range(len(self.levels)))}
        self.y_axis = bq.Axis(scale=self.y_scale, side="left", grid_lines="dashed",
                              tick_format="d" if stepped else None,
                              label=self._levels_label(), **ticks)
        y_axis = self.y_axis
        x_axis = bq.Axis(scale=self.x_scale, num_ticks=4, tick_format="%H:%M:%S",
                         grid_lines="none")
        self.figure = bq.Figure(marks=[self.line], axes=[x_axis, y_axis],
                                animation_duration=0, min_aspect_ratio=0.01,
                                max_aspect_ratio=100,
                                fig_margin={"top": 8, "bottom": 28, "left": 56, "right": 12},
                                layout=W.Layout(width="100%", height=height))
        # Name, latest value and its time in one widget: one message per sample.
        self.title = W.HTML(layout=W.Layout(width="100%"))
        self.value: Any = None
        self.widget = W.VBox([self.title, self.figure],
                             layout=W.Layout(border="1px solid #ddd", padding="4px",
                                             margin="2px"))
        self.widget.add_class("smartlab-sensor")
        self.widget.add_class(f"smartlab-sensor-{sensor}")
        self._ts: float | None = None
        texts.bind(self._render_title)

    def _levels_label(self) -> str:
        return " · ".join(f"{i} {name}" for i, name in enumerate(self.levels))

    def _render_title(self) -> None:
        name = html.escape(self.spec.get("name") or self.sensor)
        value = html.escape(format_value(self.value, self.spec, self.texts))
        self.title.value = (f"<div style='display:flex;justify-content:space-between'>"
                            f"<span><b>{name}</b>: <span class='smartlab-value'>{value}</span>"
                            f"</span>{sample_stamp(self._ts, self.texts)}</div>")

    def show(self, value: Any, ts: float | None, t: np.ndarray | None, v: np.ndarray | None,
             start: float) -> None:
        """Latest value and the history from `start` on (t in epoch seconds).

        A sample costs two widget messages (the title, the line's x and y together); the time
        axis follows the data, and the y range changes only when the data leave it."""
        self.value, self._ts = value, ts
        self._render_title()
        if t is None or v is None:
            return
        t, v = window_slice(t, v, start)
        t, v = thin(t, v)
        y = v.astype(np.float64)
        with self.line.hold_sync():
            self.line.x = as_dates(t)
            self.line.y = y
        if self.spec.get("datatype") in ("integer", "float"):
            self._fit_y(y)

    def _fit_y(self, y: np.ndarray) -> None:
        """A y range around the data (a flat line sits mid-plot with readable ticks);
        integer sensors get integer ticks. Kept while it still fits the data well."""
        finite = y[np.isfinite(y)]
        if not len(finite):
            return
        lo, hi = float(finite.min()), float(finite.max())
        if self.spec["datatype"] == "integer":
            lo, hi = math.floor(lo), math.ceil(hi)
            if hi - lo < 2:
                lo, hi = lo - 1, hi + 1
            low, high = lo - 0.25, hi + 0.25
        else:
            span = hi - lo
            pad = span * 0.08 if span > 1e-9 else max(abs(lo) * 0.05, 1.0)
            low, high = lo - pad, hi + pad
        now_low, now_high = self.y_scale.min, self.y_scale.max
        if now_low is not None and now_high is not None and now_low <= lo and hi <= now_high \
                and (now_high - now_low) <= 3 * (high - low):
            return  # the data still fit the range shown: no message
        with self.y_scale.hold_sync():
            self.y_scale.min, self.y_scale.max = low, high
        if self.spec["datatype"] == "integer":
            self.y_axis.tick_values = sorted({int(np.rint(x)) for x in
                                              np.linspace(lo, hi, min(5, hi - lo + 1))})


class Sparkline:
    """A small line without axes (the overview board), with the latest value beside it."""

    def __init__(self, sensor: str, spec: dict[str, Any], texts: Texts) -> None:
        self.sensor = sensor
        self.spec = spec
        self.texts = texts
        self.x_scale = bq.LinearScale()
        self.y_scale = bq.LinearScale()
        self.line = bq.Lines(x=np.empty(0), y=np.empty(0),
                             scales={"x": self.x_scale, "y": self.y_scale}, stroke_width=1,
                             interpolation="step-after"
                             if spec.get("datatype") in ("boolean", "integer") else "linear")
        self.figure = bq.Figure(marks=[self.line], axes=[], animation_duration=0,
                                min_aspect_ratio=0.01, max_aspect_ratio=100,
                                fig_margin={"top": 2, "bottom": 2, "left": 2, "right": 2},
                                layout=W.Layout(width="90px", height="28px"))
        self.label = W.HTML()
        self.widget = W.HBox([self.label, self.figure],
                             layout=W.Layout(align_items="center", margin="0 6px 0 0"))
        self.widget.add_class("smartlab-spark")
        self.value: Any = None
        texts.bind(self._render)

    def _render(self) -> None:
        name = html.escape(self.spec.get("name") or self.sensor)
        value = html.escape(format_value(self.value, self.spec, self.texts))
        self.label.value = (f"<span title='{name}' style='font-size:90%'>{name}: "
                            f"<b class='smartlab-value'>{value}</b></span>")

    def show(self, value: Any, t: np.ndarray | None, v: np.ndarray | None, start: float
             ) -> None:
        self.value = value
        self._render()
        if t is None or v is None:
            return
        t, v = thin(*window_slice(t, v, start), max_points=120)
        with self.line.hold_sync():
            self.line.x = t - start
            self.line.y = v.astype(np.float64)
