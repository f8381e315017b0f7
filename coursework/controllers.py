"""Run a student's controller on a kit's twin in-process, and score a run from its trace.

The controller interface is the one experiment jobs use on a real kit, so the same notebook
code is graded here on the twin and then confirmed on hardware:

- a function `controller(readings, t, **inputs) -> dict | None`, or
- a class: `Controller(**inputs)`, then `.step(readings, t) -> dict | None`;

`readings` are the kit's latest telemetry values (sensors and actuators by id), `t` seconds
since the run began; it is called once per telemetry sample, and every item of the dict it
returns is sent as one command. The twin sits behind the kit's own checks (`OfflineKit`,
KitCore: bounds, interlocks), and commands above the kit's command rate are refused with
reason `rate` and counted, as the job runner does on the wire. Same seed, same run.

Scorers take a trace-like mapping sensor -> (t, v) numpy arrays, so one function scores the
twin run (`Trace`) and the trace of a kit's recorded run (`JobResult.trace`).
"""

from __future__ import annotations

import inspect
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from coursework.checks import StudentTimeout, time_limit
from hardware_kits.descriptor import DEFAULT_COMMANDS_PER_SECOND
from hardware_kits.protocol import ProtocolError
from hardware_kits.twins.offline import OfflineKit

RATE = "rate"  # the reason of a command refused for the rate, as the job runner records it
APPLIED, REJECTED = "applied", "rejected"
Series = tuple[np.ndarray, np.ndarray]


@dataclass
class Trace(Mapping[str, Series]):
    """A run: sample times `t` (seconds since start), the values of every sensor and actuator
    per sample, and every command with its outcome. As a mapping: id -> (t, values)."""

    t: np.ndarray
    columns: dict[str, np.ndarray]
    commands: list[dict[str, Any]] = field(default_factory=list)

    def values(self, sensor: str) -> np.ndarray:  # type: ignore[override]
        return self.columns[sensor]

    def __getitem__(self, sensor: str) -> Series:
        return self.t, self.columns[sensor]

    def __iter__(self) -> Iterator[str]:
        return iter(self.columns)

    def __len__(self) -> int:
        return len(self.columns)

    @property
    def refused(self) -> int:
        """Commands that were not applied (the kit's checks or the rate)."""
        return sum(1 for c in self.commands if c["outcome"] != APPLIED)


def command_rate(descriptor: Mapping[str, Any]) -> float:
    """Commands a controller may send a second: the kit model's declared rate."""
    return float(descriptor.get("max_commands_per_second", DEFAULT_COMMANDS_PER_SECOND))


def _student_error(what: str, err: BaseException) -> AssertionError:
    return AssertionError(f"{what}: {type(err).__name__}: {err}")


def _stepper(controller: Any, inputs: dict[str, Any]) -> Callable[[dict[str, Any], float], Any]:
    """The one call per sample, for a function or a class with `step`."""
    if inspect.isclass(controller):
        try:
            instance = controller(**inputs)
        except Exception as err:
            raise _student_error("контроллер не создаётся", err) from None
        step = getattr(instance, "step", None)
        if not callable(step):
            raise AssertionError("у класса контроллера нет метода step(readings, t)")
        return step
    if not callable(controller):
        raise AssertionError(
            f"контроллер должен быть функцией или классом, а это {type(controller).__name__}"
        )
    return lambda readings, t: controller(readings, t, **inputs)


