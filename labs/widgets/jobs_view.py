"""Experiment jobs on the instructor's and the lab admin's dashboards.

The instructor sees each course's jobs (`GET /api/jobs?course=C`): owner, state, outcome, the
twin's and the kit's score, a flag where the two differ by more than 20 % of the twin score, and
a chart of both scores per student. The lab admin sees every job (`GET /api/jobs?all=1`) with a
Cancel button on each queued or running one. States and outcomes are words of the page's
language (labs/i18n.py), never the service's codes; every value is escaped (markup.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import bqplot as bq
import ipywidgets as W
import numpy as np

from labs.client import LabService
from labs.i18n import Texts, job_outcome, job_state
from labs.widgets.live import Runner
from labs.widgets.markup import html, text
from labs.widgets.polled import PolledView
from labs.widgets.session_panel import ServiceBanner
from labs.widgets.tables import heading, round_top, table

SCORE_GAP = 0.20  # a kit score this far (share of the twin score) from the twin's is flagged
JOBS_SHOWN = 50
OPEN_STATES = ("queued", "running")


def scores_differ(twin: float | None, kit: float | None, gap: float = SCORE_GAP) -> bool:
    """True when both scores exist and differ by more than `gap` of the twin score."""
    if twin is None or kit is None:
        return False
    return abs(kit - twin) > gap * abs(twin) if twin else kit != 0


def score_text(value: float | None) -> str:
    return "–" if value is None else f"{value:.3g}"


def last_scores(jobs: list[dict[str, Any]]) -> dict[str, tuple[float | None, float | None]]:
    """Each owner's newest scored job: (twin score, kit score)."""
    found: dict[str, tuple[float | None, float | None]] = {}
    for job in sorted(jobs, key=lambda j: j["id"]):
        if job.get("score") is not None or job.get("twin_score") is not None:
            found[job["owner"]] = (job.get("twin_score"), job.get("score"))
    return found


def course_rows(texts: Texts, jobs: list[dict[str, Any]]) -> tuple[list[list[Any]], list[str]]:
    """The instructor's table rows, newest first, and each row's CSS classes."""
    rows, classes = [], []
    for job in sorted(jobs, key=lambda j: j["id"], reverse=True)[:JOBS_SHOWN]:
        differ = scores_differ(job.get("twin_score"), job.get("score"))
        rows.append(
            [
                job["id"],
                job["owner"],
                job.get("kit") or texts.model(job.get("model")),
                job_state(texts, job["state"]),
                job_outcome(texts, job.get("outcome")),
                score_text(job.get("twin_score")),
                score_text(job.get("score")),
                html("<b style='color:#b42318'>⚑ {}</b>", texts("scores_differ")) if differ else "",
            ]
        )
        classes.append("smartlab-job-row" + (" smartlab-job-differs" if differ else ""))
    return rows, classes


