"""The lab overview board: every kit with its MQTT state, pool state (maintenance, needs
attention), holder's institution, queue length and its latest values as sparklines.

MQTT (an observer account) gives the states and values; the lab service, when the page has a
token for it, gives the pool, holder and queue columns (polled). Without the service the board
still shows every kit live. It has no controls: the public board is read-only.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from typing import Any

import ipywidgets as W

from hardware_kits import protocol as P
from hardware_kits.mqtt import BrokerAddress, ConnectError
from labs.client import Kit, Lab, LabService, LabServiceUnavailable
from labs.i18n import CATALOGUES, DEFAULT, Texts
from labs.widgets.kit_picture import ALL_KITS, Frame, FrameFeed, KitPicture
from labs.widgets.live import Coalescer, Runner
from labs.widgets.markup import Markup, html, join, text
from labs.widgets.plots import Sparkline, format_value

log = logging.getLogger(__name__)

SPARK_WINDOW_S = 120.0
NUMERIC = ("float", "integer", "boolean")
COLUMNS = (
    ("kit", "200px"),
    ("model", "150px"),
    ("status", "110px"),
    ("availability", "170px"),
    ("holder", "110px"),
    ("queue", "70px"),
    ("values", "auto"),
)


def state_badge(texts: Texts, state: str | None) -> Markup:
    state = state or "none"
    colour = {"ready": "#1a7f37", "lost": "#b42318"}.get(state, "#8a6d00")
    return html(
        "<span class='smartlab-kit-state' data-state='{}' style='color:{}'>● {}</span>",
        state,
        colour,
        texts.state(state),
    )


AVAILABILITY_COLOURS = {
    "available": "#1a7f37",
    "in-use": "#0b5cad",
    "maintenance": "#8a6d00",
    "needs-attention": "#b42318",
}


def availability(kit: dict[str, Any]) -> str:
    """available / in-use / maintenance / needs-attention: the public route's field, or the
    same worked out from an authenticated /api/kits view."""
    if kit.get("availability"):
        return str(kit["availability"])
    if kit.get("pool") != "in-pool":
        return str(kit.get("pool") or "")
    return "in-use" if kit.get("session_state") else "available"


def pool_badge(texts: Texts, kit: dict[str, Any] | None) -> Markup:
    """The pool state (the admin view), with the admin's reason."""
    if kit is None:
        return html("<span class='smartlab-pool' data-pool=''>–</span>")
    pool = kit["pool"]
    colour = {"in-pool": "#1a7f37", "maintenance": "#8a6d00", "needs-attention": "#b42318"}.get(
        pool, "#555"
    )
    reason = html("<br><small>{}</small>", kit["reason"]) if kit.get("reason") else ""
    return html(
        "<span class='smartlab-pool' data-pool='{}' style='color:{}'>{}</span>{}",
        pool,
        colour,
        texts.state(pool),
        reason,
    )


def availability_badge(texts: Texts, kit: dict[str, Any] | None) -> Markup:
    """The board's availability in words; the reason only where the viewer's view has it."""
    if kit is None:
        return html("<span class='smartlab-availability' data-availability=''>–</span>")
    state = availability(kit)
    key = "avail_" + state.replace("-", "_")
    reason = html("<br><small>{}</small>", kit["reason"]) if kit.get("reason") else ""
    return html(
        "<span class='smartlab-availability' data-availability='{}' style='color:{}'>{}</span>{}",
        state,
        AVAILABILITY_COLOURS.get(state, "#555"),
        texts(key) if key in CATALOGUES[DEFAULT] else state,
        reason,
    )


def labelled(label: str, value: Markup) -> Markup:
    """A cell's value with its column's name before it, shown only where the board is a stack
    of cards (narrow screens: the header row is hidden there, see the smartlab template)."""
    return html("<span class='smartlab-cell-label'>{}: </span>{}", label, value)


