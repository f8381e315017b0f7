"""The digital twin models: valid samples, determinism, step-size independence and behaviour."""

from __future__ import annotations

import copy
import itertools
import statistics
import time
from typing import Any

import pytest

from hardware_kits import protocol as P
from hardware_kits.descriptor import load_models
from hardware_kits.kitcore import KitCore
from hardware_kits.twins import street_lighting as SL
from hardware_kits.twins.base import TwinModel, twin_class
from hardware_kits.twins.environment import EnvironmentModel
from hardware_kits.twins.intersection import MAX_EXTENSION, MIN_GREEN_S, IntersectionModel
from hardware_kits.twins.parking import ParkingModel
from hardware_kits.twins.street_lighting import StreetLightingModel

MODELS = load_models()
NAMES = sorted(MODELS)
MIDNIGHT = 1767225600.0  # 2026-01-01 00:00 UTC
HOUR = 3600.0
KIT_ID = "twin-test"

NS = {"green": ["north", "south"], "seconds": 30}
EW = {"green": ["east", "west"], "seconds": 30}
WALK = {"green": ["pedestrians"], "seconds": 10}


def at(hour: float) -> float:
    """Simulated epoch seconds at an hour of 1 January 2026 (UTC)."""
    return MIDNIGHT + hour * HOUR


def stage(green: dict[str, Any], seconds: int) -> dict[str, Any]:
    return {"green": list(green["green"]), "seconds": seconds}


# Commands that exercise every mode of each kit; (seconds into the run, actuator, value). They go
# through KitCore, so each one must pass the kit's real checks and interlocks.
SCRIPTS: dict[str, list[tuple[float, str, Any]]] = {
    "street-lighting": [
        (0, "mode", "auto"),
        (1800, "mode", "manual"),
        (1800, "dimming", 40),
        (3600, "dimming", 100),
        (4500, "dimming", 0),
        (5400, "mode", "auto"),
    ],
    "intersection": [
        (0, "mode", "fixed"),
        (1800, "mode", "actuated"),
        (3600, "mode", "manual"),
        (3600, "phase-request", 1),
        (4200, "phase-request", 2),
        (4700, "phase-request", 0),
        (4800, "mode", "flashing"),
        (5400, "phase-plan", [stage(NS, 20), stage(EW, 15)]),
        (5400, "mode", "fixed"),
    ],
    "environment-station": [
        (0, "sampling-interval", 1),
        (1800, "ventilation", True),
        (3600, "ventilation", False),
        (4000, "sampling-interval", 10),
    ],
    "smart-parking": [
        (0, "gate", "open"),
        (0, "display", "Welcome"),
        (3600, "gate", "closed"),
        (5400, "gate", "open"),
    ],
}


class Kit:
    """A twin behind the real command path (KitCore applies to the model, as kit_runner does)."""

    def __init__(
        self,
        name: str,
        seed: int = 0,
        start: float = at(0),
        descriptor: dict[str, Any] | None = None,
    ) -> None:
        self.descriptor = descriptor or MODELS[name]
        self.model: TwinModel = twin_class(name)(self.descriptor, seed=seed, start=start)
        self.core = KitCore(KIT_ID, self.descriptor, clock=lambda: 0.0, apply_hook=self.model.apply)
        self._ids = itertools.count()

    def command(self, target: str, value: Any) -> None:
        spec = self.descriptor["actuators"][target]
        ack = self.core.handle_command(
            P.set_topic(KIT_ID, target), P.encode_value(spec, value), f"cmd-{next(self._ids)}", "1"
        )
        assert ack["status"] == P.APPLIED, ack

    def drive(
        self, seconds: float, dt: float, script: list[tuple[float, str, Any]] = (), looks: int = 1
    ) -> list[dict[str, Any]]:
        """Advance in steps of dt, sending scripted commands when due; return the samples.

        `looks` samples are taken per step (the last is kept), as a dashboard polling faster
        than telemetry would."""
        pending = sorted(script, key=lambda item: item[0])
        samples = []
        for i in range(round(seconds / dt)):
            while pending and pending[0][0] <= i * dt + 1e-9:
                _, target, value = pending.pop(0)
                self.command(target, value)
            self.model.advance(dt)
            for _ in range(looks):
                sample = self.model.sample()
            samples.append(sample)
        return samples


