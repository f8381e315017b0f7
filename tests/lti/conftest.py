"""Two local LTI 1.3 platforms and one real JupyterHub (with configurable-http-proxy) using
LtiAuthenticator, shared by the LTI tests; `Browser` goes through the hub's login URLs as a
browser does: login initiation → platform authorization → form post → hub cookie."""

from __future__ import annotations

import html
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pytest
import requests
import yaml

from hub_config.launcher import stop_process
from site_config.runtime import free_port
from site_config.site import pbkdf2_hash
from tests.conftest import REPO, wait_until
from tests.lti.platform import LaunchSpec, Platform, login_query

ADMIN_SERVICE = "lti-test-admin"


class FormParser(HTMLParser):
    """The first form of a page: its action and hidden fields (what the browser would post)."""

    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = values.get("action")
        elif tag == "input" and values.get("name"):
            self.fields[values["name"] or ""] = values.get("value") or ""


@dataclass
class Hub:
    url: str
    folder: Path
    log_path: Path
    token: str
    courses: Path
    process: subprocess.Popen

    def api(self, path: str) -> requests.Response:
        return requests.get(
            f"{self.url}/hub/api{path}",
            timeout=10,
            headers={"Authorization": f"token {self.token}"},
        )

    def user(self, name: str) -> dict | None:
        response = self.api(f"/users/{name}")
        return response.json() if response.status_code == 200 else None

    def usernames(self) -> set[str]:
        return {u["name"] for u in self.api("/users").json()}

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


class Browser:
    """One browser (cookie jar) launching the tool from an LMS."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.session = requests.Session()

    def initiate(
        self, platform: Platform, spec: LaunchSpec, *, target: str | None = None
    ) -> requests.Response:
        hint = platform.prepare(spec)
        query = login_query(platform, hint, target or f"{self.hub.url}/hub/lti/launch")
        return self.session.get(
            f"{self.hub.url}/hub/lti/login?{query}", allow_redirects=False, timeout=10
        )

    def authorise(
        self, platform: Platform, spec: LaunchSpec, target: str | None = None
    ) -> tuple[str, dict[str, str]]:
        """Steps 1-2: the form the platform answers with (action and fields)."""
        started = self.initiate(platform, spec, target=target)
        assert started.status_code == 302, started.text
        location = started.headers["Location"]
        assert location.startswith(platform.url + "/auth?"), location
        answer = self.session.get(location, allow_redirects=False, timeout=10)
        assert answer.status_code == 200, answer.text
        form = FormParser()
        form.feed(answer.text)
        assert form.action and set(form.fields) == {"id_token", "state"}, answer.text
        return form.action, form.fields

    def post(self, action: str, fields: dict[str, str]) -> requests.Response:
        return self.session.post(action, data=fields, allow_redirects=False, timeout=30)

    def launch(
        self, platform: Platform, spec: LaunchSpec, target: str | None = None
    ) -> requests.Response:
        return self.post(*self.authorise(platform, spec, target))

    def me(self) -> dict:
        """The hub's view of this browser's user, through its login cookie."""
        response = self.session.get(f"{self.hub.url}/hub/api/user", timeout=10)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="package")
def platforms() -> Iterator[tuple[Platform, Platform]]:
    """univ-a's LMS and the academy's (Moodle-style line item URLs), both with user id 7."""
    moodle_a = Platform("univ-a-moodle").start()
    academy = Platform("academy-lms", query_style_lineitems=True).start()
    yield moodle_a, academy
    moodle_a.stop()
    academy.stop()


def write_site(path: Path, a: Platform, b: Platform) -> None:
    site = {
        "kits": [],
        "institutions": [
            {"id": "centre", "name": "Centre", "kind": "centre"},
            {
                "id": "univ-a",
                "name": "University A",
                "kind": "university",
                "lms": [a.site_entry({"101": "smart-city", "102": "iot-basics"})],
            },
            {
                "id": "academy",
                "name": "Partner academy",
                "kind": "academy",
                "lms": [b.site_entry({"7": "iot-basics"})],
            },
        ],
        "courses": [
            {
                "id": "smart-city",
                "title": "Smart City",
                "institutions": ["univ-a"],
                "instructors": ["irina"],
            },
            {
                "id": "iot-basics",
                "title": "IoT Basics",
                "institutions": ["univ-a", "academy"],
                "instructors": ["irina"],
            },
        ],
        "people": [
            {
                "username": "irina",
                "name": "Irina",
                "institution": "centre",
                "roles": ["instructor"],
                "password_hash": pbkdf2_hash("demo-irina", 1000),
            }
        ],
    }
    path.write_text(yaml.safe_dump(site, sort_keys=False))


HUB_CONFIG = """
from hub_config.hub import hub_users
from hub_config.lti.authenticator import LtiAuthenticator
from site_config.site import load_site

c = get_config()  # noqa: F821
site = load_site({site!r})
c.JupyterHub.authenticator_class = LtiAuthenticator
c.LtiAuthenticator.site_path = {site!r}
c.LtiAuthenticator.state_dir = {state!r}
c.LtiAuthenticator.course_dir_template = {courses!r} + "/grader-{{course}}/{{course}}"
c.Authenticator.manage_groups = True
c.Authenticator.allow_all = False
c.Authenticator.allowed_users = set(hub_users(site))
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.JupyterHub.db_url = "sqlite:///{folder}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{folder}/cookie_secret"
c.JupyterHub.pid_file = "{folder}/jupyterhub.pid"
c.JupyterHub.services = [{{"name": {service!r}, "api_token": {token!r}}}]
c.JupyterHub.load_roles = [{{"name": {service!r}, "services": [{service!r}],
                             "scopes": ["list:users", "read:users", "read:groups"]}}]
"""


@pytest.fixture(scope="package")
def hub(platforms: tuple[Platform, Platform]) -> Iterator[Hub]:
    folder = Path(tempfile.mkdtemp(prefix="smartlab-lti-"))
    site = folder / "site.yaml"
    write_site(site, *platforms)
    courses = folder / "courses"
    (courses / "grader-iot-basics" / "iot-basics").mkdir(parents=True)  # smart-city: none
    port, token = free_port(), secrets.token_hex(16)
    config = folder / "jupyterhub_config.py"
    config.write_text(
        HUB_CONFIG.format(
            site=str(site),
            state=str(folder / "lti"),
            courses=str(courses),
            port=port,
            hub_port=free_port(),
            proxy_port=free_port(),
            folder=folder,
            service=ADMIN_SERVICE,
            token=token,
        )
    )
    log_path = folder / "hub.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "jupyterhub"), "-f", str(config)],
            cwd=folder,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={
                **os.environ,
                "PYTHONPATH": str(REPO),
                "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            },
        )
    hub = Hub(f"http://127.0.0.1:{port}", folder, log_path, token, courses, process)

    def up() -> bool:
        """the hub answers through its proxy"""
        assert process.poll() is None, hub.log()
        try:
            return requests.get(f"{hub.url}/hub/api/", timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(up, timeout=60, interval=0.2)
    for platform in platforms:
        platform.tool_jwks_url = f"{hub.url}/hub/lti/jwks"
        platform.redirect_uris = [f"{hub.url}/hub/lti/launch"]
    yield hub
    stop_process(process, timeout=15)
    shutil.rmtree(folder, ignore_errors=True)


def refusal(response: requests.Response) -> str:
    """The reason on a refusal page (JupyterHub's error template)."""
    match = re.search(r"LTI launch refused: ([^<]+)", response.text)
    return html.unescape(match.group(1)).strip() if match else ""
