"""A CPython stand-in for MicroPython's `machine` module, so the firmware runs on a PC.

Only what board.py uses. Readings are plausible and deterministic:
- ADC: SMARTLAB_SIM_ADC (a raw 0..65535 value) if set, else a day curve over the UTC time of
  day (dark at night, full scale at noon); a day lasts SMARTLAB_SIM_DAY_S seconds (86400).
- digital inputs (the PIR): SMARTLAB_SIM_MOTION ("0"/"1") if set, else high for 3 s every 20 s.
- PWM and outputs just remember what they were set to.
"""

import math
import os
import time


def _env(name):
    value = os.getenv(name)
    return value if value not in (None, "") else None


class Pin:
    IN = 1
    OUT = 3
    PULL_UP = 1
    PULL_DOWN = 2

    def __init__(self, id, mode=-1, pull=None, value=None):
        self.id = id
        self.mode = mode
        self._value = value or 0

    def value(self, v=None):
        if v is not None:
            self._value = 1 if v else 0
            return None
        if self.mode == Pin.IN:
            forced = _env("SMARTLAB_SIM_MOTION")
            if forced is not None:
                return 1 if forced == "1" else 0
            return 1 if int(time.time()) % 20 < 3 else 0
        return self._value

    def on(self):
        self.value(1)

    def off(self):
        self.value(0)

    def __call__(self, v=None):
        return self.value(v)


class ADC:
    ATTN_0DB = 0
    ATTN_2_5DB = 1
    ATTN_6DB = 2
    ATTN_11DB = 3

    def __init__(self, pin, atten=None):
        self.pin = pin

    def atten(self, value):
        pass

    def read_u16(self):
        forced = _env("SMARTLAB_SIM_ADC")
        if forced is not None:
            return max(0, min(65535, int(forced)))
        day = float(_env("SMARTLAB_SIM_DAY_S") or 86400)
        phase = (time.time() % day) / day  # 0 = midnight UTC
        light = max(0.0, math.sin(math.pi * (phase * 24 - 6) / 12))
        return int(65535 * light)

    def read(self):
        return self.read_u16() >> 4


class PWM:
    def __init__(self, pin, freq=None, duty_u16=None):
        self.pin = pin
        self._freq = freq or 5000
        self._duty = duty_u16 or 0

    def freq(self, value=None):
        if value is None:
            return self._freq
        self._freq = value
        return None

    def duty_u16(self, value=None):
        if value is None:
            return self._duty
        self._duty = max(0, min(65535, int(value)))
        return None

    def deinit(self):
        self._duty = 0


def reset():
    raise SystemExit("machine.reset() under CPython")


def unique_id():
    return b"\x00sim\x00\x01"
