"""The instructor's view: for each course they teach, the students' sessions and usage, the
course's booking calendar (book and cancel slots: calendar.py), the course's experiment jobs and
their twin and kit scores (jobs_view.py); the lab's utilisation per kit.

Sessions per course come from `GET /api/sessions?course=<course>` (the sessions its students
held as its members, or in its booked slots).
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import ipywidgets as W

from labs.client import LabService
from labs.i18n import Texts
from labs.widgets.calendar import BookingCalendar
from labs.widgets.jobs_view import CourseJobsView
from labs.widgets.live import Runner
from labs.widgets.markup import html, text
from labs.widgets.polled import PolledView
from labs.widgets.session_panel import ServiceBanner
from labs.widgets.tables import BarChart, heading, table, when


def minutes_per_user(sessions: list[dict[str, Any]], now: float) -> dict[str, float]:
    used: dict[str, float] = defaultdict(float)
    for s in sessions:
        end = s.get("released_at") or (
            now if s["state"] in ("granted", "active") else s.get("ends_at") or now
        )
        used[s["user"]] += max(0.0, min(end, s.get("ends_at") or end) - s["granted_at"]) / 60
    return dict(used)


class InstructorView(PolledView):
    def __init__(
        self,
        service: LabService,
        me: dict[str, Any],
        runner: Runner,
        texts: Texts,
        banner: ServiceBanner,
        *,
        refresh_s: float = 10.0,
    ) -> None:
        super().__init__(runner, banner)
        self.service = service
        self.courses: list[str] = list(me.get("instructor_of") or [])
        self.texts = texts
        self.title = W.HTML()
        self.course = W.Dropdown(
            options=[(texts.course(c), c) for c in self.courses], layout=W.Layout(width="240px")
        )
        self.course.observe(lambda _c: self._course_changed(), names="value")
        self.sessions = W.HTML()
        self.sessions.add_class("smartlab-course-sessions")
        # The calendar's kits: the course's (if the service says which), else the pool's.
        self.course_kits: dict[str, list[str]] = dict(me.get("course_kits") or {})
        self.calendar = BookingCalendar(
            service, str(me.get("name", "")), texts, runner, changed=self.refresh
        )
        self.bookings = self.calendar.widget
        self.bookings.add_class("smartlab-course-bookings")
        self.per_student = BarChart()
        self.per_kit = BarChart()
        self.headings = {
            key: heading(texts, key) for key in ("course_sessions", "cal_heading", "usage")
        }
        texts.label(self.course, "course")
        self.jobs = CourseJobsView(
            service, self.courses, lambda: self.course.value, runner, texts, banner
        )
        self.widget = W.VBox(
            [
                self.title,
                self.course,
                self.headings["course_sessions"],
                self.sessions,
                self.headings["cal_heading"],
                self.bookings,
                self.jobs.widget,
                self.headings["usage"],
                W.HBox([self.per_student.widget, self.per_kit.widget]),
            ]
        )
        self.widget.add_class("smartlab-instructor")
        self.error_line = self.sessions
        texts.bind(self._render)
        self.start_polling(refresh_s)

    def fetch(self) -> dict[str, Any]:
        return {
            "sessions": {c: self.service.sessions(course=c) for c in self.courses},
            "bookings": self.service.bookings(),
            "kits": [k["id"] for k in self.service.kits()],
            "usage": self.service.request("GET", "/api/usage"),
            "at": time.time(),
        }

    def wants_data(self) -> bool:
        return bool(self.courses)

    def _course_changed(self) -> None:
        self._render()
        self.jobs._render()

    def close(self) -> None:
        super().close()
        self.jobs.close()

    def _render(self) -> None:
        t = self.texts
        self.title.value = html("<h3 style='margin:4px 0'>{}</h3>", t("instructor"))
        if not self.courses:
            self.sessions.value = text(t("no_courses"))
            return
        data, course = self.data, self.course.value
        if data is None:
            self.sessions.value = text(t("loading"))
            return
        sessions = data["sessions"].get(course) or []
        if not sessions:
            self.sessions.value = text(t("no_sessions"))
        else:
            self.sessions.value = table(
                [t("col_user"), t("col_kit"), t("col_state"), t("col_start"), t("col_end_reason")],
                [
                    [
                        s["user"],
                        s["kit"],
                        t.state(s["state"]),
                        when(s["granted_at"]),
                        t.end_reason(s["end_reason"]) if s.get("end_reason") else "–",
                    ]
                    for s in sessions[-30:][::-1]
                ],
            )
        kits = self.course_kits.get(course) or data.get("kits") or []
        self.calendar.show(course, list(kits), data["bookings"])
        used = minutes_per_user(sessions, data["at"])
        self.per_student.show(t("usage_student"), list(used), list(used.values()))
        kits = data["usage"]["kits"]
        self.per_kit.show(
            t("usage_kit"), [u["kit"] for u in kits], [u["session_seconds"] / 60 for u in kits]
        )
