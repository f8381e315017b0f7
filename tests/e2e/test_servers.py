"""What every user's server offers, on the real platform (`smartlab up`): the dashboards through
the `dashboards` link the spawner puts in each home, JupyterLab set up for the person's role and
language, and the hub admin page for hub admins."""

from __future__ import annotations

import json
import os
import pwd
import re
import time

import pytest
from playwright.sync_api import sync_playwright

from hub_config.accounts import can_isolate
from hub_config.spawner import DASHBOARDS_LINK
from labs.board import DASHBOARDS
from tests.e2e.hubclient import Browser, json_of, run_in_kernel
from tests.stack import ARTIFACTS as DASHBOARD_ARTIFACTS
from tests.stack import launch_chromium

pytestmark = [pytest.mark.broker]

ARTIFACTS = DASHBOARD_ARTIFACTS.parent / "servers"
root_only = pytest.mark.skipif(not can_isolate(), reason="per-user accounts need root")

PROBE = """
import json, os
seen = {"link": os.readlink("dashboards") if os.path.islink("dashboards") else None,
        "isdir": os.path.isdir("dashboards"), "kit": os.path.exists("dashboards/kit.ipynb")}
try:
    open("dashboards/mine.txt", "w").close()
    seen["write"] = "written"
except OSError as err:
    seen["write"] = type(err).__name__
print(json.dumps(seen))
"""


def restart(browser: Browser) -> None:
    name = browser.username
    answer = browser.request("DELETE", f"/hub/api/users/{name}/server")
    assert answer.status_code in (202, 204), answer.text
    deadline = time.monotonic() + 60
    while browser.get(f"/hub/api/users/{name}").json().get("servers"):
        assert time.monotonic() < deadline, f"{name}'s server did not stop"
        time.sleep(0.5)
    browser.start_server()


def hub_log(platform) -> str:
    return (platform.state / "hub" / "jupyterhub.log").read_text(errors="replace")


def test_every_server_serves_the_dashboards_through_a_read_only_link(platform, browsers):
    anna = browsers["anna"]
    anna.start_server()
    started = time.monotonic()
    page = anna.get(f"/user/anna/voila/render/{DASHBOARDS_LINK}/kit.ipynb?kit=streetlight-1")
    took = time.monotonic() - started
    assert page.status_code == 200, page.text[:300]
    assert "smartlab" in page.text and "streetlight-1" in page.text, page.text[:500]
    seen = json.loads(run_in_kernel(anna, PROBE))
    assert seen["link"] == str(DASHBOARDS) and seen["kit"], seen
    if can_isolate():  # the checkout is root's: anna reads the notebooks, never writes them
        assert seen["write"] == "PermissionError", seen
    print(f"kit dashboard through the link: HTTP 200 in {took:.1f} s")


@root_only
def test_a_users_own_dashboards_folder_is_kept(platform, browsers):
    artem = browsers["artem"]
    artem.start_server()
    artem.open("/user/artem/lab")  # the server's cookies (its _xsrf) for the kernel calls
    run_in_kernel(
        artem,
        "import os; os.unlink('dashboards'); os.mkdir('dashboards');"
        "open('dashboards/notes.txt', 'w').write('mine')",
    )
    restart(artem)
    home = platform.runtime.home("artem") / DASHBOARDS_LINK
    assert not home.is_symlink() and (home / "notes.txt").read_text() == "mine"
    assert "artem has an own dashboards" in hub_log(platform)


@root_only
def test_root_does_not_follow_a_planted_dashboards_link(platform, browsers, tmp_path_factory):
    """boris points `dashboards` at a folder of root's: root neither replaces his link nor
    touches what it points at (no link, no owner or mode change made through it)."""
    victim = tmp_path_factory.mktemp("victim")
    os.chmod(victim, 0o755)
    before = (os.stat(victim).st_uid, os.stat(victim).st_mode, sorted(os.listdir(victim)))
    boris = browsers["boris"]
    boris.start_server()
    boris.open("/user/boris/lab")
    plant = f"import os; os.unlink('dashboards'); os.symlink({str(victim)!r}, 'dashboards')"
    run_in_kernel(boris, plant)
    restart(boris)
    link = platform.runtime.home("boris") / DASHBOARDS_LINK
    assert os.readlink(link) == str(victim)
    assert os.lstat(link).st_uid == pwd.getpwnam("boris").pw_uid  # still his own link
    after = (os.stat(victim).st_uid, os.stat(victim).st_mode, sorted(os.listdir(victim)))
    assert after == before
    assert "boris has an own dashboards" in hub_log(platform)


# ------------------------------------------------------------ JupyterLab by role and language

STUDENT_HIDDEN = {
    "@jupyter/nbgrader:create-assignment",
    "@jupyter/nbgrader:formgrader",
    "@jupyter/nbgrader:course-list",
    "@jupyter/nbgrader:menu",
    "@jupyterlab/apputils-extension:announcements",
}


def page_config(browser: Browser) -> dict:
    page = browser.open(f"/user/{browser.username}/lab").text
    found = re.search(
        r'<script id="jupyter-config-data" type="application/json">(.*?)</script>', page, re.S
    )
    assert found, page[:300]
    return json.loads(found.group(1))


