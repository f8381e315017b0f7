"""The kit dashboard's replay mode: a recorded range of a kit from the lab service's history
(never the live kit), with play, pause, speed ×1–×32 and a scrub slider.

`kit.ipynb?kit=<kit>&start=<epoch s>&end=<epoch s>` opens it (a shareable link: the service
answers each viewer within their own rights, and a viewer outside them sees the service's
one-line refusal and no data). The position is tenths of a second from the range's start; an
ipywidgets `Play` drives the slider through a front-end link, so playing costs the kernel one
render per tick and scrubbing lands wherever the slider is let go.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from labs.client import LabService, LabServiceError, Replay, fetch_replay
from labs.i18n import Texts
from labs.widgets.markup import Markup, html, join
from labs.widgets.plots import SensorPlot, plotted
from labs.widgets.readings import Readings

SPEEDS = (1, 2, 4, 8, 16, 32)
TICK_MS = 100  # one Play step per tick; a step is 0.1 s of recording × the speed
RECENT_H = 3  # lab admins' links: a kit's last hours
COMMAND_LINES = 12


def replay_link(kit_id: str, start: float, end: float) -> str:
    """The kit dashboard's URL query that opens a range in replay mode."""
    return f"?kit={kit_id}&start={start:.3f}&end={end:.3f}"


def clock(ts: float) -> str:
    """Date and time as the readings row shows times (the server's local time)."""
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


class ReplayView:
    """A recorded range on one page: plots, the readings row, the commands up to the cursor,
    the picture where one was recorded."""

    def __init__(
        self,
        service: LabService,
        kit_id: str,
        start: float,
        end: float,
        texts: Texts,
        descriptor: dict[str, Any] | None,
    ) -> None:
        self.service, self.kit_id, self.texts = service, kit_id, texts
        began = time.perf_counter()
        self.record: Replay = fetch_replay(service, kit_id, start, end)
        self.fetch_s = time.perf_counter() - began
        sensors = (descriptor or {}).get("sensors", {})
        self.readings = Readings(sensors, texts)
        self.plots = [
            SensorPlot(name, spec, height="150px", texts=texts)
            for name, spec in sensors.items()
            if plotted(spec)
        ]
        self._series = {p.sensor: self.record.series(p.sensor) for p in self.plots}
        ticks = max(1, round((self.record.end - self.record.start) * 10))
        self.slider = W.IntSlider(0, min=0, max=ticks, readout=False, layout=W.Layout(width="100%"))
        self.slider.add_class("smartlab-replay-slider")
        self.play = W.Play(0, min=0, max=ticks, step=1, interval=TICK_MS)
        self.play.add_class("smartlab-replay-play")
        W.jslink((self.play, "value"), (self.slider, "value"))
        self.speed = W.Dropdown(
            options=[(f"×{s}", s) for s in SPEEDS], value=1, layout=W.Layout(width="80px")
        )
        self.speed.add_class("smartlab-replay-speed")
        self.speed.observe(lambda ch: setattr(self.play, "step", ch["new"]), "value")
        self.header = W.HTML()
        self.header.add_class("smartlab-replay-header")
        self.position = W.HTML()
        self.position.add_class("smartlab-replay-position")
        self.commands = W.HTML()
        self.commands.add_class("smartlab-replay-commands")
        self.picture = W.Image(format="jpeg", layout=W.Layout(max_width="100%", display="none"))
        self.picture.add_class("smartlab-replay-picture")
        self._frame_url: str | None = None
        self.slider.observe(lambda _ch: self.render(), "value")
        texts.bind(self._relabel)
        self.widget = W.VBox(
            [
                self.header,
                W.HBox([self.play, self.speed, self.position], layout=W.Layout(flex_flow="wrap")),
                self.slider,
                self.readings.widget,
                self.picture,
                *[p.widget for p in self.plots],
                self.commands,
            ],
            layout=W.Layout(max_width="100%"),
        )
        self.widget.add_class("smartlab-replay")
        self._draw_plots()
        self.render()

    @property
    def cursor(self) -> float:
        return self.record.start + self.slider.value / 10

    def _relabel(self) -> None:
        r = self.record
        self.header.value = html(
            "<b>{}</b> — {} {} – {}",
            self.texts("replay_title"),
            self.kit_id,
            clock(r.start),
            clock(r.end),
        )
        self.speed.description = ""
        self.render()

    def _draw_plots(self) -> None:
        span = self.record.end - self.record.start
        for plot in self.plots:
            t, v = self._series[plot.sensor]
            plot.show_history(t, v, span, self.record.end)

    def render(self) -> None:
        """Everything shown for the cursor's moment."""
        if not hasattr(self, "commands"):
            return
        at = self.cursor
        i = self.record.index_at(at)
        row = self.record.telemetry[i] if i is not None else None
        self.readings.show(dict(row["values"]) if row else {}, row["ts"] if row else None)
        self.position.value = html(
            "<span data-seq='{}' data-ts='{}'>{}</span>",
            row["seq"] if row else "",
            f"{at:.3f}",
            clock(at),
        )
        self.commands.value = self._commands_html(self.record.commands_until(at))
        self._show_frame(at)

    def _commands_html(self, sent: list[dict[str, Any]]) -> Markup:
        if not sent:
            return html("<div>{}</div>", self.texts("replay_no_commands"))
        lines = [
            html(
                "<li class='smartlab-replay-command smartlab-replay-{}'>{} {}: {} = {} — {}{}</li>",
                c["outcome"],
                clock(c["ts"])[11:19],
                self._who(c["who"]),
                c["what"],
                c["value"],
                self.texts(f"replay_{c['outcome']}"),
                f" ({self.texts.reason(c['reason'])})" if c.get("reason") else "",
            )
            for c in sent[-COMMAND_LINES:]
        ]
        return html("<b>{}</b><ul>{}</ul>", self.texts("replay_commands"), join(lines))

    def _who(self, who: str) -> str:
        return self.texts("replay_by_service") if who == "lab-service" else who

    def _show_frame(self, at: float) -> None:
        found = self.record.frame_at(at)
        if found is None:
            self.picture.layout.display = "none"
            return
        if found["url"] != self._frame_url:
            try:
                self.picture.value = self.service.frame_jpeg(found["url"])
            except LabServiceError:
                return
            self._frame_url = found["url"]
        self.picture.layout.display = ""


