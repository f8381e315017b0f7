"""A partner site's kit seen, shared and handed over from the centre, over a real bridge.

Two real Mosquitto brokers on loopback: the centre's (with its mqtts listener) and a partner's,
bridged as `smartlab site run` generates it from the site file. The lab service runs at the
centre only; the partner's kits run at the partner only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from hardware_kits import protocol as P
from hardware_kits import tls
from hardware_kits.bridge import bridge_account, bridge_state_topic
from hardware_kits.broker import Broker
from hardware_kits.kit_runner import KitRunner
from hardware_kits.mqtt import ConnectError, connect_client
from hardware_kits.site_run import partner_broker
from hardware_kits.twins.base import twin_class
from hub_config.cli import main as smartlab
from lab_service.gateway import MqttKitGateway
from lab_service.policy import SharingPolicy
from lab_service.rights import BrokerRights
from lab_service.service import KitSharing, User
from lab_service.store import NEEDS_ATTENTION, SharingStore
from labs.client import connect
from labs.client.errors import CommandNotAuthorized
from site_config.kits import load_kits
from site_config.platform_accounts import SERVICE_ACCOUNT
from site_config.runtime import free_port
from site_config.sites import load_sites
from tests.conftest import REPO, wait_until
from tests.integration.test_handover import JammedGate, ticking

pytestmark = pytest.mark.broker
ADMIN = User("ps-admin", "centre", lab_admin=True)
ALICE, BOB = User("ps-alice", "univ-a"), User("ps-bob", "univ-b")
GOOD, JAMMED, HOME = "uni-park-1", "uni-park-2", "hq-park-1"


def write_site_file(folder: Path, centre: Broker, partner_port: int) -> Path:
    """The network's site file: a centre kit and two kits at the partner `uni`."""
    site = {
        "sites": [
            {
                "id": "hq",
                "kind": "centre",
                "broker": {"port": centre.port, "tls_port": centre.tls_port},
            },
            {
                "id": "uni",
                "kind": "partner",
                "broker": {"port": partner_port},
                "bridge": {
                    "ca_file": str(centre.tls_files().ca),
                    "password_file": "bridge-password",
                    "restart_seconds": 1,
                },
            },
        ],
        "kits": [
            {"id": HOME, "model": "smart-parking"},
            {"id": GOOD, "model": "smart-parking", "site": "uni"},
            {"id": JAMMED, "model": "smart-parking", "site": "uni"},
        ],
    }
    path = folder / "network.yaml"
    path.write_text(yaml.safe_dump(site))
    return path


def make_bridge_account(site_file: Path, centre: Broker) -> None:
    """What the centre's admin runs for a new partner: `smartlab site bridge-account`."""
    assert (
        smartlab(
            [
                "site",
                "bridge-account",
                "--site",
                str(site_file),
                "--name",
                "uni",
                "--state-dir",
                str(centre.state_dir.parent),
                "--out",
                str(site_file.parent / "bridge-password"),
            ]
        )
        == 0
    )


