"""The board firmware against a real Mosquitto: umqtt5 with paho-mqtt 2 (MQTT v5) on the other
side, the last will on SIGKILL, and a whole firmware bundle run under CPython."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hardware_kits import protocol as P
from hardware_kits.firmware import umqtt5
from hardware_kits.firmware_bundle import (
    BUNDLE_FILES,
    FIRMWARE_DIR,
    build_bundle,
    run_under_cpython,
    run_under_micropython,
)

MOSQUITTO = "/usr/sbin/mosquitto"

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(not Path(MOSQUITTO).exists(), reason="mosquitto is not installed"),
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_mosquitto(workdir: str, port: int) -> subprocess.Popen:
    """Mosquitto on 127.0.0.1:port with its conf and log in `workdir`, once it listens."""
    conf = Path(workdir, "mosquitto.conf")
    conf.write_text(
        f"listener {port} 127.0.0.1\nallow_anonymous true\nset_tcp_nodelay true\n"
        "persistence false\nuser root\n"
    )
    with open(Path(workdir, "mosquitto.log"), "wb") as log:
        proc = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop(proc)
                raise RuntimeError(
                    "mosquitto did not start: " + Path(workdir, "mosquitto.log").read_text()
                ) from None
            time.sleep(0.05)


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def open_broker() -> Iterator[int]:
    """A private, anonymous Mosquitto on a free port, in a temp dir; stopped and removed
    afterwards. (Not conftest's dynamic-security `broker`: these tests need no accounts.)"""
    workdir = tempfile.mkdtemp(prefix="fw-mosquitto-")
    port = free_port()
    try:
        proc = start_mosquitto(workdir, port)
        try:
            yield port
        finally:
            stop(proc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


class Spy:
    """A paho v5 client that records every message on its subscriptions."""

    def __init__(self, port: int, topics: list[str]) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self._cond = threading.Condition()
        self._subscribed = threading.Event()
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id="spy-" + uuid.uuid4().hex[:8],
            protocol=mqtt.MQTTv5,
        )
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_args: self._subscribed.set()
        self.client.on_connect = lambda c, *_args: c.subscribe([(t, 1) for t in topics])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._subscribed.wait(5), "spy could not subscribe"

    def _on_message(self, _client: Any, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._cond:
            self.messages.append(msg)
            self._cond.notify_all()

    def wait_for(
        self, match: Callable[[mqtt.MQTTMessage], bool], timeout: float = 5.0
    ) -> mqtt.MQTTMessage:
        """The first recorded message that matches (waiting for it if need be)."""
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                for msg in self.messages:
                    if match(msg):
                        return msg
                left = end - time.monotonic()
                if left <= 0:
                    seen = [(m.topic, m.payload[:60]) for m in self.messages[-10:]]
                    raise AssertionError(f"no matching message within {timeout} s; last: {seen}")
                self._cond.wait(left)

    def on(
        self, topic: str, payload: bytes | None = None, timeout: float = 5.0
    ) -> mqtt.MQTTMessage:
        return self.wait_for(
            lambda m: m.topic == topic and (payload is None or m.payload == payload), timeout
        )

    def all_on(self, topic: str) -> list[mqtt.MQTTMessage]:
        with self._cond:
            return [m for m in self.messages if m.topic == topic]

    def publish(
        self, topic: str, payload: str | bytes, qos: int = 1, properties: Properties | None = None
    ) -> None:
        self.client.publish(topic, payload, qos=qos, properties=properties).wait_for_publish(5)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def spy_factory(open_broker: int) -> Iterator[Callable[[list[str]], Spy]]:
    spies: list[Spy] = []

    def make(topics: list[str]) -> Spy:
        spies.append(Spy(open_broker, topics))
        return spies[-1]

    yield make
    for spy in spies:
        spy.close()


def user_props(msg: mqtt.MQTTMessage) -> dict[str, str]:
    return dict(getattr(msg.properties, "UserProperty", None) or [])


def pump(client: umqtt5.MQTTClient, until: Callable[[], bool], timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not until():
        assert time.monotonic() < end, "umqtt5 client did not receive in time"
        client.check_msg(50)


# ---------------------------------------------------------------- umqtt5 <-> paho


def test_umqtt5_publishes_to_paho_with_qos_0_and_1(open_broker: int, spy_factory) -> None:
    spy = spy_factory(["fw/up/#"])
    client = umqtt5.MQTTClient(
        "fw-pub-" + uuid.uuid4().hex[:6], "127.0.0.1", open_broker, "user", "pw", keepalive=30
    )
    client.connect()
    try:
        props = {
            "user_properties": {"command-id": "c-1", "deadline": "1700000000000"},
            "response_topic": "fw/replies/x",
            "correlation_data": b"\x00corr\xff",
        }
        assert client.publish("fw/up/q0", "zero", qos=0, properties=props) is None
        assert client.publish("fw/up/q1", b"\x00one\xff", qos=1, properties=props) == 0
        assert client.publish("fw/up/retained", "r", retain=True, qos=1) == 0
        for topic, payload, qos in (("fw/up/q0", b"zero", 0), ("fw/up/q1", b"\x00one\xff", 1)):
            msg = spy.on(topic)
            assert msg.payload == payload
            assert msg.qos == qos
            assert user_props(msg) == {"command-id": "c-1", "deadline": "1700000000000"}
            assert msg.properties.ResponseTopic == "fw/replies/x"
            assert msg.properties.CorrelationData == b"\x00corr\xff"
        assert spy.on("fw/up/retained").payload == b"r"
        assert client.refused == 0
    finally:
        client.disconnect()


def test_paho_publishes_to_umqtt5_with_qos_0_and_1(open_broker: int, spy_factory) -> None:
    sender = spy_factory(["fw/unused"])
    client = umqtt5.MQTTClient(
        "fw-sub-" + uuid.uuid4().hex[:6], "127.0.0.1", open_broker, keepalive=30
    )
    got: list[tuple[str, bytes, dict]] = []
    client.set_callback(lambda topic, msg, props: got.append((topic, msg, props)))
    client.connect()
    try:
        assert client.subscribe("fw/down/+", 1) == 1
        assert client.subscribe("fw/zero/#", 0) == 0
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("command-id", "c-2"), ("deadline", "42")]
        props.ResponseTopic = "fw/replies/y"
        props.CorrelationData = b"\x01\x02"
        sender.publish("fw/down/q1", b"\xffone", qos=1, properties=props)  # our PUBACK came
        sender.publish("fw/down/q0", "zero", qos=0, properties=props)
        sender.publish("fw/zero/x", "downgraded", qos=1)
        pump(client, lambda: len(got) == 3)
        by_topic = {topic: (msg, p) for topic, msg, p in got}
        expected = {
            "user_properties": {"command-id": "c-2", "deadline": "42"},
            "response_topic": "fw/replies/y",
            "correlation_data": b"\x01\x02",
        }
        assert by_topic["fw/down/q1"] == (b"\xffone", expected)
        assert by_topic["fw/down/q0"] == (b"zero", expected)
        assert by_topic["fw/zero/x"] == (b"downgraded", {})
        client.ping()
        pump(client, lambda: client._ping_sent is None)
    finally:
        client.disconnect()


def test_connect_to_a_closed_port_fails_cleanly() -> None:
    client = umqtt5.MQTTClient("nobody", "127.0.0.1", free_port(), timeout=2)
    with pytest.raises(OSError):
        client.connect()


WILL_SCRIPT = """
import sys, time
sys.path.insert(0, sys.argv[1])
import umqtt5
c = umqtt5.MQTTClient("fw-will", "127.0.0.1", int(sys.argv[2]), keepalive=60)
c.set_last_will("fw/will/state", "lost", retain=True, qos=1)
c.connect()
c.publish("fw/will/state", "alive", retain=True, qos=1)
time.sleep(60)
"""


def test_will_is_published_when_the_process_is_killed(open_broker: int, spy_factory) -> None:
    spy = spy_factory(["fw/will/state"])
    proc = subprocess.Popen(
        [sys.executable, "-S", "-c", WILL_SCRIPT, str(FIRMWARE_DIR), str(open_broker)]
    )
    try:
        spy.on("fw/will/state", b"alive", timeout=10)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        will = spy.on("fw/will/state", b"lost")
        assert will.qos == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# ---------------------------------------------------------------- the firmware bundle


def command(
    spy: Spy, kit: str, actuator: str, payload: str, command_id: str, deadline_ms: int | None = None
) -> mqtt.MQTTMessage:
    """Send one command the way controllers do and return its acknowledgement."""
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [
        (P.PROP_COMMAND_ID, command_id),
        (P.PROP_DEADLINE, str(deadline_ms or int(time.time() * 1000) + 5000)),
    ]
    props.ResponseTopic = P.ack_topic(kit, "tester")
    props.CorrelationData = command_id.encode()
    spy.publish(P.set_topic(kit, actuator), payload, qos=1, properties=props)
    ack = spy.wait_for(
        lambda m: (
            m.topic == P.ack_topic(kit, "tester")
            and m.properties.CorrelationData == command_id.encode()
        )
    )
    return ack


@pytest.fixture
def firmware(open_broker: int, tmp_path: Path) -> Iterator[Callable[..., tuple[str, Any]]]:
    procs: list[subprocess.Popen] = []
    logs = []

    def start(env: dict[str, str] | None = None) -> tuple[str, subprocess.Popen]:
        kit = "sl-fw-" + uuid.uuid4().hex[:6]
        bundle = build_bundle(
            tmp_path / kit, kit, "street-lighting", "127.0.0.1", open_broker, "kit-" + kit, "secret"
        )
        log = open(tmp_path / (kit + ".log"), "wb")  # noqa: SIM115 - closed below
        logs.append(log)
        procs.append(run_under_cpython(bundle, env=env, stdout=log, stderr=subprocess.STDOUT))
        return kit, procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
    for log in logs:
        log.close()


def test_bundle_holds_the_shared_modules_unchanged(tmp_path: Path) -> None:
    bundle = build_bundle(
        tmp_path / "b",
        "kit-1",
        "street-lighting",
        "mqtt.lab",
        1883,
        "u",
        "pw",
        wifi_ssid="lab",
        wifi_password="wifipw",
    )
    assert sorted(p.name for p in bundle.iterdir()) == sorted(BUNDLE_FILES)
    package = Path(P.__file__).parent
    for name in ("protocol.py", "kitcore.py"):
        assert (bundle / name).read_bytes() == (package / name).read_bytes()
    config = json.loads((bundle / "config.json").read_text())
    assert config["kit_id"] == "kit-1"
    assert config["descriptor"]["pins"]["lamp"] == {"pwm": 25, "freq_hz": 1000}
    assert (config["host"], config["port"], config["username"], config["password"]) == (
        "mqtt.lab",
        1883,
        "u",
        "pw",
    )
    assert (config["wifi_ssid"], config["wifi_password"]) == ("lab", "wifipw")
    with pytest.raises(ValueError):
        build_bundle(tmp_path / "c", "Not A Homie Id", "street-lighting", "h", 1, "u", "p")


def test_firmware_bundle_announces_streams_and_obeys(spy_factory, firmware) -> None:
    spy = spy_factory(["homie/5/+/#"])
    # Dark and nobody around: in auto mode the lamp idles at its night level.
    kit, proc = firmware({"SMARTLAB_SIM_ADC": "0", "SMARTLAB_SIM_MOTION": "0"})

    # Announcement, in order: init, description, actuator values, ready.
    spy.on(P.state_topic(kit), b"ready", timeout=15)
    topics = [m.topic for m in spy.messages if m.topic.startswith(P.device_topic(kit) + "/")]
    order = [
        topics.index(P.state_topic(kit)),
        topics.index(P.description_topic(kit)),
        topics.index(P.property_topic(kit, P.ACTUATORS_NODE, "mode")),
        topics.index(P.property_topic(kit, P.ACTUATORS_NODE, "dimming")),
    ]
    assert order == sorted(order) and order[-1] < len(topics) - 1
    assert spy.all_on(P.state_topic(kit))[0].payload == b"init"
    description = json.loads(spy.on(P.description_topic(kit)).payload)
    assert description["homie"] == "5.0" and description["smartlab"]["kit"] == kit
    assert set(description["nodes"]["actuators"]["properties"]) == {"mode", "dimming"}
    assert spy.on(P.property_topic(kit, P.ACTUATORS_NODE, "mode")).payload == b"auto"
    assert spy.on(P.property_topic(kit, P.ACTUATORS_NODE, "dimming")).payload == b"100"

    # Telemetry: numbered samples whose values fit the descriptor.
    descriptor = description["smartlab"]["descriptor"]
    spy.wait_for(
        lambda m: m.topic == P.telemetry_topic(kit) and P.decode_telemetry(m.payload)["seq"] >= 3
    )
    samples = [P.decode_telemetry(m.payload) for m in spy.all_on(P.telemetry_topic(kit))]
    assert [s["seq"] for s in samples] == list(range(1, len(samples) + 1))
    for sample in samples:
        assert abs(sample["ts"] - time.time()) < 5
        assert set(sample["values"]) == set(descriptor["sensors"])
        for name, value in sample["values"].items():
            P.check_value(descriptor["sensors"][name], value, name)
    assert samples[-1]["values"]["lamp-power"] == pytest.approx(6 + 114 * 0.30)

    # Commands: the interlock first, then manual mode and a dimming level.
    ack = P.decode_ack(command(spy, kit, "dimming", "40", "c-0").payload)
    assert (ack["status"], ack["reason"]) == ("rejected", P.R_INTERLOCK)
    ack = P.decode_ack(command(spy, kit, "mode", "manual", "c-1").payload)
    assert ack == {
        "id": "c-1",
        "target": "mode",
        "status": "applied",
        "ts": ack["ts"],
        "value": "manual",
    }
    spy.on(P.property_topic(kit, P.ACTUATORS_NODE, "mode"), b"manual")
    ack = P.decode_ack(command(spy, kit, "dimming", "40", "c-2").payload)
    assert (ack["status"], ack["value"], ack["target"]) == ("applied", 40, "dimming")
    spy.on(P.property_topic(kit, P.ACTUATORS_NODE, "dimming"), b"40")
    # The board drives the lamp at 40 %: 6 W + 40 % of the 114 W dimming span.
    spy.wait_for(
        lambda m: (
            m.topic == P.telemetry_topic(kit)
            and P.decode_telemetry(m.payload)["values"]["lamp-power"] == pytest.approx(51.6)
        )
    )

    # Bad commands are rejected, never fatal.
    ack = P.decode_ack(command(spy, kit, "dimming", "lots", "c-3").payload)
    assert (ack["status"], ack["reason"]) == ("rejected", P.R_MALFORMED)
    stale = int(time.time() * 1000) - 60000
    ack = P.decode_ack(command(spy, kit, "dimming", "10", "c-4", deadline_ms=stale).payload)
    assert (ack["status"], ack["reason"]) == ("rejected", P.R_STALE)
    assert command(spy, kit, "mode", "manual", "c-1").payload  # duplicate id: same answer
    status = spy.wait_for(
        lambda m: m.topic == P.status_topic(kit) and json.loads(m.payload)["duplicates"] == 1
    )
    body = json.loads(status.payload)
    assert (body["applied"], body["rejected"], body["errors"]) == (2, 3, 0)
    assert body["actuators"] == {"mode": "manual", "dimming": 40} and body["safe"] is False
    assert proc.poll() is None

    # A crash (SIGKILL) leaves the last will.
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    spy.on(P.state_topic(kit), b"lost")


def test_firmware_safe_state_and_clean_stop(spy_factory, firmware) -> None:
    spy = spy_factory(["homie/5/+/#"])
    kit, proc = firmware()
    spy.on(P.state_topic(kit), b"ready", timeout=15)
    assert P.decode_ack(command(spy, kit, "mode", "manual", "m").payload)["status"] == "applied"
    assert P.decode_ack(command(spy, kit, "dimming", "0", "d").payload)["status"] == "applied"
    props = Properties(PacketTypes.PUBLISH)
    props.UserProperty = [
        (P.PROP_COMMAND_ID, "s"),
        (P.PROP_DEADLINE, str(int(time.time() * 1000) + 5000)),
    ]
    # No response topic: the acknowledgement goes to the kit's anonymous ack topic.
    spy.publish(P.safe_state_topic(kit), "", properties=props)
    ack = P.decode_ack(spy.on(P.ack_topic(kit, "anonymous")).payload)
    assert (ack["status"], ack["value"]) == ("applied", {"mode": "auto", "dimming": 100})
    spy.on(P.property_topic(kit, P.ACTUATORS_NODE, "dimming"), b"100")
    spy.wait_for(lambda m: m.topic == P.status_topic(kit) and json.loads(m.payload)["safe"])
    proc.send_signal(signal.SIGTERM)  # a clean stop says "disconnected", not "lost"
    assert proc.wait(10) == 0
    spy.on(P.state_topic(kit), b"disconnected")
    time.sleep(0.3)
    assert b"lost" not in [m.payload for m in spy.all_on(P.state_topic(kit))]


def test_firmware_waits_for_its_broker_and_reconnects(tmp_path: Path) -> None:
    """Started before its broker is up, the firmware retries; after a broker restart it
    reconnects and announces itself again, its actuator state intact."""
    port = free_port()
    kit = "sl-late-" + uuid.uuid4().hex[:6]
    bundle = build_bundle(tmp_path / kit, kit, "street-lighting", "127.0.0.1", port, "u", "p")
    workdir = tempfile.mkdtemp(prefix="fw-late-")
    brokers: list[subprocess.Popen] = []
    with open(tmp_path / "late.log", "wb") as log:
        proc = run_under_cpython(bundle, stdout=log, stderr=subprocess.STDOUT)
        try:
            time.sleep(1.5)  # at least one failed attempt
            assert proc.poll() is None
            brokers.append(start_mosquitto(workdir, port))
            spy = Spy(port, [P.device_topic(kit) + "/#"])
            try:
                spy.on(P.state_topic(kit), b"ready", timeout=15)
                ack = command(spy, kit, "mode", "manual", "before-restart")
                assert P.decode_ack(ack.payload)["status"] == "applied"
            finally:
                spy.close()
            stop(brokers[-1])
            brokers.append(start_mosquitto(workdir, port))
            spy = Spy(port, [P.device_topic(kit) + "/#"])
            try:
                spy.on(P.state_topic(kit), b"ready", timeout=15)
                spy.on(P.property_topic(kit, P.ACTUATORS_NODE, "mode"), b"manual")
                ack = command(spy, kit, "dimming", "20", "after-restart")
                assert P.decode_ack(ack.payload)["status"] == "applied"
            finally:
                spy.close()
        finally:
            proc.kill()
            proc.wait(5)
            for broker_proc in brokers:
                stop(broker_proc)
            shutil.rmtree(workdir, ignore_errors=True)
    assert "connection error" in (tmp_path / "late.log").read_text()


def test_run_under_cpython_hides_site_packages(tmp_path: Path) -> None:
    """The firmware sees only its bundle, the standard library and the simulated machine."""
    bundle = build_bundle(tmp_path / "iso", "kit-iso", "street-lighting", "h", 1, "u", "p")
    (bundle / "main.py").write_text(
        "import sys\ntry:\n    import hardware_kits\nexcept ImportError:\n    pass\nelse:\n"
        "    sys.exit(3)\nimport machine, kitcore\nprint(kitcore.P.__name__)\n"
    )
    proc = run_under_cpython(bundle, stdout=subprocess.PIPE, env={"PYTHONPATH": os.getcwd()})
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 0
    assert out.strip() == b"protocol"


# ---------------------------------------------------------------- on the MicroPython runtime

# MicroPython's Unix port, if there is one: SMARTLAB_MICROPYTHON (a command line) or
# `micropython` on PATH. It runs the very same files, catching what CPython lets through.
_VENV_MICROPYTHON = Path(sys.executable).with_name("micropython")
MICROPYTHON = (
    shlex.split(os.environ.get("SMARTLAB_MICROPYTHON", ""))
    or ([str(_VENV_MICROPYTHON)] if _VENV_MICROPYTHON.exists() else [])
    or ([shutil.which("micropython")] if shutil.which("micropython") else [])
)
needs_micropython = pytest.mark.skipif(
    not MICROPYTHON, reason="no MicroPython Unix port (set SMARTLAB_MICROPYTHON)"
)

UMQTT5_ECHO = """
import os, sys, time
sys.path.insert(0, os.getenv("FW_DIR"))
import umqtt5
got = []
c = umqtt5.MQTTClient(os.getenv("CLIENT_ID"), "127.0.0.1", int(os.getenv("PORT")), "u", "p")
c.set_callback(lambda topic, msg, props: got.append((topic, msg, props)))
c.connect()
c.subscribe("mp/down/#", 1)
c.publish("mp/up/ready", "1", qos=1)
start = time.ticks_ms()
while len(got) < 2 and time.ticks_diff(time.ticks_ms(), start) < 10000:
    c.check_msg(100)
for topic, msg, props in got:
    props["response_topic"] = topic
    assert c.publish("mp/up/echo", msg, qos=1, properties=props) == 0
c.disconnect()
"""


@needs_micropython
def test_umqtt5_on_micropython(open_broker: int, spy_factory, tmp_path: Path) -> None:
    spy = spy_factory(["mp/up/#"])
    script = tmp_path / "echo.py"
    script.write_text(UMQTT5_ECHO)
    env = dict(
        os.environ,
        FW_DIR=str(FIRMWARE_DIR),
        PORT=str(open_broker),
        CLIENT_ID="mp-" + uuid.uuid4().hex[:6],
    )
    proc = subprocess.Popen(
        [*MICROPYTHON, str(script)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        spy.on("mp/up/ready", timeout=10)
        props = Properties(PacketTypes.PUBLISH)
        props.UserProperty = [("command-id", "m-1"), ("deadline", "7")]
        props.CorrelationData = b"\x00\xff"
        spy.publish("mp/down/q1", b"\x00one", qos=1, properties=props)
        spy.publish("mp/down/q0", "zero", qos=0, properties=props)
        out, _ = proc.communicate(timeout=15)
        assert proc.returncode == 0, out.decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The echoes left before the script exited; the broker may still be passing them on.
    echoes = {
        sent: spy.wait_for(
            lambda m, sent=sent: m.topic == "mp/up/echo" and m.properties.ResponseTopic == sent
        )
        for sent in ("mp/down/q1", "mp/down/q0")
    }
    assert echoes["mp/down/q1"].payload == b"\x00one"
    assert echoes["mp/down/q0"].payload == b"zero"
    for msg in echoes.values():
        assert user_props(msg) == {"command-id": "m-1", "deadline": "7"}
        assert msg.properties.CorrelationData == b"\x00\xff"


@pytest.fixture
def mp_firmware(open_broker: int, tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen]]:
    kit = "sl-mp-" + uuid.uuid4().hex[:6]
    bundle = build_bundle(
        tmp_path / kit, kit, "street-lighting", "127.0.0.1", open_broker, "u", "p"
    )
    with open(tmp_path / "mp.log", "wb") as log:
        proc = run_under_micropython(
            bundle,
            MICROPYTHON,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={"SMARTLAB_SIM_ADC": "0", "SMARTLAB_SIM_MOTION": "0"},
        )
        try:
            yield kit, proc
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)


@needs_micropython
def test_firmware_on_micropython(spy_factory, mp_firmware) -> None:
    spy = spy_factory(["homie/5/+/#"])
    kit, proc = mp_firmware
    spy.on(P.state_topic(kit), b"ready", timeout=15)
    json.loads(spy.on(P.description_topic(kit)).payload)
    spy.wait_for(
        lambda m: m.topic == P.telemetry_topic(kit) and P.decode_telemetry(m.payload)["seq"] >= 2
    )
    ack = P.decode_ack(command(spy, kit, "mode", "manual", "c-1").payload)
    assert (ack["status"], ack["value"]) == ("applied", "manual")
    ack = P.decode_ack(command(spy, kit, "dimming", "40", "c-2").payload)
    assert (ack["status"], ack["value"]) == ("applied", 40)
    spy.on(P.property_topic(kit, P.ACTUATORS_NODE, "dimming"), b"40")
    spy.wait_for(
        lambda m: (
            m.topic == P.telemetry_topic(kit)
            and P.decode_telemetry(m.payload)["values"]["lamp-power"] == pytest.approx(51.6)
        )
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait(5)
    spy.on(P.state_topic(kit), b"lost")


@needs_micropython
def test_rejections_on_micropython(spy_factory, mp_firmware) -> None:
    spy = spy_factory(["homie/5/+/#"])
    kit, _proc = mp_firmware
    spy.on(P.state_topic(kit), b"ready", timeout=15)
    ack = P.decode_ack(command(spy, kit, "dimming", "40", "c-1").payload)
    assert (ack["status"], ack["reason"]) == ("rejected", P.R_INTERLOCK)
