"""`GET <base_url>smartlab/links` on a real Jupyter server loaded with the users' server config
(hub_config/jupyter), whose hub is a fake answering the server's own token with the groups of
whoever it is told to be: what anna and irina's JupyterLab would show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import requests

from hub_config.hub import user_groups
from hub_config.launcher import stop_process
from hub_config.spawner import JUPYTER_CONFIG_DIR
from labs.board import DATA_DIR
from site_config.paths import DEMO_SITE
from site_config.runtime import free_port
from site_config.site import load_site
from tests.conftest import wait_until

SERVER_TOKEN = "server-token-of-the-owner"  # $JUPYTERHUB_API_TOKEN
BROWSER_TOKEN = "token-of-the-browser"
GROUPS = user_groups(load_site(DEMO_SITE))


class FakeHub(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), HubApi)
        self.user = "anna"
        self.calls: list[tuple[str, str]] = []


class HubApi(BaseHTTPRequestHandler):
    server: FakeHub

    def do_GET(self) -> None:  # http.server's name
        self.server.calls.append((self.path, self.headers.get("Authorization", "")))
        if self.path != "/hub/api/user" or self.headers["Authorization"] != f"token {SERVER_TOKEN}":
            self.send_response(403)
            self.end_headers()
            return
        body = json.dumps({"name": self.server.user, "groups": GROUPS[self.server.user]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def hub() -> Iterator[FakeHub]:
    server = FakeHub()
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()


@pytest.fixture(scope="module")
def jupyter(hub: FakeHub, tmp_path_factory) -> Iterator[str]:
    port, root = free_port(), tmp_path_factory.mktemp("home")
    env = {
        **os.environ,
        "JUPYTER_CONFIG_PATH": str(JUPYTER_CONFIG_DIR),
        "JUPYTER_PATH": str(DATA_DIR),
        "JUPYTERHUB_API_URL": f"http://127.0.0.1:{hub.server_address[1]}/hub/api",
        "JUPYTERHUB_API_TOKEN": SERVER_TOKEN,
        "JUPYTERHUB_BASE_URL": "/",
        "SMARTLAB_SITE": str(DEMO_SITE),
        "HOME": str(root),
    }
    log = (root / "server.log").open("wb")
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "jupyter-server"),
            f"--port={port}",
            "--ip=127.0.0.1",
            "--no-browser",
            "--allow-root",
            f"--ServerApp.root_dir={root}",
            "--ServerApp.base_url=/user/anna/",
            f"--IdentityProvider.token={BROWSER_TOKEN}",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/user/anna/smartlab/links"
    try:
        wait_until(lambda: _status(url) == 403 or process.poll() is not None, timeout=60)
        assert process.poll() is None, (root / "server.log").read_text()
        yield url
    finally:
        stop_process(process)


def _status(url: str) -> int | None:
    try:
        return requests.get(url, timeout=2).status_code
    except requests.ConnectionError:
        return None


def fetch(url: str) -> dict:
    r = requests.get(url, headers={"Authorization": f"token {BROWSER_TOKEN}"}, timeout=10)
    r.raise_for_status()
    return r.json()


def test_anna_gets_her_kits_and_no_formgrader(hub: FakeHub, jupyter: str) -> None:
    hub.user = "anna"
    got = fetch(jupyter)
    assert got["home"] == "/services/home/"
    assert got["formgraders"] == []
    kits = {d["kit"]: d["url"] for d in got["dashboards"] if d["page"] == "kit"}
    assert kits["streetlight-1"] == (
        "/user/anna/voila/render/dashboards/kit.ipynb?kit=streetlight-1"
    )
    assert set(kits) == {"streetlight-1", "streetlight-2", "crossing-1", "parking-1"}
    assert hub.calls[-1] == ("/hub/api/user", f"token {SERVER_TOKEN}")  # the server's token


def test_irina_gets_a_formgrader_per_course(hub: FakeHub, jupyter: str) -> None:
    hub.user = "irina"  # groups are read at each request: a login changes them
    assert [f["url"] for f in fetch(jupyter)["formgraders"]] == [
        "/services/smart-lighting/formgrader",
        "/services/traffic-signals/formgrader",
    ]


def test_without_the_servers_credentials_nothing(jupyter: str) -> None:
    assert _status(jupyter) == 403
