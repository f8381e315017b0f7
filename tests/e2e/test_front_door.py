"""The front door on the real platform (`smartlab up`, real JupyterHub and proxy, Chromium):
people log in at the hub's root URL and land on their home page at /services/home/."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.e2e.conftest import DEMO_PASSWORD
from tests.stack import ARTIFACTS, Up, call_api, lab_token, launch_chromium

pytestmark = pytest.mark.broker

HOSTILE = "<script>window.hacked=1</script>"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


def log_in(chromium: Any, platform: Up, who: str, locale: str = "en-GB") -> Any:
    page = chromium.new_context(locale=locale, viewport={"width": 390, "height": 844}).new_page()
    page.goto(platform.hub_url + "/")
    page.fill("#username_input", who)
    page.fill("#password_input", DEMO_PASSWORD.format(who))
    page.click("#login_submit")
    page.wait_for_url("**/services/home/**", timeout=60_000)
    return page


def test_login_page_names_the_centre_in_the_browser_language(chromium, platform: Up) -> None:
    page = chromium.new_context(locale="ru-RU").new_page()
    page.goto(platform.hub_url + "/hub/login")
    assert page.get_by_role("heading", name="Смарт Сити Лаб").is_visible()
    assert page.locator("html").get_attribute("lang") == "ru"
    assert page.get_by_role("link", name="общем табло лаборатории").get_attribute("href") == (
        "/services/status/"
    )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "front-door-hub-login-ru.png"), full_page=True)
    page.get_by_role("link", name="English").click()
    assert page.get_by_role("heading", name="Smart City Lab").is_visible()
    assert page.get_by_label("Username:").is_visible()
    page.context.close()


def test_hub_pages_lead_back_to_the_front_door(chromium, platform: Up) -> None:
    page = log_in(chromium, platform, "oleg")
    page.set_viewport_size({"width": 1024, "height": 768})
    page.goto(platform.hub_url + "/hub/home")
    page.get_by_role("link", name="Front door").click()
    page.wait_for_url("**/services/home/")
    page.get_by_role("heading", name="Hello, oleg").wait_for()
    page.context.close()


def test_anna_lands_on_her_courses_and_kits(chromium, platform: Up) -> None:
    page = log_in(chromium, platform, "anna")
    page.get_by_role("heading", name="Hello, anna").wait_for()
    assert page.get_by_role("heading", name="Умное уличное освещение (сетевой курс)").is_visible()
    assert page.get_by_text("01-energy-model").is_visible()  # released by `smartlab up`
    link = page.get_by_role("link", name="Open the dashboard of Street lights, Lenina St.")
    assert link.get_attribute("href") == "/hub/spawn/anna?" + urlencode(
        {"next": "/user/anna/voila/render/dashboards/kit.ipynb?kit=streetlight-1&lang=en"}
    )
    assert page.get_by_role("link", name="Open JupyterLab").get_attribute(
        "href"
    ) == "/hub/spawn/anna?" + urlencode({"next": "/user/anna/lab"})
    assert "online" in page.locator('[data-kit="streetlight-1"] [data-field="status"]').inner_text()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "front-door-anna-390.png"), full_page=True)
    page.get_by_role("link", name="Русский").click()
    page.get_by_role("heading", name="Здравствуйте, anna").wait_for()
    assert page.locator("html").get_attribute("lang") == "ru"
    page.context.close()


def test_due_dates_are_published_for_every_course(platform: Up) -> None:
    """`smartlab up` read each gradebook as its grader account (none has a due date yet)."""
    schedule = platform.state / "schedule.json"
    assert json.loads(schedule.read_text()) == {
        "iot-basics": {},
        "smart-lighting": {},
        "smart-parking": {},
        "traffic-signals": {},
    }
    assert schedule.stat().st_mode & 0o777 == 0o644


def test_irina_gets_the_formgrader_link(chromium, platform: Up) -> None:
    page = log_in(chromium, platform, "irina")
    link = page.get_by_role("link", name="Formgrader of Управление светофорами (сетевой курс)")
    assert link.get_attribute("href") == "/services/traffic-signals/formgrader"
    assert link.get_attribute("target") == "_blank"
    assert page.get_by_role("link", name="Booking calendar").is_visible()
    page.context.close()


def test_a_hostile_kit_name_is_shown_as_text(chromium, platform: Up) -> None:
    status, _ = call_api(
        platform.lab_port,
        "POST",
        "/api/kits",
        lab_token(platform, "lara"),
        {"id": "hostile-1", "model": "street-lighting", "name": HOSTILE},
    )
    assert status == 201
    page = log_in(chromium, platform, "lara")
    assert page.get_by_role("rowheader", name=HOSTILE).is_visible()
    assert page.evaluate("window.hacked") is None
    page.context.close()
