"""The pages on a phone (390 x 844, as a mobile browser lays them out): the public board as a card
per kit with its availability, holder's institution and queue filled, the kit dashboard and the
session panel without horizontal scrolling and with their controls on screen."""

from __future__ import annotations

from typing import Any

import pytest

from labs.i18n import Texts
from tests.browser.conftest import CROSS, KITS, LAMP, LAMP2, USERS, eventually, screenshot
from tests.browser.test_dashboards import controls_disabled
from tests.conftest import wait_until

pytestmark = pytest.mark.broker

PHONE = {"width": 390, "height": 844}
# The page's width, and what sticks out past the screen's right edge (to name it on failure).
OVERFLOW_JS = """() => {
  const width = window.innerWidth;
  const wide = [];
  for (const el of document.querySelectorAll('body *')) {
    const r = el.getBoundingClientRect();
    if (r.width && r.right > width + 1 && getComputedStyle(el).visibility !== 'hidden')
      wide.push(`${el.tagName}.${[...el.classList].join('.')} ${Math.round(r.right)}`);
  }
  return {scroll: document.documentElement.scrollWidth, inner: width, wide: wide.slice(0, 8)};
}"""
# Whether an element is on screen: laid out, inside the viewport's width, not hidden.
ON_SCREEN_JS = """(selector) => {
  const el = document.querySelector(selector);
  if (!el) return false;
  const r = el.getBoundingClientRect();
  return r.width > 0 && r.height > 0 && r.left >= 0 && r.right <= window.innerWidth + 1;
}"""


@pytest.fixture
def phone(open_page) -> Any:
    """phone(url, locale) -> a Playwright page in a 390 px mobile viewport."""

    def opener(url: str, locale: str = "en-GB") -> Any:
        return open_page(
            url, locale, viewport=PHONE, is_mobile=True, has_touch=True, device_scale_factor=2
        )

    return opener


def assert_fits(page) -> None:
    measured = page.evaluate(OVERFLOW_JS)
    assert measured["inner"] == PHONE["width"], measured
    assert measured["scroll"] <= PHONE["width"], f"horizontal scrolling: {measured}"


def on_screen(page, selector: str) -> bool:
    return page.evaluate(ON_SCREEN_JS, selector)


def public_board(platform):
    """The board as the hub runs it: public, no identity (an anonymous route of the lab
    service) and a read-only observer account on the broker."""
    watcher = platform.broker.provision_user("status-board")
    board = platform.voila(
        "board",
        key="board-public",
        preheat={"overview.ipynb": 1},
        extra_env={
            "SMARTLAB_BOARD_PUBLIC": "1",
            "SMARTLAB_TOKEN": "",  # nothing to fall back on: the board needs none
            "SMARTLAB_MQTT_URL": platform.broker.address(watcher.username).url(),
        },
    )
    wait_until(lambda: board.pool_ready("overview.ipynb", 1), timeout=60)
    return board


def test_the_board_on_a_phone_shows_every_kit_with_availability_holder_and_queue(platform, phone):
    admin, bob, alice = platform.client("admin"), platform.client("bob"), platform.client("alice")
    admin.set_maintenance(LAMP2, True, "bulb replacement")
    held = bob.join(CROSS)["session"]
    waiting = alice.join(CROSS)
    try:
        board = public_board(platform)
        for lang, in_use, free, maintenance in (
            ("en", "in use", "available", "in maintenance"),
            ("ru", "занят", "свободен", "на обслуживании"),
        ):
            page = phone(board.page("overview.ipynb", lang=lang))
            for kit_id in KITS:
                row = f".smartlab-board-row-{kit_id}"
                page.wait_for_selector(
                    f"{row} .smartlab-availability[data-availability]:not([data-availability=''])"
                )
                assert on_screen(page, row), kit_id
            cross = f".smartlab-board-row-{CROSS}"
            page.wait_for_selector(f"{cross} .smartlab-availability[data-availability=in-use]")
            eventually(lambda: "1" in page.inner_text(f"{cross} .smartlab-board-queue"))  # noqa: B023
            card = page.inner_text(cross)
            holder = Texts(lang).institution(USERS["bob"]["institution"])  # its name, not its id
            assert in_use in card and holder in card, card
            lamp2 = page.inner_text(f".smartlab-board-row-{LAMP2}")
            assert maintenance in lamp2 and "bulb replacement" not in lamp2  # no admin's words
            assert free in page.inner_text(f".smartlab-board-row-{LAMP}")
            for kit_id in KITS:  # every column has a value, none the "–" of an unknown
                for column in ("availability", "holder", "queue"):
                    cell = page.inner_text(f".smartlab-board-row-{kit_id} .smartlab-board-{column}")
                    assert "–" not in cell and cell.strip(), (kit_id, column, cell)
            shown = page.inner_text(".smartlab-overview")
            assert "bob" not in shown and "alice" not in shown  # institutions, never people
            assert page.is_hidden(".smartlab-board-head")  # a card per kit, labelled values
            assert_fits(page)
            screenshot(page, f"board-phone-{lang}")
            page.context.close()
    finally:
        alice.leave(waiting["id"])
        bob.release(held["id"])
        admin.set_maintenance(LAMP2, False)


def test_the_kit_dashboard_and_session_panel_fit_a_phone(platform, phone):
    alice = platform.client("alice")
    wait_until(
        lambda: not next(k for k in alice.kits() if k["id"] == LAMP)["session_state"], timeout=15
    )
    page = phone(platform.voila("alice").page("kit.ipynb", kit=LAMP))
    page.wait_for_selector(".smartlab-readings [data-sensor] .smartlab-ts[data-ts]")
    page.wait_for_selector(".smartlab-sensor-lamp-power svg")
    assert_fits(page)
    for selector in (".smartlab-join", ".smartlab-window select", ".smartlab-language"):
        assert on_screen(page, selector), selector
    screenshot(page, "kit-phone-observer")

    page.click(".smartlab-join")
    try:
        page.wait_for_selector(".smartlab-session-status [data-state=holding]", timeout=20000)
        eventually(lambda: not any(controls_disabled(page, "street-lighting").values()))
        assert_fits(page)
        for selector in (
            ".smartlab-release",
            ".smartlab-session-status",
            ".smartlab-control-mode select",
            ".smartlab-control-dimming .widget-slider",
            ".smartlab-sensor-lamp-power svg",
        ):
            page.locator(selector).first.scroll_into_view_if_needed()
            assert on_screen(page, selector), selector
        widths = page.eval_on_selector_all(
            ".smartlab-sensor svg", "els => els.map(e => e.getBoundingClientRect().right)"
        )
        assert widths and max(widths) <= PHONE["width"], widths  # plots fit the width
        page.select_option(".smartlab-control-mode select", "manual")  # usable by touch too
        page.wait_for_selector(".smartlab-ack-applied:has-text('mode = manual')")
        screenshot(page, "kit-phone-controller")
    finally:
        page.click(".smartlab-release")
        page.wait_for_selector(".smartlab-session-status [data-state=idle]", timeout=15000)
