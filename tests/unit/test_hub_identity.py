"""HubIdentity's mapping of hub groups to lab users, and the OAuth states shared by front ends
(the hub itself: tests/integration/test_lab_hub_identity.py)."""

from __future__ import annotations

import asyncio
import os
import time
from typing import ClassVar

import pytest
from tornado.httpclient import AsyncHTTPClient
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.web import Application, RequestHandler

from lab_service.api_http import make_app
from lab_service.api_schemas import ApiError
from lab_service.hub_identity import HubIdentity, SharedOAuthStates
from lab_service.service import User


@pytest.fixture
def identity(tmp_path, monkeypatch) -> HubIdentity:
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "service-token-for-tests")
    return HubIdentity(state_dir=str(tmp_path), base_url="/services/lab/")


def test_groups_map_to_institution_courses_teaching_and_admin(identity):
    user = identity.lab_user(
        "anna",
        [
            "inst-univ-a",
            "nbgrader-iot101",
            "nbgrader-smart-city",
            "instructors-iot101",
            "lab-admins",
            "lab-users",
            "inst-",
        ],
    )
    assert user == User(
        "anna", "univ-a", frozenset({"iot101", "smart-city"}), frozenset({"iot101"}), True
    )
    assert identity.lab_user("bob", ["inst-univ-b"]) == User("bob", "univ-b")


@pytest.mark.parametrize(
    ("name", "groups", "reason"),
    [
        ("anna", ["nbgrader-iot101"], "belongs to no institution"),
        (
            "anna",
            ["inst-univ-a", "inst-univ-b"],
            r"several institutions \(inst-univ-a, inst-univ-b\)",
        ),
        ("anna smith", ["inst-univ-a"], "cannot use the lab"),
        ("ctl-anna", ["inst-univ-a"], "reserved"),
    ],
)
def test_users_the_lab_cannot_take_are_refused_with_the_reason(identity, name, groups, reason):
    with pytest.raises(ApiError, match=reason) as refused:
        identity.lab_user(name, groups)
    assert refused.value.status == 403 and "\n" not in str(refused.value)


def test_the_hub_identity_needs_the_service_token(tmp_path, monkeypatch):
    monkeypatch.delenv("JUPYTERHUB_API_TOKEN", raising=False)
    with pytest.raises(ValueError, match="JUPYTERHUB_API_TOKEN"):
        HubIdentity(state_dir=str(tmp_path))


def test_cookie_secret_is_made_once_and_private(identity, tmp_path, monkeypatch):
    path = tmp_path / "lab-service-cookie-secret"
    assert os.stat(path).st_mode & 0o777 == 0o600
    again = HubIdentity(state_dir=str(tmp_path))
    assert again.settings()["cookie_secret"] == identity.settings()["cookie_secret"]


def test_oauth_states_are_shared_through_files_and_expire(tmp_path):
    one, other = (SharedOAuthStates(tmp_path / "states", max_age=600) for _ in range(2))
    one["abc_DEF-123"] = {"next_url": "/services/lab/", "code_verifier": "v"}
    assert other.get("abc_DEF-123") == {"next_url": "/services/lab/", "code_verifier": "v"}
    assert other.pop("abc_DEF-123") == {"next_url": "/services/lab/", "code_verifier": "v"}
    assert one.get("abc_DEF-123") is None
    for hostile in ("../escape", "a/b", "", "x" * 200):
        assert other.get(hostile, "none") == "none"
    one["old"] = {"next_url": None}
    stale = time.time() - 601
    os.utime(tmp_path / "states" / "old", (stale, stale))
    assert "old" not in other
    one["old2"] = {}
    os.utime(tmp_path / "states" / "old2", (stale, stale))
    other.purge_expired()
    assert not list((tmp_path / "states").iterdir())


# ---------------------------------------------------------------- refused tokens


class _HubApi(RequestHandler):
    """The hub's GET /hub/api/user as it answers an unknown token (403), counted."""

    asked: ClassVar[list[str]] = []

    async def get(self) -> None:
        self.asked.append(self.request.headers.get("Authorization", ""))
        await asyncio.sleep(0.05)  # the hub takes a moment: requests pile up meanwhile
        self.set_status(403)
        self.finish({"status": 403, "message": "Forbidden"})


async def _junk_traffic(identity: HubIdentity, tokens: list[str]) -> list[int]:
    """Requests to the lab's API with `tokens`, all at once; their statuses."""
    app = make_app(identity, lambda *_: {}, base_url="/services/lab/")
    server = HTTPServer(app)
    sock = bind_sockets(0, "127.0.0.1")[0]
    server.add_sockets([sock])
    port = sock.getsockname()[1]
    client = AsyncHTTPClient(force_instance=True, max_clients=200)
    try:
        answers = await asyncio.gather(
            *[
                client.fetch(
                    f"http://127.0.0.1:{port}/api/me",
                    headers={"Authorization": f"token {t}"},
                    raise_error=False,
                )
                for t in tokens
            ]
        )
    finally:
        client.close()
        server.stop()
    return [a.code for a in answers]


@pytest.fixture
def hub_api(monkeypatch, tmp_path):
    """A stand-in of the hub's user API on a free port; the list of tokens it was asked about."""
    app = Application([(r"/hub/api/user", _HubApi)])
    sock = bind_sockets(0, "127.0.0.1")[0]
    _HubApi.asked = []
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "service-token-for-tests")
    monkeypatch.setenv("JUPYTERHUB_API_URL", f"http://127.0.0.1:{sock.getsockname()[1]}/hub/api")
    return app, sock, _HubApi.asked


def test_a_refused_token_costs_the_hub_one_lookup_for_many_requests(hub_api, tmp_path):
    app, sock, asked = hub_api

    async def run() -> tuple[list[int], list[int]]:
        hub = HTTPServer(app)
        hub.add_sockets([sock])
        identity = HubIdentity(state_dir=str(tmp_path), base_url="/services/lab/")
        try:
            at_once = await _junk_traffic(identity, ["junk-token-1"] * 50)
            later = await _junk_traffic(identity, ["junk-token-1"] * 20)
        finally:
            hub.stop()
        return at_once, later

    at_once, later = asyncio.run(run())
    assert set(at_once) == {401} and set(later) == {401}
    assert asked == ["token junk-token-1"], f"the hub was asked {len(asked)} times"


def test_refused_tokens_are_remembered_briefly_and_in_bounded_number(hub_api, tmp_path):
    app, sock, asked = hub_api

    async def run() -> HubIdentity:
        hub = HTTPServer(app)
        hub.add_sockets([sock])
        identity = HubIdentity(state_dir=str(tmp_path), base_url="/services/lab/", cache_size=10)
        try:
            statuses = await _junk_traffic(identity, [f"junk-{i}" for i in range(40)])
            assert set(statuses) == {401}
        finally:
            hub.stop()
        return identity

    identity = asyncio.run(run())
    assert len(asked) == 40  # a new token is new to the hub: each is asked once
    assert len(identity.hub_auth.refused) <= 10 and len(identity.hub_auth.cache) <= 10
    assert identity.hub_auth.refused.max_age == identity.refused_token_seconds == 10
