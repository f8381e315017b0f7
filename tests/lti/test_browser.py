"""What a person sees in real Chromium: clicking the tool's link in the LMS course lands them
on the hub, logged in; a spoiled launch shows the refusal page."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.lti.conftest import Hub
from tests.lti.platform import LEARNER, LaunchSpec, Platform
from tests.stack import ARTIFACTS, launch_chromium

playwright_api = pytest.importorskip("playwright.sync_api")
SHOTS = ARTIFACTS.parent / "lti"


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    with playwright_api.sync_playwright() as playwright:
        browser = launch_chromium(playwright)
        yield browser
        browser.close()


def course_link(hub: Hub, platform: Platform, spec: LaunchSpec) -> str:
    spec.target = f"{hub.url}/hub/home"  # the link's target: the hub's home page
    hint = platform.prepare(spec)
    query = urlencode({"tool": f"{hub.url}/hub/lti/login", "target": spec.target})
    return f"{platform.url}/course/launch/{hint}?{query}"


def test_student_clicks_the_lms_link_and_lands_logged_in(hub, platforms, chromium):
    _, academy = platforms
    page = chromium.new_page()
    page.goto(course_link(hub, academy, LaunchSpec("808", [LEARNER], "7")))
    page.wait_for_url(f"{hub.url}/hub/home", timeout=20_000)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "landed.png"))
    assert "academy-808" in page.locator("body").inner_text()
    assert set(hub.user("academy-808")["groups"]) == {
        "inst-academy",
        "people",
        "lab-users",
        "nbgrader-iot-basics",
    }
    page.close()


def test_spoiled_launch_shows_the_refusal(hub, platforms, chromium):
    univ_a, _ = platforms
    page = chromium.new_page()
    spec = LaunchSpec(
        "809", [LEARNER], "101", spoil=lambda claims: claims.update(aud="another-tool")
    )
    page.goto(course_link(hub, univ_a, spec))
    page.wait_for_url(f"{hub.url}/hub/lti/launch", timeout=20_000)
    page.screenshot(path=str(SHOTS / "refused.png"))
    text = page.locator("body").inner_text()
    assert "LTI launch refused: wrong audience" in text
    assert hub.user("univ-a-809") is None
    page.close()
