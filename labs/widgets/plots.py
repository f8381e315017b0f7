"""bqplot views of sensor histories: a live plot per sensor and a small sparkline.

Both only change traits (`x`, `y`, the scale's window) inside `hold_sync()`, so one update is one
widget message; they never re-render an image. Long windows are thinned to `max_points` so a
message stays small whatever the window.

The browser's cost per sample is what limits how many dashboards a computer shows at once. A
scale whose range follows the data changes with every sample, and bqplot then redraws the axis
(ticks, labels, grid lines through d3 transitions that force style recalculations): measured, that
was half of the page's script time. So the time axis has a fixed range that moves in steps
(`time_axis`), and between steps a sample only redraws the line. The line itself is redrawn less
often than values arrive (`redraw_interval`): the latest value (`labs.widgets.readings`) is what
a person reads at once, while a line over a minute or more moves by a few pixels per sample.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from typing import Any

import bqplot as bq
import ipywidgets as W
import numpy as np

from labs.i18n import Texts
from labs.widgets.markup import Markup, html

MAX_POINTS = 600
PLOTTED = ("float", "integer", "boolean", "enum")  # datatypes drawn as lines
TICK_SPACINGS_S = (5, 10, 15, 20, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 14400)
MIN_REDRAW_S = 1.0  # a plot's line is redrawn at most this often
REDRAW_STEPS = 300  # ... and when the time has moved by about 1/REDRAW_STEPS of its window
# A line is drawn on to `now` at its latest value while that is at most this old (a ready kit
# sends a sample a second or more often); a silent kit's line stops at its last sample.
HOLD_S = 5.0
Y_TICKS = 4  # about this many intervals between a plot's y ticks
NICE = (1.0, 2.0, 2.5, 5.0, 10.0)  # tick steps: these times a power of ten


def plotted(spec: dict[str, Any]) -> bool:
    return spec.get("datatype") in PLOTTED


def thin(
    t: np.ndarray, v: np.ndarray, max_points: int = MAX_POINTS
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
    return (np.asarray(t, dtype=np.float64) * 1000.0).astype("datetime64[ms]")


def utc(ts: float) -> dt.datetime:
    """An epoch time as the naive UTC datetime bqplot's date traits send (like `as_dates`)."""
    return dt.datetime.fromtimestamp(round(ts, 3), dt.UTC).replace(tzinfo=None)


def time_axis(now: float, window_s: float, phase: float = 0.0) -> tuple[float, float, float]:
    """(start, end, tick spacing) of a time axis `window_s` wide showing `now`.

    Ticks fall on round times, at most 5 across; the range moves on in steps of half a tick
    spacing, so `now` stays in its last part and the axis is still between steps. The steps
    come `phase` (a fraction of a step, 0 to 1) after round times."""
    spacing = next((s for s in TICK_SPACINGS_S if window_s / s <= 5), TICK_SPACINGS_S[-1])
    step = spacing / 2
    end = (math.floor(now / step - phase) + 1 + phase) * step
    return end - window_s, end, spacing


def nice_step(raw: float) -> float:
    """The smallest round step (1, 2, 2.5 or 5 times a power of ten) at least `raw`."""
    if not raw > 0 or not math.isfinite(raw):
        return 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in NICE if raw <= m * power * (1 + 1e-9))


def step_decimals(step: float) -> int:
    """Decimals that show every multiple of `step` exactly (0.25 -> 2, 5 -> 0)."""
    return next((d for d in range(7) if abs(round(step * 10**d) - step * 10**d) < 1e-6), 6)


def y_range(
    lo: float, hi: float, bounds: tuple[float | None, float | None] = (None, None)
) -> tuple[float, float, list[float]]:
    """(low, high, ticks) of a y axis for data in [lo, hi]: a margin around the data, widened
    to round ticks about Y_TICKS intervals apart; a flat line sits mid-plot. Never past the
    sensor's own bounds (`min`/`max` of its descriptor) where the data are inside them: 0 lx
    of a dark street is drawn on the axis, not above -1 lx; 20 ± 1 °C gets 18 to 22."""
    span = hi - lo
    pad = span * 0.08 if span > 1e-9 else max(abs(lo) * 0.05, 1.0)
    low, high = lo - pad, hi + pad
    floor_, ceiling = bounds
    floor_ = floor_ if floor_ is not None and lo >= floor_ else None
    ceiling = ceiling if ceiling is not None and hi <= ceiling else None
    low = low if floor_ is None else max(low, floor_)
    high = high if ceiling is None else min(high, ceiling)
    step = nice_step((high - low) / Y_TICKS)
    low, high = math.floor(low / step) * step, math.ceil(high / step) * step
    low = low if floor_ is None else max(low, floor_)
    high = high if ceiling is None else min(high, ceiling)
    digits = step_decimals(step)
    low, high = round(low, digits + 1), round(high, digits + 1)  # 20.4, not 20.400000000000002
    ticks = [
        round(k * step, digits)
        for k in range(math.ceil(low / step - 1e-9), math.floor(high / step + 1e-9) + 1)
    ]
    return low, high, ticks