class BoardRow:
    def __init__(self, kit: Kit, texts: Texts) -> None:
        self.kit = kit
        self.texts = texts
        descriptor = kit.descriptor or {}
        self.sparks = [
            Sparkline(name, spec, texts)
            for name, spec in descriptor.get("sensors", {}).items()
            if spec.get("datatype") in NUMERIC
        ]
        self.cells = {
            key: W.HTML(layout=W.Layout(width=width, flex="0 0 auto"))
            for key, width in COLUMNS[:-1]
        }
        for key, cell in self.cells.items():
            cell.add_class(f"smartlab-board-{key}")  # the card layout's handles (template)
        values = W.HBox(
            [s.widget for s in self.sparks], layout=W.Layout(flex_flow="row wrap", flex="1 1 auto")
        )
        values.add_class("smartlab-board-values")
        self.widget = W.HBox(
            [*self.cells.values(), values],
            layout=W.Layout(border_bottom="1px solid #eee", padding="2px 0", align_items="center"),
        )
        self.widget.add_class("smartlab-board-row")
        self.widget.add_class(f"smartlab-board-row-{kit.kit_id}")
        self.service_view: dict[str, Any] | None = None
        self.descriptor = descriptor
        # A live state on screen: the page's first paint (`snapshot_html`) gives way.
        self.cells["status"].add_class("smartlab-live")
        texts.bind(self._render_names)

    def _render_names(self) -> None:
        t = self.texts
        self.kit_html = html(
            "<b class='smartlab-board-kit' data-kit='{kit}'>{kit}</b>", kit=self.kit.kit_id
        )
        # The model by its name (the code is in data-model for tests and styles).
        self.model_html = html(
            "<span class='smartlab-model' data-model='{}'>{}</span>",
            str(self.descriptor.get("model", "")),
            t.name(self.descriptor, str(self.descriptor.get("model", ""))),
        )
        self.cells["kit"].value = self.kit_html
        self.cells["model"].value = self.model_html

    def values_text(self) -> Markup:
        latest = self.kit.latest
        return join(
            (
                html(
                    "{}: <b>{}</b>",
                    self.texts.name(s.spec, s.sensor),
                    format_value(latest.get(s.sensor), s.spec, self.texts),
                )
                for s in self.sparks
            ),
            " · ",
        )

    def render(self, now: float) -> None:
        t, view = self.texts, self.service_view
        self.cells["status"].value = labelled(t("status"), state_badge(t, self.kit.state))
        self.cells["availability"].value = labelled(t("availability"), availability_badge(t, view))
        holder = (view or {}).get("holder_institution")
        holder_text = text(t.institution(holder) if holder else (t("holder_none") if view else "–"))
        self.cells["holder"].value = labelled(t("holder"), holder_text)
        queue = text(view["queue_length"] if view else "–")
        self.cells["queue"].value = labelled(t("queue"), queue)
        latest = self.kit.latest
        for spark in self.sparks:
            tt, vv = self.kit.history(spark.sensor)
            spark.show(latest.get(spark.sensor), tt, vv, now - SPARK_WINDOW_S)


