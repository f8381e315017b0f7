"""Several students ask for their servers at once on a hub that starts one at a time
(`servers: {concurrent_starts: 1}` in the site file): they start one after another in the order
asked, each later one reads its place in the line on the hub's progress event stream (as the
spawn page does), the spawn page shows it readable on a phone in Russian and in English, and all
servers start."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from playwright.sync_api import sync_playwright

from site_config.paths import DEMO_SITE
from site_config.site import hash_password
from tests.e2e.hubclient import Browser
from tests.stack import ARTIFACTS, Up, launch_chromium, running

PASSWORD = "line-password"
STUDENTS = [f"liner{i}" for i in range(1, 5)]  # ask through the API, at once
ON_PHONE = {"ru": "liner5", "en": "liner6"}  # ask through the spawn page, after them
PHONE = {"width": 390, "height": 844}
PLACE = re.compile(r"(?:Your place in line|Ваше место в очереди): (\d+)\.")


@pytest.fixture(scope="module")
def line_platform(state_root: Path, home_root: Path) -> Iterator[Up]:
    site = yaml.safe_load(DEMO_SITE.read_text())
    site["servers"]["concurrent_starts"] = 1
    hashed = hash_password(PASSWORD)
    for name in [*STUDENTS, *ON_PHONE.values()]:
        site["people"].append(
            {"username": name, "roles": ["student"], "institution": "univ-a"}
            | {"name": name.title(), "password_hash": hashed}
        )
    path = state_root / "line-site.yaml"
    path.write_text(yaml.safe_dump(site, allow_unicode=True, sort_keys=False))
    # Cold starts (seconds each, not the forker's fraction of one), so that a line forms
    # long enough for the phones to see their place in it.
    cold = "--no-server-forker"
    with running(Up(state_root / "line-state", home_root, "--site", str(path), cold)) as up:
        yield up


class Watch:
    """One student: asks for the server, then reads the progress stream to its end."""

    def __init__(self, platform: Up, name: str) -> None:
        self.browser = Browser(platform.hub_url, name)
        self.browser.login(PASSWORD)
        self.events: list[tuple[float, dict[str, Any]]] = []
        self.error: str | None = None

    def run(self, gate: threading.Event) -> None:
        name = self.browser.username
        # The hub answers the request for a server only after up to 10 s (its slow_spawn_timeout),
        # so the stream is read meanwhile, from another session with the same cookies.
        asker = Browser(self.browser.hub_url, name)
        asker.http.cookies.update(self.browser.http.cookies)
        asked: list[int] = []
        try:
            gate.wait()
            poster = threading.Thread(
                target=lambda: asked.append(asker.post(f"/hub/api/users/{name}/server").status_code)
            )
            poster.start()
            deadline = time.monotonic() + 60
            while True:  # 404 or 400 until the hub has begun the start
                stream = self.browser.get(
                    f"/hub/api/users/{name}/server/progress", stream=True, timeout=600
                )
                if stream.status_code not in (400, 404) or time.monotonic() > deadline:
                    break
                stream.close()
                time.sleep(0.05)
            assert stream.status_code == 200, (stream.status_code, stream.text[:300])
            with stream:
                for line in stream.iter_lines(decode_unicode=True):
                    if line and line.startswith("data:"):
                        event = json.loads(line[5:])
                        self.events.append((time.monotonic(), event))
                        if event.get("ready") or event.get("failed"):
                            break
            poster.join(60)
            assert asked and asked[0] in (201, 202), asked
        except Exception as err:
            self.error = f"{type(err).__name__}: {err}"

    def when(self, text: str) -> float:
        return next(t for t, e in self.events if text in e.get("message", ""))

    @property
    def places(self) -> list[int]:
        return [int(m[1]) for _, e in self.events if (m := PLACE.match(e.get("message", "")))]


def spawn_page_on_a_phone(playwright: Any, platform: Up, name: str, lang: str) -> dict[str, Any]:
    """Log in and ask for the server as a person does, on a 390 px phone in `lang`; return
    what the spawn page's progress message says while the server waits in line."""
    chromium = launch_chromium(playwright)
    try:
        context = chromium.new_context(
            viewport=PHONE, is_mobile=True, locale="ru-RU" if lang == "ru" else "en-GB"
        )
        page = context.new_page()
        page.goto(f"{platform.hub_url}/hub/login")
        page.fill("#username_input", name)
        page.fill("#password_input", PASSWORD)
        page.click("#login_submit")
        page.goto(f"{platform.hub_url}/hub/spawn/{name}")
        page.wait_for_url(re.compile(r"/hub/spawn-pending/"), timeout=60_000)
        message = page.locator("#progress-message")
        message.filter(has_text=PLACE).wait_for(timeout=120_000)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / f"spawn-line-{lang}.png"), full_page=True)
        box = message.bounding_box()
        return {
            "text": message.inner_text(),
            "box": box,
            "scroll": page.evaluate("document.documentElement.scrollWidth"),
            "lang": page.evaluate("document.documentElement.lang"),
            "log": page.locator("#progress-details summary").inner_text(),
            "stop": page.locator("#stop-server-btn").inner_text(),
            "live": message.get_attribute("aria-live"),
            "font_px": float(message.evaluate("e => getComputedStyle(e).fontSize")[:-2]),
        }
    finally:
        chromium.close()


