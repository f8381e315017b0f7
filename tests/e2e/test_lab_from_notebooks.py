"""Inside the hub: a student's notebook reaches the lab service and the kits with nothing typed
(the server carries the user's hub token and the lab service's address), and the public status
board answers anyone."""

from __future__ import annotations

import json

import pytest

from site_config.kits import load_kits
from site_config.paths import DEMO_SITE
from tests.e2e.hubclient import Browser, run_in_kernel

pytestmark = pytest.mark.broker

NOTEBOOK_CODE = """
import json
from labs.client import LabService, connect
from site_config.paths import DEMO_SITE
me = LabService().me()
lab = connect()
lab.wait_for_kits(%d, timeout=30)
print(json.dumps({"me": me, "kits": sorted(lab.kits())}))
lab.close()
"""


def test_a_notebook_uses_the_lab_without_typing_credentials(platform, browsers):
    kits = sorted(k.id for k in load_kits(DEMO_SITE))
    boris = browsers["boris"]
    boris.start_server()
    boris.open("/user/boris/lab")
    seen = json.loads(run_in_kernel(boris, NOTEBOOK_CODE % len(kits)).strip().splitlines()[-1])
    assert seen["me"]["name"] == "boris"
    assert seen["me"]["institution"] == "univ-b"  # from the hub's groups, not typed anywhere
    assert seen["kits"] == kits


def test_the_status_board_is_public(platform):
    anonymous = Browser(platform.hub_url)
    answer = anonymous.get("/services/status/")
    assert answer.status_code == 200, answer.status_code
    assert "voila" in answer.text.lower()


def test_the_board_s_slashless_address_redirects_and_a_phone_sees_every_kit_filled(platform):
    """`/services/status` (no slash) leads to the board; an anonymous visitor on a 390 px phone
    reads every kit's availability, holder and queue (the lab service's public route: the
    board holds no identity)."""
    from playwright.sync_api import sync_playwright

    from tests.stack import launch_chromium

    anonymous = Browser(platform.hub_url)
    bare = anonymous.get("/services/status?lang=ru", allow_redirects=False)
    assert bare.status_code in (301, 302), bare.status_code
    assert bare.headers["Location"].endswith("/services/status/?lang=ru"), bare.headers
    kits = sorted(k.id for k in load_kits(DEMO_SITE))
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            context = chromium.new_context(
                viewport={"width": 390, "height": 844}, is_mobile=True, locale="en-GB"
            )
            page = context.new_page()
            page.set_default_timeout(60_000)
            page.goto(platform.hub_url.rstrip("/") + "/services/status")
            assert page.url.endswith("/services/status/")
            for kit_id in kits:
                page.wait_for_selector(
                    f".smartlab-board-row-{kit_id} .smartlab-availability[data-availability]"
                    ":not([data-availability=''])"
                )
                queue = page.inner_text(f".smartlab-board-row-{kit_id} .smartlab-board-queue")
                assert queue.split(":")[-1].strip().isdigit(), (kit_id, queue)
            assert page.evaluate("document.documentElement.scrollWidth") <= 390
        finally:
            chromium.close()
