"""The pages JupyterLab's "Smart City Lab" tiles and menu lead to (labs/jupyterlab_links.py), per
person of the demo site: their hub groups as the authenticator hands them over at login."""

from __future__ import annotations

import pytest

from hub_config.hub import user_groups
from labs.jupyterlab_links import links, read_site
from site_config.paths import DEMO_SITE, SITE_ENV
from site_config.site import load_site

SITE = load_site(DEMO_SITE)
BASE = "/user/{}/"


def links_of(name: str, hub_base: str = "/") -> dict:
    return links(user_groups(SITE)[name], SITE, BASE.format(name), hub_base)


def dashboard(name: str, kit: str = "") -> str:
    page = f"/user/{name}/voila/render/dashboards/{'kit' if kit else 'overview'}.ipynb"
    return f"{page}?kit={kit}" if kit else page


def test_student_gets_home_overview_and_the_kits_of_her_courses_no_formgrader() -> None:
    got = links_of("anna")  # smart-lighting and traffic-signals
    assert got["home"] == "/services/home/"
    assert got["formgraders"] == []
    assert got["dashboards"] == [
        {"page": "overview", "url": dashboard("anna")},
        {"page": "kit", "kit": "crossing-1", "name": "Intersection Mira / Lenina",
         "url": dashboard("anna", "crossing-1")},
        {"page": "kit", "kit": "parking-1", "name": "Parking lot P1",
         "url": dashboard("anna", "parking-1")},
        {"page": "kit", "kit": "streetlight-1", "name": "Street lights, Lenina St.",
         "url": dashboard("anna", "streetlight-1")},
        {"page": "kit", "kit": "streetlight-2", "name": "Street lights, Campus Ave.",
         "url": dashboard("anna", "streetlight-2")},
    ]  # fmt: skip


def test_instructor_gets_a_formgrader_per_course_and_the_instructor_page() -> None:
    got = links_of("irina")
    assert got["formgraders"] == [
        {"course": "smart-lighting", "url": "/services/smart-lighting/formgrader"},
        {"course": "traffic-signals", "url": "/services/traffic-signals/formgrader"},
    ]
    pages = [(d["page"], d.get("kit")) for d in got["dashboards"]]
    assert ("instructor", None) in pages and ("admin", None) not in pages
    assert {kit for page, kit in pages if page == "kit"} == {
        "streetlight-1", "streetlight-2", "crossing-1", "parking-1"
    }  # fmt: skip


def test_grader_gets_the_formgrader_but_not_the_instructor_page() -> None:
    got = links_of("gleb")
    assert [f["course"] for f in got["formgraders"]] == ["smart-lighting"]
    assert "instructor" not in [d["page"] for d in got["dashboards"]]


def test_lab_admin_gets_the_admin_page_and_no_course_kits() -> None:
    got = links_of("lara")
    assert [d["page"] for d in got["dashboards"]] == ["overview", "admin"]
    assert got["formgraders"] == []


def test_hub_under_a_prefix_and_no_site_file() -> None:
    got = links(["nbgrader-smart-lighting"], None, "/jh/user/anna/", "/jh/")
    assert got == {
        "home": "/jh/services/home/",
        "dashboards": [{"page": "overview", "url": dashboard("anna").replace("/user", "/jh/user")}],
        "formgraders": [],
    }


def test_site_file_unset_or_unreadable_gives_no_kits(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.delenv(SITE_ENV, raising=False)
    assert read_site() is None  # never the demo site in place of the real one
    monkeypatch.setenv(SITE_ENV, str(tmp_path / "missing.yaml"))
    assert read_site() is None
    assert "no kits from the site file" in caplog.text
    monkeypatch.setenv(SITE_ENV, str(DEMO_SITE))
    assert read_site() == SITE


@pytest.mark.parametrize("name", ["anna", "irina"])
def test_links_are_paths_on_the_hub_host(name: str) -> None:
    got = links_of(name)
    urls = [got["home"], *(d["url"] for d in got["dashboards"])]
    urls += [f["url"] for f in got["formgraders"]]
    assert all(u.startswith("/") and not u.startswith("//") for u in urls)
