"""What the values and the manifests share: in-cluster names, ports, images, mount points."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from hub_config.hub import grader_account
from site_config.site import Site

# The platform's services inside the namespace (Kubernetes Service names).
MOSQUITTO = "mosquitto"
MQTT_PORT = 1883
LAB = "lab"
LAB_PORT = 8181
STATUS = "status"
STATUS_PORT = 8282
NGSHARE = "ngshare"  # nbgrader's exchange as a service (the ngshare chart's name and port)
NGSHARE_PORT = 8080
FORMGRADER_PORT = 8888
# Zero to JupyterHub's hub Service and the Secret where it keeps the tokens it generates for
# `hub.services.<name>` (key `hub.services.<name>.apiToken`).
HUB_API_URL = "http://hub:8081/hub/api"
HUB_SECRET = "hub"

# Secrets the operator creates (docs/deploy.md); the manifests only reference them.
MQTT_ADMIN_SECRET = "smartlab-mqtt-admin"  # username, password, credentials.json
BOARD_MQTT_SECRET = "smartlab-board-mqtt"  # url: the board's read-only observer account
SITE_SECRET = "smartlab-site"  # site.yaml (it holds password hashes: a Secret, not a ConfigMap)

SITE_DIR = "/etc/smartlab"
SITE_FILE = f"{SITE_DIR}/site.yaml"
STATE_DIR = "/var/lib/smartlab"
# Where the platform image holds this repository (`pip install -e` there) and its venv.
APP_ROOT = "/opt/smartlab"
APP_BIN = "/opt/smartlab/.venv/bin"
REPO_ROOT = Path(__file__).resolve().parents[2]

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


@dataclass(frozen=True)
class Images:
    """The platform image (this repository installed) for the hub, servers and services."""

    platform: str = "registry.example.org/smartlab:latest"
    mosquitto: str = "eclipse-mosquitto:2.0"
    ngshare: str = "libretexts/ngshare:v0.6.0"

    def platform_name_tag(self) -> tuple[str, str]:
        name, _, tag = self.platform.rpartition(":")
        if not name or "/" in tag:  # no tag, or a registry port taken for one
            return self.platform, "latest"
        return name, tag


def image_path(local: Path | str) -> str:
    """A path of this checkout as it lies in the platform image."""
    return f"{APP_ROOT}/{Path(local).resolve().relative_to(REPO_ROOT)}"


def service_url(name: str, port: int) -> str:
    return f"http://{name}:{port}"


def formgrader_name(course_id: str) -> str:
    return f"formgrader-{course_id}"


def check_expressible(site: Site) -> None:
    """One line naming the first site field Kubernetes cannot take as it is."""
    for i, course in enumerate(site.courses):
        for name in (formgrader_name(course.id), grader_account(course.id)):
            if len(name) > 63 or not DNS_LABEL.match(name):
                raise ValueError(
                    f"{site.source}: courses[{i}].id: {course.id!r} makes the Kubernetes name "
                    f"{name!r}, which must be at most 63 lowercase letters, digits and hyphens"
                )
