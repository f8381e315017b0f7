"""The Kubernetes broker as `smartlab deploy kubernetes` renders it, run for real: the
ConfigMap's mosquitto.conf, the init container's `dynsec init` and the provisioning Job's
`smartlab broker provision`, on a real Mosquitto (port and paths moved into a temp folder)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
import yaml

from hardware_kits import protocol as P
from hardware_kits.broker import ADMIN, MOSQUITTO_USER, find_mosquitto
from hardware_kits.mqtt import ConnectError, Credentials, connect_client
from hub_config.kubernetes import cluster
from hub_config.kubernetes.manifests import DYNSEC_PLUGIN, MOSQUITTO_DATA
from site_config.paths import default_site
from site_config.platform_accounts import BOARD_ACCOUNT, SERVICE_ACCOUNT
from site_config.runtime import free_port
from tests.conftest import wait_until

pytestmark = pytest.mark.broker
DEMO = default_site()
NOT_AUTHORIZED = 135
KIT, OTHER_KIT = "streetlight-1", "crossing-1"


def smartlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub_config.cli", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def secret_env(entries: list[dict], secret: dict[str, str]) -> dict[str, str]:
    """A container's env with its secretKeyRefs taken from the admin Secret's keys."""
    found = {}
    for entry in entries:
        ref = entry["valueFrom"]["secretKeyRef"]
        assert ref["name"] == cluster.MQTT_ADMIN_SECRET  # the Secret the operator makes
        found[entry["name"]] = secret[ref["key"]]
    return found


@dataclass
class RenderedBroker:
    port: int
    data: Path
    credentials: Path  # the Secret's credentials.json, as the Job mounts it
    secret: dict[str, str]
    job_command: list[str]
    job_env: list[dict]

    def provision(
        self, options: dict[str, str] | None = None, admin_password: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        """The Job's command, its in-cluster names pointed at this machine's files and port."""
        command = list(self.job_command)
        where = {
            "--site": str(DEMO),
            "--host": "127.0.0.1",
            "--port": str(self.port),
            "--credentials": str(self.credentials),
            **(options or {}),
        }
        for option, value in where.items():
            command[command.index(option) + 1] = value
        secret = dict(self.secret, password=admin_password or self.secret["password"])
        assert command[:3] == ["smartlab", "broker", "provision"]
        return smartlab(*command[1:], env=secret_env(self.job_env, secret))

    def dynsec(self) -> dict:
        return json.loads((self.data / "dynamic-security.json").read_text())

    def account(self, name: str) -> Credentials:
        return Credentials(**json.loads(self.credentials.read_text())[name])


def rendered_mosquitto(out: Path) -> list[dict]:
    done = smartlab("deploy", "kubernetes", "--site", str(DEMO), "--out", str(out))
    assert done.returncode == 0, done.stderr
    text = (out / "manifests" / "mosquitto.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if doc]


def by_kind(objects: list[dict], kind: str) -> dict:
    return next(o for o in objects if o["kind"] == kind)


def run_init(command: list[str], env: dict[str, str], data: Path) -> None:
    """The init container's shell command, its data folder moved."""
    assert command[:2] == ["sh", "-c"]
    script = command[2].replace(MOSQUITTO_DATA, str(data))
    done = subprocess.run(["sh", "-c", script], env={**os.environ, **env}, capture_output=True)
    assert done.returncode == 0, done.stderr


