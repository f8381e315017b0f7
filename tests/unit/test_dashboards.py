"""The dashboards' logic without a browser: language, coalescing, the loop hand-over, and the
kit dashboard generated from descriptors (every model, and a model that does not exist yet)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import ipywidgets as W
import numpy as np
import pytest

from hardware_kits.descriptor import load_models, validate_descriptor
from labs.board import DATA_DIR, TEMPLATE, board_command, voila_command, voila_env
from labs.client import Ack, CommandNotAuthorized, CommandRejected
from labs.i18n import CATALOGUES, EN, RU, Texts, negotiate, wait_text
from labs.pages import SNAPSHOT_MIME, KitPage, PageBox, wait_for_first_sample
from labs.widgets.admin import recent_rejections, safety_mark
from labs.widgets.controls import ActuatorControl
from labs.widgets.kit_dashboard import KitDashboard
from labs.widgets.live import Coalescer, Runner
from labs.widgets.overview import OverviewBoard
from labs.widgets.plots import MIN_REDRAW_S, format_value, thin, window_slice
from labs.widgets.tables import BarChart, round_top

# A kit model no dashboard has seen: every datatype a descriptor allows.
NEW_MODEL = validate_descriptor(
    {
        "model": "water-tank",
        "name": "Water tank",
        "ru": {"name": "Бак с водой"},
        "version": 1,
        "sensors": {
            "level": {
                "name": "Level",
                "ru": {"name": "Уровень"},
                "datatype": "float",
                "unit": "cm",
                "min": 0,
                "max": 200,
                "rate_hz": 2,
            },
            "overflow": {
                "name": "Overflow",
                "ru": {"name": "Перелив"},
                "datatype": "boolean",
                "rate_hz": 2,
            },
            "pump-state": {
                "name": "Pump",
                "ru": {
                    "name": "Насос",
                    "values": {"off": "выключен", "filling": "наполнение", "draining": "слив"},
                },
                "datatype": "enum",
                "values": ["off", "filling", "draining"],
                "rate_hz": 1,
            },
            "label": {
                "name": "Label",
                "ru": {"name": "Метка"},
                "datatype": "string",
                "max_length": 20,
                "rate_hz": 1,
            },
            "valves": {
                "name": "Valves",
                "ru": {"name": "Клапаны"},
                "datatype": "json",
                "rate_hz": 1,
                "schema": {"type": "array", "items": {"type": "boolean"}},
            },
        },
        "actuators": {
            "target": {
                "name": "Target level",
                "ru": {"name": "Заданный уровень"},
                "datatype": "float",
                "unit": "cm",
                "min": 10,
                "max": 190,
                "safe": 100,
            },
            "cycles": {
                "name": "Cycles",
                "ru": {"name": "Циклы"},
                "datatype": "integer",
                "min": 0,
                "max": 9,
                "step": 3,
                "safe": 0,
            },
            "drain": {
                "name": "Drain",
                "ru": {"name": "Слив"},
                "datatype": "boolean",
                "safe": False,
            },
            "mode": {
                "name": "Mode",
                "ru": {"name": "Режим", "values": {"auto": "авто", "manual": "ручной"}},
                "datatype": "enum",
                "values": ["auto", "manual"],
                "safe": "auto",
            },
            "note": {
                "name": "Note",
                "ru": {"name": "Заметка"},
                "datatype": "string",
                "max_length": 16,
                "safe": "",
            },
            "schedule": {
                "name": "Schedule",
                "ru": {"name": "Расписание"},
                "datatype": "json",
                "safe": [],
                "schema": {"type": "array", "items": {"type": "integer"}},
            },
        },
        "interlocks": [{"kind": "requires", "actuator": "drain", "when": {"mode": "manual"}}],
    },
    "water-tank",
)


class FakeKit:
    """The part of labs.client.Kit a dashboard reads (no broker: this is about widgets)."""

    def __init__(self, kit_id: str, descriptor: dict[str, Any]) -> None:
        self.kit_id = kit_id
        self.descriptor = descriptor
        self.state = "ready"
        self.latest: dict[str, Any] = {}
        self.latest_ts: float | None = None
        self.actuators = {k: v["safe"] for k, v in descriptor["actuators"].items()}
        self.histories: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.subscribers: list = []
        self.sent: list[tuple[str, Any, str]] = []  # (actuator, value, thread name)
        self.answer: Any = None  # what set() does: an exception to raise, or None to apply

    @property
    def model(self) -> str:
        return self.descriptor["model"]

    def history(self, sensor: str) -> tuple[np.ndarray, np.ndarray]:
        return self.histories.get(sensor, (np.empty(0), np.empty(0)))

    def subscribe(self, callback):
        self.subscribers.append(callback)
        return lambda: self.subscribers.remove(callback)

    def set(self, actuator: str, value: Any, timeout: float = 2.0) -> Ack:
        self.sent.append((actuator, value, threading.current_thread().name))
        if self.answer is not None:
            raise self.answer
        self.actuators[actuator] = value
        return Ack(
            id="x",
            target=actuator,
            status="applied",
            value=value,
            round_trip_s=0.004,
            kit=self.kit_id,
        )


class FakeLab:
    history = 100

    def __init__(self, kit: FakeKit) -> None:
        self._kit = kit
        self.state_callbacks: list = []

    def kit(self, kit_id: str, timeout: float = 5.0) -> FakeKit:
        return self._kit

    def kits(self) -> dict[str, Any]:
        return {self._kit.kit_id: None}

    def on_state(self, callback):
        self.state_callbacks.append(callback)
        return lambda: self.state_callbacks.remove(callback)


def run(coro_fn):
    """Run a coroutine on a fresh event loop in its own thread (like a kernel's loop), so that
    a loop left running in this thread by other tests (Playwright's) does not matter."""
    result: dict[str, Any] = {}

    def main() -> None:
        try:
            result["value"] = asyncio.run(coro_fn())
        except BaseException as err:  # re-raised in the test's thread
            result["error"] = err

    thread = threading.Thread(target=main, name="test-loop")
    thread.start()
    thread.join(30)
    if "error" in result:
        raise result["error"]
    return result["value"]


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


# ---------------------------------------------------------------- language


def test_catalogues_cover_the_same_texts():
    assert set(EN) == set(RU)
    assert all(RU[key] != "" for key in RU)
    assert set(CATALOGUES) == {"en", "ru"}


@pytest.mark.parametrize(
    ("header", "query", "expected"),
    [
        ("ru-RU,ru;q=0.9,en-US;q=0.8", None, "ru"),
        ("de-DE,en;q=0.5,ru;q=0.7", None, "ru"),
        ("en-GB,ru;q=0.9", None, "en"),
        ("fr-FR,de", None, "en"),
        (None, None, "en"),
        ("ru", "en", "en"),
        ("en", "RU", "ru"),
        ("en", "xx", "en"),
        ("ru;q=0,en;q=0.1", None, "en"),
        ("ru;q=abc", None, "en"),
    ],
)
def test_language_comes_from_the_query_then_the_browser(header, query, expected):
    assert negotiate(header, query) == expected


def test_switching_language_relabels_bound_widgets_and_survives_a_broken_binding():
    texts = Texts("en")
    button = texts.label(W.Button(), "join")
    texts.bind(lambda: 1 / 0 if texts.language == "ru" else None)  # a bug in one binding
    status = W.HTML()
    texts.bind(lambda: setattr(status, "value", texts("granted", left="3:00")))
    assert button.description == "Queue for this kit"
    texts.language = "ru"
    assert button.description == "Встать в очередь"
    assert status.value == "Стенд за вами: осталось 3:00."
    assert wait_text(texts, 30) == "меньше минуты" and wait_text(texts, 61) == "около 2 мин"


def test_kit_data_and_state_codes_read_in_the_page_language():
    """Names, units and enum values come from the descriptor's `ru`; state codes of every
    kind have words; a code nobody knows yet reads as words, not as a traceback."""
    models = load_models()
    lamp, cross, env = (
        models["street-lighting"],
        models["intersection"],
        models["environment-station"],
    )
    ru, en = Texts("ru"), Texts("en")
    light = lamp["sensors"]["ambient-light"]
    assert (ru.name(light), ru.unit(light)) == ("Освещённость", "лк")
    assert (en.name(light), en.unit(light)) == ("Ambient light", "lx")
    assert ru.unit(env["sensors"]["temperature"]) == "°C"  # the same in both
    assert ru.name(lamp) == "Уличное освещение" and en.name(lamp) == "Street lighting"
    signal = cross["sensors"]["signal"]
    assert ru.value(signal, "flashing-amber") == "жёлтый мигающий"
    assert en.value(signal, "flashing-amber") == "flashing amber"
    assert format_value("all-red", signal, ru) == "все красные"
    assert format_value(412.0, light, ru) == "412 лк"
    plan = cross["actuators"]["phase-plan"]
    assert format_value(plan["safe"], plan, ru) == "север+юг 30 · восток+запад 30 · пешеходы 10"
    codes = ["ready", "lost", "in-pool", "needs-attention", "maintenance", "released", "granted"]
    codes += ["active", "waiting", "served", "left", "cancelled", None]
    for code in codes:
        word = ru.state(code)
        assert word and not any("a" <= c.lower() <= "z" for c in word), (code, word)
    assert en.state("needs-attention") == "needs attention"
    assert ru.state("hibernating") == "hibernating"  # from a newer kit: words, no error
    assert ru.model("intersection") == "Регулируемый перекрёсток"
    assert ru.model("water-tank") == "water tank"
    assert ru.name({"name": "Pump"}) == "Pump"  # no Russian name: the English one
    assert (ru.institution("univ-a"), en.institution("univ-a")) == ("Университет А", "University A")
    assert ru.institution("elsewhere") == "elsewhere"
    assert en.course("iot-basics") == "Основы IoT: датчики и MQTT"  # its title is its name
    assert en.course("no-such-course") == "no-such-course"


def test_enum_choices_follow_the_language_without_sending_a_command():
    texts = Texts("en")
    sent: list[tuple[str, Any]] = []
    spec = load_models()["street-lighting"]["actuators"]["mode"]
    control = ActuatorControl("mode", spec, texts, lambda a, v: sent.append((a, v)), print)
    control.set_enabled(True)
    control.show_kit_value("manual")
    texts.language = "ru"
    assert control.input.value == "manual" and sent == []
    assert [label for label, _ in control.input.options] == ["автоматический", "ручной"]
    assert "Режим" in control.name.value


def test_rejection_reasons_are_translated_and_interlocks_explained_from_the_descriptor():
    texts = Texts("ru")
    lamp = load_models()["street-lighting"]
    assert (
        texts.reason("interlock", "dimming can only be set while mode is manual", lamp, "dimming")
        == "«Уровень яркости» можно менять, только когда «Режим» — ручной"
    )
    assert texts.reason("out_of_range", "x") == "вне допустимого диапазона"
    assert texts.reason("stale") == "команда пришла слишком поздно и отброшена"
    assert texts.reason("something-new", "kit says why") == "kit says why"
    assert texts.end_reason("ended-by-admin") == "завершён администратором"
    texts.language = "en"
    assert texts.reason("interlock", "d", lamp, "mode") == "not allowed in the kit's current state"


# ---------------------------------------------------------------- the loop


def test_marks_from_many_messages_coalesce_to_at_most_max_rate_flushes():
    async def main() -> tuple[int, list[int], float]:
        runner = Runner()
        shown: list[int] = []
        state = {"n": 0}
        coalescer = Coalescer(runner, lambda: shown.append(state["n"]), max_rate=10)
        start = time.monotonic()
        while time.monotonic() - start < 0.5:  # 1 kHz of changes for half a second
            state["n"] += 1
            coalescer.mark()
            await asyncio.sleep(0.001)
        await settle(0.25)
        first_single = time.monotonic()
        before = len(shown)
        coalescer.mark()
        while len(shown) == before:
            await asyncio.sleep(0.001)
        runner.close()
        return state["n"], shown, time.monotonic() - first_single

    total, shown, single_delay = run(main)
    assert total > 100
    assert 4 <= len(shown) - 1 <= 7  # ~0.5 s at 10/s (+1 leading), not one per message
    assert shown[-2] == total  # the latest state is always shown
    assert single_delay < 0.05  # after a quiet spell a change shows at once


def test_paho_thread_hand_over_and_blocking_calls_come_back_on_the_loop():
    async def main() -> dict[str, str]:
        runner = Runner()
        seen: dict[str, str] = {}
        loop_thread = threading.current_thread().name

        def from_paho() -> None:
            runner.from_thread(lambda: seen.__setitem__("handed", threading.current_thread().name))

        threading.Thread(target=from_paho, name="paho").start()
        runner.submit(
            lambda: threading.current_thread().name,
            done=lambda name: seen.update(worker=name, done=threading.current_thread().name),
        )
        runner.submit(
            lambda: 1 / 0,
            failed=lambda err: seen.update(
                failed=type(err).__name__, failed_on=threading.current_thread().name
            ),
        )
        await settle(0.2)
        runner.close()
        runner.from_thread(lambda: seen.__setitem__("late", "called"))  # dropped when closed
        await settle(0.05)
        return {**seen, "loop": loop_thread}

    seen = run(main)
    assert seen["handed"] == seen["done"] == seen["failed_on"] == seen["loop"]
    assert seen["worker"].startswith("smartlab-dash") and seen["failed"] == "ZeroDivisionError"
    assert "late" not in seen


# ---------------------------------------------------------------- plots and values


def test_thin_keeps_at_most_max_points_and_the_newest_sample():
    t = np.arange(10_000, dtype=float)
    tt, vv = thin(t, t * 2, max_points=600)
    assert len(tt) == 600 and tt[-1] == 9999 and vv[-1] == 19998
    t2, v2 = window_slice(t, t, 9990.5)
    assert t2[0] == 9991 and len(v2) == 9


def test_values_are_formatted_for_people():
    texts = Texts("en")
    assert format_value(1234.5678, {"unit": "lx", "min": 0, "max": 120000}, texts) == "1235 lx"
    assert format_value(21.456, {"unit": "°C", "min": -40, "max": 60}, texts) == "21.5 °C"
    assert format_value(True, {}, texts) == "on"
    assert format_value([True, False, True], {}, texts) == "■□■"
    assert format_value(float("nan"), {}, texts) == "–"


# ---------------------------------------------------------------- the kit dashboard


@pytest.mark.parametrize("model", [*sorted(load_models()), "water-tank (new)"])
def test_every_model_gets_a_plot_per_sensor_and_a_bounded_control_per_actuator(model):
    descriptor = NEW_MODEL if model.startswith("water-tank") else load_models()[model]

    async def main() -> KitDashboard:
        kit = FakeKit("k-1", descriptor)
        dash = KitDashboard(FakeLab(kit), "k-1", Runner(), Texts("en"))
        await settle()
        return dash

    dash = run(main)
    for name, spec in descriptor["sensors"].items():
        assert f"data-sensor='{name}'" in dash.readings.widget.value  # every latest value
        assert (name in dash.plots) == (spec["datatype"] in ("float", "integer", "boolean", "enum"))
    assert set(dash.controls) == set(descriptor["actuators"])
    for name, control in dash.controls.items():
        spec = descriptor["actuators"][name]
        widget = control.input
        assert widget.disabled, f"{name} is enabled for an observer"
        kind = spec["datatype"]
        if kind in ("integer", "float"):
            assert isinstance(widget, W.IntSlider if kind == "integer" else W.FloatSlider)
            assert (widget.min, widget.max) == (spec["min"], spec["max"])
            if "step" in spec:
                assert widget.step == spec["step"]
        elif kind == "enum":
            assert isinstance(widget, W.Dropdown) and list(widget._options_values) == spec["values"]
        elif kind == "boolean":
            assert isinstance(widget, W.ToggleButton)
        elif kind == "string":
            assert isinstance(widget, W.Text) and control.send is not None
        else:
            assert isinstance(widget, W.Textarea) and control.send is not None


def test_flush_shows_the_window_of_history_and_the_kit_state_without_sending_commands():
    async def main():
        kit = FakeKit("tank", NEW_MODEL)
        now = time.time()
        t = np.linspace(now - 600, now, 1201)
        kit.histories["level"] = (t, np.linspace(0, 100, 1201))
        kit.latest, kit.latest_ts = {"level": 100.0, "pump-state": "filling", "label": "north"}, now
        kit.actuators["mode"] = "manual"
        dash = KitDashboard(FakeLab(kit), "tank", Runner(), Texts("en"), window_s=60)
        for callback in kit.subscribers:  # a sample arrives on "paho's thread"
            threading.Thread(
                target=callback,
                args=("tank", {"seq": 1, "ts": now, "values": {"pump-state": "filling"}}),
            ).start()
        await settle(0.2)
        # The new value is shown at once; the lines, drawn when the page opened, are redrawn
        # at most once a second.
        assert "filling" in dash.readings.widget.value
        assert list(dash.plots["pump-state"].line.y) == []
        await settle(MIN_REDRAW_S)
        return dash, kit

    dash, kit = run(main)
    line = dash.plots["level"].line
    assert 100 <= len(line.x) <= 121  # the last minute of 0.5 s samples
    assert line.y[-1] == 100.0
    # the enum's level index, and the same again at the time of drawing: the line reaches now
    assert list(dash.plots["pump-state"].line.y) == [1.0, 1.0]
    assert "north" in dash.readings.widget.value and "data-ts" in dash.readings.widget.value
    assert dash.controls["mode"].input.value == "manual"  # copied from the kit
    assert kit.sent == []  # ... which sends nothing


def test_a_page_s_axes_step_together_and_pages_of_one_kit_at_different_moments():
    async def main() -> list[KitDashboard]:
        kit = FakeKit("k-1", load_models()["intersection"])
        return [KitDashboard(FakeLab(kit), "k-1", Runner(), Texts("en")) for _ in range(8)]

    pages = run(main)
    phases = [{plot.axis_phase for plot in dash.plots.values()} for dash in pages]
    assert all(len(page) == 1 for page in phases)  # one phase per page
    assert all(0 <= phase < 1 for page in phases for phase in page)
    assert len({phase for page in phases for phase in page}) == len(pages)


def test_the_first_paint_has_every_sensor_s_latest_value_escaped_and_no_live_marker():
    descriptor = {**NEW_MODEL, "name": "Tank <b>&</b>"}

    async def main():
        kit = FakeKit("tank", descriptor)
        kit.latest, kit.latest_ts = (
            {"level": 42.5, "pump-state": "filling", "label": "<script>x</script>"},
            1_700_000_000.25,
        )
        dash = KitDashboard(FakeLab(kit), "tank", Runner(), Texts("ru"))
        return dash, dash.snapshot_html()

    dash, html = run(main)
    for sensor in NEW_MODEL["sensors"]:
        assert f"data-sensor='{sensor}'" in html
    assert "42.5 cm" in html and "наполнение" in html and 'data-ts="1700000000.250"' in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "<b>&</b>" not in html  # the kit's name as text
    assert RU["first_paint"] in html
    # The live widgets, not the first paint, carry the marker the first paint gives way to.
    assert "smartlab-live" not in html
    assert "smartlab-live" in dash.readings.widget._dom_classes


def test_a_page_widget_carries_its_first_paint_beside_the_widget_view():
    async def main():
        return (
            PageBox([W.HTML("x")], snapshot="<b>42</b>")._repr_mimebundle_(),
            PageBox([W.HTML("x")])._repr_mimebundle_(),
        )

    with_snapshot, without = run(main)
    assert with_snapshot[SNAPSHOT_MIME] == "<b>42</b>"
    assert "application/vnd.jupyter.widget-view+json" in with_snapshot
    assert SNAPSHOT_MIME not in without and "application/vnd.jupyter.widget-view+json" in without


def test_a_kit_page_waits_briefly_for_a_first_value_only_when_one_is_coming():
    kit = FakeKit("tank", NEW_MODEL)
    arrive = threading.Timer(0.1, lambda: [cb("tank", {}) for cb in list(kit.subscribers)])
    arrive.start()
    started = time.monotonic()
    wait_for_first_sample(kit, timeout=5)
    assert 0.05 < time.monotonic() - started < 2  # woken by the sample
    assert kit.subscribers == []  # and unsubscribed
    kit.state = "lost"
    started = time.monotonic()
    wait_for_first_sample(kit, timeout=5)
    assert time.monotonic() - started < 0.05  # a lost kit sends nothing: no wait

    async def unbuilt() -> str:
        page = KitPage()
        try:
            return page.snapshot_html()
        finally:
            page.close()

    assert run(unbuilt) == ""  # nothing built (no kit, an error box): nothing painted


def test_the_board_s_first_paint_lists_every_kit_with_its_state_and_values():
    async def main():
        kit = FakeKit("lamp-1", load_models()["street-lighting"])
        kit.latest, kit.latest_ts = {"lamp-power": 61.25, "motion": True}, time.time()
        kit.state = "lost"
        board = OverviewBoard(FakeLab(kit), Runner(), Texts("en"), public=True)
        return board, board.snapshot_html()

    board, html = run(main)
    assert "data-kit='lamp-1'" in html and "data-state='lost'" in html
    assert "61.2 W" in html or "61.3 W" in html
    assert EN["public_note"] in html and EN["first_paint"] in html
    assert "smartlab-live" not in html
    assert "smartlab-live" in board.rows["lamp-1"].cells["status"]._dom_classes


def test_voila_finds_the_first_paint_template_through_the_jupyter_path():
    assert f"--template={TEMPLATE}" in voila_command(port=1)
    template = DATA_DIR / "voila" / "templates" / TEMPLATE
    assert (template / "index.html.j2").is_file()
    assert '"base_template": "lab"' in (template / "conf.json").read_text()
    assert SNAPSHOT_MIME in (template / "index.html.j2").read_text()
    env = voila_env({"JUPYTER_PATH": f"/a:{DATA_DIR}", "HOME": "/h"})
    assert env["JUPYTER_PATH"] == f"{DATA_DIR}:/a" and env["HOME"] == "/h"
    assert voila_env({})["JUPYTER_PATH"] == str(DATA_DIR)


def test_a_controller_s_change_is_sent_off_the_loop_and_its_answer_shown_in_the_language():
    async def main():
        kit = FakeKit("tank", NEW_MODEL)
        texts = Texts("ru")
        dash = KitDashboard(FakeLab(kit), "tank", Runner(), texts)
        dash.set_control(kit, time.time() + 600)
        assert not dash.controls["cycles"].input.disabled
        dash.controls["cycles"].input.value = 6
        await settle(0.1)
        kit.answer = CommandRejected(
            Ack(
                id="y",
                target="drain",
                status="rejected",
                reason="interlock",
                detail="drain needs manual",
                kit="tank",
            )
        )
        dash.controls["drain"].input.value = True
        await settle(0.1)
        kit.answer = CommandNotAuthorized("refused")
        dash.controls["mode"].input.value = "manual"
        await settle(0.1)
        dash.controls["schedule"].input.value = "[1, 2"  # not JSON: never sent
        dash.controls["schedule"].send.click()
        await settle(0.05)
        dash.set_control(None, None)
        return dash, kit

    dash, kit = run(main)
    assert [(a, v) for a, v, _ in kit.sent] == [("cycles", 6), ("drain", True), ("mode", "manual")]
    assert all(name.startswith("smartlab-dash") for _, _, name in kit.sent)  # off the loop
    log = dash.ack_log.value
    assert "Циклы = 6: применено (4 мс)" in log
    assert "Слив = вкл: отклонено: «Слив» можно менять, только когда «Режим» — ручной" in log
    assert "Режим = ручной: стенд больше не за вами (сеанс завершён)" in log
    assert "некорректный JSON" in log
    assert dash.controls["drain"].input.value is False  # back to the kit's value
    assert all(c.input.disabled for c in dash.controls.values())


def test_a_lost_kit_is_announced_and_the_notice_goes_when_it_returns():
    async def main():
        kit = FakeKit("k", load_models()["smart-parking"])
        lab = FakeLab(kit)
        dash = KitDashboard(lab, "k", Runner(), Texts("en"))
        kit.latest_ts = time.time()
        threading.Thread(target=lab.state_callbacks[0], args=("k", "lost")).start()
        await settle(0.1)
        lost = (dash.kit_banner.layout.display, dash.kit_banner.value, dash.header.value)
        threading.Thread(target=lab.state_callbacks[0], args=("k", "ready")).start()
        await settle(0.1)
        return lost, dash

    (display, banner, header), dash = run(main)
    assert display is None and "Kit k is lost" in banner and "data-state='lost'" in header
    assert dash.kit_banner.layout.display == "none"
    assert "data-state='ready'" in dash.header.value


def test_a_control_ignores_the_page_s_own_updates():
    sent = []
    control = ActuatorControl(
        "dimming",
        load_models()["street-lighting"]["actuators"]["dimming"],
        Texts("en"),
        lambda a, v: sent.append((a, v)),
        lambda *a: sent.append(a),
    )
    control.set_enabled(True)
    control.show_kit_value(40)
    assert control.input.value == 40 and sent == []
    assert control.current.value == "now: 40 %"
    control.input.value = 55
    assert sent == [("dimming", 55)] and control.pending
    control.show_kit_value(40)  # a stale kit value must not undo the user's pending choice
    assert control.input.value == 55


def test_a_control_shows_a_kit_s_hostile_text_and_name_as_text():
    """The parking display text is set by whoever holds the kit, the name comes from the kit's
    $description: both reach every viewer's page, so both must stay text."""
    hostile = "<img src=x onerror=alert(1)>"
    spec = {**load_models()["smart-parking"]["actuators"]["display"], "name": hostile}
    control = ActuatorControl("display", spec, Texts("en"), lambda *a: None, lambda *a: None)
    control.show_kit_value(hostile)
    for widget in (control.current, control.widget.children[0]):
        assert "<img" not in widget.value and "&lt;img src=x onerror=alert(1)&gt;" in widget.value


# ---------------------------------------------------------------- admin data, voila


def test_recent_rejections_are_the_newest_rejected_commands_first():
    csv_text = (
        "id,session_id,kit,requester,command_id,target,status,value,reason,ts\n"
        '1,1,a,r,c1,mode,applied,"""manual""",,2026-01-01T00:00:00.000+00:00\n'
        "2,1,a,r,c2,dimming,rejected,40,interlock,2026-01-01T00:00:01.000+00:00\n"
        '3,2,b,r,c3,gate,rejected,"""x""",out_of_range,'
        "2026-01-01T00:00:02.000+00:00\n"
    )
    rows = recent_rejections(csv_text)
    assert [r["command_id"] for r in rows] == ["c3", "c2"]


def test_the_board_runs_preheated_and_every_server_passes_the_language_header():
    command = board_command(port=9999, base_url="/services/status", pool_size=3)
    joined = " ".join(command)
    assert "overview.ipynb" in joined and "--preheat_kernel=True" in command
    assert '"overview.ipynb": {"pool_size": 3}' in joined
    assert "--Voila.base_url=/services/status/" in command
    assert command[1:3] == ["-m", "labs.board_voila"]  # redirects /services/status to .../
    assert "--VoilaConfiguration.http_header_envs=Accept-Language" in command
    plain = voila_command(port=1)
    assert not any("preheat" in part for part in plain)


def test_the_health_table_tells_a_kit_at_rest_from_an_unsafe_one():
    for lang, at_rest in (("en", "automatic"), ("ru", "автоматический режим")):
        t = Texts(lang)
        assert safety_mark(t, True, False) == "✓"
        assert safety_mark(t, False, True) == at_rest
        assert safety_mark(t, False, False) == "✗"
        assert safety_mark(t, None, None) == "–"


def test_bar_charts_run_from_zero_to_a_round_top():
    assert [round_top(x) for x in (0, 0.0006, 3, 7.2, 10, 11, 260)] == [
        1.0,
        0.001,
        5.0,
        10.0,
        10.0,
        20.0,
        500.0,
    ]
    chart = BarChart()
    chart.show("t", ["a", "b"], [0.0, 0.0])
    assert (chart.y_scale.min, chart.y_scale.max) == (0.0, 1.0)
    assert min(chart.y_axis.tick_values) == 0.0
