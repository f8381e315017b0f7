"""The instructors' booking calendar without a browser: which bookings fall in which cells of
the week (in the lab's time zone), the form's slot, and booking and cancelling through a fake
service (the service's own refusal line shown, nothing changed)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any
from zoneinfo import ZoneInfo

import ipywidgets as W
import pytest

from labs.client import LabServiceError
from labs.i18n import Texts
from labs.widgets.calendar import (
    Block,
    BookingCalendar,
    blocks,
    grid_html,
    hour_range,
    slot,
    week_of,
)

MSK = ZoneInfo("Europe/Moscow")  # UTC+3 all year
UTC = dt.UTC


def at(text: str, tz: dt.tzinfo = MSK) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=tz).timestamp()


def booking(bid: int, start: str, end: str, who: str = "irina", **more: Any) -> dict[str, Any]:
    return {
        "id": bid,
        "kit": "streetlight-1",
        "course": "smart-lighting",
        "booked_by": who,
        "starts_at": at(start),
        "ends_at": at(end),
        "cancelled": False,
        **more,
    }


def test_the_week_starts_on_monday_midnight_in_the_lab_s_zone():
    # Sunday 22:30 UTC is already Monday 01:30 in Moscow: the next week there.
    sunday_night = at("2026-12-06T22:30", UTC)
    assert week_of(sunday_night, MSK) == dt.datetime(2026, 12, 7, tzinfo=MSK)
    assert week_of(sunday_night, UTC) == dt.datetime(2026, 11, 30, tzinfo=UTC)


def test_bookings_fall_in_their_day_and_minutes_and_midnight_splits_them():
    monday = dt.datetime(2026, 12, 7, tzinfo=MSK)
    placed = blocks(
        [
            booking(1, "2026-12-08T10:00", "2026-12-08T11:30"),  # Tuesday
            booking(2, "2026-12-10T23:00", "2026-12-11T01:00"),  # Thursday over midnight
            booking(3, "2026-12-14T10:00", "2026-12-14T11:00"),  # next week
            booking(4, "2026-12-09T10:00", "2026-12-09T11:00", cancelled=True),
            booking(5, "2026-12-06T23:00", "2026-12-07T00:30"),  # from last Sunday
        ],
        monday,
        MSK,
    )
    where = [(b.booking["id"], b.day, b.start_min, b.end_min) for b in placed]
    assert where == [
        (1, 1, 600, 690),
        (2, 3, 1380, 1440),
        (2, 4, 0, 60),
        (5, 0, 0, 30),
    ]
    # The same UTC instants seen from UTC: three hours earlier on the clock.
    utc_monday = dt.datetime(2026, 12, 7, tzinfo=UTC)
    first = blocks([booking(1, "2026-12-08T10:00", "2026-12-08T11:30")], utc_monday, UTC)
    assert [(b.day, b.start_min) for b in first] == [(1, 420)]


def test_the_hours_shown_widen_to_every_booking():
    b = booking(1, "2026-12-08T10:00", "2026-12-08T11:00")
    assert hour_range([]) == (8, 20)
    assert hour_range([Block(b, 0, 6 * 60 + 15, 7 * 60)]) == (6, 20)
    assert hour_range([Block(b, 0, 20 * 60, 21 * 60 + 1)]) == (8, 22)


def test_the_grid_places_blocks_in_rows_and_columns_and_escapes_every_value():
    monday = dt.datetime(2026, 12, 7, tzinfo=MSK)
    hostile = booking(1, "2026-12-08T10:00", "2026-12-08T11:30", kit="<img src=x onerror=alert(1)>")
    placed = blocks(
        [hostile, booking(2, "2026-12-09T09:00", "2026-12-09T09:15", who="oleg")], monday, MSK
    )
    markup = str(grid_html(Texts("en"), monday, placed, "irina", dt.date(2026, 12, 8)))
    assert "<img" not in markup and "&lt;img src=x onerror=alert(1)&gt;" in markup
    # Tuesday is column 3 (column 1: hours); 10:00 is row 2 + (10-8)*4 = 10, 11:30 ends at 16
    assert "smartlab-cal-block smartlab-cal-mine' style='grid-column:3;grid-row:10 / 16'" in markup
    assert "smartlab-cal-block' style='grid-column:4;grid-row:6 / 7'" in markup  # oleg's
    assert re.search(
        r"smartlab-cal-day smartlab-cal-today' style='grid-column:3;grid-row:1'>Tue 08\.12", markup
    )
    assert "Вт 08.12" in str(grid_html(Texts("ru"), monday, placed, "irina", dt.date(2026, 12, 8)))


def test_the_form_s_slot_is_utc_epoch_seconds_of_the_lab_s_wall_clock():
    day = dt.date(2026, 12, 8)
    assert slot(day, "10:15", 45, MSK) == (at("2026-12-08T10:15"), at("2026-12-08T11:00"))
    assert slot(day, "10:15", 45, MSK)[0] == at("2026-12-08T07:15", UTC)
    assert slot(None, "10:00", 60, MSK) == "cal_need_day"
    assert slot(day, None, 60, MSK) == "cal_need_start"
    assert slot(day, "ten", 60, MSK) == "cal_need_start"
    assert slot(day, "10:00", None, MSK) == "cal_need_duration"


class NowRunner:
    """The runner's interface, calling at once (the widget's logic, not its threads)."""

    def submit(self, fn, *args, done=None, failed=None):
        try:
            result = fn(*args)
        except Exception as err:
            if failed:
                failed(err)
            return
        if done:
            done(result)

    def every(self, _seconds, fn, now=True):
        return lambda: None


class FakeService:
    def __init__(self) -> None:
        self.booked: list[dict[str, Any]] = []
        self.cancelled: list[int] = []
        self.refuse: LabServiceError | None = None

    def book(self, kit: str, course: str, starts_at: float, ends_at: float) -> dict[str, Any]:
        if self.refuse:
            raise self.refuse
        b = {
            "id": 40 + len(self.booked),
            "kit": kit,
            "course": course,
            "booked_by": "irina",
            "starts_at": starts_at,
            "ends_at": ends_at,
            "cancelled": False,
        }
        self.booked.append(b)
        return b

    def cancel_booking(self, booking_id: int) -> dict[str, Any]:
        self.cancelled.append(booking_id)
        b = next(b for b in self.booked if b["id"] == booking_id)
        return {**b, "cancelled": True}


def buttons(widget: W.Widget) -> dict[str, W.Button]:
    found: dict[str, W.Button] = {}
    stack = [widget]
    while stack:
        w = stack.pop()
        if isinstance(w, W.Button) and w.layout.display != "none":
            found[w.description] = w
        stack.extend(getattr(w, "children", ()))
    return found


@pytest.fixture
def calendar():
    now = at("2026-12-07T09:00")
    service = FakeService()
    texts = Texts("en")
    cal = BookingCalendar(service, "irina", texts, NowRunner(), tz=MSK, clock=lambda: now)
    cal.show("smart-lighting", ["streetlight-1", "streetlight-2"], [])
    return cal, service, texts


def test_booking_a_slot_posts_it_and_shows_it_in_the_grid_with_a_cancel_button(calendar):
    cal, service, _ = calendar
    cal.kit.value = "streetlight-2"
    cal.day.value = dt.date(2026, 12, 9)
    cal.start.value = "14:00"
    cal.duration.value = 90
    buttons(cal.widget)["Book"].click()
    assert [(b["kit"], b["course"], b["starts_at"], b["ends_at"]) for b in service.booked] == [
        ("streetlight-2", "smart-lighting", at("2026-12-09T14:00"), at("2026-12-09T15:30"))
    ]
    assert "streetlight-2" in cal.grid.value and "14:00–15:30" in cal.grid.value
    assert "Booked: streetlight-2, 09.12 14:00–15:30." in cal.status.value
    assert "Cancel booking" in buttons(cal.widget)


def test_cancelling_asks_first_and_keep_it_changes_nothing(calendar):
    cal, service, _ = calendar
    cal.day.value = dt.date(2026, 12, 9)
    buttons(cal.widget)["Book"].click()
    buttons(cal.widget)["Cancel booking"].click()
    assert cal.confirm.layout.display == "flex" and "Cancel the booking" in cal.confirm_text.value
    buttons(cal.widget)["Keep it"].click()
    assert service.cancelled == [] and cal.confirm.layout.display == "none"
    buttons(cal.widget)["Cancel booking"].click()
    buttons(cal.widget)["Yes, cancel it"].click()
    assert service.cancelled == [40]
    assert "streetlight-1" not in cal.grid.value and "Cancel booking" not in buttons(cal.widget)
    assert "Cancelled:" in cal.status.value


def test_a_refused_slot_shows_the_service_s_line_and_changes_nothing(calendar):
    cal, service, texts = calendar
    texts.language = "ru"
    service.refuse = LabServiceError(
        "long (POST /api/bookings: 400)", 400, "бронь должна начинаться <скоро>", "booking-too-soon"
    )
    cal.day.value = dt.date(2026, 12, 7)
    cal.start.value = "09:15"
    before = cal.grid.value
    buttons(cal.widget)["Забронировать"].click()
    assert service.booked == [] and cal.grid.value == before
    assert "Не забронировано: бронь должна начинаться &lt;скоро&gt;" in cal.status.value
    assert not cal.book_button.disabled


def test_the_form_says_what_is_missing_before_asking_the_service(calendar):
    cal, service, _ = calendar
    cal.day.value = None
    buttons(cal.widget)["Book"].click()
    assert "Choose a day." in cal.status.value and service.booked == []


def test_weeks_move_and_every_label_follows_the_language(calendar):
    cal, _, texts = calendar
    assert cal.monday == dt.datetime(2026, 12, 7, tzinfo=MSK)
    buttons(cal.widget)["Next week"].click()
    assert (
        cal.monday == dt.datetime(2026, 12, 14, tzinfo=MSK)
        and "14.12–20.12.2026" in cal.title.value
    )
    buttons(cal.widget)["Previous week"].click()
    buttons(cal.widget)["Previous week"].click()
    assert cal.monday == dt.datetime(2026, 11, 30, tzinfo=MSK)
    buttons(cal.widget)["This week"].click()
    assert cal.monday == dt.datetime(2026, 12, 7, tzinfo=MSK)
    assert "MSK, UTC+0300" in cal.title.value
    texts.language = "ru"
    assert {"Забронировать", "Следующая неделя", "Предыдущая неделя"} <= set(buttons(cal.widget))
    assert cal.duration.options[3] == ("1 ч", 60) and cal.next.tooltip == "Следующая неделя"
    assert "Пн 07.12" in cal.grid.value
