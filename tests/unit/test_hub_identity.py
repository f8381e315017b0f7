"""HubIdentity's mapping of hub groups to lab users, and the OAuth states shared by front ends
(the hub itself: tests/integration/test_lab_hub_identity.py)."""

from __future__ import annotations

import os
import time

import pytest

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
