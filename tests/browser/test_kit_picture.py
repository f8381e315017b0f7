"""The kit's live picture as a person sees it: real Chromium, Voilà, the lab service, the broker,
twins that draw their own picture and one kit whose camera is a separate publisher
(`CameraCompanion`) that a test stops and starts."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from tests.browser.conftest import COMPANION_KIT, KITS, LAMP, eventually, screenshot
from tests.browser.test_phone import PHONE, assert_fits, on_screen
from tests.conftest import wait_until

pytestmark = pytest.mark.broker


# The picture's mean brightness (0-255), read from the image element itself: drawn into a
# canvas (the widget's blob: URL is same-origin, so the pixels are readable).
BRIGHTNESS_JS = """() => {
  const img = document.querySelector('.smartlab-picture-full img.smartlab-picture-image')
    || document.querySelector('.smartlab-picture-full .smartlab-picture-image');
  if (!img || !img.complete || !img.naturalWidth) return null;
  const c = document.createElement('canvas');
  c.width = img.naturalWidth; c.height = img.naturalHeight;
  const g = c.getContext('2d'); g.drawImage(img, 0, 0);
  const d = g.getImageData(0, 0, c.width, c.height).data;
  let sum = 0;
  for (let i = 0; i < d.length; i += 4) sum += 0.299 * d[i] + 0.587 * d[i+1] + 0.114 * d[i+2];
  return sum / (d.length / 4);
}"""
# The frame's stamps and the telemetry seq beside it, read in one go.
SEQS_JS = """() => {
  const f = document.querySelector('.smartlab-picture-frame[data-seq]');
  const t = document.querySelector('.smartlab-picture-telemetry[data-seq]');
  return f && t && f.dataset.seq ? {frame: +f.dataset.seq, telemetry: +t.dataset.seq,
    ts: +f.dataset.ts} : null;
}"""
THUMBS_JS = """() => Object.fromEntries([...document.querySelectorAll('.smartlab-picture-thumb')]
  .map(box => {
    const kit = [...box.classList].find(c => c.startsWith('smartlab-picture-kit-'));
    const img = box.querySelector('img');
    const state = box.querySelector('[data-state]');
    return [kit.replace('smartlab-picture-kit-', ''),
            img && img.complete && img.naturalWidth ? img.naturalWidth
              : `${state ? state.dataset.state : 'none'} ${img ? img.src.slice(0, 12) : ''}`];
  }))"""


def brightness(page) -> float:
    value = page.evaluate(BRIGHTNESS_JS)
    assert value is not None, "no picture on screen"
    return value


def frame_seq(page) -> int:
    seqs = page.evaluate(SEQS_JS)
    assert seqs is not None, "no frame on screen"
    return seqs["frame"]


def settled(kit) -> bool:
    """The lamp's power has stopped moving (two readings a second apart)."""
    before = kit.latest["lamp-power"]
    time.sleep(1.0)
    return abs(kit.latest["lamp-power"] - before) < 0.5


def type_into_slider(page, actuator: str, value: int) -> None:
    readout = page.locator(f".smartlab-control-{actuator} .widget-readout")
    readout.click()
    readout.fill(str(value))
    readout.press("Enter")