def check_sample(descriptor: dict[str, Any], sample: dict[str, Any]) -> None:
    assert set(sample) == set(descriptor["sensors"])
    for name, spec in descriptor["sensors"].items():
        P.check_value(spec, sample[name], name)


def series(samples: list[dict[str, Any]], sensor: str) -> list[Any]:
    return [s[sensor] for s in samples]


def runs(values: list[Any]) -> list[tuple[Any, int]]:
    """Run-length encoding: [(value, how many in a row), ...]."""
    return [(value, len(list(group))) for value, group in itertools.groupby(values)]


# ---------------------------------------------------------------- all models


def test_entry_points_name_the_models() -> None:
    expected = {
        "street-lighting": StreetLightingModel,
        "intersection": IntersectionModel,
        "environment-station": EnvironmentModel,
        "smart-parking": ParkingModel,
    }
    assert set(expected) == set(NAMES)
    for name, cls in expected.items():
        assert twin_class(name) is cls
        assert cls.model == name


@pytest.mark.parametrize("name", NAMES)
def test_two_hours_of_samples_are_valid(name: str) -> None:
    kit = Kit(name, seed=3, start=at(6.5))  # through sunrise and the morning rush
    samples = kit.drive(2 * HOUR, 1.0, SCRIPTS[name])
    for sample in samples:
        check_sample(kit.descriptor, sample)


@pytest.mark.parametrize("name", NAMES)
def test_same_seed_and_commands_give_the_same_samples(name: str) -> None:
    first, second, other = (Kit(name, seed=seed, start=at(11)) for seed in (7, 7, 8))
    a, b, c = (kit.drive(2 * HOUR, 2.0, SCRIPTS[name]) for kit in (first, second, other))
    assert a == b
    assert a != c


@pytest.mark.parametrize("name", NAMES)
def test_sampling_draws_no_randomness(name: str) -> None:
    once, often = Kit(name, seed=5, start=at(11)), Kit(name, seed=5, start=at(11))
    assert once.drive(2 * HOUR, 1.0, SCRIPTS[name]) == often.drive(
        2 * HOUR, 1.0, SCRIPTS[name], looks=3
    )


@pytest.mark.parametrize("name", NAMES)
def test_tiny_steps_end_where_one_big_step_does(name: str) -> None:
    small, big = Kit(name, seed=2, start=at(12)), Kit(name, seed=2, start=at(12))
    for _ in range(6000):
        small.model.advance(0.01)
    big.model.advance(60.0)
    assert small.model.sample() == big.model.sample()
    assert small.model.t == pytest.approx(big.model.t)


SLOW_SENSORS = [
    ("street-lighting", "ambient-light", 0.02, 0.0),  # relative, absolute tolerance
    ("intersection", "queue-length", 0.0, 1.0),
    ("environment-station", "temperature", 0.0, 0.05),
    ("smart-parking", "occupied", 0.0, 0.3),
]


@pytest.mark.parametrize(("name", "sensor", "rel", "abs_"), SLOW_SENSORS)
def test_results_hardly_depend_on_the_step_size(
    name: str, sensor: str, rel: float, abs_: float
) -> None:
    script = [item for item in SCRIPTS[name] if item[0] == 0]
    if name == "intersection":
        script = [(0, "mode", "actuated")]
    means = []
    for dt in (0.5, 5.0):
        samples = Kit(name, seed=11, start=at(10)).drive(HOUR, dt, script)
        means.append(statistics.fmean(series(samples, sensor)))
    assert means[0] == pytest.approx(means[1], rel=rel, abs=abs_)


