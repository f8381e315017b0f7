"""The row of latest values: one widget message per change for all of a kit's sensors, sent only
when what a person reads changes."""

from __future__ import annotations

from labs.i18n import Texts
from labs.widgets.readings import Readings

SENSORS = {
    "lamp-power": {"name": "Lamp power", "datatype": "float", "unit": "W", "min": 0, "max": 150},
    "motion": {"name": "Motion detected", "datatype": "boolean"},
    "label": {"name": "Label <b>", "datatype": "string"},
}
T0 = 1_795_500_000.0


def sent(readings: Readings) -> list[str]:
    """The row's values as they change (what would be sent to the browser)."""
    seen: list[str] = []
    readings.widget.observe(lambda change: seen.append(change["new"]), names="value")
    return seen


def test_a_sample_changing_several_sensors_is_one_message_with_every_value_and_its_time():
    readings = Readings(SENSORS, Texts("en"))
    rows = sent(readings)
    readings.show({"lamp-power": 40.21, "motion": True, "label": "north"}, T0 + 0.1)
    assert len(rows) == 1
    row = rows[0]
    for sensor in SENSORS:
        assert f"data-sensor='{sensor}'" in row
    assert "40.2 W" in row and ">on<" in row and ">north<" in row
    assert row.count('data-ts="1795500000.100"') == 3
    assert "Label &lt;b&gt;" in row and "<b>Label <b>" not in row


def test_the_row_is_resent_only_when_a_value_the_second_or_the_language_reads_differently():
    texts = Texts("en")
    readings = Readings(SENSORS, texts)
    rows = sent(readings)
    readings.show({"lamp-power": 40.21, "motion": False}, T0 + 0.1)
    readings.show({"lamp-power": 40.24, "motion": False}, T0 + 0.6)  # reads the same
    assert len(rows) == 1 and 'data-ts="1795500000.100"' in readings.widget.value
    readings.show({"lamp-power": 40.24, "motion": False}, T0 + 1.1)  # the next second
    readings.show({"lamp-power": 40.24, "motion": True}, T0 + 1.6)  # another value
    assert len(rows) == 3 and ">on<" in readings.widget.value
    texts.language = "ru"
    assert len(rows) == 4 and ">в " in readings.widget.value


def test_the_first_paint_is_the_same_row_without_a_widget():
    readings = Readings(SENSORS, Texts("en"))
    latest = {"lamp-power": 12.0, "motion": False, "label": "x"}
    readings.show(latest, T0)
    assert readings.html(latest, T0) == readings.widget.value
