"""Roles: group membership grants course and lab roles, and only the site file and LTI set it;
the public board is anyone's page, so it runs as an account of its own with a bounded number
of kernels.

A hub admin (hugo in the demo site) runs the hub; he must not be able to make himself a
course's grader (`formgrade-<course>`: its grades), instructor or a lab admin, through any API
route JupyterHub has: the groups API, the users API (`groups`, `roles`, `name`, `admin` of a
user model), creating users or groups. Each attempt is refused and membership stays as it was.
"""

from __future__ import annotations

import json
import os
import pwd
from pathlib import Path

import psutil
import pytest
import requests
from jupyterhub.roles import get_default_roles
from jupyterhub.scopes import _expand_scope

from hub_config import hub
from hub_config.lti.platforms import hub_groups
from labs.board import bounded_kernels
from site_config.paths import DEMO_SITE
from site_config.platform_accounts import BOARD_ACCOUNT
from site_config.site import load_site
from tests.conftest import wait_until
from tests.e2e.hubclient import Browser
from tests.stack import Up, VoilaServer

# Scopes that write group membership, user models (name, groups, roles) or mint identities.
MEMBERSHIP_SCOPES = {"admin:groups", "groups", "admin:users", "users", "tokens", "admin:services"}
ROLE_GROUPS = [
    "formgrade-smart-lighting",
    "instructors-smart-lighting",
    "nbgrader-iot-basics",
    "lab-admins",
    "lab-users",
]
ADMIN = "hugo"  # the demo site's hub admin


def _expanded(scopes: list[str]) -> set[str]:
    """JupyterHub's own expansion, filters dropped: what the role can do anywhere."""
    return {s.partition("!")[0] for scope in scopes for s in _expand_scope(scope)}


def test_no_role_can_change_group_membership_or_user_models():
    site = load_site(DEMO_SITE)
    user_role = next(r for r in get_default_roles() if r["name"] == "user")
    for role in [*hub.load_roles(site), user_role]:
        held = _expanded(role["scopes"]) if role["scopes"] != ["self"] else set()
        assert not held & MEMBERSHIP_SCOPES, (role["name"], held & MEMBERSHIP_SCOPES)


def test_an_lti_launch_never_keeps_lab_admins():
    kept = hub_groups("academy", [("city", "student")], existing=["lab-admins", "club"])
    assert "lab-admins" not in kept and "club" in kept


# ------------------------------------------------------------------ on a running hub


@pytest.fixture(scope="module")
def admin(platform: Up) -> Browser:
    browser = Browser(platform.hub_url, ADMIN)
    browser.login(f"demo-{ADMIN}")
    return browser


def _attempts(group: str) -> list[tuple[str, str, dict]]:
    """Every API route that could put the admin into `group` or change who is in it."""
    return [
        ("POST", f"/hub/api/groups/{group}/users", {"users": [ADMIN]}),
        ("DELETE", f"/hub/api/groups/{group}/users", {"users": ["irina"]}),
        ("PUT", f"/hub/api/groups/{group}/properties", {"x": 1}),
        ("DELETE", f"/hub/api/groups/{group}", {}),
        ("POST", f"/hub/api/groups/{group}-2", {"users": [ADMIN]}),
        ("POST", "/hub/api/groups", {"groups": [f"{group}-3"], "users": [ADMIN]}),
        ("PATCH", f"/hub/api/users/{ADMIN}", {"groups": [group]}),
        ("PATCH", f"/hub/api/users/{ADMIN}", {"roles": [group]}),
        ("PATCH", f"/hub/api/users/{ADMIN}", {"admin": True}),
        # Renaming: the site's memberships follow names at the next start.
        ("PATCH", "/hub/api/users/irina", {"name": "irina-old"}),
        ("PATCH", f"/hub/api/users/{ADMIN}", {"name": "irina-2"}),
        ("POST", "/hub/api/users", {"usernames": ["grader-new"]}),
        ("POST", "/hub/api/users/grader-new", {}),
    ]


def _membership(browser: Browser) -> dict[str, list[str]]:
    groups = browser.get("/hub/api/groups").json()
    return {g["name"]: sorted(g["users"]) for g in groups}


@pytest.mark.broker
@pytest.mark.parametrize("group", ROLE_GROUPS)
def test_a_hub_admin_cannot_change_a_role_group(platform, admin, group):
    before = _membership(admin)
    assert group in before and ADMIN not in before[group]
    for method, path, body in _attempts(group):
        answer = admin.request(method, path, json=body)
        assert answer.status_code == 403, (method, path, body, answer.status_code)
    # A token with more than its owner holds: refused as a bad request.
    token = admin.request("POST", f"/hub/api/users/{ADMIN}/tokens", json={"scopes": ["groups"]})
    assert token.status_code in (400, 403), token.status_code
    assert _membership(admin) == before
    me = admin.get(f"/hub/api/users/{ADMIN}").json()
    assert me["name"] == ADMIN and group not in me["groups"] and not me["admin"]
    assert admin.get("/hub/api/users/irina").status_code == 200  # not renamed


# ------------------------------------------------------------------ the public board


def _processes(*words: str) -> list[psutil.Process]:
    found = []
    for process in psutil.process_iter(["cmdline", "username"]):
        line = " ".join(process.info["cmdline"] or [])
        if all(w in line for w in words):
            found.append(process)
    return found


@pytest.mark.broker
@pytest.mark.skipif(os.geteuid() != 0, reason="accounts are switched only as root")
def test_the_public_board_and_its_kernels_run_as_the_board_account(platform, admin):
    board = Browser(platform.hub_url)  # anonymous: the proxy sends anyone to the board
    assert board.get("/services/status/").status_code == 200
    port = f"--port={platform.runtime.status_port}"
    voilas = _processes("voila", "overview.ipynb", port, "--BoundedKernelManager.max_kernels")
    assert voilas, "no board voila process"
    board_uid = pwd.getpwnam(BOARD_ACCOUNT).pw_uid
    for voila in voilas:
        assert voila.uids().real == voila.uids().effective == board_uid != 0
        kernels = voila.children(recursive=True)
        assert kernels and all(k.uids().effective == board_uid for k in kernels)
        parent = voila.parent()  # the hub itself: no root wrapper stays between them
        assert parent is not None and "jupyterhub" in " ".join(parent.cmdline())


def _tiny_notebook(folder: Path) -> Path:
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None}
    notebook = {
        "cells": [{**cell, "source": "print('board')"}],
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path = folder / "tiny.ipynb"
    path.write_text(json.dumps(notebook))
    return path


@pytest.mark.parametrize("pool", [0, 1])
def test_voila_behind_the_bound_refuses_kernels_beyond_it(tmp_path: Path, pool: int):
    """Anonymous visitors keep opening the page: kernels stop at the bound, the others get 503,
    and the log says why in one line per refusal."""
    notebook = _tiny_notebook(tmp_path)
    voila = VoilaServer(
        f"bounded-{pool}", tmp_path, {}, target=notebook, preheat={notebook.name: pool}
    )
    voila.command += bounded_kernels(2)
    voila.start()
    try:
        if pool:
            wait_until(lambda: voila.pool_ready(notebook.name, pool), timeout=60)
        answers = [requests.get(voila.url + "/", timeout=60).status_code for _ in range(4)]
        log = voila.log.read_text(errors="replace")
        assert answers[:2] == [200, 200] and set(answers[2:]) == {503}, answers
        refusals = [line for line in log.splitlines() if "kernel refused:" in line]
        assert refusals and all("the bound is 2" in line for line in refusals)
        assert len(voila.kernel_pids()) <= 2
    finally:
        voila.stop()