def run_on_twin(
    controller: Any,
    model: str,
    duration_s: float,
    inputs: dict[str, Any] | None = None,
    seed: int = 0,
    params: dict[str, Any] | None = None,
    start: float = 0.0,
    time_budget_s: float = 60.0,
) -> Trace:
    """Run `controller` on the twin of `model` for `duration_s` simulated seconds.

    `params` override the twin's descriptor parameters (a student's variant), `start` is the
    simulated epoch time the run begins at. A controller that raises, returns something other
    than a dict or None, or outlasts `time_budget_s` becomes one readable AssertionError;
    refused commands are recorded, not raised (as on a kit)."""
    kit = OfflineKit(model, seed=seed, start=start, **(params or {}))
    period = kit.twin.period()
    limit = command_rate(kit.descriptor)
    recent: deque[float] = deque()  # times of the commands sent in the last second
    step = None
    times: list[float] = []
    rows: list[dict[str, Any]] = []
    commands: list[dict[str, Any]] = []
    try:
        with time_limit(time_budget_s, "controller"):
            step = _stepper(controller, dict(inputs or {}))
            for i in range(round(duration_s / period)):
                t = i * period
                readings = {**kit.actuators, **kit.latest}
                try:
                    wanted = step(dict(readings), t)
                except Exception as err:
                    raise _student_error(f"контроллер упал на {t:.1f} с", err) from None
                if wanted is not None and not isinstance(wanted, dict):
                    raise AssertionError(
                        f"контроллер вернул {type(wanted).__name__} на {t:.1f} с: "
                        "нужен словарь {исполнительный механизм: значение} или None"
                    )
                for actuator, value in (wanted or {}).items():
                    while recent and recent[0] <= t - 1.0 + 1e-9:
                        recent.popleft()
                    record = {"t": t, "actuator": actuator, "value": value}
                    if len(recent) >= limit:
                        commands.append({**record, "outcome": REJECTED, "reason": RATE})
                        continue
                    recent.append(t)
                    try:
                        kit.set(str(actuator), value)
                    except ProtocolError as err:
                        commands.append({**record, "outcome": REJECTED, "reason": err.reason})
                    else:
                        commands.append({**record, "outcome": APPLIED, "reason": None})
                kit.advance(period)
                times.append(t + period)
                rows.append({**kit.actuators, **kit.latest})
    except StudentTimeout:
        raise AssertionError(
            f"контроллер не уложился в {time_budget_s:g} с: возможно, бесконечный цикл "
            "или слишком медленный код"
        ) from None
    names = list(rows[0]) if rows else []
    columns = {name: _column([row[name] for row in rows]) for name in names}
    return Trace(np.asarray(times, dtype=float), columns, commands)


def _column(values: list[Any]) -> np.ndarray:
    if all(isinstance(v, bool | int | float) for v in values):
        floats = any(isinstance(v, float) for v in values)
        return np.asarray(values, dtype=float if floats else None)
    return np.asarray(values, dtype=object)


# ------------------------------------------------------------------ scoring

# Street lighting (smart-lighting/02-adaptive-dimming): the road gets the sky's light plus the
# lamp's, E_LAMP_FULL_LX at 100 %; required MOTION_LX while someone is seen, MINIMUM_LX always
# (the numbers of courses/smart-lighting's night.py). The lamp's level is read back from its
# power (lamp_min_w + (lamp_max_w - lamp_min_w) * level / 100, 0 W when off).
E_LAMP_FULL_LX = 20.0
MOTION_LX, MINIMUM_LX = 10.0, 2.0
DUSK_ON_LX = 10.0
LAMP_MIN_W, LAMP_MAX_W = 6.0, 120.0
LUX_TOLERANCE = 0.05  # the power reading is rounded to 0.01 W
TARGET_SAVING = 0.6


def lighting_score(
    trace: Mapping[str, Series],
    lamp_min_w: float = LAMP_MIN_W,
    lamp_max_w: float = LAMP_MAX_W,
    **_inputs: Any,
) -> float:
    """0..1 (`lamp_*_w`: the kit's lamp, the twin's parameters): the share of samples whose
    road lighting met the requirement seen one sample earlier, times the energy saving
    against full power whenever the sky is dark, relative to TARGET_SAVING (capped at 1)."""
    _, ambient = trace["ambient-light"]
    _, motion = trace["motion"]
    _, power = trace["lamp-power"]
    ambient, power = np.asarray(ambient, float), np.asarray(power, float)
    motion = np.asarray(motion, bool)
    if len(power) < 2:
        return 0.0
    level = np.where(power > 0, (power - lamp_min_w) / (lamp_max_w - lamp_min_w) * 100.0, 0.0)
    road = ambient[1:] + E_LAMP_FULL_LX * level[1:] / 100.0
    need = np.where(motion[:-1], MOTION_LX, MINIMUM_LX)
    met = float(np.mean(road >= need - LUX_TOLERANCE))
    dark = ambient < DUSK_ON_LX
    baseline = float(np.sum(dark)) * lamp_max_w
    if baseline <= 0:
        return met
    saving = 1.0 - float(np.sum(power)) / baseline
    return met * min(1.0, max(0.0, saving) / TARGET_SAVING)