@pytest.fixture
def network(state_root, models):
    root = state_root / f"network-{uuid.uuid4().hex[:6]}"
    (root / "centre").mkdir(parents=True)
    with contextlib.ExitStack() as cleanup:  # brokers stop even if a step fails
        centre = Broker(
            root / "centre" / "broker",
            port=free_port(),
            tls_port=free_port(),
            tls_host="127.0.0.1",
            tls_names=["127.0.0.1"],
        ).start()
        cleanup.callback(centre.stop)
        site_file = write_site_file(root, centre, free_port())
        make_bridge_account(site_file, centre)
        partner, _entries = partner_broker(site_file, "uni", root / "uni")
        partner.start()
        cleanup.callback(partner.stop)
        kits = {GOOD: twin_class("smart-parking"), JAMMED: JammedGate}
        creds = partner.provision_kits(list(kits))
        runners = {}
        for kit_id, cls in kits.items():
            address = partner.address(creds[kit_id].username)
            runners[kit_id] = KitRunner(
                kit_id, cls(models["smart-parking"], seed=3), address, rate_hz=5
            ).start()
            cleanup.callback(stop_kit, runners[kit_id])
        sites = load_sites(site_file, load_kits(site_file, models))
        centre.provision_supervisor(SERVICE_ACCOUNT)
        store = SharingStore(f"sqlite:///{root / 'lab.db'}")
        cleanup.callback(store.close)
        rights = BrokerRights(centre.admin, centre.credentials)
        cleanup.callback(rights.close)
        gateway = MqttKitGateway(centre.address(SERVICE_ACCOUNT), partner_kits=sites.partner_kits())
        cleanup.callback(gateway.close)
        policy = SharingPolicy(safe_confirm_timeout_seconds=1.5, offline_grace_seconds=1.0)
        service = KitSharing(store, policy, rights, gateway)
        for kit_id in kits:
            service.register_kit(ADMIN, kit_id, "smart-parking")
        wait_until(lambda: all(gateway.online(k) for k in kits), timeout=15)
        yield service, runners, rights, centre, partner, gateway


def stop_kit(runner: KitRunner) -> None:
    with contextlib.suppress(RuntimeError):  # a kit cut off by the test cannot say goodbye
        runner.stop()


def kit_view(service: KitSharing, kit_id: str) -> dict:
    return next(k for k in service.kits() if k["id"] == kit_id)


