"""The dashboards as a person sees them: real Chromium against Voilà, the lab service, the broker
and twins. Tests run in file order on one platform; each leaves the kits free and in the pool.
The last one stops the lab service (and starts it again)."""

from __future__ import annotations

import time

import pytest

from hardware_kits.descriptor import load_models
from labs.client import CommandRejected
from tests.browser.conftest import (
    COURSE,
    CROSS,
    ENV,
    KITS,
    LAMP,
    LAMP2,
    PARK,
    eventually,
    screenshot,
)
from tests.conftest import wait_until

pytestmark = pytest.mark.broker

DISABLED_JS = """(actuator) => {
  const root = document.querySelector(`.smartlab-control-${actuator} .smartlab-input`);
  if (!root) return null;
  const el = root.matches('button, select, input, textarea') ? root
    : root.querySelector('select, input, textarea, button, .slider');
  const flag = el.getAttribute('disabled');
  return flag !== null && flag !== 'false';
}"""
TS_JS = """(sensor) => {
  const el = document.querySelector(
    `.smartlab-readings [data-sensor='${sensor}'] .smartlab-ts[data-ts]`);
  return el ? parseFloat(el.dataset.ts) : null;
}"""
LINE_JS = """(sensor) => {
  const el = document.querySelector(`.smartlab-sensor-${sensor} svg path.line`);
  return el ? el.getAttribute('d') : null;
}"""


# The order in which a page shows the first paint (laid out, i.e. visible; and whether the
# page was still loading, i.e. before Voilà's scripts) and a live value.
FIRST_PAINT_JS = """
window.__shown = [];
new MutationObserver(() => {
  const shown = window.__shown;
  const paint = document.querySelector('.smartlab-snapshot');
  if (paint && paint.getClientRects().length && !shown.length)
    shown.push(`first paint (${document.readyState})`);
  if (document.querySelector('.smartlab-live') && !shown.includes('live')) shown.push('live');
}).observe(document, {subtree: true, childList: true});
"""


def sample_ts(page, sensor: str) -> float | None:
    return page.evaluate(TS_JS, sensor)


def controls_disabled(page, kit_model: str) -> dict[str, bool | None]:
    actuators = load_models()[kit_model]["actuators"]
    return {a: page.evaluate(DISABLED_JS, a) for a in actuators}


def session_state(page) -> str | None:
    el = page.query_selector(".smartlab-session-status [data-state]")
    return el.get_attribute("data-state") if el else None


def type_into_slider(page, actuator: str, value: int) -> None:
    readout = page.locator(f".smartlab-control-{actuator} .widget-readout")
    readout.click()
    readout.fill(str(value))
    readout.press("Enter")


def wait_first_value(page, sensor: str, timeout: float = 30.0) -> float:
    page.wait_for_selector(
        f".smartlab-readings [data-sensor='{sensor}'] .smartlab-ts[data-ts]", timeout=timeout * 1000
    )
    return sample_ts(page, sensor)


# ---------------------------------------------------------------- the kit dashboard


def test_observer_sees_live_values_of_every_sensor_and_cannot_control(platform, open_page):
    page = open_page(platform.voila("bob").page("kit.ipynb", kit=LAMP))
    first = wait_first_value(page, "ambient-light")
    line = page.evaluate(LINE_JS, "ambient-light")
    # Values change over time: newer samples arrive and the plotted line moves.
    wait_until(lambda: sample_ts(page, "ambient-light") > first + 1, timeout=10)
    wait_until(lambda: page.evaluate(LINE_JS, "ambient-light") != line, timeout=10)
    for sensor in load_models()["street-lighting"]["sensors"]:
        assert page.query_selector(f".smartlab-sensor-{sensor} svg"), sensor
    assert controls_disabled(page, "street-lighting") == {"mode": True, "dimming": True}
    assert page.get_attribute(".smartlab-control-hint [data-role]", "data-role") == "observer"
    assert page.inner_text(".smartlab-control-mode .smartlab-current") == "now: auto"
    assert page.get_attribute(".smartlab-kit-state", "data-state") == "ready"
    screenshot(page, "kit-observer")


