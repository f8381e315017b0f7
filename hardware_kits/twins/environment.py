"""Digital twin of the environment station: weather, air quality and street noise.

- Temperature: a daily cosine around `mean_temperature_c` (swing `daily_swing_c`, warmest at
  15:00 solar time) plus Ornstein–Uhlenbeck drift for passing weather.
- Humidity: the dew point of the air mass changes slowly, so relative humidity (Magnus formula)
  falls as the air warms during the day: anti-correlated with temperature, as observed.
- Pressure: synoptic drift around 1013.25 hPa plus the small semidiurnal atmospheric tide.
- PM2.5 and CO2: an urban background plus a road-traffic share (rush-hour peaks) and, for PM2.5,
  occasional pollution episodes that decay over hours. The sensors sit in a small enclosure
  that exchanges air with the street: slowly through leaks, fast while the `ventilation` fan
  runs. Graders may set `co2` or `pm25` (the enclosure's air) to stage a disturbance.
- Noise: road-traffic noise from the hourly flow (CoRTN), a quiet-night floor, fast fluctuation
  and occasional loud events (horns, motorbikes).

`period()` is the `sampling-interval` actuator, so that command changes the telemetry rate.
Readable state: `temperature`, `humidity`, `pressure`, `co2`, `pm25`, `noise`, and the street
values `co2_outdoor`, `pm25_outdoor`.
"""

from __future__ import annotations

import math
from typing import Any

from hardware_kits.twins.base import TwinModel
from hardware_kits.twins.daylight import (
    OrnsteinUhlenbeck,
    daily_bump,
    hour_of_day,
    poisson,
    traffic_factor,
)

STEP_S = 1.0  # fixed physics step (the sensors' fastest rate)
HOUR_S = 3600.0

# Weather
WARMEST_HOUR = 15.0  # daily maximum lags solar noon by 2-3 h
TEMP_DRIFT_TAU_S = 6 * HOUR_S
TEMP_DRIFT_SIGMA_C = 1.2
DEWPOINT_DEPRESSION_C = 4.0  # mean temperature minus mean dew point: a damp mid-latitude climate
DEWPOINT_TAU_S = 12 * HOUR_S
DEWPOINT_SIGMA_C = 1.0
DEWPOINT_FOLLOWS_DRIFT = 0.8  # a warmer air mass is mostly a moister one too
MAGNUS_A, MAGNUS_B = 17.625, 243.04  # Alduchov & Eskridge (1996)
SEA_LEVEL_HPA = 1013.25  # ISA standard atmosphere
PRESSURE_TAU_S = 36 * HOUR_S  # highs and lows pass over days
PRESSURE_SIGMA_HPA = 8.0
TIDE_HPA = 0.5  # semidiurnal tide at mid-latitudes (~1 hPa in the tropics), peaks 10 h and 22 h

# Air quality (street level)
PM_BACKGROUND_UGM3 = 7.0  # urban background PM2.5, European cities typically 5-15 µg/m³
PM_BACKGROUND_LOG_SIGMA = 0.4
PM_BACKGROUND_TAU_S = 12 * HOUR_S
PM_TRAFFIC_UGM3 = 5.0  # kerbside increment per unit of relative traffic
EPISODES_PER_DAY = 0.3  # inversions, wood smoke, dust: a few per week
EPISODE_PEAK_UGM3 = (20.0, 60.0)
EPISODE_TAU_S = 6 * HOUR_S
CO2_TRAFFIC_PPM = 30.0  # kerbside excess per unit of traffic; urban CO2 domes reach tens of ppm
CO2_NIGHT_PPM = 15.0  # shallow nocturnal boundary layer traps respired CO2
CO2_PLUME_TAU_S = 60.0
CO2_PLUME_SIGMA_PPM = 8.0
CO2_SENSOR_NOISE_PPM = 5.0  # NDIR repeatability (SCD4x class: ±10 ppm)
PM_SENSOR_NOISE = 0.05  # relative, laser-scattering sensor
# Enclosure air exchange (air changes per hour)
LEAK_ACH = 4.0  # closed: leaks only, time constant 15 min
FAN_ACH = 60.0  # small fan on a small volume, time constant 1 min

