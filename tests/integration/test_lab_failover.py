"""Two lab service processes on one PostgreSQL database: one decides, the other takes over.

Real Mosquitto (the session's broker), a real PostgreSQL server, twins on the broker and two
`python -m lab_service.app` processes, driven over HTTP and MQTT only. While the takeover runs,
a sampler reads the broker's command rights (dynsec listClients) as fast as it can: no kit may
ever show two holders.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest
from sqlalchemy import create_engine, text

from hardware_kits.kit_runner import KitRunner
from hardware_kits.twins.base import twin_class
from lab_service.leadership import LOST_EXIT_CODE
from lab_service.rights import BrokerRights
from labs.client import CommandNotAuthorized, Lab, connect
from tests.conftest import wait_until
from tests.stack import FAST_POLICY, ServiceProcess, call_api, token, with_tokens

pytestmark = pytest.mark.broker

COURSE = "iot101"
USERS = {
    "admin": {"name": "lab-admin", "institution": "centre", "lab_admin": True},
    "alice": {"name": "alice", "institution": "univ-a"},
    "bob": {"name": "bob", "institution": "univ-b"},
    "carol": {"name": "carol", "institution": "univ-a", "instructor_of": [COURSE]},
    "dave": {"name": "dave", "institution": "univ-b"},
}
TAKEOVER_LIMIT_S = 5.0


class Pair:
    """Two lab service processes on one database; `call` goes to whichever is asked."""

    def __init__(self, broker, state_root, db_url: str, name: str) -> None:
        def service(which: str) -> ServiceProcess:
            return ServiceProcess(
                broker,
                state_root,
                with_tokens(USERS),
                name=f"{name}-{which}",
                settings=FAST_POLICY,
                extra_args=(f"--db-url={db_url}",),
            )

        self.first, self.second = service("first"), service("second")
        self.broker = broker
        self.labs: list[Lab] = []

    def ok(self, service: ServiceProcess, method: str, path: str, who: str, body=None) -> Any:
        status, answer = call_api(service.port, method, path, token(who), body, timeout=10)
        assert 200 <= status < 300, f"{method} {path} as {who}: {status} {answer}"
        return answer

    def control(self, service: ServiceProcess, who: str, kit_id: str):
        urls = self.ok(service, "GET", "/api/me/mqtt", who)
        lab = connect(urls["control"], client_id=f"failover-{who}-{len(self.labs)}")
        self.labs.append(lab)
        lab.wait_for_kits([kit_id], timeout=10)
        return lab.kit(kit_id)

    def snapshot(self, service: ServiceProcess) -> dict:
        """Sessions, queue entries and bookings as the REST API shows them to each person
        (minus what moves with the clock)."""
        volatile = {"time_left_s", "estimated_wait_s", "last_telemetry_at", "online", "health"}

        def strip(value: Any) -> Any:
            if isinstance(value, list):
                return [strip(v) for v in value]
            if isinstance(value, dict):
                return {k: strip(v) for k, v in value.items() if k not in volatile}
            return value

        return {
            (who, path): strip(self.ok(service, "GET", path, who))
            for who in USERS
            for path in ("/api/queue", "/api/sessions", "/api/bookings")
        }

    def close(self) -> None:
        for lab in self.labs:
            lab.close()
        self.first.stop()
        self.second.stop()


class RightsSampler(threading.Thread):
    """Reads the broker's command rights over and over; keeps every sample."""

    def __init__(self, broker) -> None:
        super().__init__(daemon=True)
        self.rights = BrokerRights(broker.admin, broker.credentials)
        self.samples: list[tuple[float, dict[str, set[str]]]] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            self.samples.append((time.monotonic(), self.rights.held()))
            time.sleep(0.01)

    def stop(self) -> None:
        self.stopping.set()
        self.join(10)
        self.rights.close()

    def doubly_held(self, kits: set[str]) -> list[str]:
        """Every moment a kit of `kits` had two or more holders, one line each."""
        found = []
        for at, held in self.samples:
            for kit in kits:
                holders = sorted(user for user, held_kits in held.items() if kit in held_kits)
                if len(holders) > 1:
                    found.append(f"{at:.3f}: {kit} held by {holders}")
        return found


