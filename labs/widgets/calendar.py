"""The instructors' booking calendar: a week of a course's bookings, a form to book a slot, and
a cancel button (with a confirmation) on each of the viewer's own bookings.

Times: the lab service speaks UTC epoch seconds; the calendar shows and reads them in the
site's local time, i.e. the time zone of the server the dashboard's kernel runs on ($TZ, else
the system's), and says which zone under the week's title. A refusal of the service (a slot
too soon, a clash, a quota) is its one line, worded in the page's language (the client sends
it as Accept-Language), and nothing changes.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import ipywidgets as W

from labs.client import LabService, LabServiceError, LabServiceUnavailable
from labs.i18n import Texts
from labs.widgets.live import Runner
from labs.widgets.markup import Markup, html, join, text

DAY = dt.timedelta(days=1)
FIRST_HOUR, LAST_HOUR = 8, 20  # the hours always shown; bookings outside widen the range
SLOT_MIN = 15  # the grid's and the form's step
DURATIONS_MIN = (15, 30, 45, 60, 90, 120, 180, 240)


# ---------------------------------------------------------------- the week grid (pure)


def local(t: float, tz: dt.tzinfo | None = None) -> dt.datetime:
    """Epoch seconds as the site's wall-clock time (naive local time when `tz` is None)."""
    return dt.datetime.fromtimestamp(t, tz)


def week_of(t: float, tz: dt.tzinfo | None = None) -> dt.datetime:
    """Monday 00:00 of the week holding `t`, in the site's time."""
    day = local(t, tz).replace(hour=0, minute=0, second=0, microsecond=0)
    return day - day.weekday() * DAY


@dataclass(frozen=True)
class Block:
    """A booking's part within one day of the week: minutes after that day's midnight."""

    booking: dict[str, Any]
    day: int  # 0 = Monday
    start_min: int
    end_min: int