# Noise
ROAD_VEH_PER_HOUR = 800.0  # daily-mean flow on the street below the station
CORTN_L10_DB = 42.2  # CoRTN (UK DoT 1988): L10,1h = 42.2 + 10 log10(q) at 10 m
L10_TO_LAEQ_DB = -3.0  # LAeq ~ L10 - 3 dB for free-flowing traffic
SETBACK_DB = -4.0  # the station is further from the kerb than 10 m
NIGHT_FLOOR_DBA = 35.0  # quiet urban background
NOISE_TAU_S = 4.0
NOISE_SIGMA_DB = 2.5
LOUD_EVENTS_PER_HOUR = 6.0
LOUD_EVENT_DB = (8.0, 20.0)
LOUD_EVENT_DECAY = math.exp(-STEP_S / 2.0)  # a pass-by lasts a few seconds


def _relative_humidity(temperature: float, dew_point: float) -> float:
    """RH in % from temperature and dew point (ratio of Magnus saturation pressures)."""
    gamma_t = MAGNUS_A * temperature / (MAGNUS_B + temperature)
    gamma_d = MAGNUS_A * dew_point / (MAGNUS_B + dew_point)
    return 100.0 * math.exp(gamma_d - gamma_t)


def _db_sum(*levels: float) -> float:
    """Energetic sum of sound levels."""
    return 10.0 * math.log10(sum(10.0 ** (level / 10.0) for level in levels))


