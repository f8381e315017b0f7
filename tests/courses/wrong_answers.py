"""Plausible wrong answers, one per autograded question of every assignment.

Keyed by (course, assignment), then by the grade id of the question's solution cell; each value
replaces that cell's whole source in an otherwise correct submission. Some of them are also
the "bad input" cases of the issue: a solution that raises, one that never returns, one that
returns the wrong type (see BAD_INPUT).
"""

from __future__ import annotations

WRONG: dict[tuple[str, str], dict[str, str]] = {
    ("iot-basics", "01-station-data"): {
        # raises: a name that was never defined
        "units": """
def hpa_to_mmhg(p_hpa):
    return p_hpa * 760.0 / 1013.25


def dew_point(temperature_c, humidity_pct):
    a, b = 17.625, 243.04
    return b * gamma / (a - gamma)
""",
        # never returns: the index is not advanced
        "resample": """
def resample(t, values, period_s):
    starts, means, i = [], [], 0
    while i < len(t):
        window = np.floor(t[i] / period_s) * period_s
    return np.array(starts), np.array(means)
""",
        # wrong type: a list instead of a dict
        "describe": """
def describe(values):
    v = np.asarray(values, dtype=float)
    v = v[~np.isnan(v)]
    return [v.size, v.mean(), v.std(ddof=1), v.min(), v.max(), np.percentile(v, 95)]
""",
        # regression the wrong way round: sensor on reference
        "calibration": """
def fit_calibration(sensor, reference):
    x = np.asarray(sensor, dtype=float)
    y = np.asarray(reference, dtype=float)
    ok = ~(np.isnan(x) | np.isnan(y))
    gain, offset = np.polyfit(y[ok], x[ok], 1)
    return float(gain), float(offset)
""",
    },
    ("iot-basics", "02-air-alerts"): {
        # the classical z-score (mean and standard deviation), which outliers inflate
        "robust": """
def robust_z(values, window):
    x = np.asarray(values, dtype=float)
    z = np.full(len(x), np.nan)
    for i in range(window, len(x)):
        past = x[i - window:i]
        z[i] = (x[i] - np.nanmean(past)) / np.nanstd(past)
    return z
""",
        # the gap is measured from the start of the event, not from its end
        "events": """
def merge_events(t, flags, gap_s):
    events = []
    for moment, flagged in zip(t, flags):
        if flagged:
            if events and moment - events[-1][0] <= gap_s:
                events[-1] = (events[-1][0], moment)
            else:
                events.append((moment, moment))
    return events
""",
        # a fixed threshold far too high: small incidents go unnoticed
        "detector": """
def detect_incidents(t, values):
    x = np.asarray(values, dtype=float)
    events = []
    for i in range(30, len(x)):
        past = x[i - 30:i]
        median = np.median(past)
        mad = np.median(np.abs(past - median))
        if mad > 0 and (x[i] - median) / (1.4826 * mad) > 60.0:
            if events and t[i] - events[-1][1] <= 600:
                events[-1] = (events[-1][0], t[i])
            else:
                events.append((t[i], t[i]))
    return events
""",
        # retained alert, default QoS
        "alert": """
ALARM = {"pm25": 50.0, "co2": 1000.0}
UNITS = {"pm25": "µg/m³", "co2": "ppm"}


def alert_message(kit_id, sensor, start, end, peak):
    body = {"kit": kit_id, "sensor": sensor, "start": start, "end": end, "peak": peak,
            "unit": UNITS[sensor], "level": "alarm" if peak >= ALARM[sensor] else "warning"}
    return f"smartlab/alerts/{kit_id}", json.dumps(body)


def publish_alert(client, topic, payload):
    return client.publish(topic, payload, retain=True)
""",
    },
    ("smart-lighting", "01-energy-model"): {
        # the driver's standby is counted at level 0
        "power": """
def lamp_power(level_pct):
    return P_MIN_W + (P_MAX_W - P_MIN_W) * np.asarray(level_pct, dtype=float) / 100.0
""",
        # watt-seconds instead of watt-hours
        "energy": """
def energy_wh(t, power_w):
    return float(np.trapezoid(np.asarray(power_w, dtype=float), np.asarray(t, dtype=float)))
""",
        # no hysteresis
        "switch": """
def dusk_switch(ambient_lx, on_lx=10.0, off_lx=50.0, initially_on=False):
    return np.asarray(ambient_lx, dtype=float) < on_lx
""",
        # the hold counted in samples, not seconds
        "presence": """
def presence_levels(on, motion, dt_s, low_pct=30.0, hold_s=60.0):
    levels = np.zeros(len(on))
    since = np.inf
    for i in range(len(on)):
        since = 0 if motion[i] else since + 1
        if on[i]:
            levels[i] = 100.0 if since < hold_s else low_pct
    return levels
""",
    },
    ("smart-lighting", "02-adaptive-dimming"): {
        # rounds to the nearest level instead of up
        "level": """
def required_level(ambient_lx, motion):
    need = (MOTION_LX if motion else MINIMUM_LX) - ambient_lx
    return 0 if need <= 0 else min(100, round(need * 100.0 / E_LAMP_FULL_LX))
""",
        # ignores the motion sensor: cheap, but dark when someone comes
        "dimmer": """
class AdaptiveDimmer:
    def step(self, sample):
        need = MINIMUM_LX - sample["ambient-light"]
        return 0 if need <= 0 else math.ceil(need * 100.0 / E_LAMP_FULL_LX)
""",
        # forgets the lamp's power at its lowest level
        "dim_power": """
dim_power_w = VARIANT["lamp_max_w"] * (MINIMUM_LX * 100.0 / E_LAMP_FULL_LX) / 100.0
""",
        # does nothing: the kit stays in its automatic mode
        "hil": """
def dimming_controller(readings, t):
    return None
""",
    },
    ("traffic-signals", "01-fixed-time-plan"): {
        # each approach's own busiest hour, not the junction's
        "peak": """
def peak_hour_flows(counts):
    return {a: int(max(np.sum(counts[a][i:i + 4]) for i in range(len(counts[a]) - 3)))
            for a in APPROACHES}
""",
        # adds the approaches of a stage instead of taking the critical one
        "ratios": """
def critical_ratios(flows, stages, saturation):
    return [sum(flows[a] for a in stage) / saturation for stage in stages]
""",
        # forgets the factor 1.5
        "cycle": """
def webster_cycle(Y, lost_s):
    if Y >= 0.9:
        return 120
    return int(min(max(np.ceil((lost_s + 5.0) / (1.0 - Y)), 40), 120))
""",
        # green times not rounded: the kit takes whole seconds only
        "plan": """
def plan_from_cycle(cycle_s, ratios, lost_s):
    total = sum(ratios)
    plan = [{"green": list(stage), "seconds": min(max((cycle_s - lost_s) * y / total, 5), 90)}
            for stage, y in zip(STAGES, ratios)]
    return plan + [{"green": ["pedestrians"], "seconds": PEDESTRIAN_S}]
""",
    },
    ("traffic-signals", "02-actuated-control"): {
        # only the first stage is checked
        "safe": """
def is_safe_plan(plan, conflicts):
    green = set(plan[0]["green"]) if plan else set()
    return not any(a in green and b in green for a, b in conflicts)
""",
        # gap-out control that never serves the pedestrians
        "controller": """
class ActuatedController:
    plan = [
        {"green": ["north", "south"], "seconds": 30},
        {"green": ["east", "west"], "seconds": 30},
        {"green": ["pedestrians"], "seconds": 10},
    ]

    def __init__(self):
        self.stage, self.green_s = 0, 0

    def step(self, sample):
        if sample["signal"] != "green" or sample["phase"] != self.stage:
            return self.stage
        self.green_s += 1
        mine = (sample["vehicles-north"] + sample["vehicles-south"] if self.stage == 0
                else sample["vehicles-east"] + sample["vehicles-west"])
        if self.green_s < 6 or (mine > 0 and self.green_s < 45):
            return self.stage
        self.stage, self.green_s = 1 - self.stage, 0
        return self.stage
""",
        # adds every approach, not the critical one of each stage
        "flow": """
flow_ratio = sum(VARIANT[a] for a in ("north", "south", "east", "west")) / SATURATION_FLOW
""",
        # does nothing: the junction stays on flashing amber
        "hil": """
class JunctionController:
    def step(self, readings, t):
        return None
""",
    },
    ("smart-parking", "01-occupancy"): {
        # counts of cars, not the share of the bays
        "profile": """
def occupancy_profile(t, occupied, bays):
    hours = (np.asarray(t) % 86400) // 3600
    occupied = np.asarray(occupied, dtype=float)
    profile = np.full(24, np.nan)
    for hour in range(24):
        if np.any(hours == hour):
            profile[hour] = occupied[hours == hour].mean()
    return profile
""",
        # everyone who came, not those who got in
        "stay": """
def mean_stay_minutes(data, dt_s):
    rate = np.sum(data["arrived"]) / (len(data) * dt_s / 60.0)
    return float(np.mean(data["occupied"]) / rate)
""",
        # share of those who parked, not of those who came
        "lost": """
def lost_share(data):
    return float((np.sum(data["balked"]) + np.sum(data["reneged"])) / np.sum(data["entered"]))
""",
    },
    ("smart-parking", "02-bay-sensors"): {
        # counts the stays cut by the start and the end of the record
        "stays": """
def stays_minutes(t, states):
    stays, began = [], t[0] if states[0] else None
    for i in range(1, len(states)):
        if states[i] and not states[i - 1]:
            began = t[i]
        elif not states[i] and states[i - 1]:
            stays.append((t[i] - began) / 60.0)
    if states[-1]:
        stays.append((t[-1] - began) / 60.0)
    return stays
""",
        # changes over the whole record instead of within a window
        "flapping": """
def flapping_bays(bays, window=60, changes=15):
    flips = np.abs(np.diff(np.asarray(bays, dtype=int), axis=0)).sum(axis=0)
    return [int(b) for b in np.flatnonzero(flips >= changes)]
""",
        # "occupied for twelve hours" — normal on a full day
        "stuck": """
def stuck_bays(t, bays):
    found = []
    for bay in range(bays.shape[1]):
        run = longest = 0
        for occupied in bays[:, bay]:
            run = run + 1 if occupied else 0
            longest = max(longest, run)
        if longest * (t[1] - t[0]) >= 12 * 3600:
            found.append(bay)
    return found
""",
    },
}

# Bad input: what each of these does, and the line the student reads running the visible
# tests in their own notebook; the feedback keeps only that the question failed.
BAD_INPUT = {
    ("iot-basics", "01-station-data"): {
        "units": "dew_point завершилась с ошибкой NameError",
        "resample": "resample не завершилась за 10 с",
        "describe": "describe: ожидался словарь (dict), получено list",
    },
}
