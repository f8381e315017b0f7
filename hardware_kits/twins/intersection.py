"""Digital twin of the signalised intersection: queues, a signal controller and its statistics.

Vehicles arrive on each approach as a Poisson stream (descriptor `arrivals_per_hour`, mildly
modulated by the time of day) and queue at the stop line. While an approach is green its queue
discharges at the saturation flow (default 1800 veh/h of green, close to the HCM base of
1900 pc/h/lane); a vehicle that finds the queue empty on green passes without delay. Amber and
all-red are lost time: nobody moves.

The controller runs the `phase-plan` stages in order, with amber_seconds then all_red_seconds
between stages:
- "fixed": every stage gets exactly its `seconds`;
- "actuated": a stage ends once its green approaches (and, for a pedestrian stage, the button)
  have no demand left, but not before MIN_GREEN_S, and it is extended while demand remains up
  to MAX_EXTENSION times its `seconds`;
- "manual": the stage named by `phase-request` is held; a new request changes over through
  amber and all-red;
- "flashing": flashing amber, nobody has green; drivers treat the junction as an all-way
  yield and cross one at a time, taking turns between the approaches, one vehicle every
  FLASHING_HEADWAY_S for the whole junction. Leaving flashing starts with an all-red interval.

Sensors: `phase` is the stage whose green is shown or has just ended (amber, all-red), -1
while flashing and during the start-up all-red; `pedestrian-requests` counts button presses
since start (nobody presses while the walk signal shows) and, like the queue counts, is
clamped to the descriptor's maximum.

Statistics for graders: `total_delay_s` (vehicle-seconds spent queued), `departed` (vehicles
served), `departed_by_approach`, `arrived_by_approach`, `queues`, `pedestrians_waiting` and
`conflict_violations`. The last must stay 0: a stage whose greens conflict (per the
descriptor's `exclusive` interlock) is never shown; if one is ever asked for (only possible by
bypassing KitCore) it is counted and the signal falls back to flashing amber, as a hardware
conflict monitor would, until the next `mode` or `phase-plan` command (the safe state and the
state at rest do not clear it: `fault` reports it, and a faulty kit refuses to go to rest).
"""

from __future__ import annotations

from typing import Any

from hardware_kits.twins.base import TwinModel
from hardware_kits.twins.daylight import hour_of_day, poisson, traffic_factor

STEP_S = 1.0  # fixed physics step; all signal timings are whole seconds

APPROACHES = ("north", "south", "east", "west")
PEDESTRIANS = "pedestrians"
MIN_GREEN_S = 5.0
MAX_EXTENSION = 1.5
FLASHING_HEADWAY_S = 4.0  # all-way-stop departure headways are ~4-6 s (HCM, chapter 21)
TIME_OF_DAY_SWING = 0.3  # demand varies mildly: ~0.75x at night to ~1.35x at the evening peak

GREEN = "green"
AMBER = "amber"
ALL_RED = "all-red"
FLASHING = "flashing-amber"


