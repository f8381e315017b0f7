"""Digital twin of the street-lighting kit: daylight, passers-by and an adaptive LED lamp.

Ambient light follows the sun (see `daylight`) dimmed by slowly drifting cloud cover. Motion
is a Poisson process of passers-by, busiest in the evening. In mode "auto" the lamp switches on
below DARK_ON_LX, off above LIGHT_OFF_LX (hysteresis, so dusk noise does not make it flicker),
burns at DIM_LEVEL_PCT while the street is empty and at 100 % for MOTION_HOLD_S after motion.
In mode "manual" the level is the `dimming` actuator. The LED driver ramps between levels.
The light sensor is taken to be shielded from its own lamp, so the lamp does not feed back.

Graders can read `level` (%), `on`, `power_w`, `energy_wh` (cumulative), `ambient_lx` and
`motion_events` (cumulative count of passers-by).
"""

from __future__ import annotations

import math
from typing import Any

from hardware_kits.twins.base import TwinModel
from hardware_kits.twins.daylight import (
    DEFAULT_LATITUDE_DEG,
    OrnsteinUhlenbeck,
    clear_sky_illuminance_lx,
    cloud_transmission,
    daily_bump,
    hour_of_day,
    poisson,
    sun_elevation_deg,
    traffic_factor,
)

STEP_S = 0.5  # fixed physics step: the sensors report at 2 Hz

DARK_ON_LX = 10.0  # switch on below this (EN 13201-style dusk switching is ~10-50 lx)
LIGHT_OFF_LX = 50.0  # switch off above this
DIM_LEVEL_PCT = 30.0  # "presence dimming" level while nobody is around
MOTION_HOLD_S = 60.0  # full light this long after the last detection
PIR_HOLD_S = 4.0  # a PIR module (HC-SR501 class) holds its output a few seconds per detection
RAMP_UP_PCT_PER_S = 100.0  # brighten within a second: safety first
RAMP_DOWN_PCT_PER_S = 10.0  # dim over ~10 s so the change is not startling

CLOUD_TAU_S = 1200.0  # cloud cover decorrelates over ~20 min
CLOUD_SIGMA = 1.5  # spread of the logit of the cover
CLOUD_BIAS = -0.3  # mean logit: a partly cloudy sky (cover ~0.4)

MOTION_PEAK_PER_HOUR = 60.0  # passers-by at the evening peak (descriptor: motion_events_per_hour)


def activity(hour: float) -> float:
    """Relative pedestrian/vehicle activity under the lamp, 1 at the evening peak (~19:30)."""
    value = 0.08 + 0.2 * traffic_factor(hour) + 0.7 * daily_bump(hour, 19.5, 2.2)
    return min(1.0, value)


class StreetLightingModel(TwinModel):
    model = "street-lighting"
    step_seconds = STEP_S

    def __init__(self, descriptor: dict[str, Any], seed: int = 0, start: float = 0.0) -> None:
        super().__init__(descriptor, seed, start)
        p = self.params
        self.lamp_min_w = float(p.get("lamp_min_w", 6.0))
        self.lamp_max_w = float(p.get("lamp_max_w", 120.0))
        self.latitude_deg = float(p.get("latitude_deg", DEFAULT_LATITUDE_DEG))
        self.longitude_deg = float(p.get("longitude_deg", 0.0))
        self.motion_peak_per_hour = float(p.get("motion_events_per_hour", MOTION_PEAK_PER_HOUR))
        self._max = {name: spec.get("max") for name, spec in descriptor["sensors"].items()}
        self._cloud = OrnsteinUhlenbeck(self.rng, CLOUD_TAU_S, CLOUD_SIGMA, STEP_S)
        self.since_motion_s = math.inf
        self.motion_events = 0
        self.ambient_lx = self._ambient(self.t)
        self.on = self.ambient_lx < DARK_ON_LX
        self.level = self._target_level()  # a fresh lamp starts settled
        self.power_w = self._power()
        self.energy_wh = 0.0

    # ------------------------------------------------------------ stepping

    def _step(self, now: float) -> None:
        self._cloud.step()
        self.ambient_lx = self._ambient(now)
        self._passers_by(now)
        self._dusk_switch()
        self._ramp(self._target_level())
        self.power_w = self._power()
        self.energy_wh += self.power_w * STEP_S / 3600.0

    def _ambient(self, now: float) -> float:
        elevation = sun_elevation_deg(now, self.latitude_deg, self.longitude_deg)
        cover = 1.0 / (1.0 + math.exp(-(self._cloud.value + CLOUD_BIAS)))
        return clear_sky_illuminance_lx(elevation) * cloud_transmission(cover)

    def _passers_by(self, now: float) -> None:
        rate_per_s = self.motion_peak_per_hour * activity(hour_of_day(now)) / 3600.0
        arrivals = poisson(self.rng, rate_per_s * STEP_S)
        if arrivals:
            self.motion_events += arrivals
            self.since_motion_s = 0.0
        else:
            self.since_motion_s += STEP_S

    def _dusk_switch(self) -> None:
        if self.ambient_lx < DARK_ON_LX:
            self.on = True
        elif self.ambient_lx > LIGHT_OFF_LX:
            self.on = False

    def _target_level(self) -> float:
        if self.actuators["mode"] == "manual":
            return float(self.actuators["dimming"])
        if not self.on:
            return 0.0
        return 100.0 if self.since_motion_s < MOTION_HOLD_S else DIM_LEVEL_PCT

    def _ramp(self, target: float) -> None:
        if target > self.level:
            self.level = min(target, self.level + RAMP_UP_PCT_PER_S * STEP_S)
        else:
            self.level = max(target, self.level - RAMP_DOWN_PCT_PER_S * STEP_S)

    def _power(self) -> float:
        if self.level <= 0.0:
            return 0.0  # the driver cuts out: no standby draw is modelled
        return self.lamp_min_w + (self.lamp_max_w - self.lamp_min_w) * self.level / 100.0

    # ------------------------------------------------------------ sensors

    @property
    def motion(self) -> bool:
        return self.since_motion_s < PIR_HOLD_S

    def sample(self) -> dict[str, Any]:
        return {
            "ambient-light": round(min(self.ambient_lx, self._max["ambient-light"]), 1),
            "motion": self.motion,
            "lamp-power": round(min(self.power_w, self._max["lamp-power"]), 2),
        }
