"""The kit dashboard, generated from the kit's descriptor: one live plot per sensor, one control
per actuator, the acknowledgements as they arrive, and the kit's state.

Nothing here knows a kit model: a new model's descriptor is rendered as it is. Data flow:

    paho thread --Kit.subscribe / Lab.on_state--> Runner.from_thread --> loop: mark()
    loop: Coalescer (<= max_rate flushes/s) --> flush_values(): the Readings row, actuator values
          Coalescer (redraw_interval)        --> flush_history(): read Kit.history, redraw lines

Commands run in the runner's pool (`Kit.set` waits for the kit's acknowledgement) through the
control kit the session panel hands over; the controls are enabled only while it is held.
"""

from __future__ import annotations

import collections
import datetime as dt
import logging
import random
import time
from typing import Any

import ipywidgets as W
import numpy as np

from labs.client import (
    Ack,
    CommandNotAuthorized,
    CommandRejected,
    CommandTimeout,
    Kit,
    Lab,
    LabClosed,
    LabService,
    LabServiceError,
)
from labs.i18n import Texts
from labs.widgets.controls import ActuatorControl
from labs.widgets.live import DEFAULT_MAX_RATE, Coalescer, Runner
from labs.widgets.markup import Markup, html, join
from labs.widgets.plots import SensorPlot, format_value, plotted, redraw_interval
from labs.widgets.readings import Readings

log = logging.getLogger(__name__)

WINDOWS = (60, 300, 900, 3600)  # seconds a plot shows
STALE_AFTER_S = 5.0  # a ready kit silent this long gets a notice
ACK_LINES = 8


