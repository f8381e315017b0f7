"""Hub configuration derived from the site file: groups, least-privilege roles, services."""

from __future__ import annotations

import asyncio
import json
import runpy
from pathlib import Path

import pytest
from jupyterhub.scopes import _check_scopes_exist, scope_definitions
from traitlets.config import Config

from hub_config import hub
from site_config.paths import DEMO_SITE
from site_config.runtime import Runtime, pick_internal_ports
from site_config.site import Site, load_site

HUB_CONFIG = Path(__file__).resolve().parents[2] / "hub_config"
DEMO = DEMO_SITE
COURSES = ["smart-lighting", "iot-basics", "traffic-signals", "smart-parking"]


@pytest.fixture(scope="module")
def site(models) -> Site:
    return load_site(DEMO, models)


@pytest.fixture
def runtime(site) -> Runtime:
    ports = pick_internal_ports([c.id for c in site.courses], taken={8000, 1883, 8181})
    return Runtime(site=str(DEMO), state_dir="/srv/smartlab", isolate=True, **ports)


FRONT_DOOR = "access:services!service=home"  # every person lands on the front door


def access_services(scopes: set[str]) -> set[str]:
    return {s for s in scopes if s.startswith("access:services")}


def all_role_scopes(site: Site) -> list[str]:
    return [s for role in hub.load_roles(site) for s in role["scopes"]] + hub.SERVER_TOKEN_SCOPES


# ------------------------------------------------------------------ groups


def test_groups_per_institution_and_course(site):
    groups = hub.groups(site)
    for inst in ("centre", "univ-a", "univ-b", "academy"):
        assert f"inst-{inst}" in groups
    assert groups["inst-univ-b"] == ["bella", "boris", "gleb"]
    assert groups["nbgrader-smart-lighting"] == ["anna", "artem", "bella", "boris"]
    assert groups["formgrade-smart-lighting"] == ["gleb", "grader-smart-lighting", "irina"]
    assert groups["nbgrader-iot-basics"] == ["artem", "pavel"]
    assert groups["formgrade-iot-basics"] == ["grader-iot-basics", "oleg"]
    assert groups["lab-admins"] == ["lara"]
    assert "gleb" not in groups["lab-users"]  # a grader only grades
    assert "hugo" not in groups["lab-users"]


def test_hub_users_include_one_grader_account_per_course(site):
    users = hub.hub_users(site)
    assert {f"grader-{c}" for c in COURSES} <= set(users)
    assert set(users) - {f"grader-{c}" for c in COURSES} == {p.username for p in site.people}
    assert hub.admin_users(site) == ["hugo"]


# ------------------------------------------------------------------ roles


def test_student_sees_only_own_courses(site):
    scopes = hub.scopes_of(site, "anna")  # smart-lighting only
    assert "read:services!service=smart-lighting" in scopes
    assert "list:services" in scopes
    assert access_services(scopes) == {FRONT_DOOR, "access:services!service=lab"}  # no formgrader
    assert not any("iot-basics" in s for s in scopes)
    both = hub.scopes_of(site, "artem")
    assert {"read:services!service=smart-lighting", "read:services!service=iot-basics"} <= both


def test_instructor_gets_their_formgrader_and_students(site):
    scopes = hub.scopes_of(site, "irina")
    assert access_services(scopes) == {
        "access:services!service=smart-lighting",
        "access:services!service=traffic-signals",
        "access:services!service=lab",
        FRONT_DOOR,
    }
    assert "read:users:name!group=nbgrader-smart-lighting" in scopes
    assert not any("iot-basics" in s for s in scopes)


def test_grader_only_reaches_their_formgrader(site):
    assert access_services(hub.scopes_of(site, "gleb")) == {
        "access:services!service=smart-lighting",
        FRONT_DOOR,  # every person, never a service account
    }
    assert access_services(hub.scopes_of(site, "grader-smart-lighting")) == {
        "access:services!service=smart-lighting"
    }
    assert access_services(hub.scopes_of(site, "grader-iot-basics")) == {
        "access:services!service=iot-basics"
    }


def test_lab_admin_gets_no_formgrader(site):
    scopes = hub.scopes_of(site, "lara")
    assert access_services(scopes) == {FRONT_DOOR, "access:services!service=lab"}
    assert not any(c in s for s in scopes for c in COURSES)


def test_only_hub_admins_hold_admin_scopes(site):
    for username in hub.hub_users(site):
        admin = {s for s in hub.scopes_of(site, username) if s.startswith("admin")}
        assert bool(admin) == (username == "hugo"), username
    admin_roles = [
        r["name"] for r in hub.load_roles(site) if any(s.startswith("admin") for s in r["scopes"])
    ]
    assert admin_roles == [hub.HUB_ADMIN_ROLE]
    assert all(role["name"] != "admin" for role in hub.load_roles(site))
    hugo = hub.scopes_of(site, "hugo")
    assert "access:servers" not in hugo and "tokens" not in hugo
    assert "admin:users" not in hugo  # renames users, writes their groups and roles
    # People only: a course's grader account is not in the group, so not on the admin page.
    user_scopes = {s for s in hugo if s.split("!")[0].endswith(("users", "servers"))}
    assert "admin:servers!group=people" in user_scopes
    assert all(s.endswith(f"!group={hub.PEOPLE}") for s in user_scopes), user_scopes


