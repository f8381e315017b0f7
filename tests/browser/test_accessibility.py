"""The dashboards pass axe-core: every page a person opens (the kit page as an observer and as
the holder, the board, the instructor's and the admin's pages), in real Chromium against Voilà,
has no serious or critical violation. Each page is checked in English, then again after its own
EN/RU switch has re-labelled it in Russian (names must follow the language). axe-core is the copy
bundled by `axe-playwright-python` (the journeys use the same one), nothing is downloaded.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import pytest
from axe_playwright_python.sync_playwright import Axe

from tests.browser.conftest import LAMP, screenshot
from tests.conftest import wait_until

pytestmark = pytest.mark.broker

AXE = Axe()
BLOCKING = ("serious", "critical")
# Every control of the kit page with the accessible name browsers compute from its label.
CONTROL_NAMES_JS = """() => Array.from(document.querySelectorAll('.smartlab-control')).map(c => {
  const el = c.querySelector('select, input, textarea, .noUi-handle, button');
  const label = el && el.id ? document.querySelector(`label[for="${el.id}"]`) : null;
  return {
    name: el ? (el.getAttribute('aria-label') || (label && label.textContent) ||
                el.getAttribute('title') || '').trim() : null,
    visible: c.querySelector('.widget-html b, label') ?
      c.querySelector('.widget-html b, label').textContent.trim() : null,
  };
})"""


def blocking(page: Any) -> list[str]:
    """axe-core's serious/critical findings on `page`: rule id, impact and the first targets."""
    page.evaluate(AXE.axe_script)
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return [
        f"{v['id']} ({v['impact']}): "
        + "; ".join(json.dumps(n.get("target")) for n in v.get("nodes", [])[:4])
        for v in results["violations"]
        if v.get("impact") in BLOCKING
    ]


def check_both_languages(page: Any, where: str, relabelled: str) -> None:
    """axe on the page in English, then after its switch to Russian (`relabelled`: a selector
    that is on screen once the page reads Russian)."""
    found = [f"en: {f}" for f in blocking(page)]
    screenshot(page, f"axe-{where}-en")
    page.click(".smartlab-language button:has-text('RU')")
    page.wait_for_selector(relabelled, timeout=15_000)
    assert "smartlab-lang=ru" in page.evaluate("document.cookie"), "the switch sets the cookie"
    found += [f"ru: {f}" for f in blocking(page)]
    screenshot(page, f"axe-{where}-ru")
    assert not found, f"{where}:\n" + "\n".join(found)


@contextlib.contextmanager
def board_server(platform):
    watcher = platform.broker.provision_user("status-board")  # read-only observer
    yield platform.voila(
        "board",
        key="board-axe",
        extra_env={
            "SMARTLAB_BOARD_PUBLIC": "1",
            "SMARTLAB_MQTT_URL": platform.broker.address(watcher.username).url(),
        },
    )


def test_kit_page_as_observer_and_as_holder_has_no_serious_findings(platform, open_page):
    server = platform.voila("alice")
    alice = platform.client("alice")
    wait_until(
        lambda: not next(k for k in alice.kits() if k["id"] == LAMP)["session_state"], timeout=20
    )
    page = open_page(server.page("kit.ipynb", kit=LAMP, lang="en"))
    page.wait_for_selector(".smartlab-readings .smartlab-ts[data-ts]", timeout=45_000)
    page.wait_for_selector(".smartlab-control .noUi-handle")
    found = [f"observer en: {f}" for f in blocking(page)]
    page.click(".smartlab-join")
    page.wait_for_selector(".smartlab-session-status [data-state=holding]", timeout=20_000)
    found += [f"holder en: {f}" for f in blocking(page)]
    names = page.evaluate(CONTROL_NAMES_JS)
    assert names and all(n["name"] for n in names), names
    screenshot(page, "axe-kit-holder-en")
    page.click(".smartlab-language button:has-text('RU')")
    found += [f"holder ru: {f}" for f in blocking(page)]
    ru_names = wait_until(lambda: (n := page.evaluate(CONTROL_NAMES_JS)) != names and n, timeout=10)
    assert all(n["name"] for n in ru_names), ru_names
    assert "smartlab-lang=ru" in page.evaluate("document.cookie")
    screenshot(page, "axe-kit-holder-ru")
    for session in alice.sessions(live=True):
        alice.release(session["id"])
    assert not found, "kit page:\n" + "\n".join(found)


def test_board_has_no_serious_findings(platform, open_page):
    with board_server(platform) as server:
        page = open_page(server.page("overview.ipynb", lang="en"))
        page.wait_for_selector(
            f".smartlab-board-row-{LAMP} .smartlab-kit-state[data-state=ready]", timeout=45_000
        )
        check_both_languages(page, "board", ".smartlab-language")


def test_instructor_page_has_no_serious_findings(platform, open_page):
    page = open_page(platform.voila("carol").page("instructor.ipynb", lang="en"))
    page.wait_for_selector(".smartlab-course-sessions table", timeout=45_000)
    check_both_languages(page, "instructor", ".smartlab-language")


def test_admin_page_has_no_serious_findings(platform, open_page):
    page = open_page(platform.voila("admin").page("admin.ipynb", lang="en"))
    page.wait_for_selector(".smartlab-health table", timeout=45_000)
    check_both_languages(page, "admin", ".smartlab-language")
