"""Digital twin of the smart-parking kit: bays, a barrier gate and the queue in front of it.

Cars arrive as a Poisson stream: `arrivals_per_hour` during the working day, a tenth of it at
night, with smooth morning and evening transitions. An arriving car joins the queue at the
entry (the access lane holds MAX_QUEUE cars; more drive on). The head of the queue enters only
while the `gate` actuator is "open" and a bay is free, one car every ENTRY_S seconds (barrier
cycle and drive-in); it parks in a free bay of the driver's choosing and stays an exponentially
distributed time (mean `mean_stay_minutes`). Leaving cars use a separate exit, so they leave
whatever the gate does. Waiting drivers lose patience (exponential, mean PATIENCE_S) and leave.

In mode "auto" (the kit at rest) the kit runs the gate itself: it opens while a car waits and
a bay is free, and the display shows the free places (AUTO_TEXT, in Russian and English); in
mode "manual" (a model without `mode` is always manual) the `gate` and `display` actuators rule.

Counters for graders: `arrived`, `entered`, `exited`, `balked` (lane full), `reneged` (gave up
waiting); state: `bays` (list of bool), `occupied`, `waiting`, `gate` (as it stands) and
`display_text` (as shown).
"""

from __future__ import annotations

import math
from typing import Any

from hardware_kits.twins.base import TwinModel
from hardware_kits.twins.daylight import hour_of_day, poisson

STEP_S = 1.0  # fixed physics step
ENTRY_S = 5.0  # one car through the barrier every ~5 s
MAX_QUEUE = 50  # cars the access lane holds (the `waiting` sensor's range)
PATIENCE_S = 15 * 60.0  # mean time a driver waits at a closed gate or full lot
AUTO_TEXT = "СВОБОДНО {free} / FREE {free}"  # fits the 32-character display
AUTO_FULL = "МЕСТ НЕТ / FULL"
NIGHT_SHARE = 0.1  # night-time arrivals relative to the day rate


def _logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def demand_factor(hour: float) -> float:
    """Arrivals relative to `arrivals_per_hour`: ~1 from 08:30 to 18:00, NIGHT_SHARE at night."""
    day = _logistic((hour - 7.5) / 0.6) * _logistic((19.0 - hour) / 0.8)
    return NIGHT_SHARE + (1.0 - NIGHT_SHARE) * day


class ParkingModel(TwinModel):
    model = "smart-parking"
    step_seconds = STEP_S

    def __init__(self, descriptor: dict[str, Any], seed: int = 0, start: float = 0.0) -> None:
        super().__init__(descriptor, seed, start)
        p = self.params
        schema = descriptor["sensors"]["bays"]["schema"]
        size = int(p.get("bays", schema.get("maxItems", 8)))
        self.arrivals_per_hour = float(p.get("arrivals_per_hour", 30.0))
        self.mean_stay_s = float(p.get("mean_stay_minutes", 45.0)) * 60.0
        self._max_waiting = int(descriptor["sensors"]["waiting"].get("max", MAX_QUEUE))
        self.bays = [False] * size
        self._leave_at = [math.inf] * size
        self.waiting = 0
        self.entry_progress_s = 0.0
        self.arrived = self.entered = self.exited = self.balked = self.reneged = 0
        self.gate = self.actuators["gate"]
        self.display_text = self.actuators["display"]
        self._automatic()

    @property
    def occupied(self) -> int:
        return sum(self.bays)

    # ------------------------------------------------------------ stepping

    @property
    def automatic(self) -> bool:
        return self.actuators.get("mode", "manual") == "auto"

    def apply(self, target: str, value: Any) -> None:
        super().apply(target, value)
        self._automatic()  # a command shows at once, not on the next step

    def _step(self, now: float) -> None:
        self._departures(now)
        self._arrivals(now)
        self._impatience()
        self._automatic()
        self._entry(now)

    def _automatic(self) -> None:
        """Gate and display: the kit's own rule in auto mode, else the actuators'."""
        if not self.automatic:
            self.gate, self.display_text = self.actuators["gate"], self.actuators["display"]
            return
        free = len(self.bays) - self.occupied
        self.gate = "open" if self.waiting and free else "closed"
        self.display_text = AUTO_TEXT.format(free=free) if free else AUTO_FULL

    def _departures(self, now: float) -> None:
        for bay, leave_at in enumerate(self._leave_at):
            if leave_at <= now:
                self.bays[bay] = False
                self._leave_at[bay] = math.inf
                self.exited += 1

    def _arrivals(self, now: float) -> None:
        rate_per_s = self.arrivals_per_hour * demand_factor(hour_of_day(now)) / 3600.0
        count = poisson(self.rng, rate_per_s * STEP_S)
        joining = min(count, MAX_QUEUE - self.waiting)
        self.arrived += count
        self.balked += count - joining
        self.waiting += joining

    def _impatience(self) -> None:
        if self.waiting:
            leaving = min(self.waiting, poisson(self.rng, self.waiting * STEP_S / PATIENCE_S))
            self.waiting -= leaving
            self.reneged += leaving

    def _entry(self, now: float) -> None:
        free = [bay for bay, taken in enumerate(self.bays) if not taken]
        if self.gate != "open" or not self.waiting or not free:
            self.entry_progress_s = 0.0  # the barrier stays down; the next car starts over
            return
        self.entry_progress_s += STEP_S
        if self.entry_progress_s < ENTRY_S:
            return
        self.entry_progress_s = 0.0
        bay = self.rng.choice(free)
        self.bays[bay] = True
        self._leave_at[bay] = now + self.rng.expovariate(1.0 / self.mean_stay_s)
        self.waiting -= 1
        self.entered += 1

    # ------------------------------------------------------------ sensors

    def sample(self) -> dict[str, Any]:
        return {
            "bays": list(self.bays),
            "occupied": self.occupied,
            "gate-state": self.gate,
            "waiting": min(self.waiting, self._max_waiting),
        }
