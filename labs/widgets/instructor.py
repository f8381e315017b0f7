"""The instructor's view: for each course they teach, the students' sessions and usage and the
course's bookings; the lab's utilisation per kit.

Sessions per course come from `GET /api/sessions?course=<course>`; a lab service without that
filter answers 400 and the view says that the list is not available yet (bookings and
utilisation still show).
"""

from __future__ import annotations

import html
from collections import defaultdict
from typing import Any

import ipywidgets as W

from labs.client import LabService, LabServiceError, LabServiceUnavailable
from labs.i18n import Texts
from labs.widgets.live import Runner
from labs.widgets.session_panel import ServiceBanner
from labs.widgets.tables import BarChart, heading, table, when


def course_sessions(service: LabService, course: str) -> list[dict[str, Any]] | None:
    """Sessions of a course's students, or None if the service cannot list them by course."""
    try:
        return service.request("GET", "/api/sessions", query={"course": course})
    except LabServiceError as err:
        if err.status == 400 and not isinstance(err, LabServiceUnavailable):
            return None
        raise


def minutes_per_user(sessions: list[dict[str, Any]], now: float) -> dict[str, float]:
    used: dict[str, float] = defaultdict(float)
    for s in sessions:
        end = s.get("released_at") or (now if s["state"] in ("granted", "active") else
                                       s.get("ends_at") or now)
        used[s["user"]] += max(0.0, min(end, s.get("ends_at") or end) - s["granted_at"]) / 60
    return dict(used)


class InstructorView:
    def __init__(self, service: LabService, me: dict[str, Any], runner: Runner, texts: Texts,
                 banner: ServiceBanner, *, refresh_s: float = 10.0) -> None:
        self.service = service
        self.courses: list[str] = list(me.get("instructor_of") or [])
        self.runner = runner
        self.texts = texts
        self.banner = banner
        self.data: dict[str, Any] | None = None
        self._busy = False
        self.title = W.HTML()
        self.course = W.Dropdown(options=self.courses, layout=W.Layout(width="240px"))
        self.course.observe(lambda _c: self._render(), names="value")
        self.sessions = W.HTML()
        self.sessions.add_class("smartlab-course-sessions")
        self.bookings = W.HTML()
        self.bookings.add_class("smartlab-course-bookings")
        self.per_student = BarChart()
        self.per_kit = BarChart()
        self.headings = {key: heading(texts, key) for key in
                         ("course_sessions", "course_bookings", "usage")}
        texts.label(self.course, "course")
        self.widget = W.VBox([self.title, self.course,
                              self.headings["course_sessions"], self.sessions,
                              self.headings["course_bookings"], self.bookings,
                              self.headings["usage"],
                              W.HBox([self.per_student.widget, self.per_kit.widget])])
        self.widget.add_class("smartlab-instructor")
        texts.bind(self._render)
        self._stop = runner.every(refresh_s, self.refresh)

    def fetch(self) -> dict[str, Any]:
        import time

        return {"sessions": {c: course_sessions(self.service, c) for c in self.courses},
                "bookings": self.service.bookings(),
                "usage": self.service.request("GET", "/api/usage"),
                "at": time.time()}

    def refresh(self) -> None:
        if self._busy or not self.courses:
            return
        self._busy = True

        def got(data: dict[str, Any]) -> None:
            self._busy = False
            self.banner.up()
            self.data = data
            self._render()

        def failed(err: BaseException) -> None:
            self._busy = False
            if isinstance(err, LabServiceUnavailable):
                self.banner.down(err)
            else:
                self.sessions.value = f"<span style='color:#b42318'>{html.escape(str(err))}" \
                                      "</span>"

        self.runner.submit(self.fetch, done=got, failed=failed)

    def _render(self) -> None:
        t = self.texts
        self.title.value = f"<h3 style='margin:4px 0'>{html.escape(t('instructor'))}</h3>"
        if not self.courses:
            self.sessions.value = html.escape(t("no_courses"))
            return
        data, course = self.data, self.course.value
        if data is None:
            self.sessions.value = html.escape(t("loading"))
            return
        sessions = data["sessions"].get(course)
        if sessions is None:
            self.sessions.value = f"<i>{html.escape(t('course_sessions_missing'))}</i>"
            sessions = []
        elif not sessions:
            self.sessions.value = html.escape(t("no_sessions"))
        else:
            self.sessions.value = table(
                [t("col_user"), t("col_kit"), t("col_state"), t("col_start"),
                 t("col_end_reason")],
                [[s["user"], s["kit"], s["state"], when(s["granted_at"]),
                  t.end_reason(s["end_reason"]) if s.get("end_reason") else "–"]
                 for s in sessions[-30:][::-1]])
        bookings = [b for b in data["bookings"] if b["course"] == course and
                    not b.get("cancelled")]
        self.bookings.value = table(
            [t("col_kit"), t("col_start"), t("col_end"), t("col_user")],
            [[b["kit"], when(b["starts_at"]), when(b["ends_at"]), b["booked_by"]]
             for b in bookings]) if bookings else html.escape(t("no_bookings"))
        used = minutes_per_user(sessions, data["at"])
        self.per_student.show(t("usage_student"), list(used), list(used.values()))
        kits = data["usage"]["kits"]
        self.per_kit.show(t("usage_kit"), [u["kit"] for u in kits],
                          [u["session_seconds"] / 60 for u in kits])

    def close(self) -> None:
        self._stop()