def refuses_connections(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def remote_ports(pid: int) -> set[int]:
    """The ports this process (and its children) has TCP connections to; listening ones as 0."""
    process = psutil.Process(pid)
    ports = set()
    for proc in (process, *process.children(recursive=True)):
        for conn in proc.net_connections(kind="tcp"):
            ports.add(conn.raddr.port if conn.raddr else 0)
    return ports


@pytest.fixture
def running(broker, models, state_root, postgres, postgres_url, request) -> Iterator[dict]:
    """A leader and a standby on one database, three kits online, and people who queue, hold
    kits and book: alice holds lamp 1 (bob waits for it), dave holds the parking kit, carol's
    course has booked lamp 2."""
    prefix = request.node.name.removeprefix("test_")[:12].replace("_", "-")
    kits = {
        f"{prefix}-lamp-1": "street-lighting",
        f"{prefix}-lamp-2": "street-lighting",
        f"{prefix}-park": "smart-parking",
    }
    lamp1, lamp2, park = kits
    pair = Pair(broker, state_root, postgres_url, prefix)
    runners: list[KitRunner] = []
    try:
        leader = pair.first.start()
        standby = pair.second.start(listening=False)
        wait_until(lambda: "standby:" in standby.output(), timeout=30)
        for kit_id, model in kits.items():
            pair.ok(leader, "POST", "/api/kits", "admin", {"id": kit_id, "model": model})
            twin = twin_class(model)(models[model], seed=5)
            address = broker.address(f"kit-{kit_id}")
            runners.append(KitRunner(kit_id, twin, address, rate_hz=5).start())
        wait_until(lambda: all(k["online"] for k in pair.ok(leader, "GET", "/api/kits", "alice")))

        alices = pair.ok(leader, "POST", "/api/queue", "alice", {"kit": lamp1})["session"]
        pair.ok(leader, "POST", f"/api/sessions/{alices['id']}/heartbeat", "alice")
        bobs = pair.ok(leader, "POST", "/api/queue", "bob", {"kit": lamp1})
        daves = pair.ok(leader, "POST", "/api/queue", "dave", {"kit": park})["session"]
        slot = (int(time.time()) // 3600 + 2) * 3600  # a whole hour, more than an hour ahead
        booking = pair.ok(
            leader,
            "POST",
            "/api/bookings",
            "carol",
            {"kit": lamp2, "course": COURSE, "starts_at": slot, "ends_at": slot + 1800},
        )
        alice_kit = pair.control(leader, "alice", lamp1)
        assert alice_kit.set("mode", "manual", timeout=5).status == "applied"
        bob_kit = pair.control(leader, "bob", lamp1)
        yield {
            "pair": pair,
            "postgres": postgres,
            "db_url": postgres_url,
            "kits": kits,
            "alices": alices,
            "bobs": bobs,
            "daves": daves,
            "booking": booking,
            "alice_kit": alice_kit,
            "bob_kit": bob_kit,
            "held": {"alice": {lamp1}, "dave": {park}},
        }
    finally:
        pair.close()
        for runner in runners:
            runner.stop()


def test_standby_has_no_port_no_broker_connection_and_changes_nothing(running, broker, postgres):
    pair: Pair = running["pair"]
    standby = pair.second
    before = pair.snapshot(pair.first)
    rights = BrokerRights(broker.admin, broker.credentials)
    try:
        assert rights.held() == running["held"]
        time.sleep(2.5)  # several of the standby's retries

        # Nobody can ask the standby anything: its port is closed, and it has no connection
        # to the broker (it could neither grant a right nor publish a command).
        assert refuses_connections(standby.port)
        assert remote_ports(standby.process.pid) == {postgres.port}
        assert standby.process.poll() is None
        assert pair.snapshot(pair.first) == before
        assert rights.held() == running["held"]
        assert "leading" not in standby.output()
    finally:
        rights.close()


def take_over(running, broker, end_leader) -> tuple[float, RightsSampler]:
    """End the leader with `end_leader()`; return the seconds until the standby answers, and
    the rights sampled meanwhile."""
    pair: Pair = running["pair"]
    sampler = RightsSampler(broker)
    sampler.start()
    wait_until(lambda: len(sampler.samples) >= 3)
    started = time.monotonic()
    end_leader()
    while (
        refuses_connections(pair.second.port)
        or call_api(pair.second.port, "GET", "/api/kits", token("alice"), timeout=10)[0] != 200
    ):
        assert time.monotonic() - started < 30, pair.second.output(40)
        time.sleep(0.02)
    took = time.monotonic() - started
    time.sleep(1.0)  # the new leader's first ticks and its reconcile, still sampled
    sampler.stop()
    return took, sampler


def assert_nothing_lost(running, before: dict, sampler: RightsSampler, broker) -> None:
    pair: Pair = running["pair"]
    assert pair.snapshot(pair.second) == before
    bobs = pair.ok(pair.second, "GET", f"/api/queue/{running['bobs']['id']}", "bob")
    assert bobs["state"] == "waiting" and bobs["position"] == 1
    with BrokerRights(broker.admin, broker.credentials) as rights:
        assert rights.held() == running["held"]
    assert sampler.doubly_held(set(running["kits"])) == []
    # The holder still commands her kit through the connection she opened before; the one who
    # waits still cannot.
    assert running["alice_kit"].set("dimming", 30, timeout=5).status == "applied"
    with pytest.raises(CommandNotAuthorized):
        running["bob_kit"].set("dimming", 70, timeout=5)


def test_kill9_of_the_leader_the_standby_takes_over_within_5s_losing_nothing(running, broker):
    pair: Pair = running["pair"]
    before = pair.snapshot(pair.first)

    took, sampler = take_over(running, broker, pair.first.kill)

    print(f"\ntakeover after kill -9: {took:.2f} s ({len(sampler.samples)} rights samples)")
    assert took < TAKEOVER_LIMIT_S, pair.second.output(40)
    assert "leading:" in pair.second.output()
    assert_nothing_lost(running, before, sampler, broker)


def test_a_leader_whose_lock_connection_is_cut_exits_and_the_standby_takes_over(
    running, broker, postgres
):
    pair: Pair = running["pair"]
    before = pair.snapshot(pair.first)
    database = running["db_url"].rsplit("/", 1)[1]
    admin = create_engine(postgres.url(), isolation_level="AUTOCOMMIT")

    def cut_lock_connection() -> None:
        with admin.connect() as db:
            cut = db.execute(
                text(
                    "SELECT pg_terminate_backend(l.pid) FROM pg_locks l "
                    "JOIN pg_database d ON d.oid = l.database "
                    "WHERE l.locktype = 'advisory' AND l.granted AND d.datname = :name"
                ),
                {"name": database},
            ).all()
        assert cut == [(True,)]

    try:
        took, sampler = take_over(running, broker, cut_lock_connection)
    finally:
        admin.dispose()

    print(f"\ntakeover after the lock's connection was cut: {took:.2f} s")
    # The former leader stopped deciding by ending itself, and said why.
    assert pair.first.process.wait(5) == LOST_EXIT_CODE
    assert "lost leadership" in pair.first.output()
    assert took < TAKEOVER_LIMIT_S, pair.second.output(40)
    assert_nothing_lost(running, before, sampler, broker)