def test_every_scope_exists_in_jupyterhub(site):
    scopes = all_role_scopes(site)
    _check_scopes_exist(scopes)  # JupyterHub's own check at startup (filters included)
    for scope in scopes:
        base, _, filter_ = scope.partition("!")
        assert base in scope_definitions, scope
        assert filter_ == "" or filter_.partition("=")[0] in {
            "user",
            "service",
            "group",
            "server",
        }, scope


def test_roles_name_only_known_groups_users_and_services(site, runtime):
    groups, users = hub.groups(site), set(hub.hub_users(site))
    names = {s["name"] for s in hub.services(site, runtime)}
    for role in hub.load_roles(site):
        assert set(role.get("groups", [])) <= set(groups), role["name"]
        assert set(role.get("users", [])) <= users, role["name"]
        assert set(role.get("services", [])) <= names, role["name"]
    role_names = [r["name"] for r in hub.load_roles(site)]
    assert len(role_names) == len(set(role_names))


# ------------------------------------------------------------------ services


def test_one_formgrader_per_course_named_after_it(site, runtime):
    by_name = {s["name"]: s for s in hub.services(site, runtime)}
    assert set(by_name) == {
        *COURSES,
        "lab",
        "status",
        "home",
        "idle-culler",
        "class-warmup",
        "job-runner",
    }
    for course_id in COURSES:
        service = by_name[course_id]
        assert service["user"] == f"grader-{course_id}"
        assert service["command"][0].endswith("/jupyterhub-singleuser")
        assert service["cwd"] == f"/home/grader-{course_id}"
        assert service["environment"]["SMARTLAB_EXCHANGE"] == "/srv/smartlab/exchange"
        # Its autograde gets kernels from the root fork server, not as the grader account.
        assert service["environment"]["SMARTLAB_SANDBOX_SOCKET"] == str(runtime.sandbox_socket)
    ports = [s["url"].rsplit(":", 1)[1] for s in by_name.values() if "url" in s]
    assert len(ports) == len(set(ports))
    assert by_name["lab"]["url"] == "http://127.0.0.1:8181"
    assert by_name["lab"]["oauth_no_confirm"] is True
    assert by_name["lab"]["command"][2:5] == ["hub_config.cli", "lab", "serve"]  # hub-managed
    # The public board reads the lab service's public route: its address, and no token.
    board_env = by_name["status"]["environment"]
    assert board_env["SMARTLAB_LAB_URL"] == by_name["lab"]["url"]
    assert not any("TOKEN" in name for name in board_env)


def test_the_job_runner_runs_as_root_and_may_call_only_the_lab_service(site, runtime):
    runner = {s["name"]: s for s in hub.services(site, runtime)}["job-runner"]
    assert "user" not in runner  # the hub's own account: root, it forks the sandbox
    assert runner["command"][2:6] == ["hub_config.cli", "jobs", "run", "--state-dir"]
    assert runner["environment"]["SMARTLAB_LAB_URL"] == runtime.lab_url
    assert runner["environment"]["SMARTLAB_BROKER_SOCKET"] == str(runtime.broker_socket)
    assert "url" not in runner  # nobody calls it: it serves no port
    # A slot per kit: every kit may run a job at once, and no granted job waits for a slot.
    command = runner["command"]
    assert command[command.index("--slots") + 1] == str(len(site.kits))
    # The lab service knows the runner by this service name (lab_service/hub_identity.py).
    from lab_service.hub_identity import HubIdentity

    assert HubIdentity.job_runner_service.default_value == "job-runner"
    roles = [r for r in hub.load_roles(site) if "job-runner" in r.get("services", [])]
    assert [r["scopes"] for r in roles] == [["access:services!service=lab"]]


# ------------------------------------------------------------------ config files


def load_config(path: Path, monkeypatch, env: dict[str, str]) -> Config:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    c = Config()
    runpy.run_path(str(path), init_globals={"get_config": lambda: c})
    return c


def test_jupyterhub_config_is_derived_from_the_site(site, monkeypatch):
    c = load_config(HUB_CONFIG / "jupyterhub_config.py", monkeypatch, {"SMARTLAB_SITE": str(DEMO)})
    from hub_config.lti.authenticator import LtiAuthenticator

    assert c.JupyterHub.authenticator_class is LtiAuthenticator  # a SiteAuthenticator too
    assert issubclass(LtiAuthenticator, hub.SiteAuthenticator)
    assert c.JupyterHub.admin_access is False
    assert c.Authenticator.allow_all is False
    assert c.Authenticator.manage_groups is True
    assert "load_groups" not in c.JupyterHub  # refused together with manage_groups
    assert c.Authenticator.allowed_users == set(hub.hub_users(site))
    assert c.Authenticator.admin_users == set()  # nobody gets JupyterHub's built-in admin
    assert c.JupyterHub.load_roles == hub.load_roles(site)
    assert [s["name"] for s in c.JupyterHub.services] == [
        s["name"] for s in hub.services(site, Runtime(site=str(DEMO), state_dir="var"))
    ]
    lab = next(s for s in c.JupyterHub.services if s["name"] == "lab")
    assert "api_token" not in lab  # a managed service gets its token from the hub
    assert c.Spawner.server_token_scopes == hub.SERVER_TOKEN_SCOPES


