"""The front door's page logic (labs/home): sections per role, escaping, language choice."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlencode

import pytest

from labs.home import exchange
from labs.home.app import ENVIRONMENT
from labs.home.lab_calls import spark_of
from labs.home.model import Directory, build_page, roles, sparkline
from labs.home.texts import Texts
from site_config.languages import negotiate

HOSTILE = "<script>alert(1)</script>"
DIRECTORY = Directory.from_json(
    {
        "courses": [
            {"id": "lights", "title": "Умное освещение", "kits": ["sl-1"]},
            {"id": "traffic", "title": "Traffic", "kits": ["x-1", "sl-1"]},
        ],
        "hub_admins": ["hugo"],
    }
)
KITS = [
    {"id": "sl-1", "name": HOSTILE, "model": "street-lighting", "pool": "in-pool",
     "reason": "", "online": True, "queue_length": 2},
    {"id": "x-1", "name": "Crossing", "model": "intersection", "pool": "needs-attention",
     "reason": "no acknowledgement of the safe state", "online": False, "queue_length": 0},
]  # fmt: skip


def spawn(quoted_name: str, target: str) -> str:
    """A link into the person's server: through the hub's spawn page, which starts it if needed."""
    return f"/hub/spawn/{quoted_name}?{urlencode({'next': target})}"


def page(name: str, groups: list[str], lang: str = "en", **lab: object) -> dict:
    return build_page(
        name,
        groups,
        lang,
        DIRECTORY,
        {"kits": KITS, **lab},
        {"lights": ["01-energy"]},
        {"lights": {"01-energy": "2026-12-20"}},
        {"traffic": 3},
    )


def render(p: dict, lang: str = "en", **extra: object) -> str:
    handler = SimpleNamespace()
    return ENVIRONMENT.get_template("home.html").render(
        t=Texts(lang),
        lang=lang,
        centre=Texts(lang).centre,
        switch={"en": "/services/home/?lang=en", "ru": "/services/home/?lang=ru"},
        prefix="/services/home/",
        nonce="n0nce",
        page=p,
        lab_down=extra.get("lab_down"),
        handler=handler,
    )


def test_roles_come_from_groups_and_only_known_courses_count() -> None:
    who = roles("anna", ["nbgrader-lights", "nbgrader-ghost", "people"], DIRECTORY)
    assert who.student_of == ("lights",) and not who.teaches and not who.nothing
    teacher = ["instructors-traffic", "formgrade-traffic", "formgrade-lights"]
    who = roles("irina", teacher, DIRECTORY)
    assert who.teaches == ("lights", "traffic")
    assert roles("lara", ["lab-admins"], DIRECTORY).lab_admin
    assert roles("hugo", ["people"], DIRECTORY).hub_admin
    assert roles("nobody", ["people"], DIRECTORY).nothing


def test_student_sees_courses_assignments_kits_and_one_click_links() -> None:
    p = page("anna", ["nbgrader-lights", "nbgrader-traffic"], "ru")
    assert [c["title"] for c in p["courses"]] == ["Умное освещение", "Traffic"]
    assert p["courses"][0]["assignments"] == [{"name": "01-energy", "due": "2026-12-20"}]
    assert [k["id"] for k in p["kits"]] == ["sl-1", "x-1"]  # each kit once
    assert p["kits"][0]["dashboard"] == (
        spawn("anna", "/user/anna/voila/render/dashboards/kit.ipynb?kit=sl-1&lang=ru")
    )
    assert p["kits"][1]["pool"] == "требует внимания"  # no raw code
    assert p["lab_url"] == spawn("anna", "/user/anna/lab")
    assert "teaching" not in p and "health" not in p and "hub_admin_url" not in p
    html = render(p, "ru")
    assert '<html lang="ru">' in html and "Смарт Сити Лаб" in html
    assert "Открыть панель стенда" in html and "срок: 2026-12-20" in html


def test_instructor_admin_and_hub_admin_sections() -> None:
    used = {"kit": "x-1", "sessions": 4, "session_seconds": 5400, "mean_queue_wait_s": 0}
    p = page("irina", ["instructors-traffic", "formgrade-traffic"], usage={"kits": [used]})
    (course,) = p["teaching"]
    assert course["formgrader"] == "/services/traffic/formgrader"
    assert course["submissions"] == 3 and course["usage"] == "Kit use: 4 sessions, 1.5 h"
    assert p["calendar_url"] == spawn(
        "irina", "/user/irina/voila/render/dashboards/instructor.ipynb?lang=en"
    )
    html = render(p)
    assert 'href="/services/traffic/formgrader" target="_blank"' in html
    admin = page("lara", ["lab-admins"])
    assert [k["attention"] for k in admin["health"]] == [False, True]
    assert "no acknowledgement of the safe state" in render(admin)
    assert page("hugo", ["people"])["hub_admin_url"] == "/hub/admin"
    plain = render(page("nobody", ["people"]))
    assert 'href="/services/status/"' in plain and "no course or lab role" in plain


def test_hostile_strings_are_escaped() -> None:
    p = page(HOSTILE, ["nbgrader-lights", "lab-admins"], error=HOSTILE)
    p["lab_error"] = HOSTILE
    html = render(p)
    assert HOSTILE not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert p["lab_url"] == spawn(
        "%3Cscript%3Ealert%281%29%3C%2Fscript%3E",
        "/user/%3Cscript%3Ealert%281%29%3C%2Fscript%3E/lab",
    )


def test_unreachable_lab_service_still_renders_a_page() -> None:
    p = build_page("anna", ["nbgrader-lights"], "en", DIRECTORY, {}, {}, {}, {})
    html = render(p, lab_down=True)
    assert "lab service cannot be reached" in html and "Умное освещение" in html


def test_language_choice() -> None:
    assert negotiate("ru-RU,ru;q=0.9,en;q=0.5") == "ru"
    assert negotiate("ru", cookie="en") == "en"
    assert negotiate("en", requested="ru", cookie="en") == "ru"
    assert Texts("de").lang == "en" and Texts("ru").centre == "Смарт Сити Лаб"


def test_exchange_is_listed_without_following_links(tmp_path: Path) -> None:
    out = tmp_path / "lights" / "outbound"
    (out / "01-energy").mkdir(parents=True)
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", out / "02-linked")
    assert exchange.released_assignments(tmp_path, "lights") == ["01-energy"]
    assert exchange.released_assignments(tmp_path, "../lights") == []
    inbound = tmp_path / "lights" / "inbound"
    for name in ("anna+01-energy+2026-01-01 10:00:00+ab", "anna+01-energy+2026-01-02+cd",
                 "boris+01-energy+2026-01-01+ef"):  # fmt: skip
        (inbound / name).mkdir(parents=True)
    assert exchange.submissions(tmp_path, "lights") == 2
    os.symlink(tmp_path / "lights", tmp_path / "linked")
    assert exchange.submissions(tmp_path, "linked") is None
    schedule = tmp_path / "schedule.json"
    schedule.write_text('{"lights": {"01-energy": "2026-12-20"}, "bad": 3}')
    assert exchange.due_dates(schedule) == {"lights": {"01-energy": "2026-12-20"}}
    assert sparkline([1, 2, 3]) and sparkline([1]) is None


def test_the_thumbnail_follows_the_liveliest_sensor_named_from_the_descriptor() -> None:
    rows = [
        {"ts": i, "values": {"ambient-light": 5.0, "lamp-power": float(i % 7)}} for i in range(90)
    ]
    spark = spark_of(rows)
    assert spark is not None and spark["sensor"] == "lamp-power"
    assert len(spark["points"].split()) <= 61
    p = page("anna", ["nbgrader-lights"], sparklines={"sl-1": spark})
    assert p["kits"][0]["sparkline"]["sensor"] == "Lamp power"
    assert 'aria-label="Recent values of Lamp power"' in render(p)


def test_due_dates_come_from_the_gradebook_into_a_public_schedule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from nbgrader.api import Gradebook

    from hub_config.course_dirs import write_schedule
    from hub_config.grader_home import due_dates
    from site_config.runtime import Runtime

    # nbgrader runs alembic from PATH to make the gradebook
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    root = tmp_path / "course"
    root.mkdir()
    assert due_dates(str(root)) == {}  # no gradebook yet
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        gradebook.add_assignment("01-energy", duedate="2026-12-20 18:00:00")
        gradebook.add_assignment("02-dimming")
    due = due_dates(str(root))
    assert due == {"01-energy": "2026-12-20 18:00:00.000000"}
    path = write_schedule(Runtime(site="x", state_dir=str(tmp_path)), {"lights": due})
    assert path.stat().st_mode & 0o777 == 0o644
    assert exchange.due_dates(path) == {"lights": due}


def test_lab_service_answers_become_one_line_or_unreachable() -> None:
    import asyncio
    import json

    from tornado.web import Application, RequestHandler

    from labs.home.lab_calls import gather
    from site_config.runtime import free_port

    seen: list[str] = []

    class Refuse(RequestHandler):
        def get(self, *_: str) -> None:
            seen.append(self.request.headers["Accept-Language"])
            self.set_status(403)
            self.finish(json.dumps({"error": "нет доступа к сервису лаборатории"}))

    async def scenario() -> tuple[dict, dict]:
        port = free_port()
        server = Application([(r"/api/(.*)", Refuse)]).listen(port, "127.0.0.1")
        refused = await gather(f"http://127.0.0.1:{port}", "t", "ru", usage=True, spark_kits=[])
        server.stop()
        down = await gather(
            f"http://127.0.0.1:{free_port()}", "t", "ru", usage=False, spark_kits=[]
        )
        return refused, down

    refused, down = asyncio.run(scenario())
    assert refused["error"] == "нет доступа к сервису лаборатории" and "kits" not in refused
    assert set(seen) == {"ru"}
    assert down.get("unreachable") is True


def test_kits_are_named_in_the_page_language_from_the_site_file() -> None:
    from hub_config.hub import home_directory
    from site_config.paths import DEMO_SITE
    from site_config.site import load_site

    directory = Directory.from_json(home_directory(load_site(DEMO_SITE)))
    kits = [{"id": "streetlight-1", "name": "Street lights, Lenina St.", "online": True}]
    groups = ["nbgrader-smart-lighting"]
    ru = build_page("anna", groups, "ru", directory, {"kits": kits}, {}, {}, {})
    en = build_page("anna", groups, "en", directory, {"kits": kits}, {}, {}, {})
    assert ru["kits"][0]["name"] != en["kits"][0]["name"] == "Street lights, Lenina St."
    assert "Ленина" in ru["kits"][0]["name"]


def test_students_ended_sessions_are_links_to_their_replay_newest_first() -> None:
    sessions = [
        {"kit": "sl-1", "state": "released", "granted_at": 1_800_000_000.0,
         "released_at": 1_800_000_900.0},
        {"kit": "sl-1", "state": "active", "granted_at": 1_800_009_000.0, "released_at": None},
        {"kit": "x-1", "state": "released", "granted_at": 1_800_005_000.0,
         "released_at": 1_800_005_600.5},
    ]  # fmt: skip
    p = page("anna", ["nbgrader-lights"], "ru", recordings=sessions)
    assert [r["url"] for r in p["recordings"]] == [
        spawn(
            "anna",
            "/user/anna/voila/render/dashboards/kit.ipynb?kit=x-1&start=1800005000.000"
            "&end=1800005600.500&lang=ru",
        ),
        spawn(
            "anna",
            "/user/anna/voila/render/dashboards/kit.ipynb?kit=sl-1&start=1800000000.000"
            "&end=1800000900.000&lang=ru",
        ),
    ]  # the live session is not a recording yet
    html = render(p, "ru")
    assert "Записи моих сеансов" in html and "Повтор: x-1" in html
    nothing = render(page("anna", ["nbgrader-lights"], "ru"), "ru")
    assert "Записанных сеансов пока нет" in nothing
