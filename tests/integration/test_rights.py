"""Broker rights of users: watch accounts that never drop, control accounts granted and revoked.

Connections here are raw paho clients, not `labs.client`: a Lab subscribes to every kit with
wildcard filters (`homie/5/+/...`), which dynsec refuses to accounts limited to some kits and to
control accounts (they hold no read right at all).
"""

from __future__ import annotations

import json
import statistics
import time
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import paho.mqtt.client as mqtt
import pytest

from hardware_kits import protocol as P
from hardware_kits.broker import ADMIN, OBSERVER_ROLE, Broker, ack_role, observe_role
from hardware_kits.dynsec import DynSecError
from hardware_kits.kit_runner import KitRunner
from hardware_kits.mqtt import ConnectError, Credentials, command_properties, connect_client
from hardware_kits.twins.base import twin_class
from lab_service.rights import BrokerRights, control_username
from tests.conftest import wait_until

pytestmark = pytest.mark.broker
NOT_AUTHORIZED = 135
KIT_A, KIT_B = "rt-a", "rt-b"
CYCLES = 20


# ---------------------------------------------------------------- helpers


class Conn:
    """One MQTT connection that records messages, PUBACK reasons, connects and disconnects."""

    def __init__(
        self,
        broker: Broker,
        creds: Credentials,
        filters: Iterable[str] = (),
        reconnect_s: float | None = None,
    ) -> None:
        self.messages: list[mqtt.MQTTMessage] = []
        self.pubacks: dict[int, int] = {}  # mid -> reason code
        self.connects = 0
        self.disconnects = 0  # by the broker or the network, not by close()
        self.closing = False
        self.requester = f"{creds.username}/rt-{uuid.uuid4().hex[:8]}"
        self.client = connect_client(
            broker.host,
            broker.port,
            creds,
            self.requester.replace("/", "-"),
            on_message=lambda c, u, m: self.messages.append(m),
            subscribe=[(f, 1) for f in filters],
            on_connect=self._on_connect,
        )
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        if reconnect_s is not None:
            # paho waits 1 s before its first reconnection by default.
            self.client.reconnect_delay_set(reconnect_s, 1)

    def _on_connect(self, _client: mqtt.Client) -> None:
        self.connects += 1

    def _on_disconnect(self, *_args: Any) -> None:
        if not self.closing:
            self.disconnects += 1

    def _on_publish(self, _c: mqtt.Client, _u: Any, mid: int, reason: Any, _p: Any) -> None:
        self.pubacks[mid] = reason.value

    def command(self, kit_id: str, text: str) -> int:
        """Publish a `display` command (QoS 1, acks to this connection's requester); its mid."""
        props = command_properties(
            uuid.uuid4().hex, P.ack_topic(kit_id, self.requester), time.time() + 5
        )
        return self.client.publish(
            P.set_topic(kit_id, "display"), text, qos=1, properties=props
        ).mid

    def puback(self, mid: int, timeout: float = 5.0) -> int:
        wait_until(lambda: mid in self.pubacks, timeout=timeout)
        return self.pubacks[mid]

    def on(self, suffix: str) -> list[mqtt.MQTTMessage]:
        return [m for m in self.messages if m.topic.endswith(suffix)]

    def acks(self) -> list[dict]:
        return [json.loads(m.payload) for m in self.messages if "/$ack/" in m.topic]

    def seqs(self) -> list[int]:
        return [json.loads(m.payload)["seq"] for m in self.on("/$telemetry")]

    def close(self) -> None:
        self.closing = True
        self.client.disconnect()
        self.client.loop_stop()


def send_once(broker: Broker, creds: Credentials, kit_id: str) -> int:
    """PUBACK reason of one command sent on a fresh connection."""
    conn = Conn(broker, creds)
    try:
        return conn.puback(conn.command(kit_id, "probe"))
    finally:
        conn.close()


def user() -> str:
    return f"rt-user-{uuid.uuid4().hex[:6]}"


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def kits(broker: Broker, models: dict) -> Iterator[dict[str, KitRunner]]:
    creds = broker.provision_kits([KIT_A, KIT_B])
    runners = {
        kit: KitRunner(
            kit,
            twin_class("smart-parking")(models["smart-parking"], seed=1),
            broker.address(creds[kit].username),
            rate_hz=10,
        ).start()
        for kit in (KIT_A, KIT_B)
    }
    yield runners
    for runner in runners.values():
        runner.stop()


@pytest.fixture(scope="module")
def rights(broker: Broker, kits: dict) -> Iterator[BrokerRights]:
    with BrokerRights(broker.admin, broker.credentials) as rights:
        yield rights