class EnvironmentModel(TwinModel):
    model = "environment-station"
    step_seconds = STEP_S

    def __init__(self, descriptor: dict[str, Any], seed: int = 0, start: float = 0.0) -> None:
        super().__init__(descriptor, seed, start)
        p = self.params
        self.mean_temperature_c = float(p.get("mean_temperature_c", 12.0))
        self.daily_swing_c = float(p.get("daily_swing_c", 6.0))
        self.co2_background_ppm = float(p.get("co2_outdoor_ppm", 420.0))
        self._limits = {
            name: (spec.get("min"), spec.get("max")) for name, spec in descriptor["sensors"].items()
        }
        rng = self.rng
        self._temp_drift = OrnsteinUhlenbeck(rng, TEMP_DRIFT_TAU_S, TEMP_DRIFT_SIGMA_C, STEP_S)
        self._dew_drift = OrnsteinUhlenbeck(rng, DEWPOINT_TAU_S, DEWPOINT_SIGMA_C, STEP_S)
        self._pressure_drift = OrnsteinUhlenbeck(rng, PRESSURE_TAU_S, PRESSURE_SIGMA_HPA, STEP_S)
        self._pm_drift = OrnsteinUhlenbeck(
            rng, PM_BACKGROUND_TAU_S, PM_BACKGROUND_LOG_SIGMA, STEP_S
        )
        self._co2_plume = OrnsteinUhlenbeck(rng, CO2_PLUME_TAU_S, CO2_PLUME_SIGMA_PPM, STEP_S)
        self._noise_drift = OrnsteinUhlenbeck(rng, NOISE_TAU_S, NOISE_SIGMA_DB, STEP_S)
        self._episode_decay = math.exp(-STEP_S / EPISODE_TAU_S)
        self._leak_mix = 1.0 - math.exp(-LEAK_ACH * STEP_S / HOUR_S)
        self._fan_mix = 1.0 - math.exp(-FAN_ACH * STEP_S / HOUR_S)
        self.episode_ugm3 = 0.0
        self.loud_event_db = 0.0
        self._weather(self.t)
        self._street_air(self.t)
        self.co2 = self.co2_outdoor  # the enclosure starts equilibrated
        self.pm25 = self.pm25_outdoor
        self._co2_reading = self.co2
        self._pm_reading = self.pm25
        self._street_noise(self.t)

    def period(self) -> float:
        return float(self.actuators["sampling-interval"])

    # ------------------------------------------------------------ stepping

    def _step(self, now: float) -> None:
        for process in (
            self._temp_drift,
            self._dew_drift,
            self._pressure_drift,
            self._pm_drift,
            self._co2_plume,
            self._noise_drift,
        ):
            process.step()
        self._weather(now)
        self._episodes()
        self._street_air(now)
        self._enclosure()
        self._street_noise(now)

    def _weather(self, now: float) -> None:
        hour = hour_of_day(now)
        cycle = math.cos(2.0 * math.pi * (hour - WARMEST_HOUR) / 24.0)
        drift = self._temp_drift.value
        self.temperature = self.mean_temperature_c + self.daily_swing_c / 2.0 * cycle + drift
        dew_point = (
            self.mean_temperature_c
            - DEWPOINT_DEPRESSION_C
            + DEWPOINT_FOLLOWS_DRIFT * drift
            + self._dew_drift.value
        )
        dew_point = min(dew_point, self.temperature)  # saturated: fog, RH 100 %
        self.humidity = _relative_humidity(self.temperature, dew_point)
        tide = TIDE_HPA * math.cos(2.0 * math.pi * (hour - 10.0) / 12.0)
        self.pressure = SEA_LEVEL_HPA + self._pressure_drift.value + tide

    def _episodes(self) -> None:
        self.episode_ugm3 *= self._episode_decay
        if poisson(self.rng, EPISODES_PER_DAY / 86_400.0 * STEP_S):
            self.episode_ugm3 += self.rng.uniform(*EPISODE_PEAK_UGM3)

    def _street_air(self, now: float) -> None:
        hour = hour_of_day(now)
        traffic = traffic_factor(hour)
        background = PM_BACKGROUND_UGM3 * math.exp(self._pm_drift.value)
        self.pm25_outdoor = background + PM_TRAFFIC_UGM3 * traffic + self.episode_ugm3
        night = daily_bump(hour, 4.0, 3.0)
        self.co2_outdoor = max(
            self.co2_background_ppm
            + CO2_TRAFFIC_PPM * traffic
            + CO2_NIGHT_PPM * night
            + self._co2_plume.value,
            self.co2_background_ppm - 2.0 * CO2_PLUME_SIGMA_PPM,
        )

    def _enclosure(self) -> None:
        # Well-mixed box: each step a fixed share of its air is replaced by street air.
        mix = self._fan_mix if self.actuators["ventilation"] else self._leak_mix
        self.co2 += (self.co2_outdoor - self.co2) * mix
        self.pm25 += (self.pm25_outdoor - self.pm25) * mix
        self._co2_reading = self.co2 + self.rng.gauss(0.0, CO2_SENSOR_NOISE_PPM)
        self._pm_reading = self.pm25 * (1.0 + self.rng.gauss(0.0, PM_SENSOR_NOISE))

    def _street_noise(self, now: float) -> None:
        flow = ROAD_VEH_PER_HOUR * traffic_factor(hour_of_day(now))
        traffic_db = CORTN_L10_DB + 10.0 * math.log10(flow) + L10_TO_LAEQ_DB + SETBACK_DB
        self.loud_event_db *= LOUD_EVENT_DECAY
        if poisson(self.rng, LOUD_EVENTS_PER_HOUR / HOUR_S * STEP_S):
            self.loud_event_db = self.rng.uniform(*LOUD_EVENT_DB)
        self.noise = (
            _db_sum(traffic_db, NIGHT_FLOOR_DBA) + self._noise_drift.value + self.loud_event_db
        )

    # ------------------------------------------------------------ sensors

    def _clamp(self, name: str, value: float, digits: int) -> float:
        low, high = self._limits[name]
        return round(float(min(max(value, low), high)), digits)

    def sample(self) -> dict[str, Any]:
        return {
            "temperature": self._clamp("temperature", self.temperature, 2),
            "humidity": self._clamp("humidity", self.humidity, 1),
            "pressure": self._clamp("pressure", self.pressure, 2),
            "pm25": self._clamp("pm25", self._pm_reading, 1),
            "co2": self._clamp("co2", self._co2_reading, 1),
            "noise": self._clamp("noise", self.noise, 1),
        }
