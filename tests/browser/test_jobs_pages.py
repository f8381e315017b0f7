"""Experiment jobs in the pages people reach by clicking, on the real platform (`smartlab up`:
the hub, the lab service, the twins) in real Chromium. Every test starts at the hub's login
page. The jobs are submitted as the student through the client API, as a notebook cell does.

The platform's job runner (the hub service `job-runner`) runs a granted job in the sandbox and
scores it with its assignment's scorer, so the observer sees a job run, its owner then sees how
it ended, and the instructor sees its kit score. A job for a kit somebody holds waits: that is
the queued and cancel views.

Screenshots go to test-artifacts/dashboards/jobs-*.png."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from typing import Any

import pytest

from hardware_kits.descriptor import read_yaml
from labs.client import Job, LabService
from site_config.paths import DEMO_SITE
from tests.browser.conftest import screenshot
from tests.conftest import wait_until
from tests.stack import Up, lab_token, running

COURSE = "traffic-signals"  # anna and boris study it, irina teaches it
RUN_KIT = "crossing-1"  # a job runs here while boris watches
ASSIGNMENT = "02-actuated-control"  # its controller question's scorer scores the kit's run
BUSY_KIT = "parking-1"  # boris holds it: a job for it waits
COURSE_TITLE = next(c["title"] for c in read_yaml(DEMO_SITE)["courses"] if c["id"] == COURSE)
SPAWN_S = 180  # a server's first start on a busy 2-core machine


def hold_still(readings: dict, t: float) -> dict | None:
    """The controller the jobs submit: sends nothing."""
    return None


@pytest.fixture(scope="module")
def up(state_root, home_root) -> Iterator[Up]:
    with running(Up(state_root / "jobs-ui-state", home_root)) as platform:
        yield platform


@pytest.fixture(scope="module")
def clients(up: Up) -> dict[str, LabService]:
    return {
        who: LabService(up.lab_url, lab_token(up, who), timeout=30) for who in ("anna", "boris")
    }


@pytest.fixture(scope="module")
def queued_job(clients) -> Iterator[Job]:
    """anna's job for the kit boris holds: it waits in the queue while he does."""
    with clients["boris"].session(BUSY_KIT, progress=None):
        job = clients["anna"].submit_job(hold_still, kit=BUSY_KIT, duration_s=30, course=COURSE)
        assert job.state == "queued"
        yield job
        with contextlib.suppress(Exception):
            job.cancel()


@pytest.fixture
def login(browser, up: Up) -> Iterator[Any]:
    """login(username, **context) -> a page on the front door, logged in through the hub's
    form as that person."""
    contexts = []

    def opener(username: str, **options: Any) -> Any:
        context = browser.new_context(
            locale="en-GB", **{"viewport": {"width": 1280, "height": 900}, **options}
        )
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.goto(f"{up.hub_url}/hub/login")
        page.fill("#username_input", username)
        page.fill("#password_input", f"demo-{username}")
        page.click("#login_submit")
        page.wait_for_url(lambda url: "/hub/login" not in url)
        page.get_by_role("heading", name=re.compile(f"Hello, {username}")).wait_for()
        return page

    yield opener
    for context in contexts:
        with contextlib.suppress(Exception):
            context.close()


def test_a_student_sees_her_queued_job_with_its_place_on_the_front_door_at_390_px(
    login, queued_job
):
    page = login("anna", viewport={"width": 390, "height": 844})
    item = page.locator(f"li.job[data-job='{queued_job.id}']")
    item.wait_for()
    assert "place 1 in the queue" in item.inner_text()
    assert page.evaluate("document.documentElement.scrollWidth") <= 390  # no sideways scroll
    screenshot(page, "jobs-student-queued-390")


def test_an_observer_sees_whose_job_runs_on_the_kit_page(login, clients):
    page = login("boris")
    page.locator(f"[data-kit='{RUN_KIT}'] a.button").click()
    line = page.locator(".smartlab-kit-line")
    line.wait_for(timeout=SPAWN_S * 1000)
    job = clients["anna"].submit_job(
        hold_still, kit=RUN_KIT, duration_s=30, course=COURSE, assignment=ASSIGNMENT
    )
    assert job.refresh().state == "running"  # the kit was free: granted at once
    page.get_by_text(re.compile(r"Job of anna is running on this kit, \d+:\d\d left")).wait_for()
    screenshot(page, "jobs-observer")
    # The student's front door shows it too, and then how it ended: the runner ran it through.
    mine = login("anna")
    assert "running since" in mine.locator(f"li.job[data-job='{job.id}']").inner_text()
    wait_until(lambda: job.refresh().score is not None, timeout=150)
    assert job.outcome == "completed", job.detail
    mine.reload()
    ended = mine.locator(f"li.job[data-job='{job.id}']").inner_text()
    assert "finished: ran its full duration" in ended, ended
    assert mine.locator(f"li.job[data-job='{job.id}'] a.replay").count() == 1
    screenshot(mine, "jobs-student-ended")


def test_an_instructor_sees_the_course_s_jobs_with_both_score_columns(login, clients, queued_job):
    page = login("irina")
    page.get_by_role("link", name="Experiment jobs and scores").click()
    course = page.get_by_role("combobox", name=re.compile("^Course"))
    course.wait_for(timeout=SPAWN_S * 1000)
    # irina teaches two courses; a server that cannot read the site file shows course ids
    labels = [" ".join(x.split()) for x in course.locator("option").all_inner_texts()]  # nbsp
    wanted = [i for i, x in enumerate(labels) if COURSE_TITLE in x or x == COURSE]
    assert wanted, f"no {COURSE} among irina's courses: {labels}"
    course.select_option(index=wanted[0])
    jobs = page.locator(".smartlab-course-jobs")
    try:
        jobs.locator("td", has_text="anna").first.wait_for()
    except Exception:
        screenshot(page, "jobs-instructor-failed")
        raise
    text = jobs.inner_text()
    assert "Twin score" in text and "Kit score" in text and "queued" in text
    scored = next(j for j in clients["anna"].jobs() if j.score is not None)  # the observer's
    assert f"{scored.score:.3g}" in text, text
    assert "Twin and kit score per student" in page.locator(".smartlab-score-chart").inner_text()
    screenshot(page, "jobs-instructor")


def test_a_lab_admin_cancels_a_queued_job(login, clients, queued_job):
    page = login("lara")
    page.get_by_role("link", name="Experiment jobs of the lab").click()
    button = page.get_by_role("button", name=f"Cancel job {queued_job.id}")
    try:
        button.wait_for(timeout=SPAWN_S * 1000)
    except Exception:
        screenshot(page, "jobs-admin-failed")
        raise
    button.click()
    page.get_by_text(f"Job {queued_job.id} cancelled.").wait_for()
    assert queued_job.refresh().state == "cancelled"
    assert clients["anna"].job(queued_job.id).state == "cancelled"
    screenshot(page, "jobs-admin-cancelled")