@pytest.mark.parametrize("name", NAMES)
def test_safe_state_command_resets_the_actuators(name: str) -> None:
    kit = Kit(name, seed=1, start=at(9))
    kit.drive(2 * HOUR, 5.0, SCRIPTS[name])
    ack = kit.core.handle_command(P.safe_state_topic(KIT_ID), b"", "safe", "1")
    assert ack["status"] == P.APPLIED
    assert kit.model.actuators == P.safe_state(kit.descriptor)
    check_sample(kit.descriptor, kit.model.sample())


@pytest.mark.parametrize("name", NAMES)
def test_one_tick_takes_well_under_a_millisecond(name: str) -> None:
    kit = Kit(name, seed=1, start=at(17))
    for target, value in [(t, v) for offset, t, v in SCRIPTS[name] if offset == 0]:
        kit.command(target, value)
    model, ticks = kit.model, 2000
    begin = time.perf_counter()
    for _ in range(ticks):
        model.advance(model.period())
        model.sample()
    assert (time.perf_counter() - begin) / ticks < 1e-3


# ---------------------------------------------------------------- street lighting


def test_street_light_is_dark_and_lit_at_night_bright_and_off_at_noon() -> None:
    night = Kit("street-lighting", start=at(0)).drive(600, 0.5)
    assert all(s["ambient-light"] == 0.0 for s in night)
    assert all(s["lamp-power"] >= MODELS["street-lighting"]["twin"]["lamp_min_w"] for s in night)
    noon = Kit("street-lighting", start=at(11.5)).drive(HOUR, 0.5)
    assert min(series(noon, "ambient-light")) > 5_000
    assert max(series(noon, "ambient-light")) > 10_000
    assert all(s["lamp-power"] == 0.0 for s in noon)


def test_street_light_switches_on_at_dusk() -> None:
    kit = Kit("street-lighting", start=at(15))
    samples = kit.drive(3 * HOUR, 0.5)
    lit = [i for i, s in enumerate(samples) if s["lamp-power"] > 0]
    assert lit, "the lamp never came on at dusk"
    assert all(s["lamp-power"] > 0 for s in samples[lit[0] :])  # and stays on (hysteresis)
    assert samples[lit[0]]["ambient-light"] <= SL.DARK_ON_LX  # (rounded to 0.1 lx)


@pytest.mark.parametrize("level", [0, 10, 55, 100])
def test_manual_lamp_power_tracks_dimming(level: int) -> None:
    twin = MODELS["street-lighting"]["twin"]
    kit = Kit("street-lighting", start=at(12))  # daylight: auto would keep the lamp off
    kit.command("mode", "manual")
    kit.command("dimming", level)
    sample = kit.drive(15, 0.5)[-1]
    expected = (
        0.0
        if level == 0
        else (twin["lamp_min_w"] + (twin["lamp_max_w"] - twin["lamp_min_w"]) * level / 100)
    )
    assert sample["lamp-power"] == pytest.approx(expected, abs=0.01)
    assert kit.model.level == level


def test_auto_lamp_dims_when_empty_and_brightens_on_motion() -> None:
    kit = Kit("street-lighting", seed=4, start=at(18))  # dark, and the evening peak of passers-by
    model = kit.model
    levels, after_motion = [], []
    for _ in range(7200):
        model.advance(0.5)
        levels.append(model.level)
        if 1.0 <= model.since_motion_s < SL.MOTION_HOLD_S:
            after_motion.append(model.level)
    assert after_motion and all(level == 100.0 for level in after_motion)
    assert levels.count(SL.DIM_LEVEL_PCT) > 100  # quiet spells dim the lamp
    assert model.motion_events > 20
    assert 0 < model.energy_wh < 2 * MODELS["street-lighting"]["twin"]["lamp_max_w"]


