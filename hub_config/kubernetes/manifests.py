"""The platform's workloads beside the Zero to JupyterHub chart, as Kubernetes objects.

Mosquitto with its dynamic-security plugin, the lab service, one formgrader per course, the
status board and ngshare (nbgrader's exchange as a service: each user calls it with their own
hub token, instead of every pod writing one shared folder as one uid). External hub services
authenticate with the tokens the chart generates into its Secret `hub`.
"""

from __future__ import annotations

import json
from typing import Any

from hardware_kits.credential_store import ADMIN_PASSWORD_ENV, ADMIN_USER_ENV
from hub_config import hub
from hub_config.kubernetes import cluster
from site_config.site import Site

Manifest = dict[str, Any]
MOSQUITTO_DATA = "/mosquitto/data"
# The eclipse-mosquitto image's plugin (Debian's lies under /usr/lib/<arch>/).
DYNSEC_PLUGIN = "/usr/lib/mosquitto_dynamic_security.so"
MQTT_ADMIN_DIR = "/run/mqtt-admin"  # where pods mount the admin Secret


def _meta(name: str, component: str) -> dict[str, Any]:
    return {
        "name": name,
        "labels": {"app.kubernetes.io/part-of": "smartlab", "component": component},
    }


def _pvc(name: str, size: str) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _meta(name, name),
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}},
    }


def _service(name: str, port: int) -> Manifest:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(name, name),
        "spec": {
            "selector": {"component": name},
            "ports": [{"name": "main", "port": port, "targetPort": port}],
        },
    }


def _deployment(name: str, pod: dict[str, Any]) -> Manifest:
    # One replica, recreated: each holds a ReadWriteOnce volume or a single decider's state.
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(name, name),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": {"component": name}},
            "template": {"metadata": {"labels": _meta(name, name)["labels"]}, "spec": pod},
        },
    }


def _env(values: dict[str, str]) -> list[dict[str, Any]]:
    return [{"name": key, "value": value} for key, value in values.items()]


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def _hub_service_env(service: str, port: int) -> list[dict[str, Any]]:
    """What JupyterHub gives a managed service, for one it does not start."""
    return [
        *_env(
            {
                "JUPYTERHUB_SERVICE_NAME": service,
                "JUPYTERHUB_API_URL": cluster.HUB_API_URL,
                "JUPYTERHUB_BASE_URL": "/",
                "JUPYTERHUB_SERVICE_PREFIX": f"/services/{service}/",
                "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:{port}/",
                "JUPYTERHUB_CLIENT_ID": f"service-{service}",
                "JUPYTERHUB_OAUTH_CALLBACK_URL": f"/services/{service}/oauth_callback",
                "JUPYTERHUB_OAUTH_ACCESS_SCOPES": json.dumps(
                    [f"access:services!service={service}"]
                ),
            }
        ),
        _secret_env("JUPYTERHUB_API_TOKEN", cluster.HUB_SECRET, f"hub.services.{service}.apiToken"),
    ]


def _site_volume() -> tuple[dict[str, Any], dict[str, Any]]:
    volume = {"name": "site", "secret": {"secretName": cluster.SITE_SECRET}}
    mount = {"name": "site", "mountPath": cluster.SITE_DIR, "readOnly": True}
    return volume, mount