def test_the_page_paints_the_latest_values_before_its_widgets_are_live(platform, browser):
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    try:
        context.add_init_script(FIRST_PAINT_JS)
        page = context.new_page()
        page.set_default_timeout(30_000)
        served = page.goto(platform.voila("bob").page("kit.ipynb", kit=LAMP)).text()
        paint = served[served.index('class="smartlab-snapshot"') :]
        for sensor in load_models()["street-lighting"]["sensors"]:
            assert f"data-sensor='{sensor}'" in paint
        assert 'data-ts="' in paint  # a value with its time, in the HTML itself
        wait_first_value(page, "lamp-power")
        wait_until(lambda: page.locator(".smartlab-snapshot").count() == 0, timeout=10)
        assert page.evaluate("window.__shown") == ["first paint (loading)", "live"]
    finally:
        context.close()


def test_every_kit_model_renders_from_its_descriptor(platform, open_page):
    """No page per model: the intersection's JSON plan gets a text area, enums a dropdown."""
    page = open_page(platform.voila("bob").page("kit.ipynb", kit=CROSS))
    wait_first_value(page, "queue-length")
    model = load_models()["intersection"]
    for sensor in model["sensors"]:
        page.wait_for_selector(f".smartlab-sensor-{sensor}")
    assert page.query_selector(".smartlab-control-phase-plan textarea")
    assert page.query_selector(".smartlab-control-mode select")
    assert page.query_selector(".smartlab-control-phase-request .widget-slider")
    assert all(controls_disabled(page, "intersection").values())
    screenshot(page, "kit-intersection")


def test_controller_is_granted_commands_the_twin_and_loses_control_when_the_session_ends(
    platform, open_page
):
    alice = platform.client("alice")
    page = open_page(platform.voila("alice").page("kit.ipynb", kit=LAMP), locale="ru-RU")
    page.wait_for_selector(".smartlab-join")
    assert page.inner_text(".smartlab-join").strip() == "Встать в очередь"
    wait_first_value(page, "lamp-power")
    assert all(controls_disabled(page, "street-lighting").values())

    page.click(".smartlab-join")
    page.wait_for_selector(".smartlab-session-status [data-state=holding]", timeout=20000)
    eventually(
        lambda: controls_disabled(page, "street-lighting") == {"mode": False, "dimming": False}
    )
    assert page.get_attribute(".smartlab-control-hint [data-role]", "data-role") == "controller"

    # In auto mode the kit refuses a dimming level: the reason comes in Russian.
    type_into_slider(page, "dimming", 40)
    rejected = page.wait_for_selector(".smartlab-ack-rejected")
    assert "«Уровень яркости» можно менять, только когда «Режим» — ручной" in rejected.inner_text()

    page.select_option(".smartlab-control-mode select", label="ручной")  # the name, not the code
    page.wait_for_selector(".smartlab-ack-applied:has-text('Режим = ручной')")
    kit = platform.observer.kit(LAMP)
    wait_until(lambda: kit.actuators.get("mode") == "manual", timeout=5)  # reached the twin
    type_into_slider(page, "dimming", 40)
    page.wait_for_selector(".smartlab-ack-applied:has-text('Уровень яркости = 40 %')")
    wait_until(lambda: kit.actuators.get("dimming") == 40, timeout=5)
    screenshot(page, "kit-controller-ru")

    live = [s for s in alice.sessions(live=True) if s["kit"] == LAMP]
    platform.client("admin").end_session(live[0]["id"])
    page.wait_for_selector(".smartlab-session-status [data-state=idle]", timeout=10000)
    eventually(lambda: all(controls_disabled(page, "street-lighting").values()))
    assert "завершён администратором" in page.inner_text(".smartlab-session-status")
    assert page.get_attribute(".smartlab-control-hint [data-role]", "data-role") == "observer"
    screenshot(page, "kit-session-ended-ru")

    page.click(".smartlab-language .widget-toggle-button:has-text('EN')")
    page.wait_for_selector(".smartlab-join:has-text('Queue for this kit')")
    page.wait_for_selector(".smartlab-session-status:has-text('ended by a lab admin')")
    wait_until(lambda: kit.actuators.get("mode") == "auto", timeout=10)  # the safe state


