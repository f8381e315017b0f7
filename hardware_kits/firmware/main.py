"""Entry point of a kit board (MicroPython runs main.py at boot); also runs under CPython.

Reads config.json (kit_id, descriptor, host, port, username, password; optional wifi_ssid,
wifi_password, ntp, client_id, keepalive, status_every, mirror_every, max_packet_size), joins
Wi-Fi and sets the clock by NTP when running on a board, then puts the kit on the wire as
protocol.py describes: retained `$state` init -> `$description` -> actuator values ->
`$status` -> subscriptions -> `$state` ready, with `$state` lost as the last will. Every
command goes through KitCore (the same code the digital twins run) and is answered on the
requester's response topic; telemetry goes out at the fastest sensor's rate, `$status` every
few seconds and after each command. Any connection error leads to a reconnect with exponential
backoff; a bad message never stops it.
"""

import json
import time

import protocol as P
import umqtt5
from board import make_board
from kitcore import KitCore

CONFIG_FILE = "config.json"
MAX_BACKOFF_S = 60
# A board has ~100 kB of heap: it asks the broker to drop anything larger than its model's
# `max_packet_bytes` (protocol.max_packet_bytes) instead of sending it; commands over
# protocol.MAX_COMMAND_BYTES but under that limit still get an "oversize" rejection.
# config.json's `max_packet_size` overrides it.


def log(text):
    print("[kit] " + text)


# ---------------------------------------------------------------- clock

# MicroPython ports count from 2000 or from 1970; KitCore and the protocol use Unix time.
EPOCH_OFFSET_S = 946684800 if time.gmtime(0)[0] == 2000 else 0
# The ESP32 build uses single-precision floats, which cannot hold epoch seconds to the
# millisecond (nor even to the minute): there the clock gives whole seconds as an integer.
DOUBLE_FLOATS = float(1700000000) + 0.25 != float(1700000000)


def unix_ms():
    if hasattr(time, "time_ns"):
        return time.time_ns() // 1000000 + EPOCH_OFFSET_S * 1000
    return int(time.time() * 1000) + EPOCH_OFFSET_S * 1000


def clock():
    """KitCore's clock: Unix epoch seconds."""
    ms = unix_ms()
    if DOUBLE_FLOATS:
        return ms / 1000
    return ms // 1000


def set_clock(cfg):
    """Set the RTC from NTP on a board; True once the clock can be trusted."""
    if cfg.get("ntp") is False:
        return True
    try:
        import ntptime
    except ImportError:
        return True  # not a board: the host keeps its own clock
    if isinstance(cfg.get("ntp"), str):
        ntptime.host = cfg["ntp"]
    for _ in range(3):
        try:
            ntptime.settime()
            log("clock set by NTP: %d" % clock())
            return True
        except Exception as err:  # ntptime raises OSError or OverflowError
            log("NTP failed: %r" % (err,))
            time.sleep(1)
    return False


# ---------------------------------------------------------------- Wi-Fi


def connect_wifi(cfg, timeout_s=30):
    """Join the configured network on a board; nothing to do on a PC (no `network` module)."""
    try:
        import network
    except ImportError:
        return None
    ssid = cfg.get("wifi_ssid")
    wlan = network.WLAN(network.STA_IF)
    wlan.active(True)
    if wlan.isconnected() or not ssid:
        return wlan
    log("joining Wi-Fi " + ssid)
    wlan.connect(ssid, cfg.get("wifi_password") or "")
    start = umqtt5.ticks_ms()
    while not wlan.isconnected():
        if umqtt5.ticks_diff(umqtt5.ticks_ms(), start) > timeout_s * 1000:
            raise OSError("Wi-Fi %s not joined within %d s" % (ssid, timeout_s))
        time.sleep(0.2)
    log("Wi-Fi up: " + str(wlan.ifconfig()[0]))
    return wlan


# ---------------------------------------------------------------- the kit