def window_label(texts: Texts, seconds: int) -> str:
    if seconds < 60:
        return texts("window_s", n=seconds)
    if seconds < 3600:
        return texts("window_min", n=seconds // 60)
    return texts("window_h", n=seconds // 3600)


class EnumHistory:
    """The client library keeps no history of enum sensors: their level index over time."""

    def __init__(self, levels: list[str], capacity: int) -> None:
        self.index = {name: i for i, name in enumerate(levels)}
        self.samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=capacity)

    def add(self, ts: float, value: Any) -> None:
        self.samples.append((ts, float(self.index.get(value, np.nan))))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.samples:
            return np.empty(0), np.empty(0)
        data = np.asarray(self.samples, dtype=np.float64)
        return data[:, 0], data[:, 1]


class KitDashboard:
    """Everything about one kit on one page. Build it on the kernel's loop."""

    def __init__(
        self,
        lab: Lab,
        kit_id: str,
        runner: Runner,
        texts: Texts,
        *,
        service: LabService | None = None,
        max_rate: float = DEFAULT_MAX_RATE,
        window_s: int = 60,
    ) -> None:
        self.lab = lab
        self.kit: Kit = lab.kit(kit_id)
        self.kit_id = kit_id
        self.runner = runner
        self.texts = texts
        self.service = service
        self.descriptor: dict[str, Any] = self.kit.descriptor or {}
        self.window_s = window_s
        self.control: Kit | None = None  # the kit through the user's control account
        self.ends_at: float | None = None
        self.acks: collections.deque[tuple[str, str, dict[str, Any]]] = collections.deque(
            maxlen=ACK_LINES
        )
        self.state: str | None = self.kit.state
        self.lost_since: float | None = None if self.state == "ready" else time.time()
        self._backfill: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._enums: dict[str, EnumHistory] = {}

        sensors = self.descriptor.get("sensors", {})
        self.readings = Readings(sensors, texts)  # every sensor's latest value, one widget
        # The page's time axes step on together, at a moment of their own: pages of one kit
        # stepping on the same sample would redraw all their axes in one burst.
        axis_phase = random.random()
        self.plots: dict[str, SensorPlot] = {}  # the sensors drawn as lines
        for name, spec in sensors.items():
            if plotted(spec):
                self.plots[name] = SensorPlot(name, spec, axis_phase=axis_phase, texts=texts)
                if spec["datatype"] == "enum":
                    self._enums[name] = EnumHistory(list(spec["values"]), lab.history or 1)
        self.controls = {
            name: ActuatorControl(name, spec, texts, self._submit, self._refused)
            for name, spec in self.descriptor.get("actuators", {}).items()
        }

        # Values first: a sample's new value reaches the page before its plots are redrawn.
        self.coalescer = Coalescer(runner, self.flush_values, max_rate)
        self.lines = Coalescer(runner, self.flush_history, 1 / redraw_interval(window_s))
        self.widget = self._layout()
        texts.bind(self._render_frame)
        self._unsubscribe = [
            self.kit.subscribe(self._sample_from_thread),
            lab.on_state(self._state_from_thread),
        ]
        self._stop_stale = runner.every(1.0, self._check_stale, now=False)
        self.coalescer.mark()  # show what the kit sent before the page opened
        self.lines.mark()
        self._fetch_backfill()  # and what the service recorded before that

    # ------------------------------------------------------------ layout

    def _layout(self) -> W.Widget:
        t = self.texts
        self.header = W.HTML()
        self.kit_banner = W.HTML(layout=W.Layout(display="none"))
        self.kit_banner.add_class("smartlab-kit-banner")
        self.window = W.Dropdown(
            layout=W.Layout(width="260px", max_width="100%"),
            style={"description_width": "initial"},
        )
        self.window.add_class("smartlab-window")
        self._window_options()
        self.window.observe(self._window_changed, names="value")
        self.sensor_title = t.label(W.HTML(), "sensors", "value")
        self.actuator_title = t.label(W.HTML(), "actuators", "value")
        grid = W.GridBox(
            [p.widget for p in self.plots.values()],
            layout=W.Layout(
                # one column on a phone: a plot is never wider than the screen
                grid_template_columns="repeat(auto-fill, minmax(min(420px, 100%), 1fr))",
                width="100%",
            ),
        )
        grid.add_class("smartlab-plots")
        self.plot_grid = grid
        self.hint = W.HTML()
        self.hint.add_class("smartlab-control-hint")
        self.ack_log = W.HTML()
        self.ack_log.add_class("smartlab-acks")
        controls = W.VBox(
            [self.actuator_title, self.hint]
            + [c.widget for c in self.controls.values()]
            + [self.ack_log],
            layout=W.Layout(border="1px solid #ccd", padding="6px", margin="4px 0"),
        )
        controls.add_class("smartlab-actuators")
        box = W.VBox(
            [
                self.header,
                self.kit_banner,
                W.HBox(
                    [self.sensor_title, self.window],
                    layout=W.Layout(align_items="center", flex_flow="row wrap"),
                ),
                self.readings.widget,
                grid,
                controls,
            ]
        )
        box.add_class("smartlab-kit-dashboard")
        # Live values on screen: the page's first paint (`snapshot_html`) gives way.
        self.readings.widget.add_class("smartlab-live")
        return box

    def beside_plots(self, widget: W.Widget) -> None:
        """Put `widget` (the kit's picture) first in the plots' grid: beside them on a wide
        screen, above them on a phone."""
        self.plot_grid.children = (widget, *self.plot_grid.children)

    def _window_options(self) -> None:
        current = self.window_s
        self._relabelling = True
        try:
            self.window.options = [(window_label(self.texts, s), s) for s in WINDOWS]
            self.window.value = current if current in WINDOWS else WINDOWS[0]
            self.window.description = self.texts("window")
        finally:
            self._relabelling = False

    def _render_frame(self) -> None:
        self._window_options()
        self._render_header()
        self._render_banner()
        self._render_hint()
        self._render_acks()

    def _render_header(self) -> None:
        t = self.texts
        state = self.state or "none"
        colour = {"ready": "#1a7f37", "lost": "#b42318"}.get(state, "#8a6d00")
        self.header_html = html(
            "<h3 style='margin:4px 0'>{kit} <small style='color:#555'>{name}</small> "
            "<span class='smartlab-kit-state' data-state='{state}' "
            "style='color:{colour};font-size:80%'>● {label}</span></h3>",
            kit=self.kit_id,
            name=t.name(self.descriptor),
            state=state,
            colour=colour,
            label=t.state(self.state),
        )
        self.header.value = self.header_html

    def _render_banner(self) -> None:
        t = self.texts
        text = None
        if self.state == "lost":
            since = dt.datetime.fromtimestamp(self.lost_since or time.time()).strftime("%H:%M:%S")
            text = t("kit_lost", kit=self.kit_id, since=since)
        elif self.state in ("disconnected", "sleeping", None):
            text = t("kit_off", kit=self.kit_id)
        elif self.state == "ready" and self._stale_seconds() is not None:
            text = t("stale", kit=self.kit_id, seconds=int(self._stale_seconds() or 0))
        if text is None:
            self.kit_banner.layout.display = "none"
            self.kit_banner.value = ""
        else:
            self.kit_banner.value = html(
                "<div style='background:#fde8e8;border:1px solid #e5a0a0;padding:6px'>⚠ {}</div>",
                text,
            )
            self.kit_banner.layout.display = None

    def _render_hint(self) -> None:
        t = self.texts
        if self.control is not None and self.ends_at is not None:
            until = dt.datetime.fromtimestamp(self.ends_at).strftime("%H:%M")
            text, role = t("controller_hint", until=until), "controller"
        else:
            text, role = t("observer_hint"), "observer"
        self.hint.value = html("<i data-role='{}'>{}</i>", role, text)

    def _render_acks(self) -> None:
        t = self.texts
        if not self.acks:
            self.ack_log.value = html("<small>{}</small>", t("no_acks"))
            return
        lines = []
        actuators = self.descriptor.get("actuators", {})
        for status, key, fields in reversed(self.acks):
            fields = dict(fields)
            if "reason_code" in fields:
                fields["reason"] = t.reason(
                    fields.pop("reason_code"),
                    fields.pop("detail", None),
                    self.descriptor,
                    fields.get("target"),
                )
            spec = actuators.get(fields.get("target"))
            if not fields.pop("typed", False):
                fields["value"] = format_value(fields.get("value"), spec, t)
            fields["target"] = t.name(spec, str(fields.get("target", "")))
            colour = "#1a7f37" if status == "applied" else "#b42318"
            mark = "✓" if status == "applied" else "✗"
            lines.append(
                html(
                    "<div class='smartlab-ack smartlab-ack-{}' style='color:{}'>{} {}</div>",
                    status,
                    colour,
                    mark,
                    t(key, **fields),
                )
            )
        self.ack_log.value = html("<b>{}</b>{}", t("acks"), join(lines))

    # ------------------------------------------------------------ live data

    def _sample_from_thread(self, _kit_id: str, body: dict[str, Any]) -> None:
        # paho's network thread: hand over and return at once.
        self.runner.from_thread(self._sample, body)

    def _state_from_thread(self, kit_id: str, state: str | None) -> None:
        if kit_id == self.kit_id:
            self.runner.from_thread(self._state_changed, state)

    def _sample(self, body: dict[str, Any]) -> None:
        for name, ring in self._enums.items():
            if name in body["values"]:
                ring.add(body["ts"], body["values"][name])
        self.coalescer.mark()
        self.lines.mark()

    def _state_changed(self, state: str | None) -> None:
        if state == self.state:
            return
        self.state = state
        self.lost_since = None if state == "ready" else time.time()
        self._render_header()
        self._render_banner()
        self.coalescer.mark()

    def _stale_seconds(self) -> float | None:
        ts = self.kit.latest_ts
        if ts is None:
            return None
        age = time.time() - ts
        return age if age > STALE_AFTER_S else None

    def _check_stale(self) -> None:
        shown = self.kit_banner.layout.display != "none"
        if self.state == "ready" and (self._stale_seconds() is not None or shown):
            self._render_banner()

    def flush_values(self) -> None:
        """Copy the kit's latest values into the widgets (on the loop, coalesced)."""
        self.readings.show(self.kit.latest, self.kit.latest_ts)
        actuators = (self.control or self.kit).actuators or self.kit.actuators
        for name, control in self.controls.items():
            control.show_kit_value(actuators.get(name))

    def snapshot_html(self) -> Markup:
        """The kit's header and latest values as static HTML: what the page shows from its
        first paint until the widgets are live (see `labs.pages.PageBox`)."""
        return html(
            "{}{}<p style='color:#555'><i>{}</i></p>",
            self.header_html,
            self.readings.html(self.kit.latest, self.kit.latest_ts),
            self.texts("first_paint"),
        )

    def flush_history(self) -> None:
        """Redraw the plots' lines over the chosen window (on the loop, coalesced)."""
        now = time.time()
        for name, plot in self.plots.items():
            if name in self._enums:
                t, v = self._enums[name].arrays()
            else:
                t, v = self.kit.history(name)
                if name in self._backfill:
                    t, v = _joined(self._backfill[name], (t, v))
            plot.show_history(t, v, self.window_s, now)

    # ------------------------------------------------------------ time window

    def _window_changed(self, change: dict[str, Any]) -> None:
        if self._relabelling or change["new"] is None:
            return
        self.window_s = int(change["new"])
        self.lines.interval = redraw_interval(self.window_s)
        self.flush_history()  # the person's choice shows at once, whatever the interval
        self._fetch_backfill()

    def _fetch_backfill(self) -> None:
        """Older samples than this page has seen, from the service's recorded history."""
        if self.service is None or not self.plots:
            return
        numeric = [n for n in self.plots if n not in self._enums]
        oldest = (
            min((self.kit.history(n)[0][:1].tolist() or [time.time()])[0] for n in numeric)
            if numeric
            else time.time()
        )
        start = time.time() - self.window_s
        if start >= oldest - 1:
            return
        kit_id = self.kit_id

        def fetch() -> list[dict[str, Any]]:
            return self.service.request(
                "GET",
                f"/api/kits/{kit_id}/history.json",
                query={"from": f"{start:.3f}", "to": f"{oldest:.3f}", "sensors": ",".join(numeric)},
            )

        def got(rows: list[dict[str, Any]]) -> None:
            for name in numeric:
                pairs = [
                    (r["ts"], r["values"][name])
                    for r in rows
                    if isinstance(r["values"].get(name), (int, float))
                ]
                if pairs:
                    data = np.asarray(pairs, dtype=np.float64)
                    self._backfill[name] = (data[:, 0], data[:, 1])
            self.flush_history()

        self.runner.submit(
            fetch,
            done=got,
            failed=lambda err: (
                log.info("no recorded history: %s", err)
                if isinstance(err, LabServiceError)
                else None
            ),
        )

    # ------------------------------------------------------------ control

    def set_control(self, kit: Kit | None, ends_at: float | None) -> None:
        """The session panel's hand-over: the kit through the control account, or None."""
        self.control, self.ends_at = kit, ends_at
        for control in self.controls.values():
            control.pending = False
            control.set_enabled(kit is not None)
        self._render_hint()
        self.coalescer.mark()

    def _submit(self, actuator: str, value: Any) -> None:
        control = self.controls[actuator]
        kit = self.control
        if kit is None:
            control.settled()
            return
        shown = value  # formatted when shown, in the page's language then

        def applied(ack: Ack) -> None:
            ms = round((ack.round_trip_s or 0) * 1000)
            self._ack("applied", "ack_applied", target=actuator, value=shown, ms=ms)
            control.settled(ack.value)

        def failed(err: BaseException) -> None:
            control.settled()
            if isinstance(err, CommandRejected):
                self._ack(
                    "rejected",
                    "ack_rejected",
                    target=actuator,
                    value=shown,
                    reason_code=err.reason,
                    detail=err.detail,
                )
            elif isinstance(err, CommandNotAuthorized):
                self._ack(
                    "rejected",
                    "ack_failed",
                    target=actuator,
                    value=shown,
                    reason_code="not_authorized",
                )
            elif isinstance(err, CommandTimeout):
                self._ack(
                    "rejected", "ack_failed", target=actuator, value=shown, reason_code="timeout"
                )
            elif isinstance(err, LabClosed):
                self._ack(
                    "rejected", "ack_failed", target=actuator, value=shown, reason_code="closed"
                )
            else:
                self._ack(
                    "rejected",
                    "ack_failed",
                    target=actuator,
                    value=shown,
                    reason_code=None,
                    detail=str(err),
                )

        self.runner.submit(kit.set, actuator, value, done=applied, failed=failed)

    def _refused(self, actuator: str, text: str, why: str) -> None:
        self._ack(
            "rejected",
            "ack_failed",
            target=actuator,
            value=text[:40],
            typed=True,
            reason_code=None,
            detail=why,
        )

    def _ack(self, status: str, key: str, **fields: Any) -> None:
        self.acks.append((status, key, fields))
        self._render_acks()

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        self._stop_stale()


def _joined(
    older: tuple[np.ndarray, np.ndarray], newer: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    t_old, v_old = older
    t_new, v_new = newer
    if len(t_new):
        keep = t_old < t_new[0]
        t_old, v_old = t_old[keep], v_old[keep]
    return np.concatenate((t_old, t_new)), np.concatenate((v_old, v_new.astype(np.float64)))
