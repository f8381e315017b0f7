"""The class warm-up's choice: which bookings, which students, how many fit, and its record."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from hub_config import class_warmup as cw
from hub_config import hub
from hub_config.lab_profile import language_of
from hub_config.spawner import SiteSpawner
from lab_service.store import BookingRow, KitRow, SharingStore
from labs.home.model import Directory, build_page
from labs.home.warmups import latest_by_course
from site_config.paths import DEMO_SITE, LAB_DB_URL_ENV
from site_config.runtime import Runtime
from site_config.site import Servers, load_site

G = 1024**3
NOW = 1_800_000_000.0


def booking(id_: int, starts_in_min: float, course: str = "lights") -> cw.Booking:
    starts = NOW + starts_in_min * 60
    return cw.Booking(id_, course, "sl-1", starts, starts + 3600)


def test_a_slot_is_due_within_the_lead_and_until_it_begins():
    found = cw.due(
        [booking(1, 11), booking(2, 10), booking(3, 0.5), booking(4, 0), booking(5, -5)],
        NOW,
        lead_s=600,
    )
    # 11 min ahead: not yet; 10 and 0.5: now; begun or past: the students log in themselves.
    assert [b.id for b in found] == [3, 2]


def test_as_many_as_fit_the_memory_keeping_a_reserve():
    assert cw.room(available=24 * G, reserve=2 * G, mem_limit=2 * G) == 11
    assert cw.room(available=3 * G, reserve=2 * G, mem_limit=2 * G) == 0
    assert cw.room(available=1 * G, reserve=2 * G, mem_limit=2 * G) == 0  # never negative
    assert cw.room(available=24 * G, reserve=0, mem_limit=0) == 0  # no limit: no guess
    assert cw.size_bytes("2G") == 2 * G and cw.size_bytes("512M") == 512 * 1024**2
    with pytest.raises(ValueError):
        cw.size_bytes("2 gigs")


def test_students_are_chosen_by_name_skipping_running_servers():
    start, left = cw.choose(["st3", "st1", "st2", "st4"], running={"st2"}, fits=2)
    assert start == ["st1", "st3"] and left == ["st4"]
    # the same question gives the same answer whatever order the hub lists them in
    assert cw.choose(["st4", "st2", "st1", "st3"], {"st2"}, 2) == (start, left)
    assert cw.choose(["st1"], {"st1"}, 5) == ([], [])


class FakeHub:
    """The hub's answers (the real one: tests/e2e/test_class_warmup.py)."""

    def __init__(self, groups: dict[str, list[str]], running: set[str]) -> None:
        self.groups, self.running, self.started = groups, running, []

    def students(self, course: str) -> list[str]:
        return self.groups.get(course, [])

    def has_server(self, name: str) -> bool:
        return name in self.running

    def start(self, name: str) -> bool:
        assert name not in self.running, "a running server was started again"
        self.started.append(name)
        return name != "broken"


def test_a_warm_up_starts_only_the_course_s_students_without_a_server():
    fake = FakeHub({"lights": ["b", "a", "c", "broken"], "traffic": ["t"]}, running={"a"})
    done = cw.warm(booking(7, 5), fake, available=8 * G, reserve=2 * G, mem_limit=2 * G)
    assert fake.started == ["b", "broken", "c"]  # room for 3: all of them, by name
    assert done.started == ["b", "c"] and done.failed == ["broken"]
    assert done.running == ["a"] and done.left_out == [] and done.room == 3
    small = FakeHub({"lights": ["b", "a", "c"]}, running=set())
    done = cw.warm(booking(8, 5), small, available=6 * G, reserve=2 * G, mem_limit=2 * G)
    assert done.started == ["a", "b"] and done.left_out == ["c"]


def store_with_bookings(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'lab-service.sqlite'}"
    store = SharingStore(url)
    with store.transaction() as db:
        db.add(KitRow(id="sl-1", model="street-lighting", registered_at=NOW))
        db.flush()
        for id_, minutes, cancelled in [(1, 5, False), (2, 5, True), (3, 30, False)]:
            db.add(
                BookingRow(
                    id=id_,
                    kit_id="sl-1",
                    course="lights",
                    booked_by="irina",
                    institution="univ-a",
                    starts_at=NOW + minutes * 60,
                    ends_at=NOW + minutes * 60 + 3600,
                    created_at=NOW - 86400,
                    cancelled=cancelled,
                )
            )
    store.close()
    return url


def test_bookings_are_read_from_the_lab_database_read_only(tmp_path):
    url = store_with_bookings(tmp_path)
    found = cw.coming_bookings(url, NOW, lead_s=600)
    assert [(b.id, b.course, b.kit) for b in found] == [(1, "lights", "sl-1")]  # not cancelled
    assert cw.coming_bookings(f"sqlite:///{tmp_path / 'none.sqlite'}", NOW, 600) == []
    assert not (tmp_path / "none.sqlite").exists()  # read-only: never created
    engine = cw.create_engine(cw.read_only_url(url))
    with pytest.raises(Exception, match="readonly"), engine.begin() as db:
        db.exec_driver_sql("DELETE FROM bookings")
    engine.dispose()


