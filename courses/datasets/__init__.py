"""The recorded datasets released with the courses, generated once from the digital twins.

Graded cells never read a live kit: they use these files (committed next to the notebooks)
or a twin run in-process. Each dataset is a pure function of the twin models and a fixed
seed, so `python -m courses.datasets` rewrites them byte for byte and
`python -m courses.datasets --check` tells whether the committed files still match the twins.
The parameters below (calibration errors, faulty sensors) are the answers to the assignments'
questions: this package is course staff's, like the notebooks (a folder of courses/, closed to
other accounts as theirs are); graded cells import only the generators (`coursework.recorded`).
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np

from coursework.recorded import DAY_S, SPRING_DAY, air_incidents, bay_sensors, make_twin
from hardware_kits.twins.offline import OfflineKit

COURSES = Path(__file__).resolve().parent.parent


def _csv(header: list[str], rows: Iterable[Iterable[Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        writer.writerow(["" if isinstance(v, float) and math.isnan(v) else v for v in row])
    return out.getvalue()


# ------------------------------------------------------------------ iot-basics


def station_day() -> str:
    """24 h of the environment station at one sample a minute, with the gaps a real link has:
    a 25-minute outage and a few single lost samples (empty fields)."""
    twin = make_twin("environment-station", seed=2024, start=SPRING_DAY)
    names = ["temperature", "humidity", "pressure", "pm25", "co2", "noise"]
    rows = []
    for _minute in range(DAY_S // 60):
        twin.advance(60.0)
        sample = twin.sample()
        rows.append([int(twin.t), *(sample[n] for n in names)])
    gaps = np.random.default_rng(7)
    lost = set(range(610, 635)) | {int(i) for i in gaps.choice(1440, size=12, replace=False)}
    for i in sorted(lost):
        rows[i] = [rows[i][0]] + [math.nan] * len(names)
    return _csv(["t", *names], rows)


PM_SENSOR_GAIN = 1.42  # low-cost optical sensors over-read against a reference (typical 1.2-1.6)
PM_SENSOR_OFFSET = 1.8  # µg/m³


def pm25_colocation() -> str:
    """Three days of hourly means: a reference PM2.5 monitor (the twin's enclosure air) and a
    low-cost sensor next to it with a gain and offset error plus noise."""
    twin = make_twin("environment-station", seed=77, start=SPRING_DAY + 3 * DAY_S)
    noise = np.random.default_rng(11)
    rows = []
    for _hour in range(72):
        readings = []
        for _ in range(60):
            twin.advance(60.0)
            readings.append(twin.pm25)
        reference = float(np.mean(readings))
        sensor = PM_SENSOR_GAIN * reference + PM_SENSOR_OFFSET + noise.normal(0.0, 0.8)
        rows.append([int(twin.t), round(reference, 2), round(max(sensor, 0.0), 2)])
    return _csv(["t", "reference_pm25", "sensor_pm25"], rows)


def air_incidents_csv() -> str:
    """Three days of minute samples with the staged incidents marked (`incident` names the
    sensor from the minute a disturbance started, for ten minutes)."""
    data = air_incidents(seed=5, days=3)
    marks = np.full(len(data["t"]), "", dtype=object)
    for sensor, started, _amplitude in data["incidents"]:
        window = (data["t"] > started) & (data["t"] <= started + 600)
        marks[window] = sensor
    return _csv(
        ["t", "pm25", "co2", "incident"],
        zip(data["t"], data["pm25"], data["co2"], marks, strict=True),
    )


# ------------------------------------------------------------------ smart-lighting


def lighting_night() -> str:
    """One spring night (16:00 to 08:00 UTC) of a street-lighting kit in its built-in "auto"
    mode, in 10-second intervals: ambient light at the end of the interval, whether the PIR
    saw motion during it, and the lamp's mean power over it."""
    twin = make_twin("street-lighting", seed=21, start=SPRING_DAY + 16 * 3600)
    rows = []
    for _interval in range(16 * 360):
        energy, seen = twin.energy_wh, False
        for _ in range(20):  # the kit's 2 Hz samples
            twin.advance(0.5)
            seen = seen or twin.motion
        power = (twin.energy_wh - energy) * 3600.0 / 10.0
        rows.append([int(twin.t), round(twin.ambient_lx, 2), int(seen), round(power, 2)])
    return _csv(["t", "ambient_lx", "motion", "lamp_power_w"], rows)


# ------------------------------------------------------------------ traffic-signals

APPROACHES = ("north", "south", "east", "west")


def junction_counts() -> str:
    """Detector counts of the intersection in 15-minute intervals, 06:00 to 10:00 UTC: the
    vehicles that arrived on each approach and the pedestrian button presses."""
    twin = make_twin("intersection", seed=31, start=SPRING_DAY + 6 * 3600)
    rows = []
    for _interval in range(16):
        start = int(twin.t)
        arrived = dict(twin.arrived_by_approach)
        presses = twin.pedestrian_requests
        twin.advance(900.0)
        rows.append(
            [
                start,
                *(twin.arrived_by_approach[a] - arrived[a] for a in APPROACHES),
                twin.pedestrian_requests - presses,
            ]
        )
    return _csv(["t_start", *APPROACHES, "pedestrians"], rows)


# ------------------------------------------------------------------ smart-parking

GATE_HOURS = (6, 22)  # the lot's barrier is open 06:00-22:00 UTC, closed at night


def parking_week() -> str:
    """A week of the parking kit in 5-minute intervals, the gate open 06:00-22:00: state at
    the end of each interval and the drivers counted during it."""
    kit = OfflineKit("smart-parking", seed=41, start=SPRING_DAY)
    counters = ("arrived", "entered", "exited", "balked", "reneged")
    rows = []
    for _interval in range(7 * 288):
        hour = (kit.t % DAY_S) / 3600
        gate = "open" if GATE_HOURS[0] <= hour < GATE_HOURS[1] else "closed"
        if kit.actuators["gate"] != gate:
            kit.set("gate", gate)
        before = {name: getattr(kit.twin, name) for name in counters}
        kit.advance(300.0)
        rows.append(
            [
                int(kit.t),
                kit.twin.occupied,
                kit.twin.waiting,
                *(getattr(kit.twin, name) - before[name] for name in counters),
                gate,
            ]
        )
    return _csv(["t", "occupied", "waiting", *counters, "gate"], rows)


def bay_sensors_csv() -> str:
    data = bay_sensors(seed=8, stuck=3, flapping=6)
    return _csv(
        ["t", *(f"bay{i}" for i in range(data["bays"].shape[1]))],
        ([t, *row.astype(int)] for t, row in zip(data["t"], data["bays"], strict=True)),
    )


# ------------------------------------------------------------------ registry

DATASETS: dict[Path, Callable[[], str]] = {
    Path("iot-basics/source/01-station-data/station_day.csv"): station_day,
    Path("iot-basics/source/01-station-data/pm25_colocation.csv"): pm25_colocation,
    Path("iot-basics/source/02-air-alerts/air_incidents.csv"): air_incidents_csv,
    Path("smart-lighting/source/01-energy-model/night_auto.csv"): lighting_night,
    Path("traffic-signals/source/01-fixed-time-plan/counts_15min.csv"): junction_counts,
    Path("smart-parking/source/01-occupancy/parking_week.csv"): parking_week,
    Path("smart-parking/source/02-bay-sensors/bays_2days.csv"): bay_sensors_csv,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m courses.datasets",
        description="Write (or check) the courses' recorded data.",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="only compare the committed files with freshly generated data",
    )
    args = parser.parse_args(argv)
    stale = []
    for relative, make in DATASETS.items():
        path = COURSES / relative
        text = make()
        if args.check:
            if not path.exists() or path.read_text() != text:
                stale.append(str(relative))
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {relative} ({len(text.splitlines()) - 1} rows)")
    if stale:
        print("out of date with the twins: " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0
