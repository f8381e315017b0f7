"""Shared helpers of the twins: daily curves (sun, sky brightness, road traffic) and the two
random processes the models draw from (Poisson counts, Ornstein–Uhlenbeck drift).

Everything takes simulated epoch seconds or an hour of day and treats time as UTC. With the
default longitude 0 the local solar time equals UTC, which is what the lab exercises assume.
Randomness always comes from the caller's `random.Random`, never from a global stream.
"""

from __future__ import annotations

import math
import random

SECONDS_PER_DAY = 86_400.0
DAYS_PER_YEAR = 365.2422  # tropical year
DEFAULT_LATITUDE_DEG = 48.0  # a central-European campus; descriptors may set `latitude_deg`

# Clear-sky daylight: direct beam E = E_sc * exp(-c * m) with the solar illuminance constant
# E_sc = 128 klx and extinction coefficient c = 0.21 (Wikipedia, "Sunlight", after the IES
# Lighting Handbook); the air mass m is taken as 1 / sin(elevation).
SOLAR_ILLUMINANCE_LX = 128_000.0
CLEAR_SKY_EXTINCTION = 0.21
# Reference levels from the Wikipedia "Lux" table: sunrise/sunset on a clear day ~400 lx, dark
# limit of civil twilight (sun 6° below the horizon) 3.4 lx, full daylight without direct sun
# 10-25 klx. The sky (diffuse) share is a linear fit through the first and the last.
SUNSET_LX = 400.0
CIVIL_DUSK_LX = 3.4
NAUTICAL_DUSK_LX = 0.01  # sun 12° below the horizon; darker than this reads as 0 lx
DIFFUSE_SKY_LX = 20_000.0  # sky share at the zenith, on top of SUNSET_LX


def hour_of_day(t: float) -> float:
    """Hour of the (UTC) day, 0 <= h < 24."""
    return (t % SECONDS_PER_DAY) / 3600.0


def solar_declination_deg(t: float) -> float:
    # Days since 1 January (the epoch began on one); the leap-year drift stays below a day.
    day = (t / SECONDS_PER_DAY) % DAYS_PER_YEAR
    # Cosine approximation, error < 1° (Wikipedia, "Position of the Sun").
    return -23.44 * math.cos(2.0 * math.pi / DAYS_PER_YEAR * (day + 10.0))


def sun_elevation_deg(
    t: float, latitude_deg: float = DEFAULT_LATITUDE_DEG, longitude_deg: float = 0.0
) -> float:
    """Elevation of the sun above the horizon (negative at night)."""
    solar_hour = hour_of_day(t) + longitude_deg / 15.0  # equation of time (±16 min) ignored
    hour_angle = math.radians(15.0 * (solar_hour - 12.0))
    lat = math.radians(latitude_deg)
    dec = math.radians(solar_declination_deg(t))
    s = math.sin(lat) * math.sin(dec) + math.cos(lat) * math.cos(dec) * math.cos(hour_angle)
    return math.degrees(math.asin(max(-1.0, min(1.0, s))))


def _log_ramp(x: float, x0: float, y0: float, x1: float, y1: float) -> float:
    """Interpolate log-linearly: twilight brightness falls by orders of magnitude."""
    frac = (x - x0) / (x1 - x0)
    return math.exp(math.log(y0) + frac * (math.log(y1) - math.log(y0)))


def clear_sky_illuminance_lx(elevation_deg: float) -> float:
    """Horizontal illuminance under a clear sky for a sun elevation; continuous at the horizon."""
    if elevation_deg <= -12.0:
        return 0.0
    if elevation_deg <= -6.0:
        return _log_ramp(elevation_deg, -12.0, NAUTICAL_DUSK_LX, -6.0, CIVIL_DUSK_LX)
    if elevation_deg <= 0.0:
        return _log_ramp(elevation_deg, -6.0, CIVIL_DUSK_LX, 0.0, SUNSET_LX)
    s = math.sin(math.radians(elevation_deg))
    direct = SOLAR_ILLUMINANCE_LX * s * math.exp(-CLEAR_SKY_EXTINCTION / s)
    return direct + SUNSET_LX + DIFFUSE_SKY_LX * s


def cloud_transmission(cover: float) -> float:
    """Share of clear-sky light that gets through a cloud cover in 0..1.

    Kasten & Czeplak (1980), Solar Energy 24: G = G_clear * (1 - 0.75 * (N/8) ** 3.4)."""
    return 1.0 - 0.75 * max(0.0, min(1.0, cover)) ** 3.4


def daily_bump(hour: float, centre: float, width: float) -> float:
    """A Gaussian bump on the 24-hour clock (it wraps around midnight); 1 at `centre`."""
    distance = (hour - centre + 12.0) % 24.0 - 12.0
    return math.exp(-0.5 * (distance / width) ** 2)


def _raw_traffic(hour: float) -> float:
    # Weekday urban profile: night floor, morning rush ~08:00, midday plateau, evening rush
    # ~17:30 — the shape of the hourly factors in count data (e.g. FHWA Traffic Monitoring Guide).
    return (
        0.15
        + 1.4 * daily_bump(hour, 8.0, 1.3)
        + 0.8 * daily_bump(hour, 13.0, 3.0)
        + 1.5 * daily_bump(hour, 17.5, 1.8)
    )


_TRAFFIC_MEAN = sum(_raw_traffic(minute / 60.0) for minute in range(1440)) / 1440.0


def traffic_factor(hour: float) -> float:
    """Road traffic at an hour of day relative to the daily mean (~0.2 at night, ~2.2 at 17:30)."""
    return _raw_traffic(hour) / _TRAFFIC_MEAN


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson-distributed count; the twins draw per sub-step, so means are small."""
    if mean <= 0.0:
        return 0
    if mean > 30.0:  # normal approximation; Knuth's loop would get slow
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit = math.exp(-mean)  # Knuth's multiplication method
    count = 0
    product = rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count


class OrnsteinUhlenbeck:
    """Mean-reverting random drift around 0, stepped exactly at a fixed step.

    `sigma` is the stationary standard deviation and `tau` the correlation time, so the
    statistics do not depend on the step size."""

    __slots__ = ("_decay", "_kick", "rng", "value")

    def __init__(self, rng: random.Random, tau: float, sigma: float, step: float) -> None:
        self.rng = rng
        self._decay = math.exp(-step / tau)
        self._kick = sigma * math.sqrt(1.0 - self._decay**2)
        self.value = rng.gauss(0.0, sigma)  # start in the stationary distribution

    def step(self) -> float:
        self.value = self.value * self._decay + self._kick * self.rng.gauss(0.0, 1.0)
        return self.value
