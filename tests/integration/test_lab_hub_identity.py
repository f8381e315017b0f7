"""The lab service behind a real JupyterHub (identity 'hub'): tokens and OAuth cookies issued by
the hub, groups mapped to the lab user, served under the hub's proxy at /services/lab/.

One JupyterHub (configurable-http-proxy, DummyAuthenticator) with the lab service registered as
an external service (its role: list:users, read:users:name, read:users:groups), and one
`smartlab lab serve --identity hub` on the session's broker. Users, groups and tokens are made
through the hub's API with a test-only service token (admin:users, admin:groups, tokens).
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from hub_config.launcher import stop_process
from labs.client import LabService, LabServiceError, connect
from site_config.runtime import free_port
from tests.conftest import REPO, wait_until

pytestmark = pytest.mark.broker

CACHE_S = 2  # c.HubIdentity.cache_max_age in this test
PASSWORD = "hub-test-password"
LAB_SCOPE = "access:services!service=lab"

HUB_CONFIG = """
c.JupyterHub.bind_url = "http://127.0.0.1:{port}"
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.JupyterHub.db_url = "sqlite:///{folder}/jupyterhub.sqlite"
c.JupyterHub.cookie_secret_file = "{folder}/jupyterhub_cookie_secret"
c.JupyterHub.pid_file = "{folder}/jupyterhub.pid"
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = {password!r}
c.Authenticator.allow_all = True
c.JupyterHub.services = [
    {{"name": "lab", "url": "http://127.0.0.1:{lab_port}", "api_token": {lab_token!r},
      "oauth_no_confirm": True}},
    {{"name": "lab-test-admin", "api_token": {admin_token!r}}},
    {{"name": "job-runner", "api_token": {runner_token!r}}},
]
c.JupyterHub.load_roles = [
    {{"name": "lab-service", "services": ["lab"],
      "scopes": ["list:users", "read:users:name", "read:users:groups"]}},
    {{"name": "lab-test-admin", "services": ["lab-test-admin"],
      "scopes": ["admin:users", "admin:groups", "tokens"]}},
    {{"name": "lab-users", "groups": ["lab-users"], "scopes": [{scope!r}]}},
    {{"name": "job-runner", "services": ["job-runner"], "scopes": [{scope!r}]}},
]
"""

SERVICE_CONFIG = """
c.LabServiceApp.identity = "hub"
c.LabServiceApp.db_url = "sqlite:///{folder}/lab.sqlite"
c.HubIdentity.cache_max_age = {cache}
c.HubIdentity.cookie_secret_file = "{folder}/lab-cookie-secret"
"""


@dataclass
class Platform:
    hub_url: str  # the hub's proxy: /hub/ and /services/lab/
    lab_url: str  # the lab service itself
    admin_token: str
    folder: Path
    runner_token: str = ""  # the hub service `job-runner`

    def hub_api(self, method: str, path: str, body: Any = None) -> Any:
        answer = requests.request(
            method,
            f"{self.hub_url}/hub/api{path}",
            json=body,
            headers={"Authorization": f"token {self.admin_token}"},
            timeout=10,
        )
        assert answer.status_code < 300, f"{method} {path}: {answer.status_code} {answer.text}"
        return answer.json() if answer.content else None

    def user(self, name: str, groups: list[str], scopes: list[str] | None = None) -> str:
        """A hub user in `groups` (made if missing); returns a new token with `scopes`."""
        self.hub_api("POST", "/users", {"usernames": [name]})
        for group in groups:
            self.join(name, group)
        return self.hub_api(
            "POST",
            f"/users/{name}/tokens",
            {"scopes": scopes if scopes is not None else [LAB_SCOPE], "note": "test"},
        )["token"]

    def join(self, name: str, group: str) -> None:
        if (
            requests.get(
                f"{self.hub_url}/hub/api/groups/{group}",
                timeout=10,
                headers={"Authorization": f"token {self.admin_token}"},
            ).status_code
            == 404
        ):
            self.hub_api("POST", f"/groups/{group}", {"users": []})
        self.hub_api("POST", f"/groups/{group}/users", {"users": [name]})

    def leave(self, name: str, group: str) -> None:
        self.hub_api("DELETE", f"/groups/{group}/users", {"users": [name]})


def started(process: subprocess.Popen, log: Path, url: str, what: str) -> None:
    def up() -> bool:
        assert process.poll() is None, f"{what} exited:\n{log.read_text()[-3000:]}"
        try:
            return requests.get(url, timeout=2).status_code == 200
        except requests.RequestException:
            return False

    wait_until(up, timeout=60, interval=0.2)


@pytest.fixture(scope="module")
def platform(broker, state_root) -> Iterator[Platform]:
    folder = Path(tempfile.mkdtemp(prefix="smartlab-hub-identity-"))
    port, hub_port, lab_port = free_port(), free_port(), free_port()
    lab_token, admin_token = secrets.token_hex(16), secrets.token_hex(16)
    runner_token = secrets.token_hex(16)
    (folder / "jupyterhub_config.py").write_text(
        HUB_CONFIG.format(
            port=port,
            hub_port=hub_port,
            proxy_port=free_port(),
            folder=folder,
            password=PASSWORD,
            lab_port=lab_port,
            lab_token=lab_token,
            admin_token=admin_token,
            runner_token=runner_token,
            scope=LAB_SCOPE,
        )
    )
    (folder / "lab_service_config.py").write_text(
        SERVICE_CONFIG.format(folder=folder, cache=CACHE_S)
    )
    bin_dir = Path(sys.executable).parent
    processes: list[subprocess.Popen] = []
    try:
        hub_log = folder / "hub.log"
        with hub_log.open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [str(bin_dir / "jupyterhub"), "-f", str(folder / "jupyterhub_config.py")],
                    cwd=folder,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"},
                )
            )
        hub_url = f"http://127.0.0.1:{port}"
        started(processes[-1], hub_log, f"{hub_url}/hub/api/", "the hub")
        # The hub's standard environment of a service, as for an external one.
        env = {
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "JUPYTERHUB_API_TOKEN": lab_token,
            "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub_port}/hub/api",
            "JUPYTERHUB_BASE_URL": "/",
            "JUPYTERHUB_SERVICE_NAME": "lab",
            "JUPYTERHUB_SERVICE_PREFIX": "/services/lab/",
            "JUPYTERHUB_SERVICE_URL": f"http://127.0.0.1:{lab_port}",
            "JUPYTERHUB_CLIENT_ID": "service-lab",
            "JUPYTERHUB_OAUTH_CALLBACK_URL": "/services/lab/oauth_callback",
        }
        lab_log = folder / "lab.log"
        with lab_log.open("wb") as log:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "hub_config.cli",
                        "lab",
                        "serve",
                        "--config",
                        str(folder / "lab_service_config.py"),
                        "--state-dir",
                        str(state_root),
                        "--mqtt-port",
                        str(broker.port),
                        "--port",
                        str(lab_port),
                    ],
                    cwd=REPO,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                )
            )
        lab_url = f"http://127.0.0.1:{lab_port}"
        started(processes[-1], lab_log, f"{lab_url}/api/openapi.json", "the lab service")
        yield Platform(hub_url, lab_url, admin_token, folder, runner_token)
        for process in processes:
            assert process.poll() is None, f"a process died:\n{lab_log.read_text()[-3000:]}"
    finally:
        for process in reversed(processes):
            stop_process(process, timeout=15)
        shutil.rmtree(folder, ignore_errors=True)


def call(
    url: str, path: str, token: str | None, method: str = "GET", body: Any = None
) -> requests.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    return requests.request(method, url + path, headers=headers, json=body, timeout=10)


def refused(answer: requests.Response, status: int) -> str:
    """The one-line reason of a refusal with `status`."""
    assert answer.status_code == status, answer.text
    reason = answer.json()["error"]
    assert reason and "\n" not in reason and "Traceback" not in reason
    return reason


def test_a_student_token_maps_to_institution_and_courses(platform):
    token = platform.user("anna", ["lab-users", "inst-univ-a", "nbgrader-iot101"])
    me = {
        "name": "anna",
        "institution": "univ-a",
        "courses": ["iot101"],
        "instructor_of": [],
        "lab_admin": False,
        "priority": 0,
    }
    assert call(platform.lab_url, "/api/me", token).json() == me
    # Behind the hub's proxy, under the service's prefix.
    assert call(platform.hub_url, "/services/lab/api/me", token).json() == me
    assert "lab admin" in refused(
        call(
            platform.lab_url,
            "/api/kits",
            token,
            "POST",
            {"id": "hub-lamp-1", "model": "street-lighting"},
        ),
        403,
    )


def test_instructor_and_lab_admin_groups(platform):
    token = platform.user("carl", ["lab-users", "inst-centre", "instructors-iot101", "lab-admins"])
    me = call(platform.hub_url, "/services/lab/api/me", token).json()
    assert (me["institution"], me["instructor_of"], me["courses"], me["lab_admin"]) == (
        "centre",
        ["iot101"],
        [],
        True,
    )
    kit = call(
        platform.hub_url,
        "/services/lab/api/kits",
        token,
        "POST",
        {"id": "hub-lamp-1", "model": "street-lighting"},
    )
    assert kit.status_code == 201, kit.text


def test_tokens_without_access_unknown_or_missing_are_refused(platform):
    no_scope = platform.user("bert", ["lab-users", "inst-univ-b"], scopes=["read:users:name!user"])
    assert LAB_SCOPE in refused(call(platform.lab_url, "/api/me", no_scope), 403)
    assert "token" in refused(call(platform.lab_url, "/api/me", secrets.token_hex(16)), 401)
    missing = call(platform.hub_url, "/services/lab/api/queue", None, "POST", {"kit": "x"})
    assert "token" in refused(missing, 401)
    homeless = platform.user("nina", ["lab-users"])
    assert "no institution" in refused(call(platform.lab_url, "/api/me", homeless), 403)


def test_the_job_runner_service_may_claim_jobs_and_no_other_caller_may(platform):
    assert (
        call(platform.lab_url, "/api/jobs/claim", platform.runner_token, "POST").status_code == 204
    )
    student = platform.user("jora", ["lab-users", "inst-univ-a"])
    assert "job runner" in refused(call(platform.lab_url, "/api/jobs/claim", student, "POST"), 403)
    other_service = call(platform.lab_url, "/api/jobs/claim", platform.admin_token, "POST")
    assert other_service.status_code == 403  # a service, but not the runner


def test_group_changes_show_after_the_cache_expires(platform):
    token = platform.user("olga", ["lab-users", "inst-univ-a", "nbgrader-iot101"])
    assert call(platform.lab_url, "/api/me", token).json()["courses"] == ["iot101"]
    platform.leave("olga", "nbgrader-iot101")
    platform.join("olga", "nbgrader-smart-city")
    changed = time.monotonic()

    def courses() -> list[str]:
        return call(platform.lab_url, "/api/me", token).json()["courses"]

    # Every front end's caches (the token's owner, the groups) were filled before the change.
    time.sleep(max(0.0, changed + CACHE_S + 0.2 - time.monotonic()))
    assert [courses() for _ in range(8)] == [["smart-city"]] * 8
    platform.leave("olga", "lab-users")  # the access scope comes from the lab-users role
    wait_until(
        lambda: call(platform.lab_url, "/api/me", token).status_code == 403,
        timeout=CACHE_S + 5,
        interval=0.1,
    )


def test_a_notebook_needs_no_typing(platform, monkeypatch):
    token = platform.user("paul", ["lab-users", "inst-univ-b", "nbgrader-iot101"])
    for name in ("SMARTLAB_TOKEN", "SMARTLAB_MQTT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", token)  # as in the user's server and kernels
    monkeypatch.setenv("SMARTLAB_LAB_URL", f"{platform.hub_url}/services/lab")
    assert LabService().me()["name"] == "paul"
    with connect(history=0) as lab:  # the watch account from /api/me/mqtt
        assert lab.requester
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", secrets.token_hex(16))
    with pytest.raises(LabServiceError, match="token"):
        LabService().me()


def test_a_browser_logs_in_through_the_hub(platform):
    from playwright.sync_api import sync_playwright

    from tests.stack import launch_chromium

    platform.user("rita", ["lab-users", "inst-univ-c", "nbgrader-iot101"])
    admin = platform.user("lena", ["lab-users", "inst-centre", "lab-admins"])
    registered = call(
        platform.lab_url,
        "/api/kits",
        admin,
        "POST",
        {"id": "hub-lamp-2", "model": "street-lighting"},
    )
    assert registered.status_code == 201, registered.text
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            page = chromium.new_page()
            page.goto(f"{platform.hub_url}/hub/login")
            page.fill("#username_input", "rita")
            page.fill("#password_input", PASSWORD)
            page.click("#login_submit")
            page.wait_for_url("**/hub/**")
            # The service's home: OAuth with the hub, the callback, then who I am.
            page.goto(f"{platform.hub_url}/services/lab/")
            page.wait_for_url("**/services/lab/api/me", timeout=20000)
            assert '"institution": "univ-c"' in page.inner_text("body")
            # Cookie-authenticated writes from a page need the hub's XSRF token.
            post = """async (xsrf) => {
                const headers = {"Content-Type": "application/json"};
                if (xsrf) headers["X-XSRFToken"] = document.cookie.match(/_xsrf=([^;]+)/)[1];
                const r = await fetch("/services/lab/api/queue", {method: "POST", headers,
                                      body: JSON.stringify({kit: "hub-lamp-2"})});
                return [r.status, await r.json()]; }"""
            status, answer = page.evaluate(post, False)
            assert status == 401 and "\n" not in answer["error"], answer
            status, answer = page.evaluate(post, True)
            assert status == 201 and answer["user"] == "rita", answer
        finally:
            chromium.close()
