"""The class warm-up with the real hub and lab service: an instructor books a kit for a course,
and before the slot the course's students' servers start (as the students themselves, in their
usual language), nobody else's; the warm-up's token can start nobody else's either."""

from __future__ import annotations

import json
import math
import os
import pwd
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
import yaml

from hub_config.class_warmup import RECORD_FILE
from site_config.languages import COOKIE
from site_config.paths import DEMO_SITE
from tests.conftest import wait_until
from tests.e2e.conftest import DEMO_PASSWORD
from tests.e2e.hubclient import Browser, run_in_kernel
from tests.stack import Up, running

COURSE = "smart-lighting"
STUDENTS = ["anna", "artem", "bella", "boris"]  # the demo site's, by name
ENV_PROBE = (
    "import json, os; print(json.dumps({k: os.environ.get(k) for k in "
    "('USER', 'HOME', 'SMARTLAB_LANG')}))"
)
LEAD_MINUTES = 80  # the lab service books >= 60 min ahead: the slot is due at once


@pytest.fixture(scope="module")
def warm_platform(state_root: Path, home_root: Path) -> Iterator[Up]:
    site = yaml.safe_load(DEMO_SITE.read_text())
    # 6G a server: on most machines only some of the four fit, so the limit shows.
    site["servers"] = {
        "mem_limit": "6G",
        "cpu_limit": 1.0,
        "idle_timeout_minutes": 120,
        "warmup_minutes": LEAD_MINUTES,
    }
    path = state_root / "warmup-site.yaml"
    path.write_text(yaml.safe_dump(site, allow_unicode=True, sort_keys=False))
    with running(Up(state_root / "warmup-state", home_root, "--site", str(path))) as up:
        yield up


def login(up: Up, name: str, **headers: str) -> Browser:
    browser = Browser(up.hub_url, name)
    browser.http.headers.update(headers)
    browser.login(DEMO_PASSWORD.format(name))
    return browser


def book(up: Up, instructor: Browser) -> dict:
    token = instructor.post(f"/hub/api/users/{instructor.username}/tokens", json={}).json()
    starts = math.ceil((time.time() + 3600 + 60) / 900) * 900  # the service's 15-min grain
    answer = requests.post(
        up.lab_url + "/api/bookings",
        headers={"Authorization": f"token {token['token']}"},
        json={
            "kit": "streetlight-1",
            "course": COURSE,
            "starts_at": starts,
            "ends_at": starts + 3600,
        },
        timeout=30,
    )
    assert answer.status_code == 201, answer.text
    return answer.json()


def servers(hugo: Browser) -> dict[str, dict]:
    """Every person's default server, as the hub admin sees it (with its state: the pid)."""
    users = hugo.get("/hub/api/users?state=active").json()
    return {u["name"]: u["servers"][""] for u in users if u.get("servers", {}).get("")}


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().partition("=")[::2] for item in raw if b"=" in item)


def warmup_token(up: Up) -> str:
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"hub_config.class_warmup" in cmdline and str(up.state).encode() in cmdline:
            return environ(int(pid))["JUPYTERHUB_API_TOKEN"]
    raise AssertionError("the class-warmup service is not running")


def test_a_booking_warms_its_course_s_students_and_no_one_else(warm_platform: Up):
    up = warm_platform
    hugo = login(up, "hugo")
    # anna started her server from a Russian browser once: her usual language.
    anna = login(up, "anna", **{"Accept-Language": "ru-RU,ru;q=0.9"})
    anna.http.cookies.set(COOKIE, "ru")
    anna.start_server()
    assert anna.request("DELETE", "/hub/api/users/anna/server").status_code in (202, 204)
    wait_until(lambda: "anna" not in servers(hugo), timeout=60, interval=0.5)

    irina = login(up, "irina")
    booking = book(up, irina)
    record = up.state / RECORD_FILE
    wait_until(record.exists, timeout=90, interval=0.5)
    (done,) = json.loads(record.read_text())
    assert done["booking"] == booking["id"] and done["course"] == COURSE
    fits = done["room"]
    assert fits >= 1, "the machine has not even 8 GB available"
    assert done["started"] == STUDENTS[:fits] and done["left_out"] == STUDENTS[fits:]
    assert done["running"] == [] and done["failed"] == []
    assert any(f"booking {booking['id']}" in line for line in up.hub_log_tail(400))

    def all_ready() -> bool:
        now = servers(hugo)
        return all(now.get(s, {}).get("ready") for s in done["started"])

    wait_until(all_ready, timeout=240, interval=1)
    running_now = servers(hugo)
    assert set(running_now) == set(done["started"])  # nobody else's: no instructor, no other course
    for name in done["started"]:  # as the student's own login starts it: their account, env
        pid = running_now[name]["state"]["pid"]
        assert os.stat(f"/proc/{pid}").st_uid == pwd.getpwnam(name).pw_uid
        # The server's environment as its kernels get it (a forked server's /proc/<pid>/environ
        # is the forker's start-up one: hub_config/server_forker.py).
        student = login(up, name)
        student.open(f"/user/{name}/lab")
        env = json.loads(run_in_kernel(student, ENV_PROBE))
        assert env["USER"] == name and env["HOME"].endswith(f"/{name}"), env
        assert env["SMARTLAB_LANG"] == ("ru" if name == "anna" else "en"), env

    # the course's instructor sees it on the front door, in both languages
    page = irina.get("/services/home/?lang=en")
    assert f"{len(done['started'])} servers started" in page.text
    assert "Подготовка к занятию" in irina.get("/services/home/?lang=ru").text


def test_the_warm_up_token_reaches_only_students_servers(warm_platform: Up):
    token = {"Authorization": f"token {warmup_token(warm_platform)}"}
    api = warm_platform.hub_url + "/hub/api"
    for name in ["irina", "oleg", "hugo", "gleb", "lara"]:  # not a student of any course
        answer = requests.post(f"{api}/users/{name}/server", headers=token, timeout=30)
        assert answer.status_code in (403, 404), (name, answer.status_code)
        assert requests.get(f"{api}/users/{name}", headers=token, timeout=30).status_code in (
            403,
            404,
        )
    for path in ["/users/anna/tokens", "/groups/lab-admins", "/proxy"]:
        assert requests.get(api + path, headers=token, timeout=30).status_code in (403, 404)
    answer = requests.post(
        f"{api}/groups/nbgrader-{COURSE}/users", headers=token, json={"users": ["hugo"]}, timeout=30
    )
    assert answer.status_code in (403, 404)