def site_secret(site_text: str) -> Manifest:
    """The site file itself: people's password hashes make it a Secret."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": _meta(cluster.SITE_SECRET, "site"),
        "type": "Opaque",
        "stringData": {"site.yaml": site_text},
    }


def mosquitto(image: str) -> list[Manifest]:
    """Mosquitto 2 with the dynamic-security plugin; the admin comes from a Secret at first
    start (`mosquitto_ctrl dynsec init`), as hardware_kits/broker.py does on one machine."""
    conf = "\n".join(
        [
            "per_listener_settings false",
            f"listener {cluster.MQTT_PORT}",
            "allow_anonymous false",
            f"plugin {DYNSEC_PLUGIN}",
            f"plugin_opt_config_file {MOSQUITTO_DATA}/dynamic-security.json",
            "persistence true",
            f"persistence_location {MOSQUITTO_DATA}/",
            "log_dest stdout",
            "max_queued_messages 10000",
            "",
        ]
    )
    data_mount = {"name": "data", "mountPath": MOSQUITTO_DATA}
    admin_env = [
        _secret_env("ADMIN_USER", cluster.MQTT_ADMIN_SECRET, "username"),
        _secret_env("ADMIN_PASSWORD", cluster.MQTT_ADMIN_SECRET, "password"),
    ]
    pod = {
        "initContainers": [
            {
                "name": "dynsec-init",
                "image": image,
                "command": [
                    "sh",
                    "-c",
                    f"test -e {MOSQUITTO_DATA}/dynamic-security.json || mosquitto_ctrl dynsec "
                    f'init {MOSQUITTO_DATA}/dynamic-security.json "$ADMIN_USER" "$ADMIN_PASSWORD"',
                ],
                "env": admin_env,
                "volumeMounts": [data_mount],
            }
        ],
        "containers": [
            {
                "name": "mosquitto",
                "image": image,
                "ports": [{"containerPort": cluster.MQTT_PORT, "name": "mqtt"}],
                "volumeMounts": [
                    data_mount,
                    {"name": "conf", "mountPath": "/mosquitto/config", "readOnly": True},
                ],
            }
        ],
        "volumes": [
            {"name": "data", "persistentVolumeClaim": {"claimName": "mosquitto-data"}},
            {"name": "conf", "configMap": {"name": "mosquitto-conf"}},
        ],
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": _meta("mosquitto-conf", cluster.MOSQUITTO),
            "data": {"mosquitto.conf": conf},
        },
        _pvc("mosquitto-data", "1Gi"),
        _deployment(cluster.MOSQUITTO, pod),
        _service(cluster.MOSQUITTO, cluster.MQTT_PORT),
    ]


def broker_provision(image: str) -> Manifest:
    """A Job that, once Mosquitto listens, makes its roles and the site's accounts as its admin
    (`smartlab broker provision`, what `smartlab up` does on one machine). Idempotent: re-run it
    (it is deleted an hour after it ends; `kubectl apply` then runs it again) after the kits
    change. The passwords come from the admin Secret's credentials.json, which the lab service
    copies as its own."""
    site_volume, site_mount = _site_volume()
    pod = {
        "restartPolicy": "OnFailure",
        "securityContext": {"runAsNonRoot": True, "runAsUser": 1000, "runAsGroup": 1000},
        "containers": [
            {
                "name": "provision",
                "image": image,
                "command": [
                    "smartlab",
                    "broker",
                    "provision",
                    "--site",
                    cluster.SITE_FILE,
                    "--host",
                    cluster.MOSQUITTO,
                    "--port",
                    str(cluster.MQTT_PORT),
                    "--credentials",
                    f"{MQTT_ADMIN_DIR}/credentials.json",
                    "--wait",
                    "300",
                ],
                "env": [
                    _secret_env(ADMIN_USER_ENV, cluster.MQTT_ADMIN_SECRET, "username"),
                    _secret_env(ADMIN_PASSWORD_ENV, cluster.MQTT_ADMIN_SECRET, "password"),
                ],
                "volumeMounts": [
                    site_mount,
                    {"name": "mqtt-admin", "mountPath": MQTT_ADMIN_DIR, "readOnly": True},
                ],
            }
        ],
        "volumes": [
            site_volume,
            {"name": "mqtt-admin", "secret": {"secretName": cluster.MQTT_ADMIN_SECRET}},
        ],
    }
    name = f"{cluster.MOSQUITTO}-provision"
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _meta(name, cluster.MOSQUITTO),
        "spec": {
            "backoffLimit": 6,
            "ttlSecondsAfterFinished": 3600,
            "template": {"metadata": {"labels": _meta(name, name)["labels"]}, "spec": pod},
        },
    }


def lab_service(image: str) -> list[Manifest]:
    """`smartlab lab serve` as the hub service `lab`, reaching Mosquitto by its Service name;
    the broker admin's credentials are copied once into its state volume, where the service
    keeps the accounts it makes."""
    state = {"name": "state", "mountPath": cluster.STATE_DIR}
    site_volume, site_mount = _site_volume()
    pod = {
        "initContainers": [
            {
                "name": "broker-credentials",
                "image": image,
                "command": [
                    "sh",
                    "-c",
                    f"mkdir -p {cluster.STATE_DIR}/broker && "
                    f"test -e {cluster.STATE_DIR}/broker/credentials.json || install -m 0600 "
                    f"{MQTT_ADMIN_DIR}/credentials.json {cluster.STATE_DIR}/broker/",
                ],
                "volumeMounts": [
                    state,
                    {"name": "mqtt-admin", "mountPath": MQTT_ADMIN_DIR, "readOnly": True},
                ],
            }
        ],
        "containers": [
            {
                "name": "lab",
                "image": image,
                "command": [
                    "smartlab",
                    "lab",
                    "serve",
                    "--state-dir",
                    cluster.STATE_DIR,
                    "--mqtt-host",
                    cluster.MOSQUITTO,
                    "--mqtt-port",
                    str(cluster.MQTT_PORT),
                    "--ip",
                    "0.0.0.0",
                    "--port",
                    str(cluster.LAB_PORT),
                    "--identity",
                    "hub",
                ],
                "env": [
                    *_hub_service_env(hub.LAB_SERVICE, cluster.LAB_PORT),
                    *_env({"SMARTLAB_SITE": cluster.SITE_FILE}),
                ],
                "ports": [{"containerPort": cluster.LAB_PORT, "name": "http"}],
                "volumeMounts": [state, site_mount],
            }
        ],
        "volumes": [
            {"name": "state", "persistentVolumeClaim": {"claimName": "lab-state"}},
            {"name": "mqtt-admin", "secret": {"secretName": cluster.MQTT_ADMIN_SECRET}},
            site_volume,
        ],
    }
    return [
        _pvc("lab-state", "1Gi"),
        _deployment(cluster.LAB, pod),
        _service(cluster.LAB, cluster.LAB_PORT),
    ]


def formgrader(course_id: str, image: str, env: dict[str, str]) -> list[Manifest]:
    """One course's formgrader (hub.formgrader_service): jupyterhub-singleuser at
    /formgrader over the course's own volume, its home `grader-<course>`."""
    name = cluster.formgrader_name(course_id)
    home = f"/home/{hub.grader_account(course_id)}"
    pod = {
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000, "fsGroup": 1000},
        "containers": [
            {
                "name": "formgrader",
                "image": image,
                "command": ["jupyterhub-singleuser", f"--port={cluster.FORMGRADER_PORT}"],
                "workingDir": home,
                "env": [
                    *_hub_service_env(course_id, cluster.FORMGRADER_PORT),
                    *_env({**env, "JUPYTERHUB_DEFAULT_URL": "/formgrader", "HOME": home}),
                ],
                "ports": [{"containerPort": cluster.FORMGRADER_PORT, "name": "http"}],
                "volumeMounts": [{"name": "course", "mountPath": home}],
            }
        ],
        "volumes": [{"name": "course", "persistentVolumeClaim": {"claimName": f"{name}-home"}}],
    }
    return [
        _pvc(f"{name}-home", "5Gi"),
        _deployment(name, pod),
        _service(name, cluster.FORMGRADER_PORT),
    ]


