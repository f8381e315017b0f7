"""JupyterLab leads to the platform: on the real platform (`smartlab up`), a student's launcher
has the "Smart City Lab" tiles and an instructor's "Smart City Lab" menu opens her course's
formgrader in a new tab. What is checked is where the tiles lead (the journeys, tests/journeys,
walk on to the pages themselves).

Screenshots go to test-artifacts/dashboards/jupyterlab-*.png."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.browser.conftest import screenshot
from tests.stack import Up, running

# Every URL the page hands to window.open, kept before the browser follows it.
RECORD_OPENS = """
window.__opened = [];
const open = window.open.bind(window);
window.open = (url, ...rest) => { window.__opened.push(String(url)); return open(url, ...rest); };
"""
SPAWN_S = 180  # a server's first start on a busy 2-core machine


@pytest.fixture(scope="module")
def up(state_root, home_root) -> Iterator[Up]:
    with running(Up(state_root / "labext-state", home_root)) as platform:
        yield platform


@pytest.fixture
def lab(browser, up: Up) -> Iterator[Any]:
    """lab(username) -> a page of that person's JupyterLab, logged in through the hub's form."""
    contexts = []

    def opener(username: str) -> Any:
        context = browser.new_context(locale="en-GB", viewport={"width": 1280, "height": 900})
        contexts.append(context)
        context.add_init_script(RECORD_OPENS)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{up.hub_url}/hub/login")
        page.fill("#username_input", username)
        page.fill("#password_input", f"demo-{username}")
        page.click("#login_submit")
        page.wait_for_url(lambda url: "/hub/login" not in url)
        # login lands on the front door; the spawn page starts the server, then goes on to it
        page.goto(
            f"{up.hub_url}/hub/spawn/{username}?next=/user/{username}/lab",
            timeout=SPAWN_S * 1000,
        )
        page.wait_for_url(f"**/user/{username}/lab**", timeout=SPAWN_S * 1000)
        try:
            page.locator(".jp-LauncherCard").first.wait_for(timeout=SPAWN_S * 1000)
        except Exception:
            screenshot(page, f"jupyterlab-{username}-no-launcher")
            raise
        return page

    yield opener
    for context in contexts:
        context.close()


def section(page: Any, title: str) -> Any:
    return page.locator(".jp-Launcher-section").filter(
        has=page.locator(".jp-Launcher-sectionTitle", has_text=title)
    )


def click_opens(page: Any, click: Any) -> str:
    """What a click hands to window.open, checking that a new tab did open."""
    before = page.evaluate("window.__opened.length")
    with page.context.expect_page() as popup:
        click()
    popup.value.close()
    opened = page.evaluate("window.__opened")
    assert len(opened) == before + 1
    return opened[-1]


def test_student_launcher_leads_to_home_kits_and_assignments(lab, up: Up) -> None:
    page = lab("anna")
    tiles = section(page, "Smart City Lab").locator(".jp-LauncherCard")
    tiles.first.wait_for()
    screenshot(page, "jupyterlab-anna-launcher")
    labels = tiles.locator(".jp-LauncherCard-label").all_inner_texts()
    assert labels[:2] == ["Home", "Kits"]
    assert "Kit: Street lights, Lenina St." in labels and "Kit: Parking lot P1" in labels
    assert "Assignments" in labels  # nbgrader's assignment list, in JupyterLab
    assert not any("Formgrader" in label or "Kit administration" in label for label in labels)

    def tile(label: str) -> Any:
        return tiles.filter(has=page.locator(".jp-LauncherCard-label", has_text=label)).first

    assert click_opens(page, tile("Home").click) == "/services/home/"
    assert click_opens(page, tile("Kits").click) == (
        "/user/anna/voila/render/dashboards/overview.ipynb"
    )
    assert click_opens(page, tile("Kit: Street lights, Lenina St.").click) == (
        "/user/anna/voila/render/dashboards/kit.ipynb?kit=streetlight-1"
    )
    tile("Assignments").click()
    page.locator("#nbgrader-assignment-list").wait_for()
    screenshot(page, "jupyterlab-anna-assignments")


def test_instructor_menu_opens_her_courses_formgrader_in_a_new_tab(lab, up: Up) -> None:
    page = lab("irina")
    page.get_by_role("menuitem", name="Smart City Lab", exact=True).click()
    item = page.get_by_role("menuitem", name="Formgrader: smart-lighting")
    item.wait_for()
    assert page.get_by_role("menuitem", name="Formgrader: traffic-signals").is_visible()
    screenshot(page, "jupyterlab-irina-menu")
    with page.context.expect_page() as popup:
        item.click()
    formgrader = popup.value
    formgrader.wait_for_url(f"{up.hub_url}/services/smart-lighting/formgrader**", timeout=60_000)
    formgrader.wait_for_load_state()  # after the service's OAuth round trip through the hub
    screenshot(formgrader, "jupyterlab-irina-formgrader")
    assert page.evaluate("window.__opened") == ["/services/smart-lighting/formgrader"]