class Firmware:
    def __init__(self, cfg, board):
        self.cfg = cfg
        self.kit_id = cfg["kit_id"]
        self.descriptor = cfg["descriptor"]
        self.board = board
        self.core = KitCore(self.kit_id, self.descriptor, clock=clock, apply_hook=board.apply)
        rate = max(spec["rate_hz"] for spec in self.descriptor["sensors"].values())
        self.period_ms = max(10, int(1000 / rate))
        self.status_ms = int(cfg.get("status_every", 5) * 1000)
        self.mirror_ms = int(cfg.get("mirror_every", 1) * 1000)  # 0: no Homie sensor values
        self.client = None

    # ------------------------------------------------------------ publishing

    def publish(self, topic, payload, retain=False, qos=1, properties=None):
        reason = self.client.publish(topic, payload, retain, qos, properties)
        if reason is not None and reason >= 0x80:
            self.core.errors += 1
            log("broker refused a publish to %s: %s" % (topic, umqtt5.reason_name(reason)))

    def publish_actuators(self, names):
        for name in names:
            spec = self.descriptor["actuators"][name]
            self.publish(
                P.property_topic(self.kit_id, P.ACTUATORS_NODE, name),
                P.encode_value(spec, self.core.state[name]),
                retain=True,
            )

    def publish_status(self):
        self.publish(P.status_topic(self.kit_id), json.dumps(self.core.status()), retain=True)

    # ------------------------------------------------------------ connection

    def connect(self):
        cfg = self.cfg
        kit = self.kit_id
        client = umqtt5.MQTTClient(
            cfg.get("client_id") or "kit-" + kit,
            cfg["host"],
            int(cfg["port"]),
            cfg.get("username"),
            cfg.get("password"),
            keepalive=int(cfg.get("keepalive", 30)),
            ca=cfg.get("ca"),  # mqtts: the CA file in the bundle that verifies the broker
        )
        client.set_last_will(P.state_topic(kit), P.STATE_LOST, retain=True, qos=1)
        client.set_callback(self.on_message)
        client.connect(
            clean_start=True,
            max_packet_size=cfg.get("max_packet_size") or P.max_packet_bytes(self.descriptor),
        )
        self.client = client
        self.publish(P.state_topic(kit), P.STATE_INIT, retain=True)
        self.publish(
            P.description_topic(kit),
            json.dumps(P.homie_description(kit, self.descriptor)),
            retain=True,
        )
        self.publish_actuators(self.descriptor["actuators"])
        self.publish_status()
        # Subscribe before saying "ready": a command sent on seeing "ready" must not be lost.
        for topic in P.command_subscriptions(kit):
            client.subscribe(topic, 1, P.COMMAND_RETAIN_HANDLING)
        self.publish(P.state_topic(kit), P.STATE_READY, retain=True)
        self.board.set_led(True)
        log("%s ready on %s:%s" % (kit, cfg["host"], cfg["port"]))

    def drop(self):
        """Forget a broken connection (the broker publishes the will)."""
        if self.client is not None:
            self.client.close()
        self.client = None
        self.board.set_led(False)

    def shutdown(self):
        """Leave cleanly: `$state` disconnected, then a normal DISCONNECT (no will)."""
        if self.client is None:
            return
        try:
            self.publish(P.state_topic(self.kit_id), P.STATE_DISCONNECTED, retain=True)
            self.client.disconnect()
        except Exception as err:  # leaving anyway
            log("unclean shutdown: %r" % (err,))
        self.drop()

    # ------------------------------------------------------------ commands

    def on_message(self, topic, msg, props):
        try:
            # KitCore.receive never raises; it also refuses a response topic with a wildcard,
            # which the broker would answer by dropping the connection.
            answer = self.core.receive(
                topic, msg, props.get("user_properties") or {}, props.get("response_topic")
            )
            body = json.dumps(answer[1]) if answer is not None else None
        except Exception as err:  # a kit must survive anything a client sends
            self.core.errors += 1
            log("error handling %s: %r" % (topic, err))
            return
        if answer is not None:
            reply_props = None
            if props.get("correlation_data") is not None:
                reply_props = {"correlation_data": props["correlation_data"]}
            self.publish(answer[0], body, properties=reply_props)
            ack = answer[1]
            if ack["status"] == P.APPLIED and not ack.get("duplicate"):
                if ack["target"] in P.WHOLE_KIT_PROPERTIES:
                    self.publish_actuators(self.descriptor["actuators"])
                else:
                    self.publish_actuators([ack["target"]])
        self.publish_status()

    # ------------------------------------------------------------ main loop

    def mirror(self, values):
        """Homie property values for generic MQTT tools (retained, QoS 0)."""
        for name, value in values.items():
            spec = self.descriptor["sensors"][name]
            self.publish(
                P.property_topic(self.kit_id, P.SENSORS_NODE, name),
                P.encode_value(spec, value),
                retain=True,
                qos=0,
            )

    def run_connected(self):
        """Telemetry, status and commands until the connection breaks (raises)."""
        ticks_ms, ticks_diff, ticks_add = umqtt5.ticks_ms, umqtt5.ticks_diff, umqtt5.ticks_add
        next_tick = ticks_ms()
        next_status = ticks_add(next_tick, self.status_ms)
        next_mirror = next_tick
        while True:
            wait = ticks_diff(next_tick, ticks_ms())
            if wait > 0:
                # Commands are handled while waiting; check_msg also keeps the link alive.
                self.client.check_msg(min(wait, 1000))
                continue
            values = self.board.read()
            self.publish(P.telemetry_topic(self.kit_id), self.core.telemetry(values))
            self.board.toggle_led()
            now = ticks_ms()
            if self.mirror_ms and ticks_diff(now, next_mirror) >= 0:
                self.mirror(values)
                next_mirror = ticks_add(now, self.mirror_ms)
            if ticks_diff(now, next_status) >= 0:
                self.publish_status()
                next_status = ticks_add(now, self.status_ms)
            next_tick = ticks_add(next_tick, self.period_ms)
            if ticks_diff(ticks_ms(), next_tick) > 1000:  # far behind: resync, do not burst
                next_tick = ticks_ms()


def load_config(path=CONFIG_FILE):
    with open(path) as f:
        cfg = json.load(f)
    for key in ("kit_id", "descriptor", "host", "port"):
        if key not in cfg:
            raise ValueError("%s lacks %r" % (path, key))
    return cfg


def _stop_on_sigterm():
    # CPython only: make `kill` (SIGTERM) a clean shutdown like Ctrl-C.
    try:
        import signal
    except ImportError:
        return

    def handler(_signum, _frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(path=CONFIG_FILE):
    cfg = load_config(path)
    board = make_board(cfg["descriptor"])
    firmware = Firmware(cfg, board)
    _stop_on_sigterm()
    synced = False
    backoff = 1
    while True:
        try:
            connect_wifi(cfg)
            if not synced:
                synced = set_clock(cfg)
            firmware.connect()
            backoff = 1
            firmware.run_connected()
        except KeyboardInterrupt:
            log("stopping")
            firmware.shutdown()
            return
        except Exception as err:  # whatever broke, reconnect
            log("connection error: %r; retrying in %d s" % (err, backoff))
            firmware.drop()
            try:
                time.sleep(backoff)
            except KeyboardInterrupt:
                return
            backoff = min(backoff * 2, MAX_BACKOFF_S)


if __name__ == "__main__":
    main()