def test_each_booking_is_warmed_once_and_recorded(tmp_path, monkeypatch):
    url = store_with_bookings(tmp_path)
    args = argparse.Namespace(
        lab_db=url, lead_minutes=10, record=tmp_path / "w.json", reserve=2 * G, mem_limit=2 * G
    )
    monkeypatch.setattr(cw, "available_memory", lambda: 10 * G)
    fake = FakeHub({"lights": ["s1", "s2"]}, running=set())
    (done,) = cw.run_once(args, fake, NOW)
    assert done.booking == 1 and fake.started == ["s1", "s2"]
    assert cw.run_once(args, fake, NOW + 60) == []  # the same booking: not again
    assert (args.record.stat().st_mode & 0o777) == 0o600  # student names: the hub's only
    assert json.loads(args.record.read_text())[0]["started"] == ["s1", "s2"]


def test_warmed_servers_outlive_the_lead_the_culler_is_longer():
    assert Servers().warmup_minutes == 10 < Servers().idle_timeout_minutes
    with pytest.raises(ValidationError, match="idle culler"):
        Servers(warmup_minutes=60, idle_timeout_minutes=60)
    assert Servers(warmup_minutes=0).warmup_minutes == 0


def test_the_service_holds_only_its_courses_students_servers(models):
    site = load_site(DEMO_SITE, models)
    runtime = Runtime(site=str(DEMO_SITE), state_dir="/srv/smartlab", isolate=True)
    (role,) = [r for r in hub.load_roles(site) if r["name"] == hub.WARMUP_SERVICE]
    assert role["services"] == [hub.WARMUP_SERVICE] and "users" not in role
    assert {s.partition("!")[0] for s in role["scopes"]} == {"read:groups", "servers"}
    assert all(s.partition("!")[2].startswith("group=nbgrader-") for s in role["scopes"])
    (service,) = [s for s in hub.services(site, runtime) if s["name"] == hub.WARMUP_SERVICE]
    assert "user" not in service and "url" not in service  # no HTTP, runs beside the hub
    assert service["environment"][LAB_DB_URL_ENV] == "sqlite:////srv/smartlab/lab-service.sqlite"
    lead = service["command"][service["command"].index("--lead-minutes") + 1]
    assert lead == str(site.servers.warmup_minutes)
    off = site.model_copy(update={"servers": Servers(warmup_minutes=0)})
    assert hub.WARMUP_SERVICE not in {s["name"] for s in hub.services(off, runtime)}


def test_a_database_password_stays_off_the_warm_ups_command_line(models):
    """Every account can read a process's command line; only its own its environment."""
    site = load_site(DEMO_SITE, models)
    url = "postgresql+psycopg://lab:s3cret@db.example/lab"
    runtime = Runtime(site=str(DEMO_SITE), state_dir="/srv/smartlab", lab_db_url=url)
    (service,) = [s for s in hub.services(site, runtime) if s["name"] == hub.WARMUP_SERVICE]
    assert not any("s3cret" in part for part in service["command"])
    assert service["environment"][LAB_DB_URL_ENV] == url


def test_a_server_started_by_the_warm_up_keeps_the_owner_s_usual_language():
    service = SimpleNamespace(
        current_user=SimpleNamespace(kind="service", name="anna"),  # even named like her
        request=SimpleNamespace(headers={"Accept-Language": "en"}),
        get_cookie=lambda name: None,
    )
    assert language_of(service, "anna", usual="ru") == "ru"
    assert language_of(service, "anna") == "en"
    assert language_of(None, "anna", usual="bogus") == "en"
    spawner = SiteSpawner.__new__(SiteSpawner)  # the state methods only
    SiteSpawner.load_state(spawner, {"pid": 12, "language": "ru"})
    assert spawner.usual_language == "ru"
    spawner.clear_state()
    assert spawner.get_state() == {"language": "ru"}  # kept across stops, in the hub's db


def test_instructors_see_the_latest_warm_up_of_their_course(tmp_path):
    record = tmp_path / "w.json"
    entry = {"booking": 1, "course": "lights", "kit": "sl-1", "starts_at": NOW, "at": NOW - 600}
    record.write_text(
        json.dumps(
            [
                {**entry, "started": ["a"]},
                {**entry, "booking": 2, "started": ["a", "b"], "running": ["c"]},
                {"course": "<script>"},
            ]
        )
    )
    latest = latest_by_course(record)
    assert latest["lights"]["booking"] == 2
    directory = Directory.from_json({"courses": [{"id": "lights", "title": "Lights"}]})
    for lang, words in [("en", "2 servers started"), ("ru", "запущено серверов: 2")]:
        page = build_page(
            "irina", ["instructors-lights", "formgrade-lights"], lang, directory, {}, {}, {}, {},
            latest,
        )  # fmt: skip
        line = page["teaching"][0]["warmup"]
        assert words in line and "1" in line and "{" not in line
    link = tmp_path / "link.json"
    link.symlink_to(record)
    assert latest_by_course(link) == {} and latest_by_course(None) == {}
