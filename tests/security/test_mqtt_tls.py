"""The broker's mqtts listener: a generated CA and server certificate, and every client kind
(a twin, the lab service, `labs.client`) working over TLS while verifying the broker; a client
that trusts another CA, or reaches the broker under a name its certificate does not carry, is
refused with one clear line."""

from __future__ import annotations

import json
import re
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from hardware_kits import tls
from hardware_kits.broker import ADMIN, Broker
from hardware_kits.firmware_bundle import build_bundle, run_under_cpython
from hardware_kits.mqtt import BrokerAddress
from labs.client import LabConnectionError, LabService, connect
from site_config.runtime import free_port
from tests.conftest import wait_until
from tests.stack import (
    ServiceProcess,
    TwinProcess,
    Up,
    lab_token,
    leftovers,
    token,
    with_tokens,
)

pytestmark = pytest.mark.broker

KIT, MODEL = "tls-lamp-1", "street-lighting"
USERS = {
    "admin": {"name": "lab-admin", "institution": "centre", "lab_admin": True},
    "alice": {"name": "alice", "institution": "univ-a"},
}


@pytest.fixture(scope="module")
def tls_root(state_root: Path) -> Path:
    root = state_root / "tls-platform"  # the service finds the broker in <state>/broker
    root.mkdir(mode=0o711, exist_ok=True)
    return root


@pytest.fixture(scope="module")
def tls_broker(tls_root: Path) -> Iterator[Broker]:
    broker = Broker(
        tls_root / "broker",
        port=free_port(),
        tls_port=free_port(),  # on every interface, as `smartlab up` listens
        tls_names=["localhost", "127.0.0.1"],
    )
    with broker as running:
        yield running


def test_generated_keys_are_private_and_the_ca_public(tls_broker: Broker):
    files = tls_broker.tls_files()
    assert files.ca is not None
    for key in (files.key, files.ca.parent / "ca.key"):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    assert stat.S_IMODE(files.ca.stat().st_mode) == 0o644
    assert f"listener {tls_broker.tls_port}\n" in tls_broker.conf_path.read_text()


def test_twin_service_and_client_work_end_to_end_over_tls(tls_broker: Broker, tls_root: Path):
    ca = str(tls_broker.tls_files().ca)
    service = ServiceProcess(
        tls_broker,
        tls_root,
        with_tokens(USERS),
        name="lab-tls",
        extra_args=(f"--mqtt-tls-port={tls_broker.tls_port}", f"--mqtt-ca={ca}"),
    ).start()
    twin = None
    try:
        admin = LabService(service.url, token("admin"))
        admin.register_kit(KIT, MODEL, "a kit over TLS")  # provisions its broker account
        twin_url = tls_broker.tls_address(f"kit-{KIT}", host="localhost").url()
        assert twin_url.startswith("mqtts://") and f"?ca={ca}" in twin_url
        twin = TwinProcess(KIT, MODEL, twin_url).start()
        # The service sees the kit only through its own mqtts connection.
        wait_until(lambda: admin.kit(KIT)["online"], timeout=15)

        alice = LabService(service.url, token("alice"))
        urls = alice.mqtt_urls()
        for url in urls.values():
            address = BrokerAddress.from_url(url)
            assert (address.tls, address.port, address.ca) == (True, tls_broker.tls_port, ca)
        with connect(urls["watch"]) as lab:
            lab.wait_for_kits([KIT], timeout=10)
            with alice.session(KIT, progress=None) as kit:
                assert kit.set("mode", "manual").status == "applied"
            # Released: the service's safe state went to the kit over TLS and was acknowledged.
            wait_until(lambda: lab.kit(KIT).actuators.get("mode") == "auto", timeout=10)
        sessions = alice.sessions()
        assert sessions and sessions[-1]["end_reason"] == "released"
    finally:
        if twin is not None:
            twin.stop()
        service.stop()


