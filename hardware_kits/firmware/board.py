"""Hardware layer of the street-lighting kit on an ESP32 (MicroPython `machine`).

Parts and where they sit come from the descriptor's `pins:` map, never from this file:
- `ambient-light: {adc: N}`: a logarithmic analog light sensor (GA1A12S202 type) on an ADC
  pin; full scale (3.3 V, 11 dB attenuation) is LOG_DECADES decades of lux;
- `motion: {input: N}`: a PIR module's digital output (high while it sees motion);
- `lamp: {pwm: N, freq_hz: F}`: the constant-current LED driver's dimming input (PWM);
- `status-led: {output: N}` (optional): on while connected, toggled on every telemetry sample.

In `auto` mode the board sets the lamp itself from light and motion (AUTO_RULE below); in
`manual` mode the lamp follows the `dimming` actuator. Lamp power is estimated from the PWM
duty and the lamp's nominal wattage (descriptor `twin: lamp_min_w/lamp_max_w`).
"""

import time

import machine

try:
    from hardware_kits import protocol as P
except ImportError:  # on the board the modules sit side by side
    import protocol as P

LOG_DECADES = 5.0  # sensor output 0..3.3 V spans 10**0..10**5 lx
DARK_LUX = 50.0  # below this the street needs light (auto mode)
AUTO_IDLE_LEVEL = 30  # % at night with nobody around
AUTO_MOTION_LEVEL = 100  # % while someone is near
MOTION_HOLD_MS = 10000  # keep full light this long after the last motion

if hasattr(time, "ticks_ms"):
    _ticks_ms = time.ticks_ms
    _ticks_diff = time.ticks_diff
else:  # CPython with the simulated machine module

    def _ticks_ms():
        return int(time.monotonic() * 1000)

    def _ticks_diff(a, b):
        return a - b


def _pin(pins, part, kind):
    try:
        return pins[part][kind]
    except KeyError:
        raise ValueError("descriptor pins: %s needs a %r pin" % (part, kind)) from None


class StreetLightingBoard:
    def __init__(self, descriptor):
        pins = descriptor.get("pins", {})
        params = descriptor.get("twin", {})
        self.sensors = descriptor["sensors"]
        self.lux_max = self.sensors["ambient-light"].get("max", 120000)
        self.power_max = self.sensors["lamp-power"].get("max", 150)
        self.lamp_max_w = float(params.get("lamp_max_w", 120.0))
        self.lamp_min_w = float(params.get("lamp_min_w", 6.0))
        self.adc = machine.ADC(machine.Pin(_pin(pins, "ambient-light", "adc")))
        if hasattr(self.adc, "atten") and hasattr(machine.ADC, "ATTN_11DB"):
            self.adc.atten(machine.ADC.ATTN_11DB)  # full 0..3.3 V range on the ESP32
        self.pir = machine.Pin(_pin(pins, "motion", "input"), machine.Pin.IN)
        self.pwm = machine.PWM(machine.Pin(_pin(pins, "lamp", "pwm")))
        self.pwm.freq(pins["lamp"].get("freq_hz", 1000))
        self.led = None  # the status LED is optional
        if "status-led" in pins:
            self.led = machine.Pin(_pin(pins, "status-led", "output"), machine.Pin.OUT)
        self.led_on = False  # kept here: reading back an output pin is not portable
        self.set_led(False)
        # Boot in the safe state of the descriptor until KitCore says otherwise.
        self.mode = descriptor["actuators"]["mode"]["safe"]
        self.dimming = descriptor["actuators"]["dimming"]["safe"]
        self.level = 0
        self._last_motion = None
        self._lux = 0.0
        self._motion = False
        self.sense()
        self._drive()

    # ------------------------------------------------------------ KitCore apply hook

    def apply(self, target, value):
        """Make an accepted command real: `target` is an actuator or a whole-kit command
        ("$safe-state", "$at-rest": every actuator's value)."""
        if target in P.WHOLE_KIT_PROPERTIES:
            self.mode = value["mode"]
            self.dimming = value["dimming"]
        elif target == "mode":
            self.mode = value
        elif target == "dimming":
            self.dimming = value
        else:
            raise ValueError("street-lighting board has no actuator " + target)
        self._drive()

    # ------------------------------------------------------------ sensing and control

    def sense(self):
        raw = self.adc.read_u16()
        lux = 10 ** (raw * LOG_DECADES / 65535)
        if raw == 0:
            lux = 0.0  # sensor unpowered or pitch dark
        self._lux = min(float(self.lux_max), max(0.0, lux))
        self._motion = bool(self.pir.value())
        if self._motion:
            self._last_motion = _ticks_ms()

    def auto_level(self):
        """The auto-mode rule: off in daylight; at night full while motion is recent, else dim."""
        if self._lux >= DARK_LUX:
            return 0
        if (
            self._last_motion is not None
            and _ticks_diff(_ticks_ms(), self._last_motion) < MOTION_HOLD_MS
        ):
            return AUTO_MOTION_LEVEL
        return AUTO_IDLE_LEVEL

    def _drive(self):
        self.level = self.auto_level() if self.mode == "auto" else self.dimming
        self.pwm.duty_u16(self.level * 65535 // 100)

    def lamp_power(self):
        if self.level <= 0:
            return 0.0  # driver in standby
        watts = self.lamp_min_w + (self.lamp_max_w - self.lamp_min_w) * self.level / 100
        return min(float(self.power_max), watts)

    def read(self):
        """Sample the sensors, update the lamp (auto mode), return the telemetry values."""
        self.sense()
        self._drive()
        return {
            "ambient-light": round(self._lux, 1),
            "motion": self._motion,
            "lamp-power": round(self.lamp_power(), 2),
        }

    def set_led(self, on):
        self.led_on = bool(on)
        if self.led is not None:
            self.led.value(1 if on else 0)

    def toggle_led(self):
        self.set_led(not self.led_on)


def make_board(descriptor):
    """The hardware layer for a descriptor's kit model."""
    if descriptor["model"] == "street-lighting":
        return StreetLightingBoard(descriptor)
    raise ValueError("no board support for kit model " + descriptor["model"])
