"""What people click on their way through the platform: the names they read, in both languages
(one table, `NAMES`, to adjust when a page's wording changes), and the steps the journeys and
the front-door benchmark (bench/front_door.py) are made of.

A name is what Playwright matches against an element's accessible name: a plain string is a
case-insensitive substring, a compiled regex a search.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from site_config.kits import load_kits
from site_config.paths import DEMO_SITE
from tests.journeys.journey import Journey, Name

R = re.compile
I = re.IGNORECASE  # noqa: E741

# role, then the accessible name per language.
NAMES: dict[str, tuple[str, dict[str, Name]]] = {
    # the hub's login page
    "username": ("textbox", {"en": R(r"^Username", I), "ru": R(r"Имя пользователя|Логин", I)}),
    "password": ("textbox", {"en": R(r"^Password", I), "ru": R(r"Пароль", I)}),
    "sign_in": ("button", {"en": R(r"^Sign in$", I), "ru": R(r"^Войти$", I)}),
    "board": ("link", {"en": R(r"board", I), "ru": R(r"табло|доска", I)}),
    # the front door (/services/home/)
    "kit_dashboard": ("link", {"en": R(r"Lenina", I), "ru": R(r"Ленина|Lenina", I)}),
    "hub_admin": ("link", {"en": R(r"hub admin|users", I), "ru": R(r"администр|пользовател", I)}),
    "admin_dashboard": (
        "link",
        {"en": R(r"admin dashboard", I), "ru": R(r"панель администратора", I)},
    ),
    "instructor_dashboard": (
        "link",
        {"en": R(r"booking|calendar", I), "ru": R(r"брон|календар", I)},
    ),
    "formgrader": ("link", {"en": R(r"formgrader|grading", I), "ru": R(r"formgrader|оценива", I)}),
    "jupyterlab": ("link", {"en": R(r"JupyterLab", I), "ru": R(r"JupyterLab", I)}),
    # every page's way back to the front door
    "front_door": (
        "link",
        {
            "en": R(r"^(Home|Smart City Lab)", I),
            "ru": R(r"^(Главная|Smart City Lab|Смарт Сити Лаб)", I),
        },
    ),
    # the kit dashboard (labs/i18n.py)
    "join": ("button", {"en": "Queue for this kit", "ru": "Встать в очередь"}),
    "release": ("button", {"en": "Release the kit", "ru": "Освободить стенд"}),
    "mode": ("combobox", {"en": R(r"^Mode", I), "ru": R(r"^Режим", I)}),
    "manual": ("option", {"en": R(r"^manual$", I), "ru": R(r"^(ручной|manual)$", I)}),
    # JupyterLab: our menu (labs/jupyterlab) opens nbgrader's Assignment List
    "assignments_menu": ("menuitem", {"en": R(r"^Smart City Lab$"), "ru": R(r"^Smart City Lab$")}),
    "assignment_list": ("menuitem", {"en": R(r"^Assignments"), "ru": R(r"^Задания")}),
    "fetch": ("button", {"en": R(r"^Fetch$", I), "ru": R(r"^(Получить|Fetch)$", I)}),
    "submit": ("button", {"en": R(r"^Submit$", I), "ru": R(r"^(Сдать|Отправить|Submit)$", I)}),
    # the instructor dashboard's booking calendar
    # (an icon font's glyph comes first in the button's name: \W*)
    "book": ("button", {"en": R(r"^\W*Book$", I), "ru": R(r"^\W*Забронировать$", I)}),
    "booking_day": ("textbox", {"en": R(r"^Day", I), "ru": R(r"^День", I)}),
    "booking_start": ("combobox", {"en": R(r"^Start", I), "ru": R(r"^Начало", I)}),
    # the admin dashboard
    "maintenance_on": ("button", {"en": "Take into maintenance", "ru": "На обслуживание"}),
    "maintenance_off": ("button", {"en": "Back into the pool", "ru": "Вернуть в работу"}),
    "maintenance_kit": ("combobox", {"en": R(r"^Kit", I), "ru": R(r"^Стенд", I)}),
    "reason": ("textbox", {"en": R(r"reason", I), "ru": R(r"причина", I)}),
}
# Texts a step waits to see.
TEXTS: dict[str, dict[str, Name]] = {
    "released": {"en": "You released the kit.", "ru": "Вы освободили стенд."},
    "booking_refused": {"en": R(r"at least \d+ minutes ahead", I), "ru": R(r"не раньше|минут", I)},
    "in_maintenance": {"en": "in maintenance", "ru": "на обслуживании"},
}
DEMO_KITS = load_kits(DEMO_SITE)
KIT = "streetlight-1"  # the kit the student journeys open (NAMES["kit_dashboard"])
COURSE = "smart-lighting"  # anna's course, irina's
ASSIGNMENT = "01-energy-model"  # its first assignment, released by `smartlab up`
# How long a click may take when it starts the person's own server.
SPAWN_S = 180.0
# How long nbgrader's Assignment List may take to list (it runs `nbgrader list` per course).
LISTING_S = 120.0


def name(key: str, lang: str) -> tuple[str, Name]:
    role, names = NAMES[key]
    return role, names[lang]


def click(j: Journey, key: str, *, wait: float = 0.0) -> None:
    role, label = name(key, j.lang)
    j.click(role, label, wait=wait)


def appears(j: Journey, key: str, timeout: float) -> None:
    """Wait until the element `key` names is on screen (a page still loading its list)."""
    role, label = name(key, j.lang)
    j.find(role, label).wait_for(state="visible", timeout=timeout * 1000)


def see(j: Journey, key: str, timeout: float = 30.0) -> None:
    j.sees(TEXTS[key][j.lang], timeout)


# ------------------------------------------------------------ everyone


def log_in(j: Journey, username: str, password: str | None = None) -> None:
    """At the login page: name, password, sign in (the person's server may start now)."""
    j.fill(NAMES["username"][1][j.lang], username)
    j.fill(NAMES["password"][1][j.lang], password or f"demo-{username}")
    click(j, "sign_in", wait=SPAWN_S / 4)


def at_front_door(j: Journey) -> None:
    """After login everyone lands on the front door."""
    j.page.wait_for_url(re.compile(r"/services/home/"), timeout=SPAWN_S * 1000)


# ------------------------------------------------------------ students


def open_kit_dashboard(j: Journey) -> None:
    """From the front door, one click to the kit's dashboard (the own server may start)."""
    click(j, "kit_dashboard", wait=SPAWN_S / 4)
    live_value(j)


def live_value(j: Journey, timeout: float = SPAWN_S) -> None:
    """Wait for a live kit value on screen (the dashboards mark it `.smartlab-live`)."""
    j.page.locator(".smartlab-live").first.wait_for(state="visible", timeout=timeout * 1000)
    j.snap("live-value")


def queue_and_hold(j: Journey) -> None:
    click(j, "join")
    j.page.locator(".smartlab-session-status [data-state=holding]").wait_for(timeout=30_000)
    j.snap("holding")


def control_slider(j: Journey) -> None:
    """Manual mode, then the dimming slider a few steps with the keyboard; the kit
    acknowledges the new level."""
    role, label = name("mode", j.lang)
    select = j.find(role, label)
    wanted = NAMES["manual"][1][j.lang]
    options = select.locator("option").all_inner_texts()
    select.select_option(label=next(o for o in options if re.search(wanted, o.strip())).strip())
    j.page.locator(".smartlab-ack-applied").first.wait_for(timeout=15_000)
    slider = j.page.get_by_role("slider").locator("visible=true").first
    slider.click()
    for _ in range(5):  # down: a lamp at rest may already stand at its maximum
        slider.press("ArrowLeft")
    value = slider.get_attribute("aria-valuenow") or ""
    level = value.split(".")[0]
    j.page.locator(".smartlab-ack-applied").filter(has_text=f"{level} %").first.wait_for(
        timeout=15_000
    )
    j.snap("slider-applied")


def release(j: Journey) -> None:
    click(j, "release")
    see(j, "released")


def fetch_and_submit(j: Journey) -> None:
    """JupyterLab from the front door, nbgrader's Assignment List: fetch the released
    assignment, submit it."""
    click(j, "jupyterlab", wait=SPAWN_S / 4)
    click(j, "assignments_menu")
    click(j, "assignment_list")
    appears(j, "fetch", LISTING_S)
    click(j, "fetch", wait=10)
    appears(j, "submit", LISTING_S)
    click(j, "submit", wait=10)
    j.sees(re.compile(r"\d{4}-\d\d-\d\d"))  # the submission's time stamp


# ------------------------------------------------------------ instructors


def formgrader_autograde(j: Journey) -> None:
    """The course's formgrader in a new tab; collect the submissions, autograde one."""
    with j.new_tab(wait=10):
        click(j, "formgrader")
    row = j.page.get_by_role("row").filter(has_text=ASSIGNMENT)
    # nbgrader counts a submission once it is collected from the exchange: its icon-only link
    j.click_on(row.locator("td.collect a"), "collect", wait=10)
    j.click("button", "OK")
    j.click_on(row.get_by_role("link", name=re.compile(r"^[1-9]\d*$")), "submissions")
    # nbgrader's autograde link is an icon without an accessible name: found by its cell.
    j.click_on(j.page.locator("td.autograde a").first, "autograde", wait=30)
    j.sees(re.compile(r"^\d+(\.\d+)? / \d+(\.\d+)?$"), timeout=120)  # the score


def book_invalid_slot(j: Journey) -> None:
    """The booking calendar refuses a slot that starts within the quarter hour (too soon: the
    queue is for now), in the page's language; nothing is booked."""
    click(j, "instructor_dashboard", wait=SPAWN_S / 4)
    soon = datetime.now() + timedelta(minutes=15)  # the calendar shows the lab's local time
    slot = soon.replace(minute=soon.minute // 15 * 15)
    j.fill(NAMES["booking_day"][1][j.lang], slot.strftime("%Y-%m-%d"))
    role, label = name("booking_start", j.lang)
    j.find(role, label).select_option(label=slot.strftime("%H:%M"))
    j.snap("slot-chosen")
    click(j, "book")
    see(j, "booking_refused")


# ------------------------------------------------------------ lab admins


def take_into_maintenance(j: Journey, reason: str, kit: str = "streetlight-2") -> None:
    click(j, "admin_dashboard", wait=SPAWN_S / 4)
    role, label = name("maintenance_kit", j.lang)
    j.find(role, label).select_option(label=kit)
    j.snap(f"chose-{kit}")
    j.fill(NAMES["reason"][1][j.lang], reason)
    click(j, "maintenance_on")
    see(j, "in_maintenance")