def test_a_client_trusting_another_ca_is_refused_in_one_line(tls_broker: Broker, tmp_path):
    other = tls.generate(tmp_path / "other", ["localhost", "127.0.0.1"])
    creds = tls_broker.provision_user("tls-probe")
    url = BrokerAddress("localhost", tls_broker.tls_port, creds, tls=True, ca=str(other.ca)).url()
    with pytest.raises(LabConnectionError) as refused:
        connect(url, timeout=5)
    message = str(refused.value)
    print(message)
    assert "failed TLS verification" in message and str(other.ca) in message
    assert "\n" not in message


def test_a_name_the_certificate_does_not_carry_is_refused(tls_broker: Broker):
    creds = tls_broker.provision_user("tls-probe")
    right_ca = str(tls_broker.tls_files().ca)
    # 127.0.0.2 reaches the same listener (every interface), under a name the cert lacks.
    wrong = BrokerAddress("127.0.0.2", tls_broker.tls_port, creds, tls=True, ca=right_ca)
    with pytest.raises(LabConnectionError) as refused:
        connect(wrong.url(), timeout=5)
    message = str(refused.value)
    print(message)
    assert "failed TLS verification" in message and "127.0.0.2" in message
    assert "\n" not in message


def test_firmware_bundle_connects_over_tls(tls_broker: Broker, tmp_path):
    """The MicroPython firmware (run under CPython with the simulated board) speaks mqtts."""
    kit = "tls-fw-1"
    creds = tls_broker.provision_kits([kit])[kit]
    bundle = build_bundle(
        tmp_path / kit,
        kit,
        MODEL,
        "localhost",
        tls_broker.tls_port,
        creds.username,
        creds.password,
        ca=tls_broker.tls_files().ca,
    )
    assert json.loads((bundle / "config.json").read_text())["ca"] == "ca.crt"
    log = tmp_path / "fw.log"
    with log.open("wb") as out, connect(tls_broker.address(ADMIN).url()) as lab:
        board = run_under_cpython(bundle, stdout=out, stderr=subprocess.STDOUT)
        try:
            wait_until(lambda: kit in lab.kits() and lab.kit(kit).state == "ready", 20)
            wait_until(lambda: lab.kit(kit).status.get("seq") is not None, 10)
        finally:
            board.terminate()
            board.wait(10)
    assert f"{kit} ready on localhost:{tls_broker.tls_port}" in log.read_text()


def test_smartlab_up_serves_mqtts_to_clients_and_the_lab_service(state_root, home_root):
    """`smartlab up --mqtt-tls-port`: the banner's mqtts URL works, and the lab service hands
    out mqtts URLs that a session commands a kit through."""
    tls_port = free_port()
    # No isolation: Unix accounts are not what this tries (and are shared by the machine).
    up = Up(state_root / "up-tls", home_root, "--mqtt-tls-port", str(tls_port), "--no-isolation")
    try:
        banner = up.wait_up()
        url = re.search(r"mqtts://demo-observer:\S+", banner).group(0)
        address = BrokerAddress.from_url(url)
        assert address.port == tls_port and address.ca and Path(address.ca).is_file()
        with connect(url.replace(f"@{address.host}:", "@localhost:"), timeout=10) as lab:
            kit = lab.kit("envstation-1", timeout=10)
            wait_until(lambda: kit.received >= 1, timeout=10)
        service = LabService(up.lab_url, lab_token(up, "anna"), timeout=30)
        control = BrokerAddress.from_url(service.mqtt_urls()["control"])
        assert (control.tls, control.port) == (True, tls_port)
        # Users' notebooks verify against a copy every account reads (the broker's folder is
        # closed to them).
        public_ca = Path(control.ca)
        assert public_ca.parent == up.state.resolve() and public_ca.name == "mqtt-ca.crt"
        assert stat.S_IMODE(public_ca.stat().st_mode) == 0o644
        with service.session("parking-1", progress=None) as held:
            assert held.set("gate", "open").value == "open"
    finally:
        assert up.stop(signal.SIGINT) == 0, "\n".join(up.lines[-20:])
    wait_until(lambda: not leftovers(up), timeout=30)