@pytest.fixture(scope="module")
def k8s_broker() -> Iterator[RenderedBroker]:
    broker_bin, _ctrl, plugin = find_mosquitto()
    # Not pytest's tmp_path: its 0700 parents would lock out the `mosquitto` account.
    root = Path(tempfile.mkdtemp(prefix="smartlab-k8s-broker-"))
    root.chmod(0o711)
    objects = rendered_mosquitto(root / "deploy")
    conf_map, deployment, job = (by_kind(objects, k) for k in ("ConfigMap", "Deployment", "Job"))

    # The Secret as docs/deploy.md has the operator make it, from `smartlab broker credentials`.
    credentials = root / "secret" / "credentials.json"
    credentials.parent.mkdir()
    made = smartlab("broker", "credentials", "--site", str(DEMO), "--credentials", str(credentials))
    assert made.returncode == 0, made.stderr
    admin = Credentials(**json.loads(credentials.read_text())[ADMIN])
    assert admin.password not in made.stdout  # passwords are never printed
    secret = {
        "username": admin.username,
        "password": admin.password,
        "credentials.json": credentials.read_text(),
    }

    port = free_port()
    data = root / "data"
    data.mkdir()
    pod = deployment["spec"]["template"]["spec"]
    init = pod["initContainers"][0]
    run_init(init["command"], secret_env(init["env"], secret), data)
    conf = (
        conf_map["data"]["mosquitto.conf"]
        .replace(f"listener {cluster.MQTT_PORT}\n", f"listener {port} 127.0.0.1\n")
        .replace(DYNSEC_PLUGIN, plugin)
        .replace(MOSQUITTO_DATA, str(data))
    )
    assert f"listener {port} 127.0.0.1" in conf and "allow_anonymous false" in conf
    if os.geteuid() == 0:  # as the image's entrypoint does: the broker's files are its own
        account = pwd.getpwnam(MOSQUITTO_USER)
        for path in [data, *data.iterdir()]:
            os.chown(path, account.pw_uid, account.pw_gid)
        conf += f"user {MOSQUITTO_USER}\n"
    (root / "mosquitto.conf").write_text(conf)
    process = subprocess.Popen(
        [broker_bin, "-c", str(root / "mosquitto.conf")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    container = job["spec"]["template"]["spec"]["containers"][0]
    rendered = RenderedBroker(
        port, data, credentials, secret, container["command"], container["env"]
    )
    try:
        done = rendered.provision()  # the Job waits (--wait) for the broker to listen
        assert done.returncode == 0, done.stderr
        yield rendered
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


def publish_as(port: int, creds: Credentials, topic: str, payload: str = "true") -> int:
    """Publish at QoS 1 with these credentials; the PUBACK reason code."""
    codes: list[int] = []
    client = connect_client("127.0.0.1", port, creds, f"k8s-{uuid.uuid4().hex[:6]}")
    client.on_publish = lambda c, u, mid, reason, p: codes.append(reason.value)
    try:
        client.publish(topic, payload, qos=1).wait_for_publish(5)
        wait_until(lambda: codes, timeout=5)
    finally:
        client.disconnect()
        client.loop_stop()
    return codes[0]


def allowed(code: int) -> bool:
    return code < 128  # 0, or 16 "no matching subscribers"


def test_the_lab_service_account_may_send_a_safe_state_but_not_speak_for_a_kit(k8s_broker):
    lab = k8s_broker.account(SERVICE_ACCOUNT)
    assert allowed(publish_as(k8s_broker.port, lab, P.safe_state_topic(KIT)))
    assert publish_as(k8s_broker.port, lab, P.state_topic(KIT), "ready") == NOT_AUTHORIZED


def test_anonymous_and_unprovisioned_clients_are_refused(k8s_broker):
    with pytest.raises(ConnectError, match="mallory"):
        connect_client("127.0.0.1", k8s_broker.port, Credentials("mallory", "guess"), "mallory")
    outcome: list = []
    answered = threading.Event()
    anonymous = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    anonymous.on_connect = lambda c, u, f, reason, p: (outcome.append(reason), answered.set())
    anonymous.connect("127.0.0.1", k8s_broker.port)
    anonymous.loop_start()
    try:
        assert answered.wait(5)
        assert outcome[0].is_failure  # not authorised: allow_anonymous false
    finally:
        anonymous.disconnect()
        anonymous.loop_stop()


def test_a_kit_account_publishes_its_own_state_and_no_other_kits(k8s_broker):
    kit = k8s_broker.account(f"kit-{KIT}")
    assert allowed(publish_as(k8s_broker.port, kit, P.state_topic(KIT), "ready"))
    assert publish_as(k8s_broker.port, kit, P.state_topic(OTHER_KIT), "ready") == NOT_AUTHORIZED
    assert publish_as(k8s_broker.port, kit, P.safe_state_topic(OTHER_KIT)) == NOT_AUTHORIZED


def test_the_board_account_watches_but_cannot_command(k8s_broker):
    board = k8s_broker.account(BOARD_ACCOUNT)
    watcher = connect_client(
        "127.0.0.1", k8s_broker.port, board, "board-1", subscribe=[(P.all_kits("#"), 1)]
    )  # raises if the subscription is refused
    watcher.disconnect()
    watcher.loop_stop()
    assert publish_as(k8s_broker.port, board, P.set_topic(KIT, "dimming"), "40") == NOT_AUTHORIZED


def test_running_init_and_provision_again_changes_nothing_and_disconnects_no_one(k8s_broker):
    before, secret_before = k8s_broker.dynsec(), k8s_broker.credentials.read_bytes()
    dropped: list = []
    connected = []
    for name in (SERVICE_ACCOUNT, f"kit-{KIT}"):
        client = connect_client("127.0.0.1", k8s_broker.port, k8s_broker.account(name), name)
        client.on_disconnect = lambda *args: dropped.append(args)
        connected.append(client)
    try:
        done = k8s_broker.provision()
        assert done.returncode == 0, done.stderr
        time.sleep(0.5)  # a kick would arrive by now
        assert dropped == []
    finally:
        for client in connected:
            client.disconnect()
            client.loop_stop()
    assert k8s_broker.dynsec() == before  # roles, clients, password hashes, default ACLs
    assert k8s_broker.credentials.read_bytes() == secret_before
    for entry in json.loads(secret_before).values():
        assert entry["password"] not in done.stdout + done.stderr  # never printed


def test_a_wrong_admin_password_is_refused_in_one_line_and_changes_nothing(k8s_broker):
    before = k8s_broker.dynsec()
    done = k8s_broker.provision(admin_password="not-the-admins")
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert f"refused {k8s_broker.secret['username']!r}" in done.stderr
    assert k8s_broker.dynsec() == before


def test_an_unreachable_broker_is_named_in_one_line(k8s_broker):
    port = str(free_port())
    done = k8s_broker.provision({"--port": port, "--wait": "0"})
    assert done.returncode != 0
    assert done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr
    assert f"cannot reach the MQTT broker at 127.0.0.1:{port}" in done.stderr


def test_a_broken_or_adminless_credentials_file_is_refused_in_one_line(tmp_path: Path):
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    adminless = tmp_path / "adminless.json"
    adminless.write_text(json.dumps({SERVICE_ACCOUNT: {"username": SERVICE_ACCOUNT}}))
    no_env = {"SMARTLAB_MQTT_ADMIN_USER": "", "SMARTLAB_MQTT_ADMIN_PASSWORD": ""}
    for path, says in ((broken, "not a readable credentials file"), (adminless, "no broker admin")):
        done = smartlab(
            "broker", "provision", "--credentials", str(path), "--port", "1", env=no_env
        )
        assert done.returncode != 0
        assert done.stderr.strip().count("\n") == 0 and says in done.stderr
    assert broken.read_text() == "{not json"  # left as it was
