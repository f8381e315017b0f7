"""The instructors' booking calendar as irina uses it: real Chromium, standalone Voilà, a real
lab service with the default booking rules (60 minutes' lead, 15-minute grain) and the real
broker. In Russian: she books a slot, sees it in the week grid, gets the service's refusal in
Russian for a slot starting in about 10 minutes (nothing booked), and cancels her booking."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterator

import pytest

from tests.browser.conftest import eventually, screenshot
from tests.stack import ServiceProcess, VoilaServer, token, with_tokens

pytestmark = pytest.mark.broker

COURSE = "smart-lighting"
KITS = ("cal-lamp-1", "cal-lamp-2")  # registered only: booking needs no kit online
USERS = {
    "admin": {"name": "lab-admin", "institution": "centre", "lab_admin": True},
    "irina": {"name": "irina", "institution": "univ-a", "instructor_of": [COURSE]},
}


@pytest.fixture(scope="module")
def calendar_stack(broker, state_root) -> Iterator[tuple[ServiceProcess, VoilaServer]]:
    service = ServiceProcess(
        broker,
        state_root,
        with_tokens(USERS),
        name="calendar-lab",
        settings="c.LabServiceApp.tick_seconds = 0.5\n",  # the default booking policy
    ).start()
    voila = None
    try:
        admin = service.client(token("admin"))
        for kit in KITS:
            admin.register_kit(kit, "street-lighting", kit)
        voila = VoilaServer(
            "irina-calendar",
            state_root,
            {"SMARTLAB_LAB_URL": service.url, "SMARTLAB_TOKEN": token("irina")},
        ).start()
        yield service, voila
    finally:
        if voila is not None:
            voila.stop()
        service.stop()


def pick(page, day: dt.date, start: str, kit: str | None = None) -> None:
    """Fill the form: the kit, the day (a date input) and the start time (HH:MM)."""
    if kit:
        page.select_option(".smartlab-form-kit select", kit)
    page.fill(".smartlab-form-day input", day.isoformat())
    page.press(".smartlab-form-day input", "Tab")  # the change event the widget listens for
    page.select_option(".smartlab-form-start select", start)


def test_irina_books_sees_a_russian_refusal_and_cancels(calendar_stack, open_page):
    service, voila = calendar_stack
    irina = service.client(token("irina"))
    page = open_page(voila.page("instructor.ipynb"), locale="ru-RU")
    page.set_viewport_size({"width": 1280, "height": 1400})
    page.wait_for_selector(".smartlab-calendar .smartlab-cal-grid")
    assert "Календарь бронирований" in page.inner_text(".smartlab-instructor")

    # A slot tomorrow at 10:00 in the lab's time zone (the kernel's, this machine's).
    tomorrow = dt.date.today() + dt.timedelta(days=1)
    pick(page, tomorrow, "10:00", KITS[1])
    page.select_option(".smartlab-form-duration select", label="1 ч 30 мин")
    page.get_by_role("button", name="Забронировать").click()
    page.wait_for_selector(".smartlab-calendar-status :text('Забронировано')")
    (booked,) = irina.bookings()
    starts = dt.datetime.combine(tomorrow, dt.time(10, 0)).timestamp()
    assert (booked["kit"], booked["starts_at"], booked["ends_at"]) == (
        KITS[1],
        starts,
        starts + 90 * 60,
    )
    block = page.locator(".smartlab-cal-block", has_text=KITS[1])
    assert "10:00–11:30" in block.inner_text() and COURSE in block.inner_text()
    screenshot(page, "calendar-booked-ru")

    # Starting in about 10 minutes: the service refuses, in Russian; nothing changes.
    soon = dt.datetime.fromtimestamp(math.ceil((time.time() + 300) / 900) * 900)
    pick(page, soon.date(), soon.strftime("%H:%M"), KITS[0])
    page.get_by_role("button", name="Забронировать").click()
    refusal = page.wait_for_selector(".smartlab-calendar-status :text('Не забронировано')")
    assert refusal.inner_text() == (
        "Не забронировано: бронь должна начинаться не раньше чем через 60 мин; "
        "сейчас встаньте в очередь"
    )
    assert [b["id"] for b in irina.bookings()] == [booked["id"]]
    screenshot(page, "calendar-refused-ru")

    # The weeks move with the buttons, and back.
    title = page.inner_text(".smartlab-calendar .widget-html >> nth=0")
    page.get_by_role("button", name="Следующая неделя").click()
    eventually(lambda: _changed(page, title))
    page.get_by_role("button", name="Эта неделя").click()

    # Cancel: asked first, then gone from the service and the grid.
    page.get_by_role("button", name="Отменить бронь").click()
    page.get_by_role("button", name="Да, отменить").click()
    page.wait_for_selector(".smartlab-calendar-status :text('Отменено')")
    assert irina.bookings() == []
    eventually(lambda: _no_block(page))
    page.set_viewport_size({"width": 390, "height": 1400})
    screenshot(page, "calendar-cancelled-ru-390px")
    box = page.locator(".smartlab-calendar").bounding_box()
    assert box is not None and box["x"] + box["width"] <= 390 + 1  # the grid scrolls inside


def _changed(page, title: str) -> None:
    assert page.inner_text(".smartlab-calendar .widget-html >> nth=0") != title


def _no_block(page) -> None:
    assert page.locator(".smartlab-cal-block").count() == 0
