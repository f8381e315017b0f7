"""Replay of a recorded session in real Chromium: a session is recorded by holding a kit through
the lab service and commanding it, then replayed from the lab service's history in the kit
dashboard's replay mode (play at ×8, scrub), and refused to a student of another institution."""

from __future__ import annotations

import time

import pytest

from hardware_kits.descriptor import load_models
from labs.client import CommandRejected
from labs.i18n import Texts
from labs.widgets.plots import format_value
from tests.browser.conftest import LAMP2, eventually, screenshot
from tests.conftest import wait_until

pytestmark = pytest.mark.broker

SENSOR = "lamp-power"
SHOWN_JS = """() => {
  const pos = document.querySelector('.smartlab-replay-position [data-ts]');
  const chip = document.querySelector(
    `.smartlab-readings [data-sensor='lamp-power']`);
  const stamp = chip && chip.querySelector('.smartlab-ts[data-ts]');
  const value = chip && chip.querySelector('.smartlab-value');
  return pos && {cursor: parseFloat(pos.dataset.ts),
                 sample: stamp ? parseFloat(stamp.dataset.ts) : null,
                 value: value ? value.textContent : null};
}"""


@pytest.fixture(scope="module")
def recorded(platform):
    """alice holds the lamp, sets dimming twice and sends one value the kit rejects; what the
    observer saw live meanwhile, and the session's range."""
    live: dict[float, float] = {}
    kit_seen = platform.observer.kit(LAMP2)
    unsubscribe = kit_seen.subscribe(
        lambda _k, body: live.__setitem__(round(body["ts"], 3), body["values"].get(SENSOR))
    )
    alice = platform.client("alice")
    try:
        with alice.session(LAMP2, progress=None) as kit:
            kit.set("mode", "manual")
            for level in (20, 90, 45):
                kit.set("dimming", level)
                time.sleep(4)
            with pytest.raises(CommandRejected):
                kit.send_raw("dimming", "not-a-number")
            time.sleep(1)
    finally:
        unsubscribe()

    def released() -> dict | None:
        """alice's session released"""
        mine = max((s for s in alice.sessions() if s["kit"] == LAMP2), key=lambda s: s["id"])
        return mine if mine["released_at"] else None

    session = wait_until(released, timeout=20)
    start, end = session["granted_at"], session["released_at"]

    def commands_recorded() -> bool | None:
        """the rejected command recorded"""
        got = alice.replay(LAMP2, start, end)["commands"]
        return any(c["outcome"] == "rejected" for c in got) or None

    wait_until(commands_recorded, timeout=10)
    return {"live": live, "start": start, "end": end}


def _live_text(recorded, sample_ts: float) -> str:
    spec = load_models()["street-lighting"]["sensors"][SENSOR]
    nearest = min(recorded["live"], key=lambda ts: abs(ts - sample_ts))  # data-ts: 3 decimals
    assert abs(nearest - sample_ts) < 0.002, f"no live sample at {sample_ts}"
    return format_value(recorded["live"][nearest], spec, Texts("en"))


def test_a_recorded_session_replays_the_live_values_and_commands_at_x8_and_scrubs(
    platform, open_page, recorded
):
    url = platform.voila("alice").page(
        "kit.ipynb", kit=LAMP2, start=f"{recorded['start']:.3f}", end=f"{recorded['end']:.3f}"
    )
    page = open_page(url, viewport={"width": 390, "height": 900})
    page.wait_for_selector(".smartlab-replay-position [data-ts]")
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # a phone's width
    page.select_option(".smartlab-replay-speed select", label="×8")
    page.click(".smartlab-replay-play button >> nth=0")  # play
    seen = []
    began = time.monotonic()
    while time.monotonic() - began < 1.5:
        shown = page.evaluate(SHOWN_JS)
        seen.append((time.monotonic(), shown))
        if shown["sample"] is not None:  # every value shown is the one that was live
            assert shown["value"] == _live_text(recorded, shown["sample"]), shown
        time.sleep(0.1)
    (t0, first), (t1, last) = seen[0], seen[-1]
    speed = (last["cursor"] - first["cursor"]) / (t1 - t0)
    assert 5.0 <= speed <= 10.0, f"played at ×{speed:.1f}"
    span = recorded["end"] - recorded["start"]
    eventually(  # played to the end: every command of the session, who and the outcome
        lambda: _assert_all_commands(page.inner_text(".smartlab-replay-commands")),
        timeout=span / 8 + 10,
    )
    screenshot(page, "replay-x8-end")
    box = page.locator(".smartlab-replay-slider .noUi-base, .smartlab-replay-slider .slider")
    area = box.first.bounding_box()
    page.mouse.click(area["x"] + area["width"] * 0.25, area["y"] + area["height"] / 2)

    def scrubbed() -> None:
        shown = page.evaluate(SHOWN_JS)
        assert abs(shown["cursor"] - (recorded["start"] + 0.25 * span)) < 0.08 * span, shown
        assert shown["sample"] is not None and shown["sample"] <= shown["cursor"]
        assert shown["value"] == _live_text(recorded, shown["sample"]), shown

    eventually(scrubbed, timeout=10)
    # the synthetic camera's picture of that moment, recorded at about a frame a second
    eventually(lambda: _assert_visible(page, ".smartlab-replay-picture"), timeout=10)
    screenshot(page, "replay-scrubbed")


def _assert_visible(page, selector: str) -> None:
    box = page.locator(selector).bounding_box()
    assert box is not None and box["height"] > 20, box


def _assert_all_commands(text: str) -> None:
    assert text.count("alice") >= 4, text  # mode and three dimming levels
    assert "dimming = 90" in text and "applied" in text and "rejected" in text, text


def test_a_student_of_another_institution_cannot_open_the_session_replay(
    platform, open_page, recorded
):
    url = platform.voila("bob").page(
        "kit.ipynb", kit=LAMP2, start=f"{recorded['start']:.3f}", end=f"{recorded['end']:.3f}"
    )
    page = open_page(url, locale="ru-RU")
    page.wait_for_selector(".smartlab-error")
    assert "нельзя" in page.inner_text(".smartlab-error")
    assert page.query_selector(".smartlab-replay") is None
    assert page.query_selector(".smartlab-readings") is None
    screenshot(page, "replay-refused")