REFERENCE_QUEUE = 20.0  # vehicles: the default plan's mean queue at a busy hour


# Intersection (traffic-signals/02-actuated-control): the mean total queue, from the kit's
# `queue-length`, against a reference the assignment's variant fixes (the kit's fixed-time
# plan on that traffic); a run that flashed (no control) or froze the junction scores low.
def junction_score(
    trace: Mapping[str, Series], reference_queue: float | None = None, **_inputs: Any
) -> float:
    """0..1: min(1, 0.75 * reference_queue / mean queue); full marks at a quarter less queue
    than the reference. Without a reference, REFERENCE_QUEUE."""
    _, queue = trace["queue-length"]
    queue = np.asarray(queue, float)
    if len(queue) == 0:
        return 0.0
    reference = REFERENCE_QUEUE if reference_queue is None else float(reference_queue)
    mean = float(np.mean(queue))
    if mean <= 0:
        return 1.0
    return float(min(1.0, 0.75 * reference / mean))


SCORERS: dict[tuple[str, str], Callable[..., float]] = {
    ("smart-lighting", "02-adaptive-dimming"): lighting_score,
    ("traffic-signals", "02-actuated-control"): junction_score,
}


def fixed_plan_queue(
    seed: int, duration_s: float, start: float = 0.0, params: dict[str, Any] | None = None
) -> float:
    """Mean queue of the intersection on its own fixed-time plan (the default plan): the
    reference of `junction_score` for that traffic."""

    def fixed(readings: dict[str, Any], t: float) -> dict[str, Any] | None:
        return {"mode": "fixed"} if t == 0 else None

    trace = run_on_twin(fixed, "intersection", duration_s, seed=seed, params=params, start=start)
    return float(np.mean(trace.values("queue-length")))


# ------------------------------------------------------------------ scoring a kit's run


# What each scorer needs beyond the trace, for a run of `owner` lasting `duration_s`: the job
# runner scores a kit's recorded run with `score_job` and knows nothing of any assignment.
def _lighting_extras(owner: str, duration_s: float) -> dict[str, Any]:
    from hardware_kits.descriptor import load_models

    twin = load_models()["street-lighting"].get("twin", {})  # the kit's lamp, not a variant's
    return {
        "lamp_min_w": float(twin.get("lamp_min_w", LAMP_MIN_W)),
        "lamp_max_w": float(twin.get("lamp_max_w", LAMP_MAX_W)),
    }


def _junction_extras(owner: str, duration_s: float) -> dict[str, Any]:
    from coursework.variants import variant

    mine = variant("traffic-signals", "02-actuated-control", owner)
    params = {
        "arrivals_per_hour": {a: mine[a] for a in ("north", "south", "east", "west")},
        "pedestrians_per_hour": mine["pedestrians_per_hour"],
    }
    return {"reference_queue": fixed_plan_queue(mine["seed"], duration_s, params=params)}


SCORER_EXTRAS: dict[tuple[str, str], Callable[[str, float], dict[str, Any]]] = {
    ("smart-lighting", "02-adaptive-dimming"): _lighting_extras,
    ("traffic-signals", "02-actuated-control"): _junction_extras,
}


def score_job(
    course: str | None,
    assignment: str | None,
    owner: str,
    trace: Mapping[str, Series],
    duration_s: float | None = None,
) -> float | None:
    """The assignment's score of a kit's recorded run of `owner`'s controller (None: the
    assignment has no scorer). `duration_s`: the job's (default: the trace's span)."""
    scorer = SCORERS.get((course or "", assignment or ""))
    if scorer is None:
        return None
    if duration_s is None:
        spans = [float(t[-1] - t[0]) for t, _ in (trace[name] for name in trace) if len(t)]
        duration_s = max(spans, default=0.0)
    extras = SCORER_EXTRAS.get((course or "", assignment or ""))
    kwargs = extras(owner, max(1.0, duration_s)) if extras else {}
    return float(scorer(trace, **kwargs))
