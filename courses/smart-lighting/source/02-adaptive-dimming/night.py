"""Score a street-light dimming controller on the street-lighting twin over a simulated night.

The twin runs in-process behind the kit's own command checks (`OfflineKit`): no broker, no
live kit, the same seed gives the same night (sky, clouds, passers-by) whatever the
controller does, so every run of a controller gives the same score.

Every 0.5 s (the kit's sampling period) the controller gets the kit's telemetry, a dict
{"ambient-light": lx, "motion": bool, "lamp-power": W} as `kit.latest` gives it on the live
kit, and returns the dimming level (an int, 0..100) the kit is set to in manual mode.

Illuminance on the road under the lamp: the sky's (the ambient sensor) plus the lamp's,
E_LAMP_FULL_LX at 100 % and proportional to the level. Required: MOTION_LX whenever the motion
sensor reports someone, MINIMUM_LX at all other times. The LED driver needs a moment to ramp
up, so the requirement for what the controller saw at one step is checked after the next.

The baseline is ordinary street lighting: 100 % whenever a dusk switch (on below 10 lx, off
above 50 lx) says it is dark, on the same night.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from coursework.checks import StudentTimeout, time_limit
from hardware_kits.protocol import ProtocolError
from hardware_kits.twins.offline import OfflineKit

STEP_S = 0.5
E_LAMP_FULL_LX = 20.0  # lux on the road under the lamp at 100 %
MOTION_LX = 10.0  # EN 13201 class P2 average: someone is there
MINIMUM_LX = 2.0  # EN 13201 class P6 average: an empty street still gets some light
DUSK_ON_LX, DUSK_OFF_LX = 10.0, 50.0
TOLERANCE_LX = 1e-6

DAY_S = 86_400
SPRING_DAY = 1_744_675_200  # 15 April 2025, 00:00 UTC
NIGHT_START_H = 16.0  # a night runs from 16:00 to 08:00 UTC
NIGHT_HOURS = 16.0


def road_lux(level_pct: float, ambient_lx: float) -> float:
    """Illuminance on the road: daylight plus the lamp at `level_pct`."""
    return ambient_lx + E_LAMP_FULL_LX * level_pct / 100.0


def required_lux(motion: bool) -> float:
    return MOTION_LX if motion else MINIMUM_LX


def night_start(day: int = 0) -> float:
    """Epoch seconds of 16:00 UTC on the `day`-th day after 15 April 2025."""
    return SPRING_DAY + day * DAY_S + NIGHT_START_H * 3600


@dataclass
class NightResult:
    """What a controller did over one night (energies in Wh, saving as a fraction)."""

    energy_wh: float
    baseline_wh: float
    violations: int  # steps at which the road was darker than required
    motion_steps: int
    steps: int
    examples: list[tuple[float, float, bool, float]] = field(default_factory=list)

    @property
    def saving(self) -> float:
        return 1.0 - self.energy_wh / self.baseline_wh

    def __str__(self) -> str:
        text = (
            f"энергия {self.energy_wh:.0f} Вт·ч против {self.baseline_wh:.0f} Вт·ч у "
            f"обычного освещения (экономия {100 * self.saving:.1f} %); "
            f"нарушений освещённости: {self.violations}"
        )
        if self.examples:
            t, ambient, motion, lux = self.examples[0]
            hour = (t % DAY_S) / 3600
            text += (
                f"; первое — в {int(hour):02d}:{int(hour % 1 * 60):02d} UTC: небо "
                f"{ambient:.1f} лк, движение {'да' if motion else 'нет'}, на дороге "
                f"{lux:.1f} лк вместо {required_lux(motion):.0f}"
            )
        return text


def _student_error(what: str, err: BaseException) -> AssertionError:
    return AssertionError(f"{what}: {type(err).__name__}: {err}")


def simulate_night(
    make_controller: Any,
    seed: int = 1,
    start: float | None = None,
    hours: float = NIGHT_HOURS,
    time_budget_s: float = 60.0,
    **twin_params: Any,
) -> NightResult:
    """Run a controller (a class or factory: `make_controller()` gives one with `.step`) over
    a night of the twin; any fault of the controller becomes one readable AssertionError."""
    start = night_start() if start is None else start
    baseline = baseline_energy(seed, start, hours, tuple(sorted(twin_params.items())))
    kit = OfflineKit("street-lighting", seed=seed, start=start, **twin_params)
    kit.set("mode", "manual")
    result = NightResult(0.0, baseline, 0, 0, 0)
    try:
        with time_limit(time_budget_s, "controller"):
            try:
                controller = make_controller()
            except Exception as err:
                raise _student_error("контроллер не создаётся", err) from None
            _run(kit, controller, hours, result)
    except StudentTimeout:
        raise AssertionError(
            f"контроллер не уложился в {time_budget_s:g} с на ночь: "
            "возможно, бесконечный цикл или слишком медленный код"
        ) from None
    result.energy_wh = kit.twin.energy_wh
    return result


def _run(kit: OfflineKit, controller: Any, hours: float, result: NightResult) -> None:
    current = kit.actuators["dimming"]
    for _ in range(round(hours * 3600 / STEP_S)):
        sample = kit.latest
        try:
            level = controller.step(dict(sample))
        except Exception as err:
            hour = (kit.t % DAY_S) / 3600
            raise _student_error(f"step() упал в {hour:.2f} ч UTC", err) from None
        if level != current or type(level) is not type(current):
            try:
                kit.set("dimming", level)
            except ProtocolError as err:
                raise AssertionError(
                    f"стенд отклонил уровень {level!r} ({type(level).__name__}): {err}"
                ) from None
            current = level
        kit.advance(STEP_S)
        result.steps += 1
        motion = bool(sample["motion"])
        result.motion_steps += motion
        lux = road_lux(kit.twin.level, sample["ambient-light"])
        if lux < required_lux(motion) - TOLERANCE_LX:
            result.violations += 1
            if len(result.examples) < 5:
                result.examples.append((kit.t, sample["ambient-light"], motion, lux))


@lru_cache(maxsize=16)
def baseline_energy(
    seed: int, start: float, hours: float, twin_params: tuple[tuple[str, Any], ...] = ()
) -> float:
    """Energy (Wh) of ordinary lighting on that night: 100 % while a dusk switch says dark."""
    kit = OfflineKit("street-lighting", seed=seed, start=start, **dict(twin_params))
    kit.set("mode", "manual")
    dark = False
    for _ in range(round(hours * 3600 / STEP_S)):
        ambient = kit.latest["ambient-light"]
        dark = True if ambient < DUSK_ON_LX else False if ambient > DUSK_OFF_LX else dark
        level = 100 if dark else 0
        if level != kit.actuators["dimming"]:
            kit.set("dimming", level)
        kit.advance(STEP_S)
    return kit.twin.energy_wh