# ---------------------------------------------------------------- intersection


def equal_flows(per_hour: float) -> dict[str, Any]:
    descriptor = copy.deepcopy(MODELS["intersection"])
    descriptor["twin"]["arrivals_per_hour"] = dict.fromkeys(
        ("north", "south", "east", "west"), per_hour
    )
    return descriptor


@pytest.mark.parametrize(("ns_seconds", "ew_seconds"), [(45, 15), (15, 45)])
def test_longer_green_serves_more_vehicles(ns_seconds: int, ew_seconds: int) -> None:
    kit = Kit("intersection", seed=9, start=at(10), descriptor=equal_flows(500))
    kit.command("phase-plan", [stage(NS, ns_seconds), stage(EW, ew_seconds)])
    kit.command("mode", "fixed")
    kit.drive(2 * HOUR, 1.0)
    served = kit.model.departed_by_approach
    ns, ew = served["north"] + served["south"], served["east"] + served["west"]
    longer, shorter = (ns, ew) if ns_seconds > ew_seconds else (ew, ns)
    assert longer > 1.3 * shorter


def test_fixed_mode_runs_the_plan_with_amber_and_all_red() -> None:
    kit = Kit("intersection", start=at(10))
    kit.command("phase-plan", [stage(NS, 20), stage(EW, 10), stage(WALK, 6)])
    kit.command("mode", "fixed")
    samples = kit.drive(200, 1.0)
    shown = runs([(s["signal"], s["phase"]) for s in samples])
    assert shown[0] == (("all-red", -1), 2)  # start-up from flashing clears the junction
    cycle = [
        (("green", 0), 20),
        (("amber", 0), 3),
        (("all-red", 0), 2),
        (("green", 1), 10),
        (("amber", 1), 3),
        (("all-red", 1), 2),
        (("green", 2), 6),
        (("amber", 2), 3),
        (("all-red", 2), 2),
    ]
    assert shown[1:10] == cycle
    assert shown[10:19] == cycle


def test_flashing_mode_shows_no_green_and_lets_traffic_trickle() -> None:
    kit = Kit("intersection", seed=1, start=at(10))  # the safe state is flashing
    model = kit.model
    samples = []
    for _ in range(1800):
        model.advance(1.0)
        assert not model.green
        samples.append(model.sample())
    assert set(series(samples, "phase")) == {-1}
    assert set(series(samples, "signal")) == {"flashing-amber"}
    # One vehicle every ~4 s for the whole junction: ~450 in 30 min, fewer than arrive.
    assert 350 < model.departed < sum(model.arrived_by_approach.values()) - 100
    assert all(n > 50 for n in model.departed_by_approach.values())  # everybody gets a turn


def test_safe_state_flashes_at_once() -> None:
    kit = Kit("intersection", start=at(10))
    kit.command("mode", "fixed")
    kit.drive(60, 1.0)
    assert kit.model.sample()["signal"] != "flashing-amber"
    kit.core.handle_command(P.safe_state_topic(KIT_ID), b"", "safe", "1")
    sample = kit.model.sample()  # no advance: the safe state must show immediately
    assert (sample["signal"], sample["phase"]) == ("flashing-amber", -1)


def test_actuated_mode_beats_a_poor_fixed_plan() -> None:
    poor = [stage(NS, 10), stage(EW, 60), stage(WALK, 30)]  # starves the busiest approaches
    delay = {}
    for mode in ("fixed", "actuated"):
        kit = Kit("intersection", seed=21, start=at(8))
        kit.command("phase-plan", poor)
        kit.command("mode", mode)
        kit.drive(HOUR, 1.0)
        delay[mode] = kit.model.total_delay_s
        assert kit.model.departed > 0
    assert delay["actuated"] < 0.5 * delay["fixed"]


