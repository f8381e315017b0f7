"""`smartlab deploy kubernetes`: rendered from the demo site by the real command, every manifest
checked against the Kubernetes API schemas, and a student's pod built by KubeSpawner itself."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from jupyterhub.objects import Hub, Server
from jupyterhub.traitlets import ByteSpecification
from kubernetes_asyncio.config import kube_config
from kubespawner import KubeSpawner
from traitlets.config import Config

from hub_config import hub
from site_config.paths import default_site
from site_config.site import load_site

# A version kubernetes-validate ships (its schemas are in the wheel: no network).
KUBERNETES_VERSION = "1.33.0"
DEMO = default_site()


def smartlab(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "hub_config.cli", *args], capture_output=True, text=True
    )


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("k8s")
    done = smartlab("deploy", "kubernetes", "--site", str(DEMO), "--out", str(out))
    assert done.returncode == 0, done.stderr
    return out


def manifests(out: Path) -> list[dict]:
    found = []
    for path in sorted((out / "manifests").glob("*.yaml")):
        found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def test_every_rendered_manifest_validates_against_the_kubernetes_schemas(rendered: Path):
    objects = manifests(rendered)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    for obj in objects:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    for course in load_site(DEMO).courses:  # one formgrader per course, reachable by name
        assert ("Deployment", f"formgrader-{course.id}") in kinds
        assert ("Service", f"formgrader-{course.id}") in kinds
    for name in ("mosquitto", "lab", "status", "ngshare"):
        assert ("Deployment", name) in kinds and ("Service", name) in kinds
    assert ("Job", "mosquitto-provision") in kinds  # roles and accounts after dynsec init


def test_a_broken_manifest_is_refused_by_the_same_validation(rendered: Path):
    deployment = next(o for o in manifests(rendered) if o["kind"] == "Deployment")
    deployment["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_mosquitto_runs_the_dynamic_security_plugin_without_anonymous_clients(rendered: Path):
    conf = next(o for o in manifests(rendered) if o["metadata"]["name"] == "mosquitto-conf")
    text = conf["data"]["mosquitto.conf"]
    assert "allow_anonymous false" in text
    assert "mosquitto_dynamic_security.so" in text and "plugin_opt_config_file" in text


# The keys of Zero to JupyterHub's values schema (jupyterhub/schema.yaml) this generator uses;
# the chart refuses unknown keys at `helm install` (additionalProperties: false).
Z2JH_KEYS = {
    "hub": {
        "image",
        "config",
        "loadRoles",
        "services",
        "extraEnv",
        "extraVolumes",
        "extraVolumeMounts",
        "extraConfig",
        "concurrentSpawnLimit",
    },
    "singleuser": {"image", "cmd", "defaultUrl", "memory", "cpu", "extraEnv"},
    "cull": {"enabled", "timeout", "every"},
}


def values(out: Path) -> dict:
    return yaml.safe_load((out / "values.yaml").read_text())


def test_values_use_only_zero_to_jupyterhub_keys_and_the_site_derivation(rendered: Path):
    found, site = values(rendered), load_site(DEMO)
    assert set(found) <= set(Z2JH_KEYS)
    for section, keys in Z2JH_KEYS.items():
        assert set(found[section]) <= keys, section
    assert set(found["singleuser"]["memory"]) == {"limit", "guarantee"}
    assert found["cull"] == {
        "enabled": True,
        "timeout": site.servers.idle_timeout_minutes * 60,
        "every": 300,
    }
    config = found["hub"]["config"]
    assert config["Authenticator"]["allowed_users"] == hub.hub_users(site)
    assert config["Authenticator"]["admin_users"] == []  # hub admins get the hub-admin role
    roles = found["hub"]["loadRoles"]
    assert roles[hub.HUB_ADMIN_ROLE]["users"] == hub.admin_users(site)
    assert set(found["hub"]["services"]) == {
        *(c.id for c in site.courses),
        hub.LAB_SERVICE,
        hub.STATUS_SERVICE,
        "ngshare",
    }
    # every role names only services that the values register
    for role in roles.values():
        assert set(role.get("services", [])) <= set(found["hub"]["services"])


def test_no_shared_exchange_folder_in_user_servers(rendered: Path):
    env = values(rendered)["singleuser"]["extraEnv"]
    assert "SMARTLAB_EXCHANGE" not in env
    assert env["SMARTLAB_NBGRADER_EXCHANGE"] == "ngshare"
    assert (
        "access:services!service=ngshare"
        in values(rendered)["hub"]["loadRoles"]["ngshare-users"]["scopes"]
    )


class StandInUser:
    """The little of a hub User that get_pod_manifest reads (as KubeSpawner's own tests)."""

    def __init__(self, name: str) -> None:
        self.name = self.escaped_name = name
        self.id = 7
        self.server = Server()
        self.url = self.server.url


def kubespawner_from_values(found: dict) -> KubeSpawner:
    """KubeSpawner configured from the values as the chart's jupyterhub_config.py maps them."""
    single = found["singleuser"]
    c = Config()
    c.KubeSpawner.image = f"{single['image']['name']}:{single['image']['tag']}"
    c.KubeSpawner.cmd = [single["cmd"]]
    c.KubeSpawner.mem_limit = single["memory"]["limit"]
    c.KubeSpawner.mem_guarantee = single["memory"]["guarantee"]
    c.KubeSpawner.cpu_limit = float(single["cpu"]["limit"])
    c.KubeSpawner.cpu_guarantee = float(single["cpu"]["guarantee"])
    c.KubeSpawner.environment = single["extraEnv"]
    for key, value in found["hub"]["config"]["KubeSpawner"].items():
        setattr(c.KubeSpawner, key, value)
    return KubeSpawner(config=c, hub=Hub(), user=StandInUser("anna"), _mock=True)


# KubeSpawner makes (never uses here) an API client at construction: a kubeconfig naming a
# cluster that is not there stands in for the hub's in-cluster service account.
NO_CLUSTER = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "none", "cluster": {"server": "https://127.0.0.1:9"}}],
    "users": [{"name": "none", "user": {"token": "unused"}}],
    "contexts": [{"name": "none", "context": {"cluster": "none", "user": "none"}}],
    "current-context": "none",
}