def test_the_holder_dims_the_lamp_and_the_picture_darkens_in_step_with_the_telemetry(
    platform, open_page
):
    page = open_page(platform.voila("alice").page("kit.ipynb", kit=LAMP))
    page.wait_for_selector(".smartlab-picture-frame[data-ts]", timeout=30000)
    # Picture beside the plots: in the plots' grid, and named for screen readers.
    assert page.query_selector(".smartlab-plots .smartlab-picture-full")
    assert page.get_attribute(".smartlab-picture-image", "title") == f"Live picture of kit {LAMP}"

    page.click(".smartlab-join")
    page.wait_for_selector(".smartlab-session-status [data-state=holding]", timeout=20000)
    page.select_option(".smartlab-control-mode select", label="manual")
    page.wait_for_selector(".smartlab-ack-applied:has-text('Mode = manual')")
    kit = platform.observer.kit(LAMP)
    levels: dict[int, float] = {}
    for level in (90, 5):
        type_into_slider(page, "dimming", level)
        page.wait_for_selector(f".smartlab-ack-applied:has-text('Dimming level = {level} %')")
        # The lamp's power follows its level over a few seconds (the twin's lamp).
        wait_until(lambda: settled(kit), timeout=30)
        # A frame stamped with a later sample than the one on screen now shows that power.
        seen = page.evaluate(SEQS_JS)["telemetry"]
        wait_until(lambda s=seen: frame_seq(page) > s, timeout=10)
        levels[level] = brightness(page)
        screenshot(page, f"picture-dimming-{level}")
    assert levels[5] < levels[90] - 5, levels  # the rendered lamp is darker

    # The frame's seq is the telemetry seq it follows: the same sample, or one apart while
    # the next sample (or frame) is on its way over its own connection.
    readings = []
    for _ in range(15):
        readings.append(page.evaluate(SEQS_JS))
        time.sleep(0.2)
    gaps = [r["telemetry"] - r["frame"] for r in readings]
    assert all(-1 <= g <= 1 for g in gaps), readings
    assert gaps.count(0) >= len(gaps) // 2, readings
    assert all(abs(r["ts"] / 1000 - time.time()) < 30 for r in readings)  # the kit's clock

    session = next(s for s in platform.client("alice").sessions(live=True) if s["kit"] == LAMP)
    platform.client("alice").release(session["id"])


def test_a_stopped_camera_shows_its_last_frame_time_then_recovers_by_itself(platform, open_page):
    assert platform.camera is not None
    page = open_page(platform.voila("bob").page("kit.ipynb", kit=COMPANION_KIT), locale="ru-RU")
    page.wait_for_selector(
        ".smartlab-picture-state[data-state=live]", state="attached", timeout=30000
    )
    platform.camera.stop()
    stopped = time.time()
    notice = page.wait_for_selector(".smartlab-picture-state[data-state=stale]", timeout=5000)
    took = time.time() - stopped
    assert platform.camera.last_ts_ms is not None
    last = dt.datetime.fromtimestamp(platform.camera.last_ts_ms / 1000).strftime("%H:%M:%S")
    assert notice.inner_text() == f"Камера остановлена — последний кадр в {last}"
    assert took < 3.0  # 3 frame periods + 1 s, plus the page's check every 0.5 s
    # The kit itself is unaffected: online, its values still flowing.
    assert page.get_attribute(".smartlab-kit-state", "data-state") == "ready"
    kit = platform.observer.kit(COMPANION_KIT)
    wait_until(lambda: (kit.latest_ts or 0) > stopped, timeout=5)
    screenshot(page, "picture-stale-ru")

    platform.camera.start()
    page.wait_for_selector(
        ".smartlab-picture-state[data-state=live]", state="attached", timeout=5000
    )
    eventually(lambda: assert_newer(page, stopped), timeout=5)


def assert_newer(page, since: float) -> None:
    seqs = page.evaluate(SEQS_JS)
    assert seqs is not None and seqs["ts"] / 1000 > since


def test_the_board_shows_a_live_thumbnail_per_kit(platform, open_page):
    page = open_page(platform.voila("bob").page("overview.ipynb"))
    page.wait_for_selector(".smartlab-picture-thumb", timeout=30000)
    eventually(lambda: check_thumbs(page), timeout=20)
    screenshot(page, "board-thumbnails")


def check_thumbs(page) -> None:
    widths = page.evaluate(THUMBS_JS)
    assert set(widths) >= set(KITS), widths
    assert all(widths[kit] == 96 for kit in KITS), widths  # a decoded 96 x 72 thumbnail


def test_the_picture_fits_a_phone_screen(platform, open_page):
    page = open_page(
        platform.voila("bob").page("kit.ipynb", kit=LAMP),
        viewport=PHONE,
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    page.wait_for_selector(".smartlab-picture-frame[data-ts]", timeout=30000)
    assert on_screen(page, ".smartlab-picture-image")
    assert_fits(page)
