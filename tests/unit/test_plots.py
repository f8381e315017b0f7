"""The live sensor plot's browser-side economy: the time axis moves in steps (between them a
sample only redraws the line), both ranges are set by the plot, and lines are redrawn about once
per pixel of movement."""

from __future__ import annotations

import numpy as np
import pytest

from labs.widgets.plots import (
    HOLD_S,
    SensorPlot,
    as_dates,
    nice_step,
    reach_now,
    redraw_interval,
    time_axis,
    y_range,
)

LAMP = {"name": "Lamp power", "datatype": "float", "unit": "W", "min": 0, "max": 150}
T0 = 1_795_500_000.0  # a multiple of every tick spacing


def changes(widget, *names: str, seen: list[str] | None = None) -> list[str]:
    """Names of `widget`'s traits as they change (what would be sent to the browser)."""
    seen = [] if seen is None else seen
    widget.observe(lambda change: seen.append(change["name"]), names=list(names))
    return seen


@pytest.mark.parametrize(("window", "spacing"), [(60, 15), (300, 60), (900, 300), (3600, 900)])
def test_time_axis_is_the_window_wide_with_round_ticks_and_moves_in_half_tick_steps(
    window, spacing
):
    start, end, tick = time_axis(T0 + 1, window)
    assert (end - start, tick) == (window, spacing)
    assert start < T0 + 1 < end and end % (spacing / 2) == 0
    # Still while `now` is inside its last half tick, then one step on.
    assert time_axis(end - 0.001, window) == (start, end, tick)
    assert time_axis(end, window) == (start + spacing / 2, end + spacing / 2, tick)


@pytest.mark.parametrize("phase", [0.25, 0.9])
def test_a_phase_moves_the_steps_by_that_fraction_of_a_step_and_keeps_the_window(phase):
    step = 7.5  # the 1-minute window: ticks every 15 s
    start, end, tick = time_axis(T0 + 1, 60, phase)
    assert (end - start, tick) == (60, 15)
    assert start < T0 + 1 < end and (end - phase * step) % step == pytest.approx(0)
    assert time_axis(end - 0.001, 60, phase) == (start, end, tick)
    assert time_axis(end, 60, phase)[1] == pytest.approx(end + step)


def test_a_plot_steps_its_axis_at_its_own_phase_with_ticks_still_on_round_times():
    plot = SensorPlot("lamp-power", LAMP, axis_phase=0.5)
    t = T0 + np.arange(-60, 0.1, 0.5)
    plot.show_history(t, 40 + np.sin(t), 60, T0)
    assert plot.x_scale.max == as_dates(np.array([T0 + 3.75]))[0]  # round + half a step
    assert list(plot.x_axis.tick_values) == list(as_dates(T0 + np.arange(-45, 0.1, 15)))


def test_a_sample_redraws_only_the_line_until_the_time_axis_steps_on():
    plot = SensorPlot("lamp-power", LAMP)
    t = T0 + np.arange(-120, 0.1, 0.5)
    v = 40 + np.sin(t)
    plot.show_history(t, v, 60, t[-1])
    assert plot.line.preserve_domain == {"x": True, "y": True}
    assert plot.x_scale.min == as_dates(np.array([T0 - 52.5]))[0]  # [now - 60 s, now + 7.5 s)
    assert list(plot.x_axis.tick_values) == list(as_dates(T0 + np.arange(-45, 7.6, 15)))
    assert plot.y_scale.min <= v[-120:].min() and v[-120:].max() <= plot.y_scale.max
    assert len(plot.line.x) == 106 and plot.line.y[-1] == v[-1]  # the samples on the axis

    axes = changes(plot.x_axis, "tick_values", seen=changes(plot.x_scale, "min", "max"))
    lines = changes(plot.line, "x")
    for now in T0 + np.arange(0.5, 7.5, 0.5):  # the kit at 2 Hz, the axis ends at T0 + 7.5
        t, v = np.append(t, now), np.append(v, 40.0)
        plot.show_history(t, v, 60, now)
    assert axes == [] and len(lines) == 14

    t, v = np.append(t, T0 + 7.5), np.append(v, 40.0)
    plot.show_history(t, v, 60, T0 + 7.5)
    assert sorted(axes) == ["max", "min", "tick_values"]


