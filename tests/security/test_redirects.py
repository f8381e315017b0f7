"""Redirects the platform makes after a login go to its own paths only: the LTI landing, the
lab service's OAuth callback and the hub's `?next=` (JupyterHub's own check, which the LTI
landing falls back on), each fed the ways browsers read as another site."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import urlsplit

import pytest
from jupyterhub.handlers.base import BaseHandler
from jupyterhub.services.auth import _ExpiringDict

from hub_config.lti.handlers import hub_page
from lab_service.hub_identity import BoundedCache, LocalHubOAuth
from site_config.redirects import local_path

HOST = "lab.example.org"
OFFSITE = [
    "//evil.example/x",
    "///evil.example/x",
    "/\\evil.example/x",
    "\\\\evil.example/x",
    "\\/evil.example/x",
    "https://evil.example/x",
    "http:evil.example",
    "/%5Cevil.example/x",
    "/%5c%5cevil.example",
    "/%2F%2Fevil.example",
    "/\tevil.example",
    "/\x00/evil.example",
    "javascript:alert(1)",
    "evil.example/x",
]
LOCAL = ["/hub/home", "/services/lab/api/me?x=1", "/user/anna/lab"]


def browser_target(location: str) -> str:
    """The host a browser goes to for a Location header (WHATWG URL parsing: backslashes
    read as slashes, tabs and newlines dropped)."""
    normalised = location.replace("\\", "/")
    for dropped in "\t\n\r":
        normalised = normalised.replace(dropped, "")
    return urlsplit(normalised).netloc or urlsplit("https://" + HOST + normalised).netloc


@pytest.mark.parametrize("target", OFFSITE)
def test_local_path_refuses_other_sites(target):
    assert local_path(target) is None


@pytest.mark.parametrize("target", LOCAL)
def test_local_path_keeps_own_paths(target):
    assert local_path(target) == target
    assert local_path(target, "/nowhere") is None


@pytest.mark.parametrize("target", OFFSITE)
def test_the_lti_landing_refuses_other_sites(target):
    landing = hub_page(target, HOST, "/", "/hub/lti")  # `///x/y` parses as the path /x/y
    assert landing is None or browser_target(landing) == HOST, landing


def test_the_lti_landing_keeps_own_pages():
    assert hub_page(f"https://{HOST}/user/anna/lab?x=1", HOST, "/", "/hub/lti") == (
        "/user/anna/lab?x=1"
    )


def _lab_oauth() -> LocalHubOAuth:
    return LocalHubOAuth(
        api_token="unused",
        base_url="/services/lab/",
        _oauth_states=_ExpiringDict(60),
        refused=BoundedCache(10, 100),
    )


@pytest.mark.parametrize("target", OFFSITE)
def test_the_lab_services_login_returns_only_to_its_own_paths(target, caplog):
    oauth = _lab_oauth()
    state = oauth.generate_state(next_url=target)
    assert oauth.get_next_url(state) == "/services/lab/"
    assert "login redirect refused" in caplog.text


def test_the_lab_services_login_keeps_its_own_paths():
    oauth = _lab_oauth()
    for target in ("/services/lab/", "/services/lab/api/me?a=1", "/services/lab"):
        assert oauth.get_next_url(oauth.generate_state(next_url=target)) == target


@pytest.mark.parametrize("target", [*OFFSITE, f"https://{HOST}.evil.example/"])
def test_the_hubs_next_parameter_stays_on_the_hub(target):
    """JupyterHub's own check of `/hub/login?next=` (and of the LTI landing's fallback)."""
    handler = SimpleNamespace(
        settings={"public_url": urlsplit(f"https://{HOST}")},
        subdomain_host="",
        log=SimpleNamespace(warning=lambda *a, **k: None),
    )
    checked = BaseHandler._validate_next_url(handler, target)
    assert checked == "" or browser_target(checked) == HOST, checked
