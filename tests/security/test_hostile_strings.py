"""Hostile strings from kits, users and descriptors render as text in every dashboard.

Real Mosquitto, twins, the lab service and Voilà, seen in real Chromium. Each input that
reaches a page carries markup that would run if it were put into the page as HTML:

- a kit's retained `$description` (kit, sensor and actuator names, a unit), published on the
  broker by a twin whose descriptor was written by its owner;
- an actuator value: the parking display text a kit holder sets, shown to everyone watching;
- a rejection's reason and detail, as a kit sends them back (a kit's firmware is its owner's);
- an institution (the holder's, shown to others), a maintenance reason typed by a lab admin,
  a course name and a booking's group;
- the page's own query string (`kit.ipynb?kit=...`).

Each page must show the text as it is, contain no element made from it and run none of it
(`window.__pwned` stays undefined) -- from its server-rendered first paint to its live widgets.
"""

from __future__ import annotations

import copy
import re
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import pytest

from hardware_kits import protocol as P
from hardware_kits.kit_runner import KitRunner
from hardware_kits.twins.parking import ParkingModel
from lab_service.rights import validate_user
from labs.client import CommandRejected
from tests.browser.conftest import Platform, eventually, screenshot
from tests.conftest import wait_until
from tests.stack import ServiceProcess, launch_chromium, with_tokens

pytestmark = pytest.mark.broker

PWN = "window.__pwned=1"
KIT_NAME = f'Parking "><svg data-pwn onload={PWN}>'
SENSOR_NAME = f"Occupied <img src=x data-pwn onerror={PWN}>"
UNIT = f"<script data-pwn>{PWN}</script>"
ACTUATOR_NAME = f"Display '><img src=x data-pwn onerror={PWN}>"
DISPLAY_TEXT = "<svg data-pwn onload=__pwned=1>"  # the display takes 32 characters
REASON = f"odd<img src=x data-pwn onerror={PWN}>"
DETAIL = f"Detail <script data-pwn>{PWN}</script>"
INSTITUTION = f"Uni <img src=x data-pwn onerror={PWN}>"
MAINTENANCE = f"Fix '\"><svg data-pwn onload={PWN}>"
COURSE = f"C<img src=x data-pwn onerror={PWN}>"
GROUP = f"G<svg data-pwn onload={PWN}>"
QUERY_KIT = f"<img src=x data-pwn onerror={PWN}>"
REJECT_ME = "reject-me"  # the display text the hostile kit refuses with REASON and DETAIL

EVIL, EVIL2 = "hostile-park-1", "hostile-park-2"
USERS: dict[str, dict[str, Any]] = {
    "h-admin": {"name": "h-admin", "institution": "centre", "lab_admin": True},
    "mallory": {"name": "mallory", "institution": INSTITUTION, "courses": [COURSE]},
    "viewer": {"name": "viewer", "institution": "univ-b"},
    "teacher": {"name": "teacher", "institution": "univ-a", "instructor_of": [COURSE]},
}

# Set before any page script: whether an element or script from a hostile string ever
# appeared (the first paint is replaced by the live widgets, so look all along). Voilà's
# `application/vnd.voila.cell-output+json` data blocks hold the outputs as JSON, not code.
WATCH_JS = """
window.__runs = (s) => s.tagName === 'SCRIPT' && /^$|javascript|module/.test(s.type)
  && s.text.includes('__pwned');
window.__seen = [];
new MutationObserver((records) => {
  for (const r of records) for (const n of r.addedNodes) {
    if (n.nodeType !== 1) continue;
    const hits = [n, ...n.querySelectorAll('*')].filter((e) =>
      e.hasAttribute('data-pwn') || window.__runs(e));
    for (const e of hits) window.__seen.push(e.outerHTML.slice(0, 80));
  }
}).observe(document, {subtree: true, childList: true});
"""
INERT_JS = """() => ({
  seen: window.__seen,
  now: [...document.querySelectorAll('[data-pwn]')].map((e) => e.outerHTML.slice(0, 80))
    .concat([...document.scripts].filter(window.__runs).map((s) => s.text)),
  pwned: typeof window.__pwned,
  text: document.body.innerText,
})"""
RAW_TAG = re.compile(r"<[a-zA-Z][^<>]*data-pwn")


class HostileParking(ParkingModel):
    """A parking twin whose owner wrote hostile reasons into its firmware."""

    def apply(self, target: str, value: Any) -> None:
        if target == "display" and value == REJECT_ME:
            raise P.ProtocolError(REASON, DETAIL)
        super().apply(target, value)