def reach_now(
    t: np.ndarray, v: np.ndarray, now: float, hold_s: float = HOLD_S
) -> tuple[np.ndarray, np.ndarray]:
    """The samples, plus the latest value again at `now` when it is newer than the last
    sample by at most `hold_s`: the line reaches the present instead of stopping up to a
    second (or a slow kit's period) short of it."""
    if not len(t) or not 0 < now - float(t[-1]) <= hold_s:
        return t, v
    return np.append(t, now), np.append(v, v[-1])


def redraw_interval(window_s: float) -> float:
    """Seconds between redraws of a line showing the last `window_s` seconds: a step of
    about one pixel of a plot a few hundred pixels wide, at most once a second."""
    return max(MIN_REDRAW_S, window_s / REDRAW_STEPS)


def format_value(value: Any, spec: dict[str, Any] | None, texts: Texts) -> str:
    """A value as the page shows it: rounded to the sensor's scale, with its unit."""
    if value is None:
        return "–"
    spec = spec or {}
    unit = texts.unit(spec)
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
    elif isinstance(value, list) and value and all(isinstance(x, dict) for x in value):
        text = " · ".join(_words(item, spec, texts) for item in value)  # e.g. a phase plan
    elif isinstance(value, (list, dict)):
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    elif isinstance(value, str) and spec.get("datatype") == "enum":
        text = texts.value(spec, value)
    else:
        text = str(value)
    text = text if len(text) <= 60 else text[:57] + "…"
    return f"{text} {unit}".strip()


def _words(item: dict[str, Any], spec: dict[str, Any], texts: Texts) -> str:
    """One object of a JSON value by its values only, words in the page's language
    ({"green": ["north", "south"], "seconds": 30} -> "north+south 30")."""

    def word(x: Any) -> str:
        if isinstance(x, list):
            return "+".join(word(y) for y in x)
        return texts.value(spec, x) if isinstance(x, str) else str(x)

    return " ".join(word(x) for x in item.values())


def sample_stamp(ts: float | None, texts: Texts) -> Markup:
    """HTML of a sample's time; `data-ts` carries the kit's timestamp for measurements."""
    if ts is None:
        return html('<span class="smartlab-ts">{}</span>', texts("no_value"))
    clock = dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S")
    return html('<span class="smartlab-ts" data-ts="{:.3f}">{}</span>', ts, texts("at", time=clock))


def title_text(name: str, unit: str | None) -> Markup:
    """A plot's heading: the sensor's name and unit."""
    unit_html = html(" <small style='color:#555'>{}</small>", unit) if unit else ""
    return html("<b>{}</b>{}", name, unit_html)