def test_jupyterhub_config_follows_smartlab_site(tmp_path, monkeypatch):
    other = tmp_path / "site.yaml"
    other.write_text(DEMO.read_text().replace("iot-basics", "iot-intro"))
    c = load_config(HUB_CONFIG / "jupyterhub_config.py", monkeypatch, {"SMARTLAB_SITE": str(other)})
    assert "iot-intro" in {s["name"] for s in c.JupyterHub.services}


def test_nbgrader_config_for_several_courses(monkeypatch):
    from nbgrader.auth import JupyterHubAuthPlugin
    from nbgrader.preprocessors import ClearHiddenTests

    c = load_config(
        HUB_CONFIG / "jupyter" / "nbgrader_config.py",
        monkeypatch,
        {"SMARTLAB_EXCHANGE": "/tmp/exchange"},
    )
    assert c.Exchange.path_includes_course is True
    assert c.Exchange.root == "/tmp/exchange"
    assert c.Authenticator.plugin_class is JupyterHubAuthPlugin
    assert c.Execute.timeout > 0
    assert ClearHiddenTests in c.GenerateFeedback.preprocessors
    # The formgrader's autograde and feedback: sandboxed kernels, hidden tests out of outputs.
    from grader.execute import SandboxedExecute
    from grader.feedback import HideHiddenTests

    assert SandboxedExecute in c.Autograde.autograde_preprocessors
    assert c.GenerateFeedback.preprocessors[0] is HideHiddenTests


# ------------------------------------------------------------------ login


def login(authenticator: hub.SiteAuthenticator, username: str, password: str):
    return asyncio.run(
        authenticator.authenticate(None, {"username": username, "password": password})
    )


def test_site_authenticator_checks_hashes_and_returns_groups(site):
    auth = hub.SiteAuthenticator(site_path=str(DEMO))
    assert auth.manage_groups is True
    user = login(auth, "boris", "demo-boris")
    assert user == {"name": "boris", "groups": hub.user_groups(site)["boris"], "admin": False}
    assert "nbgrader-smart-lighting" in user["groups"]
    assert login(auth, "hugo", "demo-hugo")["admin"] is False  # the hub-admin role instead
    assert login(auth, "boris", "demo-anna") is None
    assert login(auth, "grader-smart-lighting", "") is None
    assert login(auth, "nobody", "demo-nobody") is None


def test_a_folder_closed_to_other_accounts_is_named():
    import shutil
    import tempfile
    from pathlib import Path

    from hub_config.accounts import closed_to_other_accounts

    top = Path(tempfile.mkdtemp())  # not tmp_path: pytest's parents are closed (0700)
    try:
        top.chmod(0o755)
        private = top / "home"
        (private / "smartlab" / ".venv").mkdir(parents=True)
        private.chmod(0o700)
        assert closed_to_other_accounts(private / "smartlab" / ".venv") == str(private)
        assert closed_to_other_accounts(private / "smartlab" / "var" / "new") == str(private)
        private.chmod(0o751)
        assert closed_to_other_accounts(private / "smartlab" / ".venv") is None
        assert closed_to_other_accounts(private / "smartlab" / "var" / "new") is None
    finally:
        shutil.rmtree(top)


def test_hub_admins_cannot_change_group_membership():
    """Groups grant course and lab roles; the site file and LTI alone set them."""
    from jupyterhub.scopes import _expand_scope

    from hub_config.hub import HUB_ADMIN_SCOPES

    granted = set().union(*(_expand_scope(scope) for scope in HUB_ADMIN_SCOPES))
    assert {"read:groups", "list:groups"} <= granted
    assert not granted & {"admin:groups", "groups", "delete:groups"}


def test_the_front_door_is_everyone_s_landing_page(site, runtime):
    service = {s["name"]: s for s in hub.services(site, runtime)}["home"]
    assert service["url"] == f"http://127.0.0.1:{runtime.home_port}"
    # The person's token may call the lab service as them and read their name and groups.
    assert set(service["oauth_client_allowed_scopes"]) == {
        "access:services!service=lab",
        "read:users:name!user",
        "read:users:groups!user",
    }
    directory = json.loads(service["environment"]["SMARTLAB_HOME_DIRECTORY"])
    assert "password_hash" not in service["environment"]["SMARTLAB_HOME_DIRECTORY"]
    assert directory["hub_admins"] == ["hugo"]
    assert {
        "id": "iot-basics",
        "title": "Основы IoT: датчики и MQTT",
        "kits": ["envstation-1"],
    } in (directory["courses"])
    for who in ("anna", "irina", "lara", "hugo", "gleb"):
        assert FRONT_DOOR in hub.scopes_of(site, who)
