"""The live sensor plot's browser-side economy: the time axis moves in steps (between them a
sample only redraws the line), both ranges are set by the plot, and lines are redrawn about once
per pixel of movement."""

from __future__ import annotations

import numpy as np
import pytest

from labs.widgets.plots import SensorPlot, as_dates, redraw_interval, time_axis

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