class IntersectionModel(TwinModel):
    model = "intersection"
    step_seconds = STEP_S

    def __init__(self, descriptor: dict[str, Any], seed: int = 0, start: float = 0.0) -> None:
        super().__init__(descriptor, seed, start)
        p = self.params
        rates = p.get("arrivals_per_hour", {})
        self.arrivals_per_hour = {a: float(rates.get(a, 300.0)) for a in APPROACHES}
        self.saturation_per_s = float(p.get("saturation_flow_per_hour", 1800.0)) / 3600.0
        self.pedestrians_per_hour = float(p.get("pedestrians_per_hour", 60.0))
        self.amber_s = float(p.get("amber_seconds", 3.0))
        self.all_red_s = float(p.get("all_red_seconds", 2.0))
        self.conflicts = _conflict_pairs(descriptor)
        self._max = {name: spec.get("max") for name, spec in descriptor["sensors"].items()}
        # traffic state
        self.queues = dict.fromkeys(APPROACHES, 0)
        self._credit = dict.fromkeys(APPROACHES, 1.0)  # discharge progress, in vehicles
        self._flash_credit = 1.0  # the same for the whole junction while flashing
        self._turn = 0  # whose turn it is to cross while flashing
        self.arrived_by_approach = dict.fromkeys(APPROACHES, 0)
        self.departed_by_approach = dict.fromkeys(APPROACHES, 0)
        self.departed = 0
        self.total_delay_s = 0.0
        self.pedestrian_requests = 0  # cumulative button presses
        self.pedestrians_waiting = 0
        self.conflict_violations = 0
        # signal state
        self.signal = FLASHING
        self.stage = -1  # stage whose green is shown or has just ended
        self.green: frozenset[str] = frozenset()
        self.interval_s = 0.0  # time spent in the current interval
        self._fault = False
        if self.actuators["mode"] != "flashing":
            self._start(ALL_RED)

    # ------------------------------------------------------------ commands

    def apply(self, target: str, value: Any) -> None:
        super().apply(target, value)
        if target in ("mode", "phase-plan"):
            # An operator took over after a conflict fault. The safe state (a handover) leaves
            # the fault latched, so the kit stays flashing and is not put back at rest.
            self._fault = False
        if self.actuators["mode"] == "flashing":
            self._flash()  # the safe state must show at once, not on the next step

    @property
    def fault(self) -> str | None:
        return "the conflict monitor tripped" if self._fault else None

    # ------------------------------------------------------------ stepping

    def _step(self, now: float) -> None:
        demand = 1.0 + TIME_OF_DAY_SWING * (traffic_factor(hour_of_day(now)) - 1.0)
        self._arrivals(demand)
        self._control()
        self._discharge()
        self.total_delay_s += sum(self.queues.values()) * STEP_S

    def _arrivals(self, demand: float) -> None:
        for approach in APPROACHES:
            mean = self.arrivals_per_hour[approach] * demand / 3600.0 * STEP_S
            count = poisson(self.rng, mean)
            self.queues[approach] += count
            self.arrived_by_approach[approach] += count
        presses = poisson(self.rng, self.pedestrians_per_hour * demand / 3600.0 * STEP_S)
        if presses and PEDESTRIANS not in self.green:  # on walk they just cross
            self.pedestrian_requests += presses
            self.pedestrians_waiting += presses

    def _discharge(self) -> None:
        if self.signal == FLASHING:
            self._trickle()
        elif self.signal == GREEN:
            for approach in APPROACHES:
                if approach in self.green:
                    self._discharge_green(approach)

    def _discharge_green(self, approach: str) -> None:
        # Headway 1/saturation between departures; with nobody queued the credit tops out at
        # one vehicle, so a lone arrival on green drives straight through.
        self._credit[approach] += self.saturation_per_s * STEP_S
        leaving = min(int(self._credit[approach]), self.queues[approach])
        self._credit[approach] -= leaving
        if self.queues[approach] == leaving:
            self._credit[approach] = min(self._credit[approach], 1.0)
        self._depart(approach, leaving)

    def _trickle(self) -> None:
        self._flash_credit += STEP_S / FLASHING_HEADWAY_S
        while self._flash_credit >= 1.0 and any(self.queues.values()):
            for _ in APPROACHES:  # the next approach with someone waiting goes
                approach = APPROACHES[self._turn]
                self._turn = (self._turn + 1) % len(APPROACHES)
                if self.queues[approach]:
                    break
            self._depart(approach, 1)
            self._flash_credit -= 1.0
        if not any(self.queues.values()):
            self._flash_credit = min(self._flash_credit, 1.0)

    def _depart(self, approach: str, count: int) -> None:
        self.queues[approach] -= count
        self.departed_by_approach[approach] += count
        self.departed += count

    # ------------------------------------------------------------ signal controller

    def _control(self) -> None:
        mode = self.actuators["mode"]
        if mode == "flashing" or self._fault:
            self._flash()
            return
        if self.signal == FLASHING:
            self._start(ALL_RED)  # start-up from flashing: clear the junction first
            return
        self.interval_s += STEP_S
        if self.signal == GREEN and self._green_over(mode):
            self._start(AMBER)
        elif self.signal == AMBER and self.interval_s >= self.amber_s:
            self._start(ALL_RED)
        elif self.signal == ALL_RED and self.interval_s >= self.all_red_s:
            self._show_green(self._next_stage(mode))

    def _green_over(self, mode: str) -> bool:
        plan = self.actuators["phase-plan"]
        if self.stage >= len(plan):
            return True  # the plan shrank under a running stage
        seconds = float(plan[self.stage]["seconds"])
        if mode == "manual":
            return self._next_stage(mode) != self.stage
        if mode == "actuated":
            if self.interval_s >= MAX_EXTENSION * seconds:
                return True
            return self.interval_s >= MIN_GREEN_S and self.demand(self.green) == 0
        return self.interval_s >= seconds

    def _next_stage(self, mode: str) -> int:
        size = len(self.actuators["phase-plan"])
        if mode == "manual":
            return min(int(self.actuators["phase-request"]), size - 1)
        return (self.stage + 1) % size  # stage -1 (after flashing) starts the plan at 0

    def demand(self, movements: frozenset[str]) -> int:
        """Road users waiting for the given movements (queued vehicles, pending pedestrians)."""
        waiting = sum(self.queues[a] for a in APPROACHES if a in movements)
        if PEDESTRIANS in movements:
            waiting += self.pedestrians_waiting
        return waiting

    def _show_green(self, index: int) -> None:
        green = frozenset(self.actuators["phase-plan"][index]["green"])
        if self._conflicting(green):
            self.conflict_violations += 1
            self._fault = True
            self._flash()
            return
        self.stage = index
        self._start(GREEN)
        self.green = green
        for approach in APPROACHES:
            if approach in green:
                self._credit[approach] = 0.0  # start-up lost time before the first departure
        if PEDESTRIANS in green:
            self.pedestrians_waiting = 0

    def _conflicting(self, green: frozenset[str]) -> bool:
        return any(a in green and b in green for a, b in self.conflicts)

    def _start(self, signal: str) -> None:
        self.signal = signal
        self.interval_s = 0.0
        self.green = frozenset()

    def _flash(self) -> None:
        if self.signal != FLASHING:
            self._start(FLASHING)
            self.stage = -1

    # ------------------------------------------------------------ sensors

    def sample(self) -> dict[str, Any]:
        values: dict[str, Any] = {
            f"vehicles-{a}": min(self.queues[a], self._max[f"vehicles-{a}"]) for a in APPROACHES
        }
        values["queue-length"] = min(sum(self.queues.values()), self._max["queue-length"])
        values["pedestrian-requests"] = min(
            self.pedestrian_requests, self._max["pedestrian-requests"]
        )
        values["phase"] = -1 if self.signal == FLASHING else self.stage
        values["signal"] = self.signal
        return values


def _conflict_pairs(descriptor: dict[str, Any]) -> list[tuple[str, str]]:
    """Movement pairs that must never be green together (the kit's `exclusive` interlock)."""
    pairs: list[tuple[str, str]] = []
    for rule in descriptor.get("interlocks", []):
        if rule["kind"] == "exclusive" and rule["actuator"] == "phase-plan":
            pairs += [(a, b) for a, b in rule["conflicts"]]
    return pairs