@pytest.fixture
def kit_side(broker: Broker, rights: BrokerRights, kits: dict) -> Iterator[Conn]:
    """What the kits send, acks included: seen as the broker's admin (a watch account sees no
    one's acks, see tests/security/test_mqtt_boundaries.py)."""
    conn = Conn(broker, broker.credentials(ADMIN), [P.kit_filter(KIT_A), P.kit_filter(KIT_B)])
    yield conn
    conn.close()


def applied(runner: KitRunner) -> int:
    with runner._lock:
        return runner.core.applied


# ---------------------------------------------------------------- tests


def test_watch_account_reads_but_never_commands(broker, rights, kits):
    name = user()
    watch = rights.watch_account(name, [KIT_A])
    conn = Conn(broker, watch, [P.telemetry_topic(KIT_A)])
    try:
        wait_until(lambda: len(conn.seqs()) >= 3, timeout=5)
    finally:
        conn.close()
    with pytest.raises(ConnectError, match="refused a subscription"):
        Conn(broker, watch, [P.telemetry_topic(KIT_B)])  # a kit it may not watch
    assert send_once(broker, watch, KIT_A) == NOT_AUTHORIZED
    assert send_once(broker, rights.control_account(name), KIT_A) == NOT_AUTHORIZED


def test_grant_lets_control_command_and_revoke_cuts_it(broker, rights, kits, kit_side):
    name = user()
    rights.watch_account(name, [KIT_A])
    rights.grant(name, KIT_A)
    control = Conn(broker, rights.control_account(name), reconnect_s=0.05)
    try:
        before = applied(kits[KIT_A])
        assert control.puback(control.command(KIT_A, "granted")) == 0
        wait_until(lambda: [a for a in kit_side.acks() if a["status"] == P.APPLIED], timeout=5)
        assert applied(kits[KIT_A]) == before + 1

        acks_before, applied_before, connects = (
            len(kit_side.acks()),
            applied(kits[KIT_A]),
            control.connects,
        )
        started = time.monotonic()
        rights.revoke(name, KIT_A)
        refused_at, mids = _publish_until_refused(control, started + 1.0)
        assert refused_at is not None, "no refusal within 1 s of revoke()"
        assert refused_at - started < 1.0
        assert control.connects > connects  # the refusal came on the auto-reconnected session
        print(f"\nrevoke() to first refused publish: {(refused_at - started) * 1000:.0f} ms")
        wait_until(lambda: all(m in control.pubacks for m in mids), timeout=5)
        assert {control.pubacks[m] for m in mids} == {NOT_AUTHORIZED}
        time.sleep(0.5)  # a command that got through would have been answered by now
        assert len(kit_side.acks()) == acks_before
        assert applied(kits[KIT_A]) == applied_before
        status = json.loads(kit_side.on(f"{KIT_A}/$status")[-1].payload)
        assert status["applied"] == applied_before
    finally:
        control.close()


def _publish_until_refused(control: Conn, deadline: float) -> tuple[float | None, list[int]]:
    """Send commands every 10 ms until one is refused; (time of the refusal, mids sent)."""
    mids: list[int] = []
    while time.monotonic() < deadline:
        mids.append(control.command(KIT_A, "after-revoke"))
        if any(control.pubacks.get(m) == NOT_AUTHORIZED for m in mids):
            return time.monotonic(), mids
        time.sleep(0.01)
    return None, mids


def test_watch_stream_survives_grant_and_revoke_cycles(broker, rights, kits):
    name, other = user(), user()
    watch = Conn(broker, rights.watch_account(name, [KIT_A]), [P.telemetry_topic(KIT_A)])
    control = Conn(broker, rights.control_account(name), reconnect_s=0.05)
    rights.control_account(other)
    grants, revokes = [], []
    try:
        wait_until(lambda: watch.seqs(), timeout=5)
        for i in range(CYCLES):
            rights.grant(other, KIT_B)
            grants.append(_timed(rights.grant, name, KIT_A))
            revokes.append(_timed(rights.revoke, name, KIT_A))
            rights.revoke(other, KIT_B)
            if i == CYCLES // 2:
                rights.watch_account(name, [KIT_A])  # unchanged: must not disconnect it
            time.sleep(0.05)  # spread the cycles over ~1 s of telemetry
        last = watch.seqs()[-1]
        wait_until(lambda: watch.seqs()[-1] >= last + 2, timeout=5)
    finally:
        watch.close()
        control.close()
    seqs = watch.seqs()
    assert watch.disconnects == 0
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "telemetry gap on the watch account"
    assert len(seqs) >= 10
    assert control.disconnects > 0  # the control account was kicked: the test bites
    print(
        f"\ngrant p50 {statistics.median(grants) * 1000:.2f} ms, "
        f"revoke p50 {statistics.median(revokes) * 1000:.2f} ms over {CYCLES} cycles "
        f"(max {max(grants) * 1000:.2f} / {max(revokes) * 1000:.2f} ms)"
    )