def hostile_descriptor(models: dict[str, dict]) -> dict[str, Any]:
    descriptor = copy.deepcopy(models["smart-parking"])
    descriptor["name"] = KIT_NAME
    descriptor["sensors"]["occupied"]["name"] = SENSOR_NAME
    descriptor["sensors"]["occupied"]["unit"] = UNIT
    descriptor["actuators"]["display"]["name"] = ACTUATOR_NAME
    # The Russian names travel the same way (a page in Russian shows them instead).
    descriptor["ru"]["name"] = KIT_NAME
    descriptor["sensors"]["occupied"]["ru"].update(name=SENSOR_NAME, unit=UNIT)
    descriptor["actuators"]["display"]["ru"]["name"] = ACTUATOR_NAME
    descriptor["sensors"]["gate-state"]["ru"]["values"]["open"] = SENSOR_NAME
    return descriptor


@pytest.fixture(scope="module")
def lab(broker, models, state_root) -> Iterator[Platform]:
    service = ServiceProcess(broker, state_root, with_tokens(USERS), name="hostile-lab").start()
    plat = Platform(broker, service, state_root)
    runners = []
    admin = plat.client("h-admin")
    try:
        for kit_id in (EVIL, EVIL2):
            admin.register_kit(kit_id, "smart-parking", KIT_NAME)
            twin = HostileParking(hostile_descriptor(models), seed=5)
            address = broker.address(f"kit-{kit_id}")
            runners.append(KitRunner(kit_id, twin, address).start())
        wait_until(lambda: all(k["online"] for k in admin.kits()), timeout=20)
        admin.set_maintenance(EVIL2, True, MAINTENANCE)
        yield plat
    finally:
        for server in plat.voilas.values():
            server.stop()
        service.stop()
        for runner in runners:
            runner.stop()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def open_watched(chromium):
    """open_watched(url) -> (page, served HTML), the page watched for hostile elements."""
    contexts = []

    def opener(url: str) -> tuple[Any, str]:
        context = chromium.new_context(locale="en-GB", viewport={"width": 1280, "height": 1000})
        contexts.append(context)
        context.add_init_script(WATCH_JS)
        page = context.new_page()
        page.set_default_timeout(30_000)
        served = page.goto(url).text()
        return page, served

    yield opener
    for context in contexts:
        context.close()


def assert_inert(page: Any, *shown: str) -> None:
    """No element or script from a hostile string, none ran, and each of `shown` is text."""
    found = page.evaluate(INERT_JS)
    assert found["seen"] == [] and found["now"] == [], found["seen"] + found["now"]
    assert found["pwned"] == "undefined"
    for text in shown:
        assert text in found["text"], f"{text!r} is not shown as text"


def assert_first_paint_inert(served: str, *shown: str) -> None:
    """The server-rendered first paint holds the hostile strings escaped, never as tags."""
    start = served.index('class="smartlab-snapshot"')
    paint = served[start : served.index("</script>", start)]
    assert RAW_TAG.search(paint) is None, RAW_TAG.search(paint)
    for text in shown:
        escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        assert escaped.replace('"', "&#34;").replace("'", "&#39;") in paint, text


# ---------------------------------------------------------------- the inputs' sources


def test_usernames_with_markup_are_refused_where_users_are_defined():
    """Usernames reach the instructor and admin views: only [A-Za-z0-9._@-] is ever a user."""
    for name in (QUERY_KIT, "a<b", "x'y", 'x"y'):
        with pytest.raises(ValueError, match="invalid user name"):
            validate_user(name)


# ---------------------------------------------------------------- the pages


def test_kit_page_of_the_holder_shows_rejections_values_and_bookings_as_text(lab, open_watched):
    teacher = lab.client("teacher")
    start = int(time.time()) + 3 * 3600
    booking = teacher.book(EVIL, COURSE, start, start + 1800, group=GROUP)
    try:
        page, served = open_watched(lab.voila("mallory").page("kit.ipynb", kit=EVIL))
        assert_first_paint_inert(served, SENSOR_NAME, UNIT, KIT_NAME)
        page.click(".smartlab-join")
        text_field = ".smartlab-control-display input"
        page.wait_for_selector(f"{text_field}:not([disabled])")
        page.fill(text_field, REJECT_ME)
        page.click(".smartlab-control-display .smartlab-send")
        page.wait_for_selector(".smartlab-ack-rejected")
        page.fill(text_field, DISPLAY_TEXT)
        page.click(".smartlab-control-display .smartlab-send")
        page.wait_for_selector(".smartlab-ack-applied")
        eventually(lambda: assert_inert(page, DETAIL, DISPLAY_TEXT, COURSE), timeout=35)
        assert_inert(page, KIT_NAME, SENSOR_NAME, UNIT, ACTUATOR_NAME)
        screenshot(page, "hostile-kit-holder")
        page.click(".smartlab-release")
        page.wait_for_selector(".smartlab-join:visible")
    finally:
        teacher.cancel_booking(booking["id"])


