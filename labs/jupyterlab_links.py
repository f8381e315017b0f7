"""The platform's pages for JupyterLab: `GET <base_url>smartlab/links`, a Jupyter server extension.

Every user's server loads it (hub_config/jupyter/jupyter_server_config.py); the JupyterLab
extension `smartlab-jupyterlab` (labs/jupyterlab/) turns the answer into launcher tiles and the
"Smart City Lab" menu. What a person may open follows their hub groups, read with the server's
own token (`read:users:groups!user`, hub_config/hub.py SERVER_TOKEN_SCOPES) at each request,
since the authenticator updates them at every login; the kits of their courses come from the site
file ($SMARTLAB_SITE), when the server may read it.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
from typing import TYPE_CHECKING, Any

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPRequest

from site_config.paths import SITE_ENV

if TYPE_CHECKING:
    from site_config.site import Site

log = logging.getLogger(__name__)

ROUTE = "smartlab/links"
HOME_SERVICE = "home"  # the front door, /services/home/
DASHBOARDS = "voila/render/dashboards/"  # the `dashboards` link in every home (labs/dashboards/)
# Hub groups (hub_config/hub.py): course membership and the pages each role may open.
STUDENT_PREFIX = "nbgrader-"
FORMGRADE_PREFIX = "formgrade-"
INSTRUCTORS_PREFIX = "instructors-"
LAB_ADMINS = "lab-admins"


def _courses(groups: list[str], prefix: str) -> list[str]:
    return sorted(g.removeprefix(prefix) for g in groups if g.startswith(prefix))


def links(groups: list[str], site: Site | None, base_url: str, hub_base: str) -> dict[str, Any]:
    """The pages of the platform for a user in `groups`, as absolute paths on the hub's host.

    `base_url` is the user's server (`/user/<name>/`), `hub_base` the hub's (`/`).
    """
    member_of = set(_courses(groups, STUDENT_PREFIX)) | set(_courses(groups, FORMGRADE_PREFIX))

    def page(name: str, **query: str) -> str:
        url = url_path_join(base_url, DASHBOARDS, f"{name}.ipynb")
        return f"{url}?{urllib.parse.urlencode(query)}" if query else url

    dashboards: list[dict[str, str]] = [{"page": "overview", "url": page("overview")}]
    if site is not None:
        names = {kit.id: kit.name or kit.id for kit in site.kits}
        mine = {kit for c in site.courses if c.id in member_of for kit in c.kits}
        dashboards += [
            {"page": "kit", "kit": kit, "name": names[kit], "url": page("kit", kit=kit)}
            for kit in sorted(mine)
            if kit in names
        ]
    if any(g.startswith(INSTRUCTORS_PREFIX) for g in groups):
        dashboards.append({"page": "instructor", "url": page("instructor")})
    if LAB_ADMINS in groups:
        dashboards.append({"page": "admin", "url": page("admin")})
    return {
        "home": url_path_join(hub_base, "services", HOME_SERVICE) + "/",
        "dashboards": dashboards,
        "formgraders": [
            {"course": course, "url": url_path_join(hub_base, "services", course, "formgrader")}
            for course in _courses(groups, FORMGRADE_PREFIX)
        ],
    }


def read_site() -> Site | None:
    """The site file named by $SMARTLAB_SITE, or None (not set, not readable, not valid)."""
    path = os.environ.get(SITE_ENV)
    if not path:
        return None
    from site_config.site import load_site  # pydantic and the kit models: at first use only

    try:
        return load_site(path)
    except Exception as err:  # a private or broken site file costs the kit tiles only
        log.warning("smartlab links: no kits from the site file %s: %s", path, err)
        return None


async def hub_groups() -> list[str]:
    """The groups of this server's owner, from the hub with the server's own token."""
    api, token = os.environ.get("JUPYTERHUB_API_URL"), os.environ.get("JUPYTERHUB_API_TOKEN")
    if not api or not token:
        return []
    request = HTTPRequest(
        url_path_join(api, "user"), headers={"Authorization": f"token {token}"}, request_timeout=10
    )
    try:
        response = await AsyncHTTPClient().fetch(request)
    except Exception as err:  # the hub restarting: links without courses, not an error page
        log.warning("smartlab links: the hub did not say the user's groups: %s", err)
        return []
    return list(json.loads(response.body).get("groups") or [])


class LinksHandler(APIHandler):
    @web.authenticated
    async def get(self) -> None:
        groups = await hub_groups()
        hub_base = os.environ.get("JUPYTERHUB_BASE_URL", "/")
        self.finish(json.dumps(links(groups, read_site(), self.base_url, hub_base)))


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    return [{"module": "labs.jupyterlab_links"}]


def _load_jupyter_server_extension(serverapp: Any) -> None:
    web_app = serverapp.web_app
    route = url_path_join(web_app.settings["base_url"], ROUTE)
    web_app.add_handlers(".*$", [(route, LinksHandler)])