def replay_view(
    service: LabService | None,
    kit_id: str,
    start: str,
    end: str,
    texts: Texts,
    descriptor: dict[str, Any] | None,
    error_box: Callable[..., W.Widget],
) -> W.Widget:
    """The replay mode's content, or a one-line reason in the page's language (`error_box`:
    the page frame's, labs.pages.error_box)."""
    if service is None:
        return error_box(texts, "replay_needs_service", detail="")
    try:
        return ReplayView(service, kit_id, float(start), float(end), texts, descriptor).widget
    except ValueError:
        return error_box(texts, "replay_bad_link", detail="")
    except LabServiceError as err:
        if err.status == 403:
            return error_box(texts, "replay_forbidden", detail=err.reason)
        return error_box(texts, "service_down", detail=str(err))


def recordings_list(service: LabService | None, kit_id: str, texts: Texts) -> W.HTML:
    """Links to the ranges of this kit the person may replay: their sessions, their courses'
    sessions (instructors), the last hours (lab admins)."""
    box = W.HTML()
    box.add_class("smartlab-recordings")
    if service is None:
        return box
    try:
        me = service.me()
        ranges = [
            (s["granted_at"], s.get("released_at") or s.get("ends_at"), s.get("user", ""))
            for s in service.sessions()
            if s.get("kit") == kit_id
        ]
        for course in me.get("instructor_of", []):
            ranges += [
                (s["granted_at"], s.get("released_at") or s.get("ends_at"), s.get("user", ""))
                for s in service.sessions(course=course)
                if s.get("kit") == kit_id
            ]
    except LabServiceError:
        return box
    now = time.time()
    if me.get("lab_admin"):
        ranges += [(now - h * 3600, now - (h - 1) * 3600, "") for h in range(RECENT_H, 0, -1)]
    ranges = sorted({(float(_ts(a)), float(_ts(b) or now), who) for a, b, who in ranges})[-20:]

    def relabel() -> None:
        if not ranges:
            box.value = html("<div>{}</div>", texts("replay_none"))
            return
        items = [
            html(
                "<li><a class='smartlab-replay-link' href='{}'>{} – {} {}</a></li>",
                replay_link(kit_id, a, b),
                clock(a),
                clock(b)[11:],
                who,
            )
            for a, b, who in reversed(ranges)
        ]
        box.value = html("<b>{}</b><ul>{}</ul>", texts("replay_recordings"), join(items))

    texts.bind(relabel)
    return box


def _ts(value: Any) -> float | None:
    """Session views carry ISO times or epoch seconds."""
    if value is None or isinstance(value, int | float):
        return value
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
