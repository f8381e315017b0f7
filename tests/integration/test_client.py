"""labs.client against a real Mosquitto with dynamic security and a stand-in kit.

The stand-in kit is KitCore on a paho connection (announce, answer commands, 20 Hz telemetry):
enough protocol to exercise the client without depending on the twin runner.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hardware_kits import protocol as P
from hardware_kits.broker import Broker
from hardware_kits.descriptor import MODELS_DIR, load_descriptor
from hardware_kits.kitcore import KitCore
from hardware_kits.mqtt import (
    BrokerAddress,
    Credentials,
    connect_client,
    reply_properties,
    user_properties,
)
from labs.client import (
    CommandNotAuthorized,
    CommandRejected,
    CommandTimeout,
    Lab,
    LabClosed,
    LabConfigError,
    LabConnectionError,
    LabError,
    connect,
)
from site_config.runtime import free_port

pytestmark = pytest.mark.broker

KIT = "lamp-1"  # runs for the whole module
SPARE = "lamp-2"  # started and stopped by single tests
DESCRIPTOR = load_descriptor(MODELS_DIR / "street-lighting.yaml")


def wait_until(condition: Callable[[], Any], timeout: float = 5.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.01)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")


# ---------------------------------------------------------------- the stand-in kit


class StandInKit:
    """A kit made of KitCore and connect_client. rate_hz=None: telemetry only on request."""

    def __init__(self, address: BrokerAddress, kit_id: str, rate_hz: float | None = 20.0):
        self.kit_id = kit_id
        self.core = KitCore(kit_id, DESCRIPTOR)
        self.lock = threading.Lock()  # core is shared by paho's thread and the telemetry thread
        self.stopped = threading.Event()
        self.client = connect_client(
            address.host,
            address.port,
            address.credentials,
            f"stand-in-{kit_id}",
            on_message=self._on_command,
            subscribe=[(t, 1) for t in P.command_subscriptions(kit_id)],
            will=(P.state_topic(kit_id), P.STATE_LOST, 1, True),
            on_connect=self._announce,
        )
        self.thread = None
        if rate_hz:
            self.thread = threading.Thread(target=self._run, args=(1 / rate_hz,), daemon=True)
            self.thread.start()

    def _publish(self, suffix: str, payload: str, retain: bool = True) -> None:
        self.client.publish(
            f"{P.device_topic(self.kit_id)}/{suffix}", payload, qos=1, retain=retain
        )

    def _announce(self, client: Any) -> None:
        self.client = client  # runs inside connect_client, before it returns the client
        self._publish("$state", P.STATE_INIT)
        self._publish("$description", json.dumps(P.homie_description(self.kit_id, DESCRIPTOR)))
        self._publish_actuators()
        self._publish("$state", P.STATE_READY)

    def _publish_actuators(self) -> None:
        for name, value in self.core.state.items():
            spec = DESCRIPTOR["actuators"][name]
            self._publish(f"{P.ACTUATORS_NODE}/{name}", P.encode_value(spec, value))
        self._publish("$status", json.dumps(self.core.status()))

    def _on_command(self, _client: Any, _userdata: Any, msg: Any) -> None:
        props = user_properties(msg.properties)
        with self.lock:
            ack = self.core.handle_command(
                msg.topic, msg.payload, props.get(P.PROP_COMMAND_ID), props.get(P.PROP_DEADLINE)
            )
        self.client.publish(
            msg.properties.ResponseTopic,
            json.dumps(ack),
            qos=1,
            properties=reply_properties(msg.properties),
        )
        if ack["status"] == P.APPLIED and not ack.get("duplicate"):
            self._publish_actuators()

    def sample(self, seq: int | None = None) -> None:
        """Publish one telemetry sample (optionally with a forced sequence number)."""
        with self.lock:
            if seq is not None:
                self.core.seq = seq - 1
            dimming = self.core.state["dimming"]
            values = {
                "ambient-light": 500.0 + self.core.seq % 7,
                "motion": self.core.seq % 2 == 0,
                "lamp-power": 1.2 * dimming,
            }
            payload = self.core.telemetry(values)
        self.client.publish(P.telemetry_topic(self.kit_id), payload, qos=1)

    def _run(self, period: float) -> None:
        while not self.stopped.wait(period):
            self.sample()

    def stop(self) -> None:
        self.stopped.set()
        if self.thread is not None:
            self.thread.join(5)
        self.client.publish(
            P.state_topic(self.kit_id), P.STATE_DISCONNECTED, qos=1, retain=True
        ).wait_for_publish(2)
        self.client.disconnect()
        self.client.loop_stop()


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def broker() -> Iterator[Broker]:
    state_dir = Path(tempfile.mkdtemp(prefix="smartlab-broker-"))
    b = Broker(state_dir, port=free_port()).start()
    try:
        b.provision_kits([KIT, SPARE])
        yield b
    finally:
        b.stop()
        shutil.rmtree(state_dir, ignore_errors=True)


def url(b: Broker, creds: Credentials) -> str:
    return BrokerAddress(b.host, b.port, creds).url()


@pytest.fixture(scope="module")
def operator_url(broker: Broker) -> str:
    return url(broker, broker.provision_user("operator", command_kits=[KIT, SPARE]))


@pytest.fixture(scope="module")
def observer_url(broker: Broker) -> str:
    return url(broker, broker.provision_user("observer"))


@pytest.fixture(scope="module")
def kit(broker: Broker) -> Iterator[StandInKit]:
    k = StandInKit(broker.address(f"kit-{KIT}"), KIT)
    yield k
    k.stop()


@pytest.fixture(scope="module")
def lab(operator_url: str, kit: StandInKit) -> Iterator[Lab]:
    with connect(operator_url) as lab:
        lab.wait_for_kits([KIT], timeout=5)
        yield lab


@pytest.fixture
def spare(broker: Broker) -> Iterator[Callable[..., StandInKit]]:
    """Start SPARE kits on demand; each is stopped at the end of the test."""
    started: list[StandInKit] = []

    def start(rate_hz: float | None = None) -> StandInKit:
        started.append(StandInKit(broker.address(f"kit-{SPARE}"), SPARE, rate_hz))
        return started[-1]

    yield start
    for k in started:
        if not k.stopped.is_set():
            k.stop()


# ---------------------------------------------------------------- connecting


def test_connect_without_url_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SMARTLAB_MQTT_URL", raising=False)
    with pytest.raises(LabConfigError, match="SMARTLAB_MQTT_URL") as err:
        connect()
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match="bad broker URL"):
        connect("http://example.org")


def test_connect_uses_the_environment_and_wrong_password_is_refused(
    broker: Broker, operator_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SMARTLAB_MQTT_URL", operator_url)
    with connect() as lab:
        assert lab.address.port == broker.port
    bad = url(broker, Credentials("operator", "wrong-password"))
    with pytest.raises(LabConnectionError, match="refused") as err:
        connect(bad)
    assert "\n" not in str(err.value) and "wrong-password" not in str(err.value)


# ---------------------------------------------------------------- discovery and telemetry


def test_discovery(lab: Lab) -> None:
    info = lab.kits()[KIT]
    assert (info.model, info.name, info.state) == ("street-lighting", "Street lighting", "ready")
    assert info.descriptor == DESCRIPTOR
    k = lab.kit(KIT)
    assert k is lab.kit(KIT)
    assert k.state == "ready" and k.descriptor == DESCRIPTOR
    wait_until(lambda: k.actuators == {"mode": "auto", "dimming": 100}, what="actuator values")
    assert k.status is not None and k.status["safe"] is True


def test_latest_and_history(lab: Lab, operator_url: str) -> None:
    k = lab.kit(KIT)
    start = k.received
    wait_until(lambda: k.received >= start + 20, what="20 samples")
    assert set(k.latest) == set(DESCRIPTOR["sensors"])
    t, v = k.history("ambient-light")
    assert t.dtype == np.float64 and v.dtype == np.float64 and len(t) == len(v) >= 20
    assert np.all(np.diff(t) > 0)
    assert abs(t[-1] - time.time()) < 5  # the kit's epoch timestamps
    t, motion = k.history("motion")
    assert motion.dtype == np.bool_ and motion.any() and not motion.all()
    assert k.seq_gaps == 0
    with pytest.raises(KeyError):
        k.history("no-such-sensor")
    # A short ring wraps around and still returns the latest samples, oldest first.
    with connect(operator_url, history=10) as small:
        sk = small.kit(KIT)
        wait_until(lambda: sk.received >= 25, what="25 samples")
        t, v = sk.history("lamp-power")
        assert len(t) == len(v) == 10 and np.all(np.diff(t) > 0)
        assert sk.latest_ts == t[-1]


def test_subscribe_callback(lab: Lab) -> None:
    k = lab.kit(KIT)
    samples: list[tuple[str, dict]] = []

    def broken(_kit_id: str, _sample: dict) -> None:
        raise RuntimeError("a bad callback")

    errors = lab.callback_errors
    stop_broken = k.subscribe(broken)
    stop = k.subscribe(lambda kit_id, sample: samples.append((kit_id, sample)))
    wait_until(lambda: len(samples) >= 10, what="10 callbacks")
    stop_broken()
    stop()
    seqs = [s["seq"] for _, s in samples]
    assert {kit_id for kit_id, _ in samples} == {KIT}
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    assert set(samples[0][1]["values"]) == set(DESCRIPTOR["sensors"])
    assert lab.callback_errors > errors  # counted, and the network thread lived on
    count = len(samples)
    time.sleep(0.2)
    assert len(samples) == count  # unsubscribed


def test_commands_from_a_callback_fail_instead_of_deadlocking(lab: Lab) -> None:
    k = lab.kit(KIT)
    outcome: list[BaseException] = []

    def command(_kit_id: str, _sample: dict) -> None:
        try:
            k.set("mode", "manual", timeout=0.5)
        except LabError as err:
            outcome.append(err)

    stop = k.subscribe(command)
    wait_until(lambda: outcome, what="a callback")
    stop()
    assert "network thread" in str(outcome[0])


# ---------------------------------------------------------------- commands


def test_set_is_acknowledged(lab: Lab, kit: StandInKit) -> None:
    k = lab.kit(KIT)
    assert k.set("mode", "manual").value == "manual"
    ack = k.set("dimming", np.int64(40))  # numpy scalars from notebooks are fine
    assert (ack.status, ack.target, ack.value, ack.kit) == ("applied", "dimming", 40, KIT)
    assert len(ack.id) == 32 and not ack.duplicate and 0 < ack.round_trip_s < 1
    wait_until(lambda: k.actuators["dimming"] == 40, what="the retained dimming value")
    wait_until(lambda: abs(k.latest["lamp-power"] - 48.0) < 1e-9, what="telemetry to follow")
    again = k.send_raw("dimming", "40", command_id=ack.id)
    assert again.duplicate and again.value == 40 and again.id == ack.id
    safe = k.safe_state()
    assert safe.value == P.safe_state(DESCRIPTOR)
    wait_until(lambda: k.actuators == P.safe_state(DESCRIPTOR), what="the safe state")


def test_invalid_value_is_rejected_locally(lab: Lab, kit: StandInKit) -> None:
    k = lab.kit(KIT)
    before = kit.core.status()
    with pytest.raises(CommandRejected) as err:
        k.set("dimming", 150)
    assert err.value.reason == P.R_OUT_OF_RANGE and err.value.ack.local
    assert str(err.value).startswith(f"kit {KIT} rejected dimming: out_of_range: ")
    with pytest.raises(CommandRejected, match="unknown_actuator"):
        k.set("siren", True)
    time.sleep(0.1)
    after = kit.core.status()
    assert (after["applied"], after["rejected"]) == (before["applied"], before["rejected"])


def test_kit_rejects_a_raw_out_of_range_value(lab: Lab) -> None:
    k = lab.kit(KIT)
    k.set("mode", "manual")
    with pytest.raises(CommandRejected) as err:
        k.send_raw("dimming", b"150")
    ack = err.value.ack
    assert (ack.reason, ack.local, ack.status, ack.kit) == (
        P.R_OUT_OF_RANGE,
        False,
        "rejected",
        KIT,
    )
    message = str(err.value)
    assert message == f"kit {KIT} rejected dimming: out_of_range: {ack.detail}"
    assert "\n" not in message
    with pytest.raises(CommandRejected, match="stale"):
        k.send_raw("dimming", "50", deadline_s=time.time() - 10)


def test_observer_may_not_command(observer_url: str, kit: StandInKit) -> None:
    with connect(observer_url) as observer:
        k = observer.kit(KIT)
        assert k.latest or wait_until(lambda: k.latest, what="telemetry for the observer")
        before = kit.core.status()["applied"]
        started = time.monotonic()
        with pytest.raises(CommandNotAuthorized, match="Not authorized"):
            k.set("mode", "manual", timeout=5)
        assert time.monotonic() - started < 1
        with pytest.raises(CommandNotAuthorized):
            k.safe_state(timeout=5)
        assert kit.core.status()["applied"] == before


def test_timeout_when_the_kit_is_stopped(lab: Lab, spare: Callable[..., StandInKit]) -> None:
    states: list[tuple[str, str | None]] = []
    stop_watching = lab.on_state(lambda kit_id, state: states.append((kit_id, state)))
    stand_in = spare(rate_hz=20)
    lab.wait_for_kits([SPARE], timeout=5)
    k = lab.kit(SPARE)
    assert k.set("mode", "manual").value == "manual"
    stand_in.stop()
    wait_until(lambda: k.state == "disconnected", what="the disconnected state")
    started = time.monotonic()
    with pytest.raises(CommandTimeout, match=f"kit {SPARE} did not acknowledge mode"):
        k.set("mode", "auto", timeout=0.5)
    assert 0.5 <= time.monotonic() - started < 1.5
    stop_watching()
    assert (SPARE, "ready") in states and states[-1] == (SPARE, "disconnected")


def test_sequence_gaps_are_counted(lab: Lab, spare: Callable[..., StandInKit]) -> None:
    stand_in = spare(rate_hz=None)
    lab.wait_for_kits([SPARE], timeout=5)
    k = lab.kit(SPARE)
    start_received, start_gaps = k.received, k.seq_gaps
    for seq in (1, 2, 3, 7, 8, 10):
        stand_in.sample(seq)
    wait_until(lambda: k.received == start_received + 6, what="6 samples")
    assert k.seq_gaps - start_gaps == 3 + 1


def test_malformed_messages_are_counted_and_ignored(
    lab: Lab, spare: Callable[..., StandInKit]
) -> None:
    stand_in = spare(rate_hz=None)
    lab.wait_for_kits([SPARE], timeout=5)
    k = lab.kit(SPARE)
    received = k.received
    stand_in.sample(1)
    wait_until(lambda: k.received == received + 1, what="a first sample")
    before, received, gaps = lab.malformed, k.received, k.seq_gaps
    device = P.device_topic(SPARE)
    for suffix, payload in [
        ("$telemetry", b"not json"),
        ("$telemetry", b'{"seq": "x"}'),
        ("$telemetry", b"\xff\xfe"),
        ("$state", b"exploded"),
        ("$status", b"[1, 2]"),
        ("actuators/dimming", b"lots"),
        ("$ack/" + lab.requester, b"{}"),
    ]:
        stand_in.client.publish(f"{device}/{suffix}", payload, qos=1)
    stand_in.sample(2)
    wait_until(lambda: k.received == received + 1, what="the good sample after the bad ones")
    assert lab.malformed - before == 7
    assert k.state == "ready" and k.seq_gaps == gaps  # seq 1 -> 2 across the bad messages
    assert k.latest["lamp-power"] == 120.0


def test_close_leaves_no_thread_or_connection(operator_url: str, kit: StandInKit) -> None:
    before = set(threading.enumerate())
    lab = connect(operator_url)
    started = set(threading.enumerate()) - before
    assert started, "connect() should run paho's network thread"
    lab.kit(KIT)
    client = lab._client
    lab.close()
    lab.close()  # idempotent
    assert not (set(threading.enumerate()) - before)
    assert not client.is_connected()
    with pytest.raises(LabClosed):
        lab.kit(KIT).set("mode", "auto")
    with connect(operator_url) as lab2:
        lab2.kit(KIT)
    assert not (set(threading.enumerate()) - before)