def test_actuated_greens_stay_between_minimum_and_maximum() -> None:
    kit = Kit("intersection", seed=6, start=at(17))
    plan = [stage(NS, 20), stage(EW, 20), stage(WALK, 10)]
    kit.command("phase-plan", plan)
    kit.command("mode", "actuated")
    samples = kit.drive(2 * HOUR, 1.0)
    greens = [
        (key[1], n)
        for key, n in runs([(s["signal"], s["phase"]) for s in samples])
        if key[0] == "green"
    ][1:-1]  # whole greens only
    assert greens
    lengths = {n for _, n in greens}
    assert len(lengths) > 3  # demand, not the clock, decides
    for index, n in greens:
        assert MIN_GREEN_S <= n <= MAX_EXTENSION * plan[index]["seconds"]


def test_manual_mode_holds_the_requested_stage() -> None:
    kit = Kit("intersection", start=at(10))
    kit.command("mode", "manual")
    kit.command("phase-request", 1)
    samples = kit.drive(600, 1.0)
    assert all((s["signal"], s["phase"]) == ("green", 1) for s in samples[10:])
    kit.command("phase-request", 0)
    shown = runs([(s["signal"], s["phase"]) for s in kit.drive(60, 1.0)])
    assert shown[:3] == [(("amber", 1), 3), (("all-red", 1), 2), (("green", 0), 55)]


def test_no_conflicting_green_is_ever_shown() -> None:
    kit = Kit("intersection", seed=8, start=at(7))
    model = kit.model
    conflicts = model.conflicts
    assert conflicts  # read from the descriptor's interlock
    pending = sorted(SCRIPTS["intersection"], key=lambda item: item[0])
    for second in range(2 * 3600):
        while pending and pending[0][0] <= second:
            kit.command(*pending.pop(0)[1:])
        model.advance(1.0)
        assert not any(a in model.green and b in model.green for a, b in conflicts)
    assert model.conflict_violations == 0


def test_conflict_monitor_catches_a_plan_that_bypassed_the_interlock() -> None:
    model = IntersectionModel(MODELS["intersection"], start=at(10))
    model.apply("mode", "fixed")
    model.apply("phase-plan", [{"green": ["north", "east"], "seconds": 20}, EW])  # not via KitCore
    for _ in range(120):
        model.advance(1.0)
        assert not ({"north", "east"} <= model.green)
    assert model.conflict_violations >= 1
    assert model.sample()["signal"] == "flashing-amber"
    model.apply("phase-plan", [NS, EW])
    model.advance(60.0)
    assert model.sample()["signal"] != "flashing-amber"


def test_statistics_add_up() -> None:
    kit = Kit("intersection", seed=3, start=at(8))
    kit.command("mode", "actuated")
    kit.drive(HOUR, 1.0)
    model = kit.model
    assert model.departed == sum(model.departed_by_approach.values())
    assert sum(model.arrived_by_approach.values()) == model.departed + sum(model.queues.values())
    assert model.total_delay_s > 0
    assert model.sample()["pedestrian-requests"] == model.pedestrian_requests > 0


# ---------------------------------------------------------------- environment station


def test_ventilation_clears_the_enclosure_faster() -> None:
    left = {}
    for fan in (False, True):
        kit = Kit("environment-station", seed=5, start=at(10))
        kit.command("ventilation", fan)
        kit.model.co2, kit.model.pm25 = 2000.0, 200.0  # someone breathed into the enclosure
        sample = kit.drive(300, 1.0)[-1]
        left[fan] = sample
    assert left[True]["co2"] < 550 < 1000 < left[False]["co2"]
    assert left[True]["pm25"] < 40 < 100 < left[False]["pm25"]


def test_period_follows_the_sampling_interval() -> None:
    kit = Kit("environment-station")
    assert kit.model.period() == 1.0
    kit.command("sampling-interval", 30)
    assert kit.model.period() == 30.0
    samples = kit.model.run(600)
    assert len(samples) == 20
    assert samples[1]["t"] - samples[0]["t"] == pytest.approx(30.0)