def blocks(
    bookings: Iterable[dict[str, Any]], monday: dt.datetime, tz: dt.tzinfo | None = None
) -> list[Block]:
    """Where the bookings fall in the week starting `monday`: one block per day they touch
    (a booking over midnight is two), cut to the week."""
    placed: list[Block] = []
    for b in bookings:
        if b.get("cancelled"):
            continue
        start, end = local(b["starts_at"], tz), local(b["ends_at"], tz)
        for day in range(7):
            midnight = monday + day * DAY  # wall-clock arithmetic, also across DST changes
            next_midnight = midnight + DAY
            if end <= midnight or start >= next_midnight:
                continue
            first = max(start, midnight) - midnight
            last = min(end, next_midnight) - midnight
            placed.append(
                Block(b, day, int(first.total_seconds() // 60), int(-(-last.total_seconds() // 60)))
            )
    return placed


def hour_range(placed: Iterable[Block]) -> tuple[int, int]:
    """First and last (exclusive) hour rows: the working day, widened to every block."""
    first, last = FIRST_HOUR, LAST_HOUR
    for block in placed:
        first = min(first, block.start_min // 60)
        last = max(last, -(-block.end_min // 60))
    return first, last


def grid_html(
    texts: Texts, monday: dt.datetime, placed: list[Block], me: str, today: dt.date
) -> Markup:
    """The week as a CSS grid: days as columns, hours as rows (four rows an hour), each block
    labelled with its course and kit; every value escaped."""
    first, last = hour_range(placed)
    rows = (last - first) * 60 // SLOT_MIN
    day_names = texts("cal_weekdays").split(",")
    heads = join(
        html(
            "<div class='smartlab-cal-day{}' style='grid-column:{};grid-row:1'>{} {}</div>",
            " smartlab-cal-today" if (monday + d * DAY).date() == today else "",
            d + 2,
            day_names[d] if d < len(day_names) else "",
            (monday + d * DAY).strftime("%d.%m"),
        )
        for d in range(7)
    )
    hours = join(  # each hour: its label, and a line across the days (under the blocks)
        html(
            "<div class='smartlab-cal-hour' style='grid-column:1;grid-row:{0} / span 4'>"
            "{1:02d}:00</div><div class='smartlab-cal-line' style='grid-column:2 / 9;"
            "grid-row:{0} / span 4'></div>",
            (h - first) * 4 + 2,
            h,
        )
        for h in range(first, last)
    )
    cells = join(
        html(
            "<div class='smartlab-cal-block{}' style='grid-column:{};grid-row:{} / {}' "
            "title='{}'><b>{}</b><br>{}<br><small>{}–{}</small></div>",
            " smartlab-cal-mine" if b.booking.get("booked_by") == me else "",
            b.day + 2,
            max(0, b.start_min - first * 60) // SLOT_MIN + 2,
            max(1, -(-(b.end_min - first * 60) // SLOT_MIN)) + 2,
            texts(
                "cal_block_title",
                course=b.booking.get("course", ""),
                kit=b.booking.get("kit", ""),
                who=b.booking.get("booked_by", ""),
            ),
            b.booking.get("course", ""),
            b.booking.get("kit", ""),
            f"{b.start_min // 60:02d}:{b.start_min % 60:02d}",
            f"{b.end_min // 60 % 24:02d}:{b.end_min % 60:02d}",
        )
        for b in placed
    )
    return html(
        "<div class='smartlab-cal-scroll' style='overflow-x:auto'>"
        "<div class='smartlab-cal-grid' role='group' aria-label='{}' style='display:grid;"
        "grid-template-columns:3.2em repeat(7,minmax(44px,1fr));"
        "grid-template-rows:auto repeat({},11px);min-width:360px;font-size:12px'>"
        "{}{}{}</div></div>"
        "<style>.smartlab-cal-day{{font-weight:600;text-align:center;padding:2px;"
        "background:#f2f4f7;border-bottom:1px solid #d0d5dd}}.smartlab-cal-today{{"
        "background:#dbeafe}}.smartlab-cal-hour{{color:#475467;padding-right:4px;"
        "text-align:right}}.smartlab-cal-line{{border-top:1px solid #e4e7ec}}"
        ".smartlab-cal-block{{background:#d1e9ff;border:1px solid #2e90fa;"
        "border-radius:4px;margin:0 1px;padding:1px 3px;overflow:hidden;line-height:1.2}}"
        ".smartlab-cal-mine{{background:#fef0c7;border-color:#dc6803}}</style>",
        texts("cal_grid_label"),
        rows,
        heads,
        hours,
        cells,
    )


# ---------------------------------------------------------------- the form (pure)


def slot(
    day: dt.date | None, start: str | None, minutes: int | None, tz: dt.tzinfo | None = None
) -> tuple[float, float] | str:
    """The form's slot as UTC epoch seconds (starts_at, ends_at), or the i18n key of what is
    missing or wrong. The service checks the rules (how far ahead, length, quotas)."""
    if day is None:
        return "cal_need_day"
    try:
        hour, minute = (int(part) for part in (start or "").split(":"))
        starts = dt.datetime.combine(day, dt.time(hour, minute), tzinfo=tz)
    except ValueError:
        return "cal_need_start"
    if not minutes or minutes <= 0:
        return "cal_need_duration"
    ends = starts + dt.timedelta(minutes=minutes)
    return starts.timestamp(), ends.timestamp()


def duration_label(texts: Texts, minutes: int) -> str:
    hours, rest = divmod(minutes, 60)
    if not hours:
        return texts("cal_minutes", n=rest)
    if not rest:
        return texts("cal_hours", n=hours)
    return texts("cal_hours_minutes", h=hours, m=rest)


# ---------------------------------------------------------------- the widget


class BookingCalendar:
    """One course's week of bookings, booking and cancelling as the viewer (an instructor).

    `refresh()` is called by its owner with fresh bookings (`show(bookings)`); calls to the
    service run in the runner's pool, answers are applied on the loop."""

    def __init__(
        self,
        service: LabService,
        me: str,
        texts: Texts,
        runner: Runner,
        *,
        changed: Callable[[], None] = lambda: None,
        tz: dt.tzinfo | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.service, self.me, self.texts, self.runner = service, me, texts, runner
        self.changed = changed  # ask the owner to fetch the bookings again
        self.tz = tz
        self.clock = clock or time.time
        self.course: str = ""
        self.kits: list[str] = []
        self.bookings: list[dict[str, Any]] = []
        self.monday = week_of(self.clock(), tz)
        self._pending_cancel: dict[str, Any] | None = None

        self.title = W.HTML()
        self.prev = W.Button(icon="chevron-left", layout=W.Layout(width="auto"))
        self.next = W.Button(icon="chevron-right", layout=W.Layout(width="auto"))
        self.today = W.Button(layout=W.Layout(width="auto"))
        for button, key in ((self.prev, "cal_prev"), (self.next, "cal_next")):
            texts.label(button, key, "tooltip")
            texts.label(button, key)
        texts.label(self.today, "cal_this_week")
        self.prev.on_click(lambda _b: self.move(-1))
        self.next.on_click(lambda _b: self.move(1))
        self.today.on_click(lambda _b: self.move(0))
        self.grid = W.HTML()
        self.grid.add_class("smartlab-calendar-grid")
        self.mine = W.VBox()
        self.mine.add_class("smartlab-calendar-mine")
        self.confirm_text = W.HTML()
        self.confirm_yes = W.Button(button_style="danger")
        self.confirm_no = W.Button()
        texts.label(self.confirm_yes, "cal_confirm_yes")
        texts.label(self.confirm_no, "cal_confirm_no")
        self.confirm_yes.on_click(lambda _b: self._cancel_confirmed())
        self.confirm_no.on_click(lambda _b: self._ask_cancel(None))
        self.confirm = W.HBox(
            [self.confirm_text, self.confirm_yes, self.confirm_no],
            layout=W.Layout(display="none", flex_flow="row wrap", align_items="center"),
        )
        self.confirm.add_class("smartlab-calendar-confirm")

        self.kit = W.Dropdown(layout=W.Layout(width="240px"))
        self.day = W.DatePicker(layout=W.Layout(width="240px"))
        self.start = W.Dropdown(
            options=[f"{m // 60:02d}:{m % 60:02d}" for m in range(0, 24 * 60, SLOT_MIN)],
            value="10:00",
            layout=W.Layout(width="240px"),
        )
        self.duration = W.Dropdown(layout=W.Layout(width="240px"))
        for widget, key in (
            (self.kit, "cal_kit"),
            (self.day, "cal_day"),
            (self.start, "cal_start"),
            (self.duration, "cal_duration"),
        ):
            texts.label(widget, key)
            texts.label(widget, key, "tooltip")  # else the date field's title reads "null"
            widget.style = {"description_width": "110px"}
            widget.add_class(f"smartlab-form-{key.removeprefix('cal_')}")  # .smartlab-form-kit
        self.book_button = W.Button(button_style="primary", icon="calendar")
        texts.label(self.book_button, "cal_book")
        texts.label(self.book_button, "cal_book", "tooltip")
        self.book_button.on_click(lambda _b: self.book())
        self.status = W.HTML()
        self.status.add_class("smartlab-calendar-status")
        texts.bind(self._relabel_durations)

        self.form = W.VBox(
            [self.kit, self.day, self.start, self.duration, self.book_button, self.status],
            layout=W.Layout(max_width="100%"),
        )
        self.form.add_class("smartlab-calendar-form")
        self.widget = W.VBox(
            [
                W.HBox(
                    [self.prev, self.today, self.next],
                    layout=W.Layout(flex_flow="row wrap"),
                ),
                self.title,
                self.grid,
                self.mine,
                self.confirm,
                self.form,
            ],
            layout=W.Layout(max_width="100%"),
        )
        self.widget.add_class("smartlab-calendar")
        texts.bind(self.render)

    # ------------------------------------------------------------ showing

    def show(self, course: str, kits: list[str], bookings: list[dict[str, Any]]) -> None:
        """The course's kits and its bookings (the service's answer), drawn at once."""
        self.course, self.bookings = course, [b for b in bookings if b.get("course") == course]
        if kits != self.kits:
            self.kits = kits
            self.kit.options = kits
            self.kit.value = kits[0] if kits else None
        self.render()

    def move(self, weeks: int) -> None:
        """Show the previous (-1) or next (1) week, or this week (0)."""
        if weeks:
            self.monday = week_of((self.monday + weeks * 7 * DAY + DAY / 2).timestamp(), self.tz)
        else:
            self.monday = week_of(self.clock(), self.tz)
        self.render()

    def render(self) -> None:
        t = self.texts
        sunday = self.monday + 6 * DAY
        zone = local(self.clock(), self.tz).astimezone(self.tz).strftime("%Z, UTC%z")
        self.title.value = html(
            "<div><b>{}</b> {}–{}<br><small>{}</small></div>",
            t("cal_week", course=self.course),
            self.monday.strftime("%d.%m"),
            sunday.strftime("%d.%m.%Y"),
            t("cal_zone", zone=zone),
        )
        placed = blocks(self.bookings, self.monday, self.tz)
        today = local(self.clock(), self.tz).date()
        self.grid.value = grid_html(t, self.monday, placed, self.me, today)
        self._render_mine()

    def _render_mine(self) -> None:
        """A cancel button for each of the viewer's coming bookings of the course, any week."""
        t = self.texts
        now = self.clock()
        own = sorted(
            (
                b
                for b in self.bookings
                if b.get("booked_by") == self.me and not b.get("cancelled") and b["ends_at"] > now
            ),
            key=lambda b: b["starts_at"],
        )
        rows: list[W.Widget] = []
        for booking in own:
            label = W.HTML(html("<span>{}</span>", self.describe(booking)))
            cancel = W.Button(icon="times", layout=W.Layout(width="auto"))
            cancel.description = t("cal_cancel")
            cancel.tooltip = t("cal_cancel_tooltip", what=self.describe(booking))
            cancel.on_click(lambda _b, booking=booking: self._ask_cancel(booking))
            rows.append(W.HBox([label, cancel], layout=W.Layout(flex_flow="row wrap")))
        if not rows:
            rows = [W.HTML(text(t("cal_no_own")))]
        self.mine.children = [W.HTML(html("<b>{}</b>", t("cal_own"))), *rows]

    def describe(self, booking: dict[str, Any]) -> str:
        start, end = local(booking["starts_at"], self.tz), local(booking["ends_at"], self.tz)
        return self.texts(
            "cal_booking",
            kit=booking.get("kit", ""),
            day=start.strftime("%d.%m"),
            start=start.strftime("%H:%M"),
            end=end.strftime("%H:%M"),
        )

    def _relabel_durations(self) -> None:
        value = self.duration.value or 60
        self.duration.options = [(duration_label(self.texts, m), m) for m in DURATIONS_MIN]
        self.duration.value = value

    def say(self, key: str, error: bool = False, **fields: Any) -> None:
        colour = "#b42318" if error else "#067647"
        self.status.value = html(
            "<span role='status' style='color:{}'>{}</span>", colour, self.texts(key, **fields)
        )

    # ------------------------------------------------------------ booking and cancelling

    def book(self) -> None:
        if not self.kit.value:
            self.say("cal_need_kit", error=True)
            return
        times = slot(self.day.value, self.start.value, self.duration.value, self.tz)
        if isinstance(times, str):
            self.say(times, error=True)
            return
        kit, course = self.kit.value, self.course
        self.book_button.disabled = True
        self.runner.submit(
            lambda: self.service.book(kit, course, times[0], times[1]),
            done=self._booked,
            failed=self._refused,
        )

    def _booked(self, booking: dict[str, Any]) -> None:
        self.book_button.disabled = False
        self.bookings = [*self.bookings, booking]
        self.monday = week_of(booking["starts_at"], self.tz)  # show where it landed
        self.render()
        self.say("cal_booked", what=self.describe(booking))
        self.changed()

    def _refused(self, err: BaseException) -> None:
        self.book_button.disabled = False
        self.cancel_done()
        if isinstance(err, LabServiceUnavailable):
            self.say("cal_unreachable", error=True, detail=str(err))
        elif isinstance(err, LabServiceError):
            self.say("cal_refused", error=True, reason=err.reason)  # the service's own line
        else:
            self.say("reason_other", error=True, detail=str(err))

    def _ask_cancel(self, booking: dict[str, Any] | None) -> None:
        self._pending_cancel = booking
        if booking is None:
            self.confirm.layout.display = "none"
            return
        self.confirm_text.value = html(
            "<span>{}</span>", self.texts("cal_confirm", what=self.describe(booking))
        )
        self.confirm.layout.display = "flex"

    def _cancel_confirmed(self) -> None:
        booking = self._pending_cancel
        if booking is None:
            return
        self.confirm_yes.disabled = True
        self.runner.submit(
            lambda: self.service.cancel_booking(booking["id"]),
            done=self._cancelled,
            failed=self._refused,
        )

    def _cancelled(self, booking: dict[str, Any]) -> None:
        self.cancel_done()
        self.bookings = [b for b in self.bookings if b["id"] != booking["id"]]
        self.render()
        self.say("cal_cancelled", what=self.describe(booking))
        self.changed()

    def cancel_done(self) -> None:
        self.confirm_yes.disabled = False
        self._ask_cancel(None)
