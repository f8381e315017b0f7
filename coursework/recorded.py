"""Recorded-data generators that graded cells call: fresh days of a twin with staged events.

Hidden tests check a student's detector on days it has never seen (other seeds, other faulty
sensors), generated here from the digital twins. Every call names its seed and its staged
faults: the parameters of the data released with an assignment, which are the answers to its
questions, live with the course sources (courses/datasets/), never here, since every
student's and every sandboxed kernel imports this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hardware_kits.descriptor import load_models
from hardware_kits.twins.base import TwinModel, twin_class
from hardware_kits.twins.offline import OfflineKit

DAY_S = 86_400
# 15 April 2025, 00:00 UTC: a spring day, nights of about ten hours at the twins' latitude.
SPRING_DAY = 1_744_675_200


def make_twin(model: str, seed: int, start: float, **params: Any) -> TwinModel:
    descriptor = load_models()[model]
    if params:
        descriptor = {**descriptor, "twin": {**descriptor.get("twin", {}), **params}}
    return twin_class(model)(descriptor, seed=seed, start=start)


# Staged disturbances for the anomaly exercises: someone smoking under the station (PM2.5)
# and a lorry idling next to it (CO2). Set into the enclosure's air, they decay as the air
# is exchanged, as a real puff does.
PM_PUFF_UGM3 = (25.0, 80.0)
CO2_PUFF_PPM = (150.0, 600.0)
INCIDENTS_PER_DAY = 3  # per sensor


def air_incidents(
    *, seed: int, days: int, start: float = SPRING_DAY + 10 * DAY_S
) -> dict[str, Any]:
    """Minute samples of PM2.5 and CO2 with staged incidents: {"t", "pm25", "co2" (arrays),
    "incidents": [(sensor, t_start, amplitude), ...]} (incidents in time order)."""
    twin = make_twin("environment-station", seed=seed, start=start)
    plan = np.random.default_rng(seed)
    minutes = days * 1440
    incidents: dict[int, tuple[str, float]] = {}
    for sensor, amplitudes in (("pm25", PM_PUFF_UGM3), ("co2", CO2_PUFF_PPM)):
        # at least two hours apart, so that one incident has decayed before the next
        slots = plan.choice(
            np.arange(60, minutes - 60, 120), size=INCIDENTS_PER_DAY * days, replace=False
        )
        for minute in slots:
            offset = 0 if sensor == "pm25" else 60
            incidents[int(minute) + offset] = (sensor, float(plan.uniform(*amplitudes)))
    t, pm25, co2, staged = [], [], [], []
    for minute in range(minutes):
        if minute in incidents:
            sensor, amplitude = incidents[minute]
            setattr(twin, sensor, getattr(twin, sensor) + amplitude)
            staged.append((sensor, twin.t, round(amplitude, 1)))
        twin.advance(60.0)
        sample = twin.sample()
        t.append(int(twin.t))
        pm25.append(sample["pm25"])
        co2.append(sample["co2"])
    return {"t": np.array(t), "pm25": np.array(pm25), "co2": np.array(co2), "incidents": staged}


def bay_sensors(
    *,
    seed: int,
    stuck: int | None,
    flapping: int | None,
    days: int = 2,
    start: float = SPRING_DAY + 20 * DAY_S,
) -> dict[str, Any]:
    """Minute readings of the eight bay sensors with two staged faults: from 10:00 on the
    first day sensor `stuck` reads "occupied" whatever is there, and sensor `flapping` (a
    loose contact) flips at random for a few hours every afternoon.
    Returns {"t": array, "bays": bool array (minutes x 8), "truth": the real occupancy}."""
    kit = OfflineKit("smart-parking", seed=seed, start=start)
    kit.set("gate", "open")
    noise = np.random.default_rng(seed)
    t, truth = [], []
    for _minute in range(days * 1440):
        kit.advance(60.0)
        t.append(int(kit.t))
        truth.append(list(kit.twin.bays))
    t_arr, real = np.array(t), np.array(truth, dtype=bool)
    bays = real.copy()
    hour = (t_arr - start) / 3600
    if stuck is not None:
        bays[hour >= 10, stuck] = True
    if flapping is not None:
        afternoon = (hour % 24 >= 13) & (hour % 24 < 17)
        flips = afternoon & (noise.random(len(t_arr)) < 0.3)
        bays[flips, flapping] = ~bays[flips, flapping]
    return {"t": t_arr, "bays": bays, "truth": real}