class SensorPlot:
    """One sensor's history over the chosen window, under its name and unit."""

    def __init__(
        self,
        sensor: str,
        spec: dict[str, Any],
        height: str = "170px",
        axis_phase: float = 0.0,
        texts: Texts | None = None,
    ) -> None:
        self.sensor = sensor
        self.spec = spec
        self.texts = texts or Texts()
        self.axis_phase = axis_phase  # see `time_axis`
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
        # Both ranges are set here (`_follow`, `_fit_y`), never computed from the data by bqplot.
        self.line = bq.Lines(
            x=np.empty(0, "datetime64[ms]"),
            y=np.empty(0),
            scales={"x": self.x_scale, "y": self.y_scale},
            preserve_domain={"x": True, "y": True},
            interpolation="step-after" if stepped else "linear",
            stroke_width=1.5,
        )
        ticks: dict[str, Any] = {"num_ticks": 4}
        if datatype == "boolean":
            ticks = {"tick_values": [0, 1]}
        elif self.levels:
            ticks = {"tick_values": list(range(len(self.levels)))}
        self.y_axis = bq.Axis(
            scale=self.y_scale,
            side="left",
            grid_lines="dashed",
            tick_format="d" if stepped else None,
            **ticks,
        )
        self.x_axis = bq.Axis(scale=self.x_scale, tick_format="%H:%M:%S", grid_lines="none")
        self._time_axis: tuple[float, float, float] | None = None
        self.figure = bq.Figure(
            marks=[self.line],
            axes=[self.x_axis, self.y_axis],
            animation_duration=0,
            min_aspect_ratio=0.01,
            max_aspect_ratio=100,
            fig_margin={"top": 8, "bottom": 28, "left": 56, "right": 28},
            layout=W.Layout(width="100%", height=height),
        )
        # The name and unit only: the latest values are in the page's `Readings` row.
        self.title = W.HTML(layout=W.Layout(width="100%"))
        self.widget = W.VBox(
            [self.title, self.figure],
            layout=W.Layout(border="1px solid #ddd", padding="4px", margin="2px"),
        )
        self.widget.add_class("smartlab-sensor")
        self.widget.add_class(f"smartlab-sensor-{sensor}")
        self.texts.bind(self._relabel)

    def _relabel(self) -> None:
        t = self.texts
        self.title.value = title_text(t.name(self.spec, self.sensor), t.unit(self.spec))
        if self.levels:
            self.y_axis.label = self._levels_label()

    def _levels_label(self) -> str:
        return " · ".join(
            f"{i} {self.texts.value(self.spec, name)}" for i, name in enumerate(self.levels)
        )

    def show_history(self, t: np.ndarray, v: np.ndarray, window_s: float, now: float) -> None:
        """The history of the last `window_s` seconds up to `now` (t in epoch seconds).

        One widget message (the line's x and y together); the axes change only when the time
        axis steps on or the data leave the y range."""
        newest = float(t[-1]) if len(t) else now
        now = max(now, newest)
        start, _end, _spacing = self._follow(now, window_s)
        t, v = reach_now(*thin(*window_slice(t, v, start)), now)
        y = v.astype(np.float64)
        if self.spec.get("datatype") in ("integer", "float"):
            self._fit_y(y)  # first: the line is drawn once, in its range
        with self.line.hold_sync():
            self.line.x = as_dates(t)
            self.line.y = y

    def _follow(self, now: float, window_s: float) -> tuple[float, float, float]:
        """The time axis showing `now`; sent only when it has stepped on (or the window
        changed), with ticks on round times."""
        axis = time_axis(now, window_s, self.axis_phase)
        if axis != self._time_axis:
            self._time_axis = axis
            start, end, spacing = axis
            ticks = np.arange(math.ceil(start / spacing) * spacing, end + 1e-6, spacing)
            with self.x_scale.hold_sync():
                self.x_scale.min, self.x_scale.max = utc(start), utc(end)
            with self.x_axis.hold_sync():
                self.x_axis.tick_values = as_dates(ticks)
                self.x_axis.tick_format = "%H:%M:%S" if spacing < 60 else "%H:%M"
        return axis

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
            ticks = []
        else:
            low, high, ticks = y_range(lo, hi, (self.spec.get("min"), self.spec.get("max")))
        now_low, now_high = self.y_scale.min, self.y_scale.max
        if (
            now_low is not None
            and now_high is not None
            and now_low <= lo
            and hi <= now_high
            and (now_high - now_low) <= 3 * (high - low)
        ):
            return  # the data still fit the range shown: no message
        with self.y_scale.hold_sync():
            self.y_scale.min, self.y_scale.max = low, high
        if self.spec["datatype"] == "integer":
            self.y_axis.tick_values = sorted(
                {int(np.rint(x)) for x in np.linspace(lo, hi, min(5, hi - lo + 1))}
            )
        else:  # round ticks, as many decimals as their step needs
            digits = step_decimals(ticks[1] - ticks[0]) if len(ticks) > 1 else 0
            with self.y_axis.hold_sync():
                self.y_axis.tick_format = f".{digits}f"
                self.y_axis.tick_values = ticks


class Sparkline:
    """A small line without axes (the overview board), with the latest value beside it."""

    def __init__(self, sensor: str, spec: dict[str, Any], texts: Texts) -> None:
        self.sensor = sensor
        self.spec = spec
        self.texts = texts
        self.x_scale = bq.LinearScale()
        self.y_scale = bq.LinearScale()
        self.line = bq.Lines(
            x=np.empty(0),
            y=np.empty(0),
            scales={"x": self.x_scale, "y": self.y_scale},
            stroke_width=1,
            interpolation="step-after"
            if spec.get("datatype") in ("boolean", "integer")
            else "linear",
        )
        self.figure = bq.Figure(
            marks=[self.line],
            axes=[],
            animation_duration=0,
            min_aspect_ratio=0.01,
            max_aspect_ratio=100,
            fig_margin={"top": 2, "bottom": 2, "left": 2, "right": 2},
            layout=W.Layout(width="90px", height="28px"),
        )
        self.label = W.HTML()
        self.widget = W.HBox(
            [self.label, self.figure], layout=W.Layout(align_items="center", margin="0 6px 0 0")
        )
        self.widget.add_class("smartlab-spark")
        self.value: Any = None
        texts.bind(self._render)

    def _render(self) -> None:
        self.label.value = html(
            "<span title='{name}' style='font-size:90%'>{name}: "
            "<b class='smartlab-value'>{value}</b></span>",
            name=self.texts.name(self.spec, self.sensor),
            value=format_value(self.value, self.spec, self.texts),
        )

    def show(self, value: Any, t: np.ndarray | None, v: np.ndarray | None, start: float) -> None:
        self.value = value
        self._render()
        if t is None or v is None:
            return
        t, v = thin(*window_slice(t, v, start), max_points=120)
        with self.line.hold_sync():
            self.line.x = t - start
            self.line.y = v.astype(np.float64)