def test_kubespawner_pod_for_a_student_carries_the_site_limits_and_environment(
    rendered: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(NO_CLUSTER))
    # read from $KUBECONFIG when kubernetes_asyncio is imported, so set where it is kept
    monkeypatch.setattr(kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(kubeconfig))
    found, site = values(rendered), load_site(DEMO)

    async def build() -> object:  # KubeSpawner makes its API client in the running loop
        return await kubespawner_from_values(found).get_pod_manifest()

    pod = asyncio.run(build())
    container = pod.spec.containers[0]
    # JupyterHub's reading of the site's "2G" (binary units), as on one machine
    mem_bytes = ByteSpecification().validate(None, site.servers.mem_limit)
    assert container.resources.limits["memory"] == mem_bytes
    assert float(container.resources.limits["cpu"]) == site.servers.cpu_limit
    assert container.resources.requests["memory"] == mem_bytes
    env = {e.name: e.value for e in container.env}
    assert env["SMARTLAB_LAB_URL"] == "http://lab:8181"
    assert env["SMARTLAB_NBGRADER_EXCHANGE"] == "ngshare"
    assert env["JUPYTER_CONFIG_PATH"] == "/opt/smartlab/hub_config/jupyter"
    assert env["JUPYTERHUB_USER"] == "anna"


def test_a_course_id_too_long_for_kubernetes_is_refused_in_one_line(tmp_path: Path):
    long_id = "c" + "-abc" * 14  # 57 characters: formgrader-<id> exceeds 63
    text = DEMO.read_text().replace("id: iot-basics", f"id: {long_id}")
    text = text.replace("[envstation-1]", "[envstation-1]", 1)
    site = tmp_path / "site.yaml"
    site.write_text(text)
    out = tmp_path / "out"
    done = smartlab("deploy", "kubernetes", "--site", str(site), "--out", str(out))
    assert done.returncode == 2
    assert len(done.stderr.strip().splitlines()) == 1
    assert "courses[1].id" in done.stderr and "Traceback" not in done.stderr
    assert not out.exists()  # nothing half-written