def test_closing_the_tab_releases_the_kit_and_ends_kernel_and_connections(platform, open_page):
    server = platform.voila("alice")
    alice = platform.client("alice")
    before = server.kernel_pids()
    wait_until(
        lambda: (
            next(k for k in alice.kits() if k["id"] == LAMP)["pool"] == "in-pool"
            and not next(k for k in alice.kits() if k["id"] == LAMP)["session_state"]
        ),
        timeout=15,
    )
    page = open_page(server.page("kit.ipynb", kit=LAMP))
    page.click(".smartlab-join")
    page.wait_for_selector(".smartlab-session-status [data-state=holding]", timeout=20000)
    kernels = server.kernel_pids() - before
    assert len(kernels) == 1
    session = next(s for s in alice.sessions(live=True) if s["kit"] == LAMP)

    page.close(run_before_unload=True)
    wait_until(lambda: not (server.kernel_pids() & kernels), timeout=20)  # kernel shut down

    def released() -> dict | None:
        """the page's kernel released the session on its way out"""
        s = next(s for s in alice.sessions() if s["id"] == session["id"])
        return s if s["state"] not in ("granted", "active") else None

    ended = wait_until(released, timeout=10)
    assert ended["end_reason"] == "released"


def test_a_kit_lost_mid_view_is_announced_and_the_page_recovers(platform, open_page):
    page = open_page(platform.voila("bob").page("kit.ipynb", kit=PARK))
    wait_first_value(page, "occupied")
    platform.park.kill()  # the broker publishes the kit's will: lost
    page.wait_for_selector(".smartlab-kit-state[data-state=lost]", timeout=10000)
    banner = page.wait_for_selector(".smartlab-kit-banner:has-text('is lost')")
    assert "recovers by itself" in banner.inner_text()
    screenshot(page, "kit-lost")
    lost_at = time.time()

    platform.restart_park()
    page.wait_for_selector(".smartlab-kit-state[data-state=ready]", timeout=20000)
    wait_until(lambda: (sample_ts(page, "occupied") or 0) > lost_at, timeout=10)
    eventually(lambda: page.is_hidden(".smartlab-kit-banner"), timeout=5)


# ---------------------------------------------------------------- the other views


def test_overview_board_lists_every_kit_with_its_status(platform, open_page):
    admin, bob = platform.client("admin"), platform.client("bob")
    admin.set_maintenance(LAMP2, True, "bulb replacement")
    entry = bob.join(CROSS)
    session = entry["session"]
    try:
        watcher = platform.broker.provision_user("status-board")  # read-only observer
        board = platform.voila(
            "board",
            key="board",
            preheat={"overview.ipynb": 1},
            extra_env={
                "SMARTLAB_BOARD_PUBLIC": "1",
                "SMARTLAB_MQTT_URL": platform.broker.address(watcher.username).url(),
            },
        )
        wait_until(lambda: board.pool_ready("overview.ipynb", 1), timeout=60)
        started = time.monotonic()
        page = open_page(board.page("overview.ipynb"))
        for kit_id in KITS:
            page.wait_for_selector(
                f".smartlab-board-row-{kit_id} .smartlab-kit-state[data-state=ready]"
            )
        first_paint = time.monotonic() - started
        row = f".smartlab-board-row-{LAMP2}"
        # public: the lab service's anonymous route, so no admin's reason
        page.wait_for_selector(f"{row} .smartlab-availability[data-availability=maintenance]")
        assert "bulb replacement" not in page.inner_text(row)
        page.wait_for_selector(f".smartlab-board-row-{CROSS} :text('University B')")
        page.wait_for_selector(
            f".smartlab-board-row-{LAMP} .smartlab-availability[data-availability=available]"
        )
        page.wait_for_selector(f".smartlab-board-row-{LAMP} .smartlab-spark svg")
        assert page.query_selector_all(".smartlab-input, .smartlab-join") == []  # read-only
        assert "Read-only public view." in page.inner_text(".smartlab-overview")
        screenshot(page, "overview-board")
        print(f"board: every kit shown {first_paint:.2f} s after opening (preheated)")
    finally:
        bob.release(session["id"])
        admin.set_maintenance(LAMP2, False)


