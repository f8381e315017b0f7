"""Experiment jobs as people see them: the front door's "My jobs", the instructor's and the lab
admin's job sections, the kit page's "job of <owner>" line. Words, never codes; every owner
name and detail escaped."""

from __future__ import annotations

from typing import Any

import pytest

from labs.home.model import build_page
from labs.i18n import Texts, job_outcome, job_state
from labs.widgets.jobs_view import (
    AllJobsView,
    CourseJobsView,
    course_rows,
    last_scores,
    scores_differ,
)
from labs.widgets.live import Runner
from labs.widgets.session_panel import ServiceBanner, SessionPanel
from tests.unit.test_dashboards import run, settle
from tests.unit.test_home import DIRECTORY, KITS, render, spawn

HOSTILE = "<img src=x onerror=alert(1)>"
ESCAPED = "&lt;img src=x onerror=alert(1)&gt;"


def job(job_id: int, state: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": job_id,
        "owner": "anna",
        "kit": "sl-1",
        "model": "street-lighting",
        "state": state,
        "position": None,
        "estimated_start": None,
        "started_at": None,
        "ended_at": None,
        "outcome": None,
        "detail": None,
        "score": None,
        "twin_score": None,
        "course": "lights",
        **fields,
    }


QUEUED = job(3, "queued", position=2, estimated_start="2026-12-07T12:30:00+00:00")
RUNNING = job(2, "running", started_at="2026-12-07T12:00:00+00:00")
FINISHED = job(
    1,
    "finished",
    outcome="completed",
    detail=HOSTILE,
    score=0.8,
    twin_score=0.9,
    started_at="2026-12-07T11:00:00+00:00",
    ended_at="2026-12-07T11:01:00+00:00",
)


def front_door(lang: str, jobs: list[dict[str, Any]]) -> dict[str, Any]:
    return build_page(
        "anna", ["nbgrader-lights"], lang, DIRECTORY, {"kits": KITS, "jobs": jobs}, {}, {}, {}
    )


# ---------------------------------------------------------------- words


@pytest.mark.parametrize("lang", ["en", "ru"])
def test_every_job_state_and_outcome_has_words_in_both_languages(lang):
    t = Texts(lang)
    for state in ("queued", "running", "finished", "failed", "cancelled"):
        assert job_state(t, state) != f"job_state_{state}" and "_" not in job_state(t, state)
    outcomes = ("completed", "crashed", "overran", "flooded", "memory", "invalid", "kit-unsafe")
    for outcome in (*outcomes, "cancelled"):
        assert "job_outcome" not in job_outcome(t, outcome)
    assert job_outcome(t, "kit-unsafe") != "kit unsafe"  # translated, not a readable code
    assert job_state(t, "brand-new") == "brand new"  # a newer service's code: words, no crash
    assert job_outcome(t, None) == "–"


# ---------------------------------------------------------------- the front door


def test_student_sees_queued_running_and_finished_jobs_with_place_outcome_score_and_replay():
    p = front_door("en", [FINISHED, QUEUED, RUNNING])
    queued, running, finished = p["jobs"]
    assert [queued["id"], running["id"], finished["id"]] == [3, 2, 1]  # newest first
    assert queued["line"].startswith("place 2 in the queue, starts about ")
    assert running["line"].startswith("running since ")
    assert finished["line"] == "finished: ran its full duration"
    assert finished["scores"] == "score 0.8, score on the twin 0.9"
    assert finished["replay"] == spawn(
        "anna",
        "/user/anna/voila/render/dashboards/kit.ipynb?kit=sl-1"
        "&start=1796641200.000&end=1796641260.000&lang=en",
    )
    assert queued["replay"] is None and running["replay"] is None


def test_student_s_jobs_read_in_russian_and_a_hostile_detail_is_escaped():
    p = front_door("ru", [FINISHED, job(4, "failed", outcome="kit-unsafe", detail="x")])
    html = render(p, "ru")
    assert "Мои задания-эксперименты" in html
    assert "завершено: отработало всё заданное время" in html
    assert "не удалось: стенд не подтвердил безопасное состояние" in html
    assert HOSTILE not in html and ESCAPED in html
    assert "kit-unsafe" not in html and "completed" not in html  # no raw codes


def test_a_student_without_jobs_is_told_so_and_a_queue_without_estimate_says_unknown():
    assert "No experiment jobs yet." in render(front_door("en", []))
    unknown, placed = front_door("en", [job(5, "queued"), job(4, "queued", position=3)])["jobs"]
    assert unknown["line"] == "in the queue, start not known yet"
    assert placed["line"] == "place 3 in the queue, start not known yet"


def test_instructor_and_lab_admin_reach_the_job_sections_from_the_front_door():
    teacher = build_page(
        "irina", ["instructors-lights"], "en", DIRECTORY, {"kits": KITS}, {}, {}, {}
    )
    assert "Experiment jobs and scores" in render(teacher)
    assert teacher["course_jobs_url"].endswith("instructor.ipynb%3Flang%3Den")
    admin = build_page("lara", ["lab-admins"], "ru", DIRECTORY, {"kits": KITS}, {}, {}, {})
    assert "Задания-эксперименты лаборатории (просмотр и отмена)" in render(admin, "ru")
    assert "jobs" not in teacher and "jobs" not in admin  # a student's list only