def anonymous_connect(host: str, port: int) -> mqtt.ReasonCode | str:
    """CONNACK's reason for a client without any credentials."""
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    answer: dict = {}
    client.on_connect = lambda _c, _u, _f, reason, _p: answer.setdefault("reason", reason)
    client.connect(host, port)
    client.loop_start()
    try:
        wait_until(lambda: "reason" in answer, timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()
    return answer["reason"]


def test_partner_kit_is_watched_and_commanded_from_the_centre_by_its_holder_only(network):
    service, runners, rights, centre, partner, _ = network
    watcher = connect(centre.address(rights.watch_account(BOB.name, None).username).url())
    try:  # discovered and watched at the centre, though it runs at the partner
        assert GOOD in watcher.wait_for_kits([GOOD, JAMMED], timeout=10)
        wait_until(lambda: watcher.kit(GOOD).latest, timeout=5)
    finally:
        watcher.close()

    session = service.request(ALICE, kit_id=GOOD)["session"]
    service.heartbeat(ALICE, session["id"])
    holder = connect(
        centre.address(rights.control_account(ALICE.name).username).url(), client_id="ps-a"
    )
    other = connect(
        centre.address(rights.control_account(BOB.name).username).url(), client_id="ps-b"
    )
    try:
        assert holder.kit(GOOD).set("gate", "open", timeout=5).value == "open"
        assert runners[GOOD].core.state["gate"] == "open"  # it really reached the partner
        with pytest.raises(CommandNotAuthorized):  # the centre's ACL refuses the non-holder
            other.kit(GOOD).set("gate", "closed", timeout=5)
    finally:
        holder.close()
        other.close()
    assert runners[GOOD].core.state["gate"] == "open"

    # At the partner: none of the centre's accounts exists, and no anonymous client gets in.
    for username in (ALICE.name, "ctl-" + BOB.name, SERVICE_ACCOUNT):
        with pytest.raises(ConnectError):
            connect_client(partner.host, partner.port, centre.credentials(username), "ps-direct")
    assert anonymous_connect(partner.host, partner.port).is_failure


def test_bridge_account_cannot_command_any_kit_at_the_centre(network):
    """The partner's bridge account carries its kits' topics only: no command, not even to its
    own kits, and nothing about the centre's kits."""
    _, runners, _, centre, _, _ = network
    account = centre.credentials(bridge_account("uni"))
    published: list[mqtt.ReasonCode] = []
    client = connect_client(centre.host, centre.port, account, client_id="ps-impostor")
    client.on_publish = lambda _c, _u, _mid, reason, _p: published.append(reason)
    try:
        for topic in (
            P.set_topic(GOOD, "gate"),
            P.safe_state_topic(GOOD),
            P.set_topic(HOME, "gate"),
            P.state_topic(HOME),
        ):
            client.publish(topic, b"open", qos=1)
        wait_until(lambda: len(published) == 4, timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()
    assert all(reason.is_failure for reason in published), published
    assert runners[GOOD].core.state["gate"] == "closed"


def test_cut_bridge_marks_the_partners_kits_unavailable_then_available_again(network):
    service, _, rights, _, partner, gateway = network
    assert kit_view(service, GOOD)["online"]
    partner.kill()  # the partner's broker dies: its bridge's last will tells the centre
    wait_until(lambda: not gateway.bridge_up("uni"), timeout=10)
    assert not kit_view(service, GOOD)["online"]
    assert not kit_view(service, JAMMED)["online"]

    entry = service.request(ALICE, kit_id=GOOD)  # fails closed: no grant while cut off
    assert entry.get("session") is None
    for _ in range(20):
        service.tick()
        time.sleep(0.05)
    assert service.sessions(ALICE) == []
    assert GOOD not in rights.held().get(ALICE.name, set())

    partner.start()  # the bridge comes back by itself, and so does the kit
    ticking(service, lambda: any(s["kit"] == GOOD for s in service.sessions(ALICE)), 20)
    assert kit_view(service, GOOD)["online"]
    assert GOOD in rights.held().get(ALICE.name, set())


def test_held_partner_kit_cut_off_ends_the_session_and_revokes_the_right(network):
    service, _, rights, _, partner, gateway = network
    session = service.request(ALICE, kit_id=GOOD)["session"]
    service.heartbeat(ALICE, session["id"])
    assert GOOD in rights.held()[ALICE.name]
    partner.kill()
    ticking(service, lambda: service.sessions(ALICE)[0]["end_reason"] == "kit-offline")
    assert GOOD not in rights.held().get(ALICE.name, set())
    # As for a kit lost at the centre: one that could not confirm its safe state is set aside.
    ticking(service, lambda: kit_view(service, GOOD)["pool"] == NEEDS_ATTENTION)
    partner.start()
    wait_until(lambda: gateway.bridge_up("uni"), timeout=15)


def test_handover_of_a_partner_kit_waits_for_its_safe_state(network):
    service, runners, rights, centre, _, _ = network
    session = service.request(ALICE, kit_id=GOOD)["session"]
    service.heartbeat(ALICE, session["id"])
    holder = connect(
        centre.address(rights.control_account(ALICE.name).username).url(), client_id="ps-h"
    )
    try:
        assert holder.kit(GOOD).set("gate", "open", timeout=5).value == "open"
    finally:
        holder.close()
    service.request(BOB, kit_id=GOOD)
    service.release(ALICE, session["id"])
    ticking(service, lambda: any(s["state"] == "granted" for s in service.sessions(BOB)))
    assert service.sessions(ALICE)[0]["state"] == "released"
    assert runners[GOOD].core.state["gate"] == "closed"  # safe at the partner before Bob got it


def test_partner_kit_that_never_confirms_its_safe_state_is_not_handed_over(network):
    service, runners, rights, _, _, _ = network
    session = service.request(ALICE, kit_id=JAMMED)["session"]
    service.request(BOB, kit_id=JAMMED)
    service.release(ALICE, session["id"])
    ticking(service, lambda: kit_view(service, JAMMED)["pool"] == NEEDS_ATTENTION)
    for _ in range(20):
        service.tick()
        time.sleep(0.02)
    assert service.sessions(BOB) == []
    assert JAMMED not in rights.held().get(BOB.name, set())
    assert runners[JAMMED].core.errors >= 1


# ------------------------------------------------------------------ `smartlab site run`


def centre_sees(centre: Broker, topics: list[str]) -> dict[str, bytes]:
    """A watcher at the centre: topic -> last payload, for the given topics."""
    seen: dict[str, bytes] = {}
    centre.provision_supervisor(SERVICE_ACCOUNT)  # reads kit states and bridge states
    client = connect_client(
        centre.host,
        centre.port,
        centre.credentials(SERVICE_ACCOUNT),
        client_id=f"ps-watch-{uuid.uuid4().hex[:4]}",
        on_message=lambda _c, _u, m: seen.__setitem__(m.topic, m.payload),
        subscribe=[(t, 1) for t in topics],
    )
    seen["_client"] = client  # type: ignore[assignment]
    return seen


def run_site(site_file: Path, state_dir: Path) -> subprocess.Popen:
    """`smartlab site run` for the partner, returned once it says it runs."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hub_config.cli",
            "site",
            "run",
            "--site",
            str(site_file),
            "--name",
            "uni",
            "--state-dir",
            str(state_dir),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    line = process.stdout.readline()
    assert line.startswith("site uni: "), line or process.stderr.read()
    return process


@pytest.fixture
def centre_only(state_root):
    root = state_root / f"site-run-{uuid.uuid4().hex[:6]}"
    (root / "centre").mkdir(parents=True)
    centre = Broker(
        root / "centre" / "broker",
        port=free_port(),
        tls_port=free_port(),
        tls_host="127.0.0.1",
        tls_names=["127.0.0.1"],
    ).start()
    yield root, centre
    centre.stop()


def test_site_run_starts_the_partners_broker_and_kits_bridged_to_the_centre(centre_only):
    root, centre = centre_only
    site_file = write_site_file(root, centre, free_port())
    make_bridge_account(site_file, centre)
    seen = centre_sees(centre, [bridge_state_topic("uni"), P.state_topic(GOOD)])
    process = run_site(site_file, root / "uni")
    try:
        wait_until(lambda: seen.get(P.state_topic(GOOD)) == b"ready", timeout=20)
        assert seen[bridge_state_topic("uni")] == b"1"
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        seen["_client"].disconnect()  # type: ignore[union-attr]
    assert process.returncode == 0
    assert HOME not in (root / "uni" / "broker" / "mosquitto.conf").read_text()  # not its kit


def wrong_password(root: Path, _site_file: Path) -> None:
    (root / "bridge-password").write_text("not-the-password\n")


def wrong_ca(root: Path, site_file: Path) -> None:
    """A CA of its own, not the one that signed the centre's certificate."""
    other = tls.generate(root / "other-ca", ["127.0.0.1"]).ca
    data = yaml.safe_load(site_file.read_text())
    data["sites"][1]["bridge"]["ca_file"] = str(other)
    site_file.write_text(yaml.safe_dump(data))


@pytest.mark.parametrize(
    ("breaks", "partner_says"),
    [(wrong_password, "Refused: Not authorized"), (wrong_ca, "certificate verify failed")],
)
def test_partner_with_wrong_bridge_credentials_is_refused_and_logged(
    centre_only, breaks, partner_says
):
    root, centre = centre_only
    site_file = write_site_file(root, centre, free_port())
    make_bridge_account(site_file, centre)
    breaks(root, site_file)
    seen = centre_sees(centre, [bridge_state_topic("uni"), P.state_topic(GOOD)])
    process = run_site(site_file, root / "uni")
    try:
        partner_log = root / "uni" / "broker" / "mosquitto.log"
        wait_until(lambda: partner_says in partner_log.read_text(), timeout=15)
        time.sleep(1.0)
        assert P.state_topic(GOOD) not in seen  # nothing of the partner reaches the centre
        assert seen.get(bridge_state_topic("uni")) != b"1"
        assert process.poll() is None  # the partner itself runs on
        # The centre runs on too: its own accounts still connect.
        still = connect_client(
            centre.host, centre.port, centre.credentials(SERVICE_ACCOUNT), "ps-still-up"
        )
        still.disconnect()
        still.loop_stop()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        seen["_client"].disconnect()  # type: ignore[union-attr]
    assert process.returncode == 0