def test_admin_view_takes_a_kit_into_maintenance_and_shows_health_usage_and_rejections(
    platform, open_page
):
    bob, admin = platform.client("bob"), platform.client("admin")
    # A rejection for the record: dimming in auto mode breaks an interlock.
    with bob.session(LAMP2, progress=None) as kit, pytest.raises(CommandRejected):
        kit.set("dimming", 10)
    page = open_page(platform.voila("admin").page("admin.ipynb"))
    page.wait_for_selector(f".smartlab-health-{LAMP2}")
    for kit_id in KITS:
        assert page.query_selector(f".smartlab-health-{kit_id}"), kit_id
    page.wait_for_selector(".smartlab-rejections :text('dash-lamp-2')")
    assert "not allowed in the kit's current state" in page.inner_text(".smartlab-rejections")
    assert page.query_selector_all(
        ".smartlab-admin svg .bargroup rect, .smartlab-admin svg rect.bar"
    )

    page.select_option(".smartlab-admin .widget-dropdown select", LAMP2)
    page.fill(".smartlab-admin .widget-text input", "lamp driver replaced")
    page.click(".smartlab-maintenance-on")
    page.wait_for_selector(f".smartlab-health-{LAMP2} .smartlab-pool[data-pool=maintenance]")
    page.wait_for_selector(f".smartlab-attention-{LAMP2}:has-text('lamp driver replaced')")
    assert next(k for k in admin.kits() if k["id"] == LAMP2)["pool"] == "maintenance"
    screenshot(page, "admin-maintenance")

    page.click(".smartlab-maintenance-off")
    page.wait_for_selector(f".smartlab-health-{LAMP2} .smartlab-pool[data-pool=in-pool]")


def test_a_student_cannot_open_the_admin_view(platform, open_page):
    page = open_page(platform.voila("bob").page("admin.ipynb"))
    error = page.wait_for_selector(".smartlab-error")
    assert "for lab admins" in error.inner_text()
    assert not page.query_selector(".smartlab-health")


def test_instructor_view_shows_the_course_bookings_sessions_and_usage(platform, open_page):
    carol, alice, bob = (platform.client(u) for u in ("carol", "alice", "bob"))
    for student in (alice, bob):  # alice takes the course, bob does not
        entry = student.join(kit=ENV)
        session = entry.get("session") or wait_until(
            lambda e=entry, s=student: s.queue_entry(e["id"]).get("session"), timeout=30
        )
        student.release(session["id"])
    assert {s["user"] for s in carol.sessions(course=COURSE)} == {"alice"}
    start = int(time.time()) + 3600
    booking = carol.book(LAMP, COURSE, start, start + 1800)
    try:
        page = open_page(platform.voila("carol").page("instructor.ipynb"), locale="ru-RU")
        page.wait_for_selector(".smartlab-course-bookings :text('dash-lamp-1')")
        assert "Календарь бронирований" in page.inner_text(".smartlab-instructor")
        assert page.query_selector(".smartlab-instructor svg")  # the usage charts
        page.wait_for_selector(".smartlab-course-sessions :text('alice')")
        assert "bob" not in page.inner_text(".smartlab-course-sessions")
        screenshot(page, "instructor-ru")
    finally:
        carol.cancel_booking(booking["id"])


def test_lab_service_unreachable_shows_a_banner_and_values_keep_flowing(platform, open_page):
    page = open_page(platform.voila("bob").page("kit.ipynb", kit=LAMP))
    wait_first_value(page, "ambient-light")
    platform.service.kill()
    try:
        banner = page.wait_for_selector(
            ".smartlab-service-banner:has-text('unreachable')", timeout=15000
        )
        assert "live values keep flowing" in banner.inner_text()
        down_at = time.time()
        wait_until(lambda: sample_ts(page, "ambient-light") > down_at + 1, timeout=10)
        screenshot(page, "kit-service-down")
    finally:
        platform.service.start()
    eventually(lambda: page.is_hidden(".smartlab-service-banner"), timeout=15)