def test_kit_page_of_an_observer_shows_the_holders_text_and_institution_as_text(lab, open_watched):
    mallory = lab.client("mallory")
    with mallory.session(EVIL, progress=None) as kit:
        kit.set("display", DISPLAY_TEXT)
        page, served = open_watched(lab.voila("viewer").page("kit.ipynb", kit=EVIL))
        assert_first_paint_inert(served, SENSOR_NAME, KIT_NAME)
        page.wait_for_selector(".smartlab-readings .smartlab-ts[data-ts]")
        eventually(
            lambda: assert_inert(page, DISPLAY_TEXT, INSTITUTION, KIT_NAME, ACTUATOR_NAME),
            timeout=15,
        )
        assert_inert(page, SENSOR_NAME, UNIT)
        screenshot(page, "hostile-kit-observer")


def test_kit_page_shows_a_maintenance_reason_as_text(lab, open_watched):
    page, _served = open_watched(lab.voila("viewer").page("kit.ipynb", kit=EVIL2))
    page.wait_for_selector(".smartlab-readings .smartlab-ts[data-ts]")
    eventually(lambda: assert_inert(page, MAINTENANCE, SENSOR_NAME), timeout=15)


def test_kit_page_shows_a_hostile_query_string_as_text(lab, open_watched):
    url = lab.voila("viewer").page("kit.ipynb") + "?kit=" + urllib.parse.quote(QUERY_KIT)
    page, _served = open_watched(url)
    page.wait_for_selector(".smartlab-error")
    assert_inert(page, QUERY_KIT)


def test_overview_board_shows_names_institutions_and_reasons_as_text(lab, open_watched):
    mallory = lab.client("mallory")
    with mallory.session(EVIL, progress=None):
        # The public board (no identity: the service's public route, without reasons) and a
        # signed-in viewer's overview (with the admin's maintenance reason).
        for server, shown in (
            (
                lab.voila("viewer", key="board", extra_env={"SMARTLAB_BOARD_PUBLIC": "1"}),
                (KIT_NAME, SENSOR_NAME, INSTITUTION),
            ),
            (lab.voila("viewer"), (KIT_NAME, SENSOR_NAME, INSTITUTION, MAINTENANCE)),
        ):
            page, served = open_watched(server.page("overview.ipynb"))
            if 'class="smartlab-snapshot"' in served:
                assert_first_paint_inert(served)
            for kit_id in (EVIL, EVIL2):
                page.wait_for_selector(f".smartlab-board-row-{kit_id} .smartlab-spark svg")
            eventually(lambda: assert_inert(page, *shown), timeout=15)  # noqa: B023
            screenshot(page, "hostile-overview")


def test_admin_view_shows_reasons_rejections_and_institutions_as_text(lab, open_watched):
    mallory = lab.client("mallory")
    with mallory.session(EVIL, progress=None) as kit, pytest.raises(CommandRejected):
        kit.set("display", REJECT_ME)  # a rejection for the record, with the kit's reason
    page, _served = open_watched(lab.voila("h-admin").page("admin.ipynb"))
    page.wait_for_selector(f".smartlab-attention-{EVIL2}")
    page.wait_for_selector(f".smartlab-rejections :text('{EVIL}')")
    page.wait_for_selector(".smartlab-admin svg")
    eventually(lambda: assert_inert(page, MAINTENANCE, REASON), timeout=15)
    screenshot(page, "hostile-admin")


def test_instructor_view_shows_course_sessions_and_bookings_as_text(lab, open_watched):
    teacher = lab.client("teacher")
    with lab.client("mallory").session(EVIL, progress=None):
        pass  # a session of the course's student
    start = int(time.time()) + 3 * 3600
    booking = teacher.book(EVIL, COURSE, start, start + 1800, group=GROUP)
    try:
        page, _served = open_watched(lab.voila("teacher").page("instructor.ipynb"))
        page.wait_for_selector(f".smartlab-course-bookings :text('{EVIL}')")
        page.wait_for_selector(".smartlab-course-sessions :text('mallory')")
        options = page.eval_on_selector(
            ".smartlab-instructor select", "(e) => [...e.options].map((o) => o.text)"
        )
        assert [o.replace("\xa0", " ") for o in options] == [COURSE]  # spaces shown as &nbsp;
        assert_inert(page)
        screenshot(page, "hostile-instructor")
    finally:
        teacher.cancel_booking(booking["id"])