def _timed(action: Any, *args: Any) -> float:
    start = time.perf_counter()
    action(*args)
    return time.perf_counter() - start


def test_reconcile_removes_stale_and_adds_missing_grants(broker, rights, kits):
    stale, missing = user(), user()
    rights.grant(stale, KIT_B)  # a session that ended while the service was down
    rights.control_account(missing)
    # Grants of users outside this test (other tests on the session broker) stay as they are.
    others = {kit: u for u, held in rights.held().items() if u != stale for kit in held}
    notes = rights.reconcile({**others, KIT_A: missing})
    assert len(notes) == 2 and all("\n" not in n for n in notes)
    assert any(KIT_B in n and stale in n and "revoked" in n for n in notes)
    assert any(KIT_A in n and missing in n and "granted" in n for n in notes)
    held = rights.held()
    assert stale not in held and held[missing] == {KIT_A}
    assert send_once(broker, broker.credentials(control_username(stale)), KIT_B) == NOT_AUTHORIZED
    assert send_once(broker, broker.credentials(control_username(missing)), KIT_A) == 0
    assert rights.reconcile({**others, KIT_A: missing}) == []
    rights.revoke(missing, KIT_A)


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "x" * 65,
        "al ice",
        "a/b",
        "#",
        "+",
        "bob\nx",
        "zoë",
        "ctl-bob",
        "kit-rt-a",
        "smartlab-admin",
    ],
)
def test_invalid_user_names_raise_one_line_value_errors(rights, bad):
    for call in (
        lambda: control_username(bad),
        lambda: rights.grant(bad, KIT_A),
        lambda: rights.revoke(bad, KIT_A),
        lambda: rights.watch_account(bad, None),
        lambda: rights.control_account(bad),
        lambda: rights.reconcile({KIT_A: bad}),
    ):
        with pytest.raises(ValueError) as err:
            call()
        assert "\n" not in str(err.value)


def test_valid_user_names(rights):
    for good in ("a", "x" * 64, "Alice.Smith@uni-1.example", "s_1"):
        assert control_username(good) == "ctl-" + good


def test_grant_and_revoke_are_idempotent(broker, rights, kits):
    name = user()
    rights.revoke(name, KIT_A)  # no control account yet
    rights.grant(name, KIT_A)  # creates the control account
    rights.grant(name, KIT_A)
    assert rights.held()[name] == {KIT_A}
    assert rights.control_account(name) == rights.control_account(name)
    rights.revoke(name, KIT_A)
    rights.revoke(name, KIT_A)
    rights.revoke(name, KIT_B)  # never granted
    rights.revoke(name, "rt-no-such-kit")
    assert name not in rights.held()
    with pytest.raises(DynSecError, match="provision the kit"):
        rights.grant(name, "rt-no-such-kit")


def test_watch_account_follows_the_kits_it_is_given(broker, rights, kits):
    name = user()
    creds = rights.watch_account(name, [KIT_A])
    with pytest.raises(TypeError):
        rights.watch_account(name, KIT_A)  # a string, not a list of kit ids
    assert rights.watch_account(name, [KIT_A, KIT_B]) == creds
    assert _roles(broker, name) == {observe_role(KIT_A), observe_role(KIT_B)}
    rights.watch_account(name, None)
    assert _roles(broker, name) == {OBSERVER_ROLE}
    rights.watch_account(name, [KIT_B])
    assert _roles(broker, name) == {observe_role(KIT_B)}
    conn = Conn(broker, creds, [P.telemetry_topic(KIT_B)])  # the password still works
    conn.close()


def _roles(broker: Broker, username: str) -> set[str]:
    """The account's roles but its own `acks_<username>` (which every account keeps)."""
    with broker.admin() as admin:
        client = admin.call({"command": "getClient", "username": username})[0]["data"]["client"]
    return {r["rolename"] for r in client["roles"]} - {ack_role(username)}


def test_one_dynsec_connection_is_kept_and_replaced_when_dropped(broker, kits):
    opened = []

    def factory():
        opened.append(broker.admin())
        return opened[-1]

    with BrokerRights(factory, broker.credentials) as rights:
        name = user()
        rights.grant(name, KIT_A)
        rights.revoke(name, KIT_A)
        assert len(opened) == 1
        opened[0]._client.disconnect()  # as a broker restart or network failure would
        rights.grant(name, KIT_A)
        assert len(opened) == 2 and rights.held()[name] == {KIT_A}
        rights.revoke(name, KIT_A)
    assert not opened[1]._client.is_connected()
