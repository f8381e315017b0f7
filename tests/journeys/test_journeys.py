"""Each role's journey through the platform, in Russian and in English: the hub's root URL
opened once, then only visible links, buttons and labelled fields (tests/journeys/steps.py,
whose `NAMES` table holds every name clicked). Every step leaves a screenshot and every page
an axe-core report in test-artifacts/journeys/<test>/<lang>/; a serious or critical
accessibility violation on any page fails the journey.

One platform (`smartlab up`) serves all journeys, in the order of this file: the student's
submission is what the instructor autogrades.
"""

from __future__ import annotations

import re

import pytest

from tests.journeys import steps
from tests.journeys.journey import PHONE

LANGS = pytest.mark.parametrize("lang", ["en", "ru"])


@LANGS
def test_anonymous_visitor_reads_the_board_on_a_phone(journey, lang):
    j = journey(lang, PHONE)
    j.page.wait_for_url(re.compile(r"/hub/login"))
    steps.click(j, "board", wait=10)
    assert re.search(r"/services/status/", j.page.url), j.page.url
    for kit in steps.DEMO_KITS:  # every kit listed, by its id or its name
        j.sees(re.compile(rf"{re.escape(kit.id)}|{re.escape(kit.name)}"), timeout=60)
    j.snap("board-read")
    width = j.page.evaluate("document.documentElement.scrollWidth")
    assert width <= PHONE["width"], f"the board is {width} px wide on a {PHONE['width']} px screen"
    j.finish()


@LANGS
def test_hub_admin_reaches_the_admin_page_listing_people_only(journey, lang):
    j = journey(lang)
    steps.log_in(j, "hugo")
    steps.at_front_door(j)
    steps.click(j, "hub_admin", wait=10)
    assert re.search(r"/hub/admin", j.page.url), j.page.url
    table = j.page.get_by_role("table").first
    table.get_by_text("anna", exact=True).first.wait_for(timeout=30_000)
    listed = table.inner_text()
    assert "grader-" not in listed, "service accounts on the hub admin page"
    j.finish()


@LANGS
def test_student_controls_a_kit_and_submits_an_assignment(journey, lang):
    j = journey(lang)
    steps.log_in(j, "anna" if lang == "en" else "artem")
    steps.at_front_door(j)
    steps.open_kit_dashboard(j)  # ≤ 2 clicks after login: sign in, the kit
    steps.queue_and_hold(j)
    steps.control_slider(j)
    steps.release(j)
    steps.click(j, "front_door")
    steps.fetch_and_submit(j)
    j.finish()


@LANGS
def test_instructor_autogrades_and_books_in_the_calendar(journey, lang):
    j = journey(lang)
    steps.log_in(j, "irina")
    steps.at_front_door(j)
    front = j.page
    steps.formgrader_autograde(j)
    j.page = front  # back to the front door's tab
    steps.book_invalid_slot(j)
    j.finish()


@LANGS
def test_lab_admin_takes_a_kit_into_maintenance(journey, lang):
    j = journey(lang)
    steps.log_in(j, "lara")
    steps.at_front_door(j)
    reason = {"en": "Lamp replaced", "ru": "Замена лампы"}[lang]
    kit = {"en": "streetlight-2", "ru": "envstation-1"}[lang]  # each run its own kit
    steps.take_into_maintenance(j, reason, kit)
    j.finish()
