"""Zero to JupyterHub's Helm values from the site file.

The hub's roles, users and service scopes come from hub_config/hub.py, the same functions
jupyterhub_config.py calls; here they go into the chart's own keys (`hub.config`,
`hub.loadRoles`, `hub.services`), which the chart hands to JupyterHub as traitlets config.
Each user's server is a KubeSpawner pod with the site's `servers:` limits and the environment
SiteSpawner gives servers on one machine, nbgrader's exchange being ngshare instead of a
shared folder.
"""

from __future__ import annotations

from typing import Any

from hub_config import hub
from hub_config.kubernetes import cluster
from site_config.runtime import Runtime
from site_config.site import Site

# Roles of hub-managed services that do not run under Zero to JupyterHub: the chart runs its
# own idle culler (`cull:`, with its own role); the front door and the class warm-up read the
# machine's exchange folder and lab database, which have no counterpart here; the job runner
# forks the grading sandbox, which is not deployed either.
ROLES_NOT_DEPLOYED = {
    hub.CULLER_SERVICE,
    hub.WARMUP_SERVICE,
    hub.HOME_SERVICE,
    hub.JOB_RUNNER_SERVICE,
    "front-door",
}
NGSHARE_ACCESS = f"access:services!service={cluster.NGSHARE}"
# How nbgrader_config.py learns to use ngshare_exchange instead of a folder.
EXCHANGE_ENV = "SMARTLAB_NBGRADER_EXCHANGE"


def singleuser_environment(site: Site) -> dict[str, str]:
    """hub.service_environment's keys, with the image's paths and the cluster's addresses."""
    runtime = Runtime(site=cluster.SITE_FILE, state_dir=cluster.STATE_DIR)
    env = hub.service_environment(runtime)
    env["JUPYTER_CONFIG_PATH"] = cluster.image_path(env["JUPYTER_CONFIG_PATH"])
    env["JUPYTER_PATH"] = cluster.image_path(env["JUPYTER_PATH"])
    env["SMARTLAB_LAB_URL"] = cluster.service_url(cluster.LAB, cluster.LAB_PORT)
    env["SMARTLAB_SITE"] = cluster.SITE_FILE
    env["PATH"] = f"{cluster.APP_BIN}:/usr/local/bin:/usr/bin:/bin"
    del env["SMARTLAB_EXCHANGE"]  # no shared folder: every pod would write it as one uid
    env[EXCHANGE_ENV] = cluster.NGSHARE
    return env


def load_roles(site: Site) -> dict[str, dict[str, Any]]:
    """hub.load_roles(site) as `hub.loadRoles` (keyed by name), plus everyone's way to ngshare."""
    roles = {
        role["name"]: {key: value for key, value in role.items() if key != "name"}
        for role in hub.load_roles(site)
        if role["name"] not in ROLES_NOT_DEPLOYED
    }
    for course in site.courses:  # a formgrader releases and collects through ngshare
        roles[f"service-{course.id}"]["scopes"].append(NGSHARE_ACCESS)
    roles["ngshare-users"] = {
        "description": "Fetch and submit assignments through the nbgrader exchange (ngshare)",
        "groups": [hub.PEOPLE],
        "users": hub.grader_accounts(site),
        "scopes": [NGSHARE_ACCESS],
    }
    return roles


def services(site: Site) -> dict[str, dict[str, Any]]:
    """`hub.services`: external services in their own pods; the chart generates each one's
    token into its Secret `hub` (manifests.py references it)."""
    found: dict[str, dict[str, Any]] = {
        course.id: {  # nbgrader: service name == course id (hub.formgrader_service)
            "url": cluster.service_url(cluster.formgrader_name(course.id), cluster.FORMGRADER_PORT),
            "oauth_no_confirm": True,
        }
        for course in site.courses
    }
    found[hub.LAB_SERVICE] = {
        "url": cluster.service_url(cluster.LAB, cluster.LAB_PORT),
        "display": True,
        "oauth_no_confirm": True,
    }
    found[hub.STATUS_SERVICE] = {
        "url": cluster.service_url(cluster.STATUS, cluster.STATUS_PORT),
        "display": True,
    }
    found[cluster.NGSHARE] = {
        "url": cluster.service_url(cluster.NGSHARE, cluster.NGSHARE_PORT),
        "oauth_no_confirm": True,
    }
    return found


# Python the chart runs after its own config: what needs the installed platform, not data.
HUB_EXTRA_CONFIG = """\
from pathlib import Path
from hub_config import hub, spawn_progress
# Our pages over JupyterHub's own (hub_config/templates/), as on one machine.
c.JupyterHub.template_paths = [str(Path(hub.__file__).resolve().parent / "templates")]
c.KubeSpawner.progress_ready_hook = spawn_progress.ready_event
"""


def z2jh_values(site: Site, images: cluster.Images, public_url: str) -> dict[str, Any]:
    """The chart's values.yaml."""
    cluster.check_expressible(site)
    name, tag = images.platform_name_tag()
    servers = site.servers
    hub_values: dict[str, Any] = {
        "image": {"name": name, "tag": tag},
        "config": {
            "JupyterHub": {
                "authenticator_class": "hub_config.lti.authenticator.LtiAuthenticator",
                "admin_access": False,  # hub admins manage servers, they do not enter them
                "default_url": "/hub/home",
            },
            "Authenticator": {
                "allow_all": False,
                "manage_groups": True,
                "allowed_users": hub.hub_users(site),
                "admin_users": [],  # hub admins hold the role hub-admin instead
            },
            "LtiAuthenticator": {
                "site_path": cluster.SITE_FILE,
                "state_dir": "/srv/jupyterhub/lti",  # the chart's hub PVC
                "tool_url": public_url,
            },
            "KubeSpawner": {
                "server_token_scopes": [*hub.SERVER_TOKEN_SCOPES, NGSHARE_ACCESS],
                "http_timeout": 300,  # a class logging in at once (jupyterhub_config.py)
                "start_timeout": 300,
            },
        },
        "loadRoles": load_roles(site),
        "services": services(site),
        "extraEnv": {"SMARTLAB_SITE": cluster.SITE_FILE, "SMARTLAB_PUBLIC_URL": public_url},
        "extraVolumes": [
            {"name": "site", "secret": {"secretName": cluster.SITE_SECRET}},
        ],
        "extraVolumeMounts": [
            {"name": "site", "mountPath": cluster.SITE_DIR, "readOnly": True},
        ],
        "extraConfig": {"smartlab.py": HUB_EXTRA_CONFIG},
    }
    if servers.concurrent_starts:
        hub_values["concurrentSpawnLimit"] = servers.concurrent_starts
    return {
        "hub": hub_values,
        "singleuser": {
            "image": {"name": name, "tag": tag},
            "cmd": "jupyterhub-singleuser",
            "defaultUrl": "/lab",
            # Guarantee what the limit allows: a class's servers are not evicted mid-lab.
            "memory": {"limit": servers.mem_limit, "guarantee": servers.mem_limit},
            "cpu": {"limit": servers.cpu_limit, "guarantee": servers.cpu_limit},
            # No site file in users' pods (it holds password hashes): their servers do without
            # it as they do on one machine, where it is closed to them.
            "extraEnv": singleuser_environment(site),
        },
        "cull": {"enabled": True, "timeout": servers.idle_timeout_minutes * 60, "every": 300},
    }