@pytest.mark.parametrize(("window", "seconds"), [(60, 1.0), (300, 1.0), (900, 3.0), (3600, 12.0)])
def test_lines_are_redrawn_about_once_per_pixel_and_at_most_once_a_second(window, seconds):
    assert redraw_interval(window) == seconds


# ---------------------------------------------------------------- ranges that fit the data


@pytest.mark.parametrize(
    ("lo", "hi", "bounds"),
    [
        (19.0, 21.0, (-40, 60)),  # a room's temperature
        (20.0, 20.0, (-40, 60)),  # ... that does not move
        (0.0, 0.0, (0, 100000)),  # a dark street: 0 lx
        (0.0, 37.5, (0, 150)),
        (1012.3, 1019.8, (870, 1085)),  # air pressure
        (-3.2, 4.1, (None, None)),
        (0.0012, 0.0019, (0, 1)),
        (99.5, 100.0, (0, 100)),  # at the sensor's top
    ],
)
def test_the_y_range_holds_the_data_with_a_margin_and_round_ticks(lo, hi, bounds):
    low, high, ticks = y_range(lo, hi, bounds)
    assert low <= lo and hi <= high
    floor_, ceiling = bounds
    span = high - low
    # a margin, except where the data sit on the sensor's own bound
    assert lo - low >= 0.04 * span or lo == floor_ == low
    assert high - hi >= 0.04 * span or hi == ceiling == high
    assert floor_ is None or low >= floor_  # never below what the sensor can read
    assert ceiling is None or high <= ceiling
    assert hi - lo <= span <= max(3 * (hi - lo), 2 * max(abs(lo) * 0.05, 1.0) * 2.5)
    assert 3 <= len(ticks) <= 7 and low <= ticks[0] and ticks[-1] <= high
    steps = np.diff(ticks)
    assert np.allclose(steps, steps[0])
    assert steps[0] == pytest.approx(nice_step(steps[0]))  # 1, 2, 2.5 or 5 times 10^k


def test_twenty_degrees_give_or_take_one_is_not_drawn_from_zero():
    assert y_range(19.0, 21.0, (-40, 60)) == (18.0, 22.0, [18.0, 19.0, 20.0, 21.0, 22.0])
    assert y_range(0.0, 0.0, (0, 100000))[:2] == (0.0, 1.0)  # dark: on the axis, not at -1 lx


def test_a_plot_sends_its_round_ticks_with_the_decimals_they_need():
    plot = SensorPlot("temperature", {"datatype": "float", "unit": "°C", "min": -40, "max": 60})
    t = T0 + np.arange(-60, 0.1, 1.0)
    v = 20 + 0.3 * np.sin(t / 7)
    plot.show_history(t, v, 60, T0)
    low, high, ticks = y_range(v.min(), v.max(), (-40, 60))
    assert (plot.y_scale.min, plot.y_scale.max) == (low, high) == (19.6, 20.4)
    assert list(plot.y_axis.tick_values) == ticks == [19.6, 19.8, 20.0, 20.2, 20.4]
    assert plot.y_axis.tick_format == ".1f"


def test_the_line_reaches_now_at_its_latest_value():
    plot = SensorPlot("lamp-power", LAMP)
    t = T0 - 0.7 + np.arange(-60, 0.1, 1.0)  # a 1 Hz kit, the last sample 0.7 s ago
    v = 40 + np.sin(t)
    plot.show_history(t, v, 60, T0)
    assert plot.line.x[-1] == as_dates(np.array([T0]))[0]  # the right end of the line is now
    assert plot.line.y[-1] == plot.line.y[-2] == v[-1]  # drawn on at the latest value
    start, end, _tick = time_axis(T0, 60)
    assert plot.x_scale.min == as_dates(np.array([start]))[0]
    assert 0 < end - T0 <= 7.5  # what is right of now: at most the axis' half-tick step


def test_a_silent_kit_s_line_stops_at_its_last_sample():
    t, v = np.array([T0 - 30.0, T0 - 20.0]), np.array([1.0, 2.0])
    assert reach_now(t, v, T0) == (t, v)  # 20 s old: not drawn on as if still true
    t2, v2 = reach_now(t, v, t[-1] + HOLD_S)
    assert list(t2) == [T0 - 30, T0 - 20, T0 - 20 + HOLD_S] and list(v2) == [1.0, 2.0, 2.0]
    assert reach_now(t, v, t[-1]) == (t, v)  # a sample at now: nothing to add
