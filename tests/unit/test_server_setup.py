"""What the spawner puts in place for a person's server, without a hub: the `dashboards` link
in the home (hub_config.accounts.link_in_home) and the Jupyter config folders chosen by role
and language (hub_config.lab_profile)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from hub_config.accounts import AccountError, link_in_home
from hub_config.lab_profile import PROFILES, config_folders, language_of
from labs.board import DASHBOARDS

NOBODY = 65534


@pytest.fixture
def home(tmp_path: Path) -> Path:
    (tmp_path / "anna").mkdir()
    return tmp_path / "anna"


def test_the_link_is_made_then_kept(home):
    assert link_in_home(home, "dashboards", DASHBOARDS) == "made"
    assert os.readlink(home / "dashboards") == str(DASHBOARDS)
    assert (home / "dashboards" / "kit.ipynb").exists()
    assert link_in_home(home, "dashboards", DASHBOARDS) == "kept"


def test_our_link_to_a_moved_checkout_is_replaced(home):
    os.symlink("/old/checkout/labs/dashboards", home / "dashboards")
    assert link_in_home(home, "dashboards", DASHBOARDS) == "replaced"
    assert os.readlink(home / "dashboards") == str(DASHBOARDS)
    assert sorted(os.listdir(home)) == ["dashboards"]  # no spare link left behind


def test_a_users_own_folder_or_file_is_left(home):
    (home / "dashboards").mkdir()
    (home / "dashboards" / "mine.ipynb").write_text("{}")
    assert link_in_home(home, "dashboards", DASHBOARDS) == "left"
    assert (home / "dashboards" / "mine.ipynb").read_text() == "{}"


@pytest.mark.skipif(os.geteuid() != 0, reason="a link owned by another account needs root")
def test_a_link_the_user_planted_is_neither_followed_nor_replaced(home, tmp_path):
    victim = tmp_path / "victim" / "labs" / "dashboards"  # even named like ours
    victim.mkdir(parents=True)
    os.symlink(victim, home / "dashboards")
    os.lchown(home / "dashboards", NOBODY, NOBODY)
    before = os.stat(victim)
    assert link_in_home(home, "dashboards", DASHBOARDS) == "left"
    assert os.readlink(home / "dashboards") == str(victim)
    after = os.stat(victim)
    assert (after.st_uid, after.st_mode, os.listdir(victim)) == (before.st_uid, before.st_mode, [])


def test_a_home_that_is_a_link_is_refused(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", tmp_path / "anna")
    with pytest.raises(AccountError, match="symbolic link"):
        link_in_home(tmp_path / "anna", "dashboards", DASHBOARDS)
    assert os.listdir(tmp_path / "elsewhere") == []


def disabled(folders: list[Path]) -> set[str]:
    found: set[str] = set()
    for folder in folders:
        page = folder / "labconfig" / "page_config.json"
        if page.exists():
            found |= {k for k, v in json.loads(page.read_text())["disabledExtensions"].items() if v}
    return found


INSTRUCTOR_TOOLS = {
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:course-list",
    "@jupyter/nbgrader:menu",
}


def test_students_get_no_instructor_tools_instructors_keep_create_assignment():
    student = disabled(config_folders(["nbgrader-smart-lighting", "people"], "en"))
    instructor = disabled(config_folders(["formgrade-smart-lighting", "people"], "en"))
    assert student >= INSTRUCTOR_TOOLS
    assert "@jupyterlab/apputils-extension:announcements" in student & instructor
    assert "@jupyter/nbgrader:create-assignment" not in instructor
    for needed in ("assignment-list", "validate-assignment"):
        assert f"@jupyter/nbgrader:{needed}" not in student | instructor


def test_the_plugin_ids_are_nbgraders_own():
    """The ids above are those of the installed lab extension (a renamed plugin would make the
    page config silently ineffective)."""
    import sys

    static = Path(sys.prefix) / "share/jupyter/labextensions/@jupyter/nbgrader/static"
    code = "".join(p.read_text(errors="replace") for p in static.glob("*.js"))
    for plugin in INSTRUCTOR_TOOLS - {"@jupyter/nbgrader:formgrader"}:
        assert f'id:"{plugin}"' in code, plugin
    assert '"@jupyter/nbgrader:formgrader"' in code


def test_russian_is_a_default_setting_of_the_translation_plugin():
    folders = config_folders([], "ru")
    assert PROFILES / "ru" in folders and PROFILES / "en" not in config_folders([], "en")
    overrides = json.loads((PROFILES / "ru/labconfig/default_setting_overrides.json").read_text())
    assert overrides["@jupyterlab/translation-extension:plugin"]["locale"] == "ru_RU"


def request(accept: str | None, cookie: str | None, who: str = "anna") -> SimpleNamespace:
    headers = {"Accept-Language": accept} if accept else {}
    return SimpleNamespace(
        request=SimpleNamespace(headers=headers),
        get_cookie=lambda name: cookie,
        current_user=SimpleNamespace(name=who),
    )


@pytest.mark.parametrize(
    ("accept", "cookie", "language"),
    [("ru-RU,ru;q=0.9", None, "ru"), ("ru", "en", "en"), (None, "ru", "ru"), (None, None, "en")],
)
def test_the_language_comes_from_the_request_that_started_the_server(accept, cookie, language):
    assert language_of(request(accept, cookie), "anna") == language
    assert language_of(None, "anna") == "en"
    # A hub admin who starts anna's server from a Russian browser does not choose her language.
    assert language_of(request(accept, cookie, who="hugo"), "anna") == "en"