def test_weather_and_traffic_follow_the_day() -> None:
    kit = Kit("environment-station", seed=12, start=at(0))
    samples = kit.drive(3 * 24 * HOUR, 60.0)
    hours = [((i + 1) / 60) % 24 for i in range(len(samples))]

    def mean(sensor: str, low: float, high: float) -> float:
        return statistics.fmean(
            s[sensor] for s, h in zip(samples, hours, strict=True) if low <= h < high
        )

    assert mean("temperature", 13, 17) > mean("temperature", 2, 6) + 3
    temps, hums = series(samples, "temperature"), series(samples, "humidity")
    assert statistics.correlation(temps, hums) < -0.5
    assert mean("noise", 16, 19) > mean("noise", 1, 4) + 5
    assert mean("pm25", 16, 19) > mean("pm25", 1, 4)
    assert mean("co2", 7, 9) > mean("co2", 11, 14)
    pressures = series(samples, "pressure")
    assert min(pressures) > 980 and max(pressures) < 1045


# ---------------------------------------------------------------- smart parking


def busy_lot() -> dict[str, Any]:
    descriptor = copy.deepcopy(MODELS["smart-parking"])
    descriptor["twin"]["arrivals_per_hour"] = 300
    return descriptor


def test_parking_never_has_more_than_eight_cars() -> None:
    kit = Kit("smart-parking", seed=4, start=at(7), descriptor=busy_lot())
    kit.command("gate", "open")
    model = kit.model
    for _ in range(6 * 3600):
        model.advance(1.0)
        assert model.occupied <= 8
        assert len(model.bays) == 8
    assert model.entered > 50 and model.waiting > 0


def test_no_car_enters_while_the_gate_is_closed() -> None:
    kit = Kit("smart-parking", seed=2, start=at(8))  # safe state: gate closed
    closed = kit.drive(HOUR, 1.0)
    assert set(series(closed, "occupied")) == {0} and kit.model.entered == 0
    assert max(series(closed, "waiting")) > 0
    assert set(series(closed, "gate-state")) == {"closed"}
    kit.command("gate", "open")
    opened = kit.drive(HOUR, 1.0)
    assert set(series(opened, "gate-state")) == {"open"} and kit.model.entered > 0
    kit.command("gate", "closed")
    entered = kit.model.entered
    counts = series(kit.drive(2 * HOUR, 1.0), "occupied")
    assert all(later <= earlier for earlier, later in itertools.pairwise(counts))
    assert kit.model.entered == entered
    assert counts[-1] < counts[0]  # leaving cars use the exit regardless


def test_occupancy_rises_with_the_gate_open_during_the_day() -> None:
    def occupancy(start_hour: float) -> float:
        kit = Kit("smart-parking", seed=3, start=at(start_hour))
        kit.command("gate", "open")
        samples = kit.drive(2 * HOUR, 1.0)
        return statistics.fmean(series(samples[3600:], "occupied"))

    day, night = occupancy(9), occupancy(1)
    assert day > 5
    assert day > night + 2


def test_cars_enter_one_at_a_time() -> None:
    kit = Kit("smart-parking", seed=1, start=at(9), descriptor=busy_lot())
    kit.drive(HOUR, 1.0)  # a queue builds behind the closed gate
    assert kit.model.waiting >= 8
    kit.command("gate", "open")
    entered = []
    for _ in range(600):
        kit.model.advance(1.0)
        entered.append(kit.model.entered)
    entries = [
        second
        for second, (earlier, later) in enumerate(itertools.pairwise([0, *entered]))
        if later > earlier
    ]
    assert all(later - earlier <= 1 for earlier, later in itertools.pairwise([0, *entered]))
    assert len(entries) >= 8 and 3 <= entries[0] <= 6
    assert 4 <= min(b - a for a, b in itertools.pairwise(entries)) <= 6  # one car every ~5 s