def status_board(image: str) -> list[Manifest]:
    """The public board (labs/board.py): Voilà with a read-only MQTT observer account."""
    pod = {
        "securityContext": {"runAsUser": 1000, "runAsGroup": 1000},
        "containers": [
            {
                "name": "board",
                "image": image,
                "command": [
                    "smartlab",
                    "board",
                    "--ip",
                    "0.0.0.0",
                    "--port",
                    str(cluster.STATUS_PORT),
                    "--base-url",
                    f"/services/{hub.STATUS_SERVICE}/",
                ],
                "env": [
                    *_env({"SMARTLAB_LAB_URL": cluster.service_url(cluster.LAB, cluster.LAB_PORT)}),
                    _secret_env("SMARTLAB_MQTT_URL", cluster.BOARD_MQTT_SECRET, "url"),
                ],
                "ports": [{"containerPort": cluster.STATUS_PORT, "name": "http"}],
            }
        ],
    }
    return [_deployment(cluster.STATUS, pod), _service(cluster.STATUS, cluster.STATUS_PORT)]


def ngshare(site: Site, image: str) -> list[Manifest]:
    """ngshare as the ngshare chart deploys it; its admins are the course grader accounts,
    which create their courses there."""
    pod = {
        "securityContext": {"runAsNonRoot": True, "fsGroup": 1000},
        "containers": [
            {
                "name": "ngshare",
                "image": image,
                "args": ["--admins", ",".join(hub.grader_accounts(site))],
                "env": _hub_service_env(cluster.NGSHARE, cluster.NGSHARE_PORT),
                "ports": [{"containerPort": cluster.NGSHARE_PORT, "name": "http"}],
                "volumeMounts": [{"name": "data", "mountPath": "/srv/ngshare"}],
                "readinessProbe": {"httpGet": {"path": "/healthz", "port": "http"}},
                "securityContext": {
                    "runAsUser": 65535,
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "ngshare-data"}}],
    }
    return [
        _pvc("ngshare-data", "1Gi"),
        _deployment(cluster.NGSHARE, pod),
        _service(cluster.NGSHARE, cluster.NGSHARE_PORT),
    ]


def platform_manifests(
    site: Site, site_text: str, images: cluster.Images, server_env: dict[str, str]
) -> dict[str, list[Manifest]]:
    """File name (without .yaml) -> its objects."""
    cluster.check_expressible(site)
    found = {
        "site": [site_secret(site_text)],
        "mosquitto": [*mosquitto(images.mosquitto), broker_provision(images.platform)],
        "lab-service": lab_service(images.platform),
        "status-board": status_board(images.platform),
        "ngshare": ngshare(site, images.ngshare),
    }
    for course in site.courses:
        found[cluster.formgrader_name(course.id)] = formgrader(
            course.id, images.platform, server_env
        )
    return found