def test_a_burst_starts_one_at_a_time_in_order_and_each_knows_its_place(line_platform):
    watches = [Watch(line_platform, name) for name in STUDENTS]
    gate = threading.Event()
    threads = [threading.Thread(target=w.run, args=(gate,)) for w in watches]
    for thread in threads:
        thread.start()
    gate.set()

    pages = {}
    time.sleep(1.0)  # the API's students have asked: the phones' come after them
    with sync_playwright() as playwright:
        for lang, name in ON_PHONE.items():
            pages[lang] = spawn_page_on_a_phone(playwright, line_platform, name, lang)
    for thread in threads:
        thread.join(600)

    said = {w.browser.username: (w.error, [e.get("message") for _, e in w.events]) for w in watches}
    assert [w.error for w in watches] == [None] * len(watches), said
    for watch in watches:
        assert watch.events[-1][1].get("ready"), watch.events[-1]
        assert "{" not in " ".join(e.get("message", "") for _, e in watch.events)
    # One at a time: ordered by when they began, each began only once the one before answered.
    by_start = sorted(watches, key=lambda w: w.when("Starting your server"))
    ready_at = [w.events[-1][0] for w in by_start]
    assert ready_at == sorted(ready_at)
    for before, after in itertools.pairwise(by_start):
        assert after.when("Starting your server") >= before.events[-1][0] - 1.0
    # The later ones knew their place, and it only went down; the first had none to wait.
    assert by_start[0].places == []
    for place, watch in enumerate(by_start[1:], start=1):
        assert watch.places and watch.places[0] == place, [e for _, e in watch.events]
        assert watch.places == sorted(watch.places, reverse=True)
    # Once a start was measured, later ones were told an estimate.
    told = [e["message"] for w in by_start[2:] for _, e in w.events]
    assert any("should be ready in" in m for m in told), told

    # The phones asked after all of them: behind them in the line, in their own language.
    assert PLACE.match(pages["ru"]["text"]) and pages["ru"]["text"].startswith("Ваше место")
    assert pages["en"]["text"].startswith("Your place in line: ")
    assert (pages["ru"]["log"], pages["ru"]["stop"]) == ("Журнал событий", "Остановить сервер")
    assert (pages["en"]["log"], pages["en"]["stop"]) == ("Event log", "Stop Server")
    assert int(PLACE.match(pages["ru"]["text"])[1]) >= 1
    for lang, page in pages.items():
        assert page["lang"] == lang and page["live"] == "polite"
        assert page["scroll"] <= PHONE["width"], f"{lang}: the page scrolls sideways"
        box = page["box"]
        assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"] + 1, (lang, box)
        assert page["font_px"] >= 14, page
    for name in ON_PHONE.values():
        phone_user = Browser(line_platform.hub_url, name)
        phone_user.login(PASSWORD)
        phone_user.wait_ready(timeout=300)