class OverviewBoard:
    def __init__(
        self,
        lab: Lab,
        runner: Runner,
        texts: Texts,
        *,
        service: LabService | None = None,
        public: bool = False,
        max_rate: float = 2.0,
        service_poll_s: float = 3.0,
    ) -> None:
        self.lab = lab
        self.runner = runner
        self.texts = texts
        self.service = service
        self.public = public
        self.rows: dict[str, BoardRow] = {}
        self.service_kits: dict[str, dict[str, Any]] = {}
        self.coalescer = Coalescer(runner, self.flush, max_rate)
        self.title = W.HTML()
        self.note = W.HTML()
        self.stamp = W.HTML()
        self.head_cells = [
            W.HTML(layout=W.Layout(width=width, flex="0 0 auto")) for _key, width in COLUMNS
        ]
        self.head = W.HBox(
            self.head_cells,
            layout=W.Layout(border_bottom="2px solid #ccc"),
        )
        self.head.add_class("smartlab-board-head")  # hidden on phones: a card per kit there
        self.body = W.VBox()
        self.widget = W.VBox([self.title, self.note, self.head, self.body, self.stamp])
        self.widget.add_class("smartlab-overview")
        self.banner: Any = None
        self.thumbnails: dict[str, KitPicture] | None = None  # once `add_thumbnails` ran
        self.thumb_feed: FrameFeed | None = None
        self._thumb_infos: dict[str, dict[str, Any] | None] = {}  # `$camera` before the row
        texts.bind(self._render_frame)
        self._unsubscribe: list = [lab.on_state(lambda *_: runner.from_thread(self._changed))]
        self._stops = [runner.every(2.0, self._discover)]
        if service is not None:
            self._stops.append(runner.every(service_poll_s, self._poll_service))
        self._discover()

    def _render_frame(self) -> None:
        t = self.texts
        self.title_html = html("<h3 style='margin:4px 0'>{}</h3>", t("overview"))
        self.note_html = html("<small>{}</small>", t("public_note")) if self.public else text("")
        self.title.value, self.note.value = self.title_html, self.note_html
        for cell, (key, _width) in zip(self.head_cells, COLUMNS, strict=True):
            cell.value = html("<b>{}</b>", t(key))
        self.coalescer.mark()

    def _discover(self) -> None:
        """New kits announce themselves at any time: add a row for each."""
        known = set(self.lab.kits()) | set(self.service_kits)
        added = False
        for kit_id in sorted(known - set(self.rows)):
            try:
                kit = self.lab.kit(kit_id, timeout=0)
            except Exception:  # registered with the service but never seen on the broker
                continue
            self.rows[kit_id] = BoardRow(kit, self.texts)
            self._add_thumbnail(kit_id)
            self._unsubscribe.append(
                kit.subscribe(lambda *_: self.runner.from_thread(self._changed))
            )
            added = True
        if added:
            self.body.children = [self.rows[k].widget for k in sorted(self.rows)]
            self._changed()

    def _changed(self) -> None:
        self.coalescer.mark()

    def _poll_service(self) -> None:
        def got(kits: list[dict[str, Any]]) -> None:
            if self.banner is not None:
                self.banner.up()
            self.service_kits = {k["id"]: k for k in kits}
            self._discover()
            self.coalescer.mark()

        def failed(err: BaseException) -> None:
            if self.banner is not None and isinstance(err, LabServiceUnavailable):
                self.banner.down(err)

        # The public board has no identity: the service's public route, without reasons.
        fetch = self.service.board if self.public else self.service.kits
        self.runner.submit(fetch, done=got, failed=failed)

    def flush(self) -> None:
        now = time.time()
        for kit_id, row in self.rows.items():
            row.service_view = self.service_kits.get(kit_id)
            row.render(now)
        clock = dt.datetime.fromtimestamp(now).strftime("%H:%M:%S")
        self.stamp.value = html("<small>{}</small>", self.texts("updated", time=clock))

    def snapshot_html(self) -> Markup:
        """Every kit's state and latest values as static HTML: what the page shows from its
        first paint until the widgets are live (see `labs.pages.PageBox`)."""
        t = self.texts
        head = join(
            html("<th style='text-align:left'>{}</th>", t(key))
            for key in ("kit", "model", "status", "values")
        )
        rows = join(
            html(
                "<tr data-kit='{}'><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                kit_id,
                row.kit_html,
                row.model_html,
                state_badge(t, row.kit.state),
                row.values_text(),
            )
            for kit_id, row in sorted(self.rows.items())
        )
        return html(
            "{}{}<table><tr>{}</tr>{}</table><p style='color:#555'><i>{}</i></p>",
            self.title_html,
            self.note_html,
            head,
            rows,
            t("first_paint"),
        )

    # ------------------------------------------------------------ thumbnails

    def add_thumbnails(self, address: BrokerAddress) -> None:
        """A small live picture first in every kit's row: the `thumb` stream of every kit over
        one connection (96 x 72 at 1 frame/s: the broker sends this board no full frames)."""
        self.thumbnails = {}
        self._thumb_head = W.HTML(layout=W.Layout(width="104px", flex="0 0 auto"))
        self.texts.label(self._thumb_head, "picture_col", "value")
        self.head.children = (self._thumb_head, *self.head.children)
        try:
            self.thumb_feed = FrameFeed(
                address,
                ALL_KITS,
                P.STREAM_THUMB,
                lambda frame: self.runner.from_thread(self._thumb_frame, frame),
                lambda kit_id, info: self.runner.from_thread(self._thumb_info, kit_id, info),
            )
        except ConnectError as err:  # the board still shows every kit's values
            log.warning("no thumbnails: %s", err)
        for kit_id in self.rows:
            self._add_thumbnail(kit_id)

    def _add_thumbnail(self, kit_id: str) -> None:
        if self.thumbnails is None or kit_id in self.thumbnails:
            return
        picture = KitPicture(kit_id, self.runner, self.texts, stream=P.STREAM_THUMB)
        picture.widget.layout.margin = "2px 8px 2px 0"
        if kit_id in self._thumb_infos:
            picture.camera_info(self._thumb_infos[kit_id])
        self.thumbnails[kit_id] = picture
        row = self.rows[kit_id].widget
        row.children = (picture.widget, *row.children)

    def _thumb_frame(self, frame: Frame) -> None:
        picture = (self.thumbnails or {}).get(frame.kit)
        if picture is not None:
            picture.frame(frame)

    def _thumb_info(self, kit_id: str, info: dict[str, Any] | None) -> None:
        self._thumb_infos[kit_id] = info
        picture = (self.thumbnails or {}).get(kit_id)
        if picture is not None:
            picture.camera_info(info)

    def close(self) -> None:
        if self.thumb_feed is not None:
            self.thumb_feed.close()
        for picture in (self.thumbnails or {}).values():
            picture.close()
        for stop in self._stops:
            stop()
        for unsubscribe in self._unsubscribe:
            unsubscribe()


def add_thumbnails(page: Any) -> None:
    """The board's live thumbnail per kit (`page.after_build(add_thumbnails)` in
    labs/dashboards/overview.ipynb)."""
    board = getattr(page, "board", None)
    if board is not None and page.lab is not None:
        board.add_thumbnails(page.lab.address)