def newest(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return sorted(jobs, key=lambda j: j["id"], reverse=True)[:JOBS_SHOWN]


def all_rows(texts: Texts, jobs: list[dict[str, Any]]) -> list[list[Any]]:
    """The lab admin's table rows, in the order given."""
    return [
        [
            job["id"],
            job["owner"],
            texts.course(job.get("course")) if job.get("course") else "–",
            job.get("kit") or texts.model(job.get("model")),
            job_state(texts, job["state"]),
            job_outcome(texts, job.get("outcome")),
            job.get("detail") or "",
        ]
        for job in jobs
    ]


class ScoreChart:
    """Twin and kit score per student, side by side (grouped bars)."""

    def __init__(self, height: str = "220px") -> None:
        self.x_scale = bq.OrdinalScale()
        self.y_scale = bq.LinearScale(min=0)
        self.bars = bq.Bars(
            x=[],
            y=[],
            type="grouped",
            scales={"x": self.x_scale, "y": self.y_scale},
            colors=["#9ecae9", "#4c78a8"],
            display_legend=True,
        )
        self.title = W.HTML()
        self.figure = bq.Figure(
            marks=[self.bars],
            axes=[
                bq.Axis(scale=self.x_scale),
                bq.Axis(scale=self.y_scale, side="left", tick_format=".3~g"),
            ],
            animation_duration=0,
            min_aspect_ratio=0.01,
            max_aspect_ratio=100,
            legend_location="top-right",
            fig_margin={"top": 10, "bottom": 40, "left": 50, "right": 10},
            layout=W.Layout(width="100%", height=height),
        )
        self.widget = W.VBox(
            [self.title, self.figure], layout=W.Layout(max_width="560px", overflow="visible")
        )
        self.widget.add_class("smartlab-score-chart")

    def show(
        self, title: str, legend: tuple[str, str], scores: dict[str, tuple[float | None, ...]]
    ) -> None:
        self.title.value = html("<b>{}</b>", title)
        owners = list(scores)
        values = np.array(
            [[float(scores[o][i] or 0.0) for o in owners] for i in (0, 1)], dtype=np.float64
        ).reshape(2, len(owners))
        top = round_top(float(values.max(initial=0.0)))
        with self.y_scale.hold_sync():
            self.y_scale.min, self.y_scale.max = 0.0, top
        with self.bars.hold_sync():
            self.bars.labels = list(legend)
            self.bars.x = owners
            self.bars.y = values


class CourseJobsView(PolledView):
    """The instructor's section: the chosen course's jobs and results."""

    def __init__(
        self,
        service: LabService,
        courses: list[str],
        course_of: Callable[[], str | None],
        runner: Runner,
        texts: Texts,
        banner: ServiceBanner,
        *,
        refresh_s: float = 10.0,
    ) -> None:
        super().__init__(runner, banner)
        self.service, self.courses, self.course_of, self.texts = service, courses, course_of, texts
        self.list = W.HTML()
        self.list.add_class("smartlab-course-jobs")
        self.chart = ScoreChart()
        self.error_line = self.list
        self.widget = W.VBox([heading(texts, "course_jobs"), self.list, self.chart.widget])
        texts.bind(self._render)
        self.start_polling(refresh_s)

    def wants_data(self) -> bool:
        return bool(self.courses)

    def fetch(self) -> dict[str, Any]:
        return {
            c: self.service.request("GET", "/api/jobs", query={"course": c}) for c in self.courses
        }

    def _render(self) -> None:
        t = self.texts
        if self.data is None:
            self.list.value = text(t("loading") if self.courses else t("no_jobs"))
            return
        jobs = self.data.get(self.course_of() or "") or []
        if not jobs:
            self.list.value = text(t("no_jobs"))
        else:
            rows, classes = course_rows(t, jobs)
            self.list.value = html(
                "<div style='overflow-x:auto' tabindex='0' role='region' aria-label='{}'>{}</div>",
                t("course_jobs"),
                table(
                    [
                        t("col_job"),
                        t("col_owner"),
                        t("col_kit"),
                        t("col_state"),
                        t("col_outcome"),
                        t("col_twin_score"),
                        t("col_kit_score"),
                        t("col_scores_differ"),
                    ],
                    rows,
                    row_classes=classes,
                ),
            )
        self.chart.show(t("scores_chart"), (t("twin"), t("on_kit")), last_scores(jobs))


class AllJobsView(PolledView):
    """The lab admin's section: every job, a Cancel button on each queued or running one."""

    def __init__(
        self,
        service: LabService,
        runner: Runner,
        texts: Texts,
        banner: ServiceBanner,
        *,
        refresh_s: float = 5.0,
    ) -> None:
        super().__init__(runner, banner)
        self.service, self.texts = service, texts
        self.list = W.HTML()
        self.list.add_class("smartlab-all-jobs")
        self.buttons = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.action = W.HTML()
        self.action.add_class("smartlab-job-action")
        self.note: tuple[str, dict[str, Any]] | None = None
        self._shown: list[int] = []
        self._shown_language = ""
        self.error_line = self.action
        self.widget = W.VBox([heading(texts, "all_jobs"), self.list, self.buttons, self.action])
        texts.bind(self._render)
        self.start_polling(refresh_s)

    def fetch(self) -> dict[str, Any]:
        return {"jobs": self.service.request("GET", "/api/jobs", query={"all": 1})}

    def _render(self) -> None:
        t = self.texts
        if self.note is not None:
            self.action.value = text(t(self.note[0], **self.note[1]))
        if self.data is None:
            self.list.value = text(t("loading"))
            return
        jobs = newest(self.data["jobs"])
        if not jobs:
            self.list.value = text(t("no_jobs"))
        else:
            self.list.value = html(
                "<div style='overflow-x:auto' tabindex='0' role='region' aria-label='{}'>{}</div>",
                t("all_jobs"),
                table(
                    [
                        t("col_job"),
                        t("col_owner"),
                        t("course"),
                        t("col_kit"),
                        t("col_state"),
                        t("col_outcome"),
                        t("col_detail"),
                    ],
                    all_rows(t, jobs),
                    row_classes=[f"smartlab-job-row smartlab-job-{j['id']}" for j in jobs],
                ),
            )
        open_ids = [j["id"] for j in jobs if j["state"] in OPEN_STATES]
        if open_ids != self._shown or self.texts.language != self._shown_language:
            # Rebuilt only when the open jobs change: a click never lands on a button swapped out.
            self._shown, self._shown_language = open_ids, self.texts.language
            self.buttons.children = [self._cancel_button(job_id) for job_id in open_ids]

    def _cancel_button(self, job_id: int) -> W.Button:
        button = W.Button(
            description=self.texts("cancel_job", job=job_id),
            button_style="danger",
            icon="times",
            layout=W.Layout(width="auto"),
        )
        button.add_class("smartlab-cancel-job")
        button.on_click(lambda _b: self._cancel(job_id, button))
        return button

    def _cancel(self, job_id: int, button: W.Button) -> None:
        button.disabled = True

        def cancelled(_view: Any) -> None:
            self.note = ("job_cancelled", {"job": job_id})
            self._busy = False
            self.refresh()
            self._render()

        self.runner.submit(
            lambda: self.service.request("POST", f"/api/jobs/{int(job_id)}/cancel"),
            done=cancelled,
            failed=self._failed,
        )