def test_jupyterlab_fits_the_role(platform, browsers):
    anna, irina = browsers["anna"], browsers["irina"]
    for person in (anna, irina):
        person.start_server()
    student = set(page_config(anna)["disabledExtensions"])  # the page gets the ids as a list
    instructor = set(page_config(irina)["disabledExtensions"])
    assert student >= STUDENT_HIDDEN
    assert "@jupyter/nbgrader:create-assignment" not in instructor
    assert "@jupyterlab/apputils-extension:announcements" in instructor
    for needed in ("@jupyter/nbgrader:assignment-list", "@jupyter/nbgrader:validate-assignment"):
        assert needed not in student | instructor
    # The server side agrees: no formgrader or course list in a person's server; the
    # assignment list (fetch, submit) answers.
    assert anna.get("/user/anna/formgrader").status_code == 404
    assert anna.get("/user/anna/formgraders").status_code == 404
    assert anna.get("/user/anna/assignments?course_id=smart-lighting").status_code == 200


def locale(browser: Browser, plugin: str) -> str:
    """JupyterLab's locale for `browser`'s user: their own setting, else the default (the
    schema's, with the overrides on the config path applied)."""
    found = json_of(browser.get(f"/user/{browser.username}/lab/api/settings/{plugin}"))
    return found["settings"].get("locale") or found["schema"]["properties"]["locale"]["default"]


def test_a_russian_browser_gets_jupyterlab_in_russian(platform, browsers):
    pavel = Browser(platform.hub_url, "pavel")
    pavel.http.headers["Accept-Language"] = "ru-RU,ru;q=0.9,en;q=0.5"
    pavel.login("demo-pavel")
    pavel.start_server()
    pavel.open("/user/pavel/lab")
    plugin = "@jupyterlab/translation-extension:plugin"
    assert locale(pavel, plugin) == "ru_RU"
    anna = browsers["anna"]
    anna.start_server()  # started without Accept-Language: English
    anna.open("/user/anna/lab")
    assert locale(anna, plugin) == "default"
    pack = json_of(pavel.get("/user/pavel/lab/api/translations/ru_RU"))
    assert pack["data"], "the Russian language pack is installed"
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            context = chromium.new_context(locale="ru-RU")
            context.add_cookies(cookies_of(pavel))
            page = context.new_page()
            page.goto(pavel.url("/user/pavel/lab"), timeout=120_000)
            menu = page.locator(".lm-MenuBar-itemLabel", has_text=re.compile("^Файл$"))
            menu.first.wait_for(timeout=120_000)
            shot(page, "jupyterlab-ru")
        finally:
            chromium.close()


# ------------------------------------------------------------ the hub admin page


def cookies_of(browser: Browser) -> list[dict]:
    return [
        {"name": c.name, "value": c.value, "url": browser.url(c.path or "/")}
        for c in browser.http.cookies
    ]


def shot(page, name: str) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


FORBIDDEN_BUTTONS = ["Access Server", "Spawn Page", "Add Users", "Manage Groups", "Shutdown Hub"]


def visible_buttons(page) -> list[str]:
    found = page.locator("#react-admin-hook button:visible, #react-admin-hook a:visible")
    return [text.strip() for text in found.all_inner_texts() if text.strip()]


def row(page, username: str):
    return page.locator(f'[data-testid="user-row-{username}"]')


def test_the_hub_admin_page_lists_people_and_no_button_answers_403(platform, browsers):
    anna, hugo = browsers["anna"], browsers["hugo"]
    anna.start_server()
    refused: list[str] = []
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            context = chromium.new_context()
            context.add_cookies(cookies_of(hugo))
            page = context.new_page()
            page.on(
                "response",
                lambda r: (
                    refused.append(f"{r.request.method} {r.url}") if r.status == 403 else None
                ),
            )
            page.goto(hugo.url("/hub/admin"))
            row(page, "anna").wait_for()
            names = page.locator('[data-testid^="user-name-div-"]').all_inner_texts()
            assert "irina" in names and "hugo" in names, names
            assert not [n for n in names if n.startswith("grader-")], names
            shot(page, "hub-admin")
            buttons = visible_buttons(page)
            assert "Stop Server" in buttons and "Start Server" in buttons, buttons
            assert not set(FORBIDDEN_BUTTONS) & set(buttons), buttons
            # Stop and start anna's server from her row.
            row(page, "anna").get_by_role("button", name="Stop Server").click()
            start = row(page, "anna").get_by_role("button", name="Start Server")
            start.wait_for(timeout=60_000)
            start.click()
            row(page, "anna").get_by_role("button", name="Stop Server").wait_for(timeout=120_000)
            # Edit User keeps only "Delete user" (hub admins may remove, not edit, people).
            row(page, "bella").get_by_role("button", name="Edit User").click()
            page.get_by_role("button", name="Delete user").wait_for()
            assert set(visible_buttons(page)) == {"Back", "Delete user"}, visible_buttons(page)
            shot(page, "hub-admin-edit-user")
            page.get_by_role("button", name="Delete user").click()
            row(page, "anna").wait_for()
            assert row(page, "bella").count() == 0
            page.get_by_role("button", name="Stop All").click()
            row(page, "anna").get_by_role("button", name="Start Server").wait_for(timeout=60_000)
        finally:
            chromium.close()
    assert refused == []
    # Service accounts are out of reach on the API too (not in the group people).
    assert hugo.request("DELETE", "/hub/api/users/grader-smart-lighting").status_code == 404
    # bella stays deleted until the hub restarts (JupyterHub also drops her from its allowed
    # users): this test comes last in tests/e2e, and no other test of the package uses her.
    assert hugo.get("/hub/api/users/bella").status_code == 404