# ---------------------------------------------------------------- dashboards


def test_scores_are_flagged_when_they_differ_by_more_than_a_fifth_of_the_twin_score():
    assert not scores_differ(1.0, 0.8) and scores_differ(1.0, 0.79) and scores_differ(1.0, 1.21)
    assert not scores_differ(None, 0.5) and not scores_differ(0.5, None)
    assert scores_differ(0.0, 0.1) and not scores_differ(0.0, 0.0)
    rows, classes = course_rows(
        Texts("en"), [job(1, "finished", score=0.5, twin_score=1.0), FINISHED]
    )
    assert classes == ["smartlab-job-row smartlab-job-differs", "smartlab-job-row"]
    assert rows[0][5:7] == ["1", "0.5"] and "more than 20 %" in str(rows[0][7])
    assert last_scores([FINISHED, job(7, "finished", owner="bo", score=0.1)]) == {
        "anna": (0.9, 0.8),
        "bo": (None, 0.1),
    }


class JobsService:
    """The lab service's job answers as a dashboard asks for them (REST shapes)."""

    def __init__(self, jobs: list[dict[str, Any]]) -> None:
        self.jobs = jobs
        self.calls: list[tuple[str, str, Any]] = []

    def request(self, method: str, path: str, body: Any = None, query: Any = None) -> Any:
        self.calls.append((method, path, query))
        if path.endswith("/cancel"):
            job_id = int(path.split("/")[3])
            found = next(j for j in self.jobs if j["id"] == job_id)
            found["state"] = "cancelled"
            return found
        return self.jobs


def test_instructor_section_shows_owner_state_both_scores_and_escapes_the_owner():
    jobs = [job(1, "finished", owner=HOSTILE, outcome="crashed", score=0.2, twin_score=0.9)]

    async def scenario() -> tuple[str, str, list]:
        texts = Texts("ru")
        service = JobsService(jobs)
        view = CourseJobsView(
            service, ["lights"], lambda: "lights", Runner(), texts, ServiceBanner(texts)
        )
        await settle(0.3)
        ru = view.list.value
        texts.language = "en"
        en = view.list.value
        view.close()
        return ru, en, list(view.chart.bars.x)

    ru, en, owners = run(scenario)
    assert ESCAPED in ru and HOSTILE not in ru
    assert "регулятор остановился с ошибкой" in ru and "расходятся более чем на 20 %" in ru
    assert "0.9" in en and "0.2" in en and "the controller stopped with an error" in en
    assert "crashed" not in en and owners == [HOSTILE]  # the chart's labels are text


def test_lab_admin_cancels_a_queued_job_and_sees_it_cancelled():
    jobs = [job(1, "queued", detail=HOSTILE), job(2, "finished", outcome="completed")]

    async def scenario() -> tuple[list[str], str, str, list]:
        texts = Texts("en")
        service = JobsService(jobs)
        view = AllJobsView(service, Runner(), texts, ServiceBanner(texts), refresh_s=60)
        await settle(0.3)
        labels = [b.description for b in view.buttons.children]
        view.buttons.children[0].click()
        await settle(0.3)
        view.close()
        return labels, view.list.value, view.action.value, service.calls

    labels, listed, action, calls = run(scenario)
    assert labels == ["Cancel job 1"]  # only the open job has a button
    assert ("POST", "/api/jobs/1/cancel", None) in calls
    assert action == "Job 1 cancelled." and "cancelled" in listed
    assert ESCAPED in listed and HOSTILE not in listed


def test_the_kit_page_tells_observers_whose_job_holds_the_kit_and_for_how_long():
    kit = {"id": "sl-1", "pool": "in-pool", "reason": "", "holder_institution": "uni",
           "queue_length": 2, "job": 7, "job_owner": HOSTILE, "job_time_left_s": 95.0}  # fmt: skip

    class Service:
        def kits(self) -> list[dict[str, Any]]:
            return [kit]

        def my_queue(self) -> list:
            return []

        def sessions(self, live: bool = False) -> list:
            return []

        def bookings(self) -> list:
            return []

    async def scenario() -> tuple[str, str]:
        texts = Texts("en")
        panel = SessionPanel(
            Service(), "sl-1", Runner(), texts, ServiceBanner(texts), lambda *_: None
        )
        await settle(0.3)
        en = panel.kit_line.value
        texts.language = "ru"
        ru = panel.kit_line.value
        for stop in panel._stops:
            stop()
        return en, ru

    en, ru = run(scenario)
    assert f"Job of {ESCAPED} is running on this kit, 1:35 left." in en
    assert "2 waiting" in en  # the queue counts waiting jobs like waiting people
    assert f"На стенде выполняется задание {ESCAPED}, осталось 1:35." in ru
    assert HOSTILE not in en + ru
