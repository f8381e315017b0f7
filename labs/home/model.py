"""What one person's home page shows: sections chosen by their hub groups, filled from the
site's public facts, the exchange and the lab service. Pure functions of plain data, so the
page's logic is tested without a hub (tests/unit/test_home.py)."""

from __future__ import annotations

import datetime as dt
import functools
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

from labs import i18n
from labs.home.texts import Texts

STUDENT_PREFIX = "nbgrader-"
INSTRUCTOR_PREFIXES = ("instructors-", "formgrade-")
LAB_ADMINS = "lab-admins"
BOARD_URL = "/services/status/"
HUB_ADMIN_URL = "/hub/admin"


@dataclass(frozen=True)
class Directory:
    """The site file's public facts the front door needs (no password hash, no person's
    details): course titles and kits, kit names, who holds the hub-admin role."""

    courses: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> {title, kits}
    kit_names: dict[str, dict[str, str]] = field(default_factory=dict)  # id -> {en, ru}
    hub_admins: frozenset[str] = frozenset()

    def kit_name(self, kit_id: str, lang: str) -> str | None:
        """The site file's name of a kit in `lang` (its English name where it has no other)."""
        names = self.kit_names.get(kit_id) or {}
        return names.get(lang) or names.get("en")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Directory:
        return cls(
            courses={c["id"]: c for c in data.get("courses", [])},
            kit_names=dict(data.get("kit_names", {})),
            hub_admins=frozenset(data.get("hub_admins", [])),
        )


@dataclass(frozen=True)
class Roles:
    student_of: tuple[str, ...]
    teaches: tuple[str, ...]
    lab_admin: bool
    hub_admin: bool

    @property
    def nothing(self) -> bool:
        return not (self.student_of or self.teaches or self.lab_admin or self.hub_admin)


def roles(name: str, groups: list[str], directory: Directory) -> Roles:
    """A person's roles from their hub groups (and the site's hub admins); only courses the
    site knows count, so a stray group shows nothing."""
    known = directory.courses
    student = sorted(
        g.removeprefix(STUDENT_PREFIX)
        for g in groups
        if g.startswith(STUDENT_PREFIX) and g.removeprefix(STUDENT_PREFIX) in known
    )
    teaches = sorted(
        {
            g.removeprefix(p)
            for g in groups
            for p in INSTRUCTOR_PREFIXES
            if g.startswith(p) and g.removeprefix(p) in known
        }
    )
    return Roles(tuple(student), tuple(teaches), LAB_ADMINS in groups, name in directory.hub_admins)


def user_url(name: str, path: str, **query: str) -> str:
    """A URL in the person's own server (the name is quoted, the query encoded), reached
    through the hub's spawn page: it starts the server if it is not running, shows the start's
    progress and then goes on (at once when it runs). A plain /user/ URL of a stopped server
    ends at the hub's "Server not running" page instead."""
    url = f"/user/{quote(name, safe='')}/{path}"
    target = f"{url}?{urlencode(query)}" if query else url
    return f"/hub/spawn/{quote(name, safe='')}?{urlencode({'next': target})}"


def dashboard_url(name: str, notebook: str, lang: str, **query: str) -> str:
    return user_url(name, f"voila/render/dashboards/{notebook}", **query, lang=lang)


def duration(seconds: float, t: Texts) -> str:
    minutes = max(0, int(seconds // 60))
    return (
        f"{minutes // 60} h {minutes % 60:02d} min"
        if t.lang == "en"
        else (f"{minutes // 60} ч {minutes % 60:02d} мин")
    )


def warmup_line(warmup: dict[str, Any] | None, t: Texts) -> str | None:
    """The course's latest class warm-up (hub_config/class_warmup.py), in one line."""
    if not warmup:
        return None
    try:
        return t(
            "warmup_line",
            started=len(warmup.get("started") or []),
            running=len(warmup.get("running") or []),
            left_out=len(warmup.get("left_out") or []),
            at=clock(float(warmup["at"])),
            start=clock(float(warmup["starts_at"])),
        )
    except (KeyError, TypeError, ValueError):
        return None


def clock(epoch: float) -> str:
    return time.strftime("%d.%m %H:%M", time.localtime(epoch))


def kit_view(
    kit: dict[str, Any], name: str, lang: str, t: Texts, directory: Directory
) -> dict[str, Any]:
    """One kit as a card shows it (its name in the page's language, states translated, never
    raw codes)."""
    pool = str(kit.get("pool", ""))
    return {
        "id": kit["id"],
        "name": directory.kit_name(kit["id"], lang) or kit.get("name") or kit["id"],
        "online": bool(kit.get("online")),
        "status": t("kit_online") if kit.get("online") else t("kit_offline"),
        "pool": t.pool(pool) if pool else "",
        "attention": pool != "in-pool" or not kit.get("online"),
        "reason": str(kit.get("reason") or ""),
        "queue": t("queue_length", n=int(kit.get("queue_length") or 0)),
        "dashboard": dashboard_url(name, "kit.ipynb", lang, kit=kit["id"]),
    }


@functools.cache
def _descriptors() -> dict[str, dict[str, Any]]:
    from hardware_kits.descriptor import load_models

    return load_models()


def sensor_label(model: str, sensor: str, lang: str) -> str:
    """A sensor's name from its kit's descriptor in `lang` (`ru.name` on a Russian page), else
    the sensor's id."""
    spec = _descriptors().get(model, {}).get("sensors", {}).get(sensor, {})
    return i18n.Texts(lang).name(spec, sensor)  # the dashboards' reading of descriptors


def model_name(model: str | None, lang: str) -> str:
    """A kit model by its descriptor's name in `lang` (the dashboards' reading)."""
    return i18n.Texts(lang).model(model)


def spark_view(spark: dict[str, str] | None, kit: dict[str, Any], lang: str) -> dict | None:
    if not spark:
        return None
    return {**spark, "sensor": sensor_label(str(kit.get("model", "")), spark["sensor"], lang)}


def course_kits(courses: list[str], directory: Directory) -> list[str]:
    found: list[str] = []
    for course in courses:
        for kit in directory.courses[course].get("kits", []):
            if kit not in found:
                found.append(kit)
    return found


def build_page(
    name: str,
    groups: list[str],
    lang: str,
    directory: Directory,
    lab: dict[str, Any],
    assignments: dict[str, list[str]],
    due: dict[str, dict[str, str]],
    submissions: dict[str, int | None],
    warmups: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Everything the template shows. `lab` holds what the lab service answered (keys kits,
    queue, sessions, bookings, usage, sparklines) and `error`, its one line if it failed."""
    t = Texts(lang)
    who = roles(name, groups, directory)
    kits_by_id = {k["id"]: k for k in lab.get("kits") or []}
    page: dict[str, Any] = {
        "name": name,
        "roles": who,
        "lab_error": lab.get("error"),
        "lab_url": user_url(name, "lab"),
        "board_url": BOARD_URL,
    }
    if who.student_of:
        page["courses"] = [
            {
                "id": c,
                "title": directory.courses[c].get("title") or c,
                "assignments": [
                    {"name": a, "due": due.get(c, {}).get(a)} for a in assignments.get(c, [])
                ],
            }
            for c in who.student_of
        ]
        page["assignments_url"] = user_url(name, "tree")
        mine = course_kits(list(who.student_of), directory)
        page["kits"] = [
            {
                **kit_view(kits_by_id[k], name, lang, t, directory),
                "sparkline": spark_view((lab.get("sparklines") or {}).get(k), kits_by_id[k], lang),
            }
            for k in mine
            if k in kits_by_id
        ]
        page["queue"] = [
            t("queue_place", kit=q["kit"], position=q.get("position") or "?")
            if q.get("kit")
            else t("queue_place_model", model=q.get("model"), position=q.get("position") or "?")
            for q in lab.get("queue") or []
            if q.get("state") == "waiting"
        ]
        page["sessions"] = [
            t(
                "session_line",
                kit=s["kit"],
                state=t.session(s.get("state")),
                left=duration(float(s.get("time_left_s") or 0), t),
            )
            for s in lab.get("sessions") or []
            if s.get("state") != "released"
        ]
        page["recordings"] = recordings(name, lang, lab.get("recordings") or [], t, directory)
        page["jobs"] = jobs(name, lang, lab.get("jobs") or [], t, directory)
    if who.student_of or who.teaches:
        page["bookings"] = [
            t(
                "booking_line",
                kit=b["kit"],
                course=directory.courses.get(b["course"], {}).get("title") or b["course"],
                start=clock(float(b["starts_at"])),
                end=clock(float(b["ends_at"])),
            )
            for b in lab.get("bookings") or []
            if not b.get("cancelled")
        ]
    if who.teaches:
        usage = {u["kit"]: u for u in (lab.get("usage") or {}).get("kits", [])}
        page["teaching"] = []
        for c in who.teaches:
            kits = directory.courses[c].get("kits", [])
            used = [usage[k] for k in kits if k in usage]
            page["teaching"].append(
                {
                    "id": c,
                    "title": directory.courses[c].get("title") or c,
                    "formgrader": f"/services/{quote(c, safe='')}/formgrader",
                    "submissions": submissions.get(c),
                    "usage": t(
                        "kit_usage",
                        sessions=sum(int(u.get("sessions", 0)) for u in used),
                        hours=f"{sum(float(u.get('session_seconds', 0)) for u in used) / 3600:.1f}",
                    )
                    if "usage" in lab
                    else None,
                    "warmup": warmup_line((warmups or {}).get(c), t),
                }
            )
        page["calendar_url"] = dashboard_url(name, "instructor.ipynb", lang)
        page["course_jobs_url"] = dashboard_url(name, "instructor.ipynb", lang)
    if who.lab_admin:
        page["health"] = [kit_view(k, name, lang, t, directory) for k in lab.get("kits") or []]
        page["admin_url"] = dashboard_url(name, "admin.ipynb", lang)
    if who.hub_admin:
        page["hub_admin_url"] = HUB_ADMIN_URL
    return page


RECORDINGS_SHOWN = 5
JOBS_SHOWN = 10


def epoch(iso: str | None) -> float | None:
    """A time of the lab service's answers (ISO 8601) as epoch seconds."""
    try:
        return dt.datetime.fromisoformat(iso).timestamp() if iso else None
    except ValueError:
        return None


def jobs(
    name: str, lang: str, views: list[dict[str, Any]], t: Texts, directory: Directory
) -> list[dict[str, Any]]:
    """The person's experiment jobs, newest first, in words (states and outcomes never as
    codes), each ended one with a link to the kit page's replay of its window."""
    shown = []
    for job in sorted(views, key=lambda j: int(j["id"]), reverse=True)[:JOBS_SHOWN]:
        kit = job.get("kit")
        where = (
            (directory.kit_name(kit, lang) or kit) if kit else model_name(job.get("model"), lang)
        )
        state = str(job.get("state"))
        start, end = epoch(job.get("started_at")), epoch(job.get("ended_at"))
        if state == "queued":
            estimate = epoch(job.get("estimated_start"))
            if not job.get("position"):
                line = t("job_queued_unknown")
            elif estimate is None:
                line = t("job_queued_no_estimate", position=job["position"])
            else:
                line = t("job_queued", position=job["position"], start=clock(estimate))
        elif state == "running":
            line = t("job_running", start=clock(start) if start else "?")
        else:
            line = t(
                "job_ended",
                state=i18n.job_state(t, state),
                outcome=i18n.job_outcome(t, job.get("outcome")),
            )
        scores = [
            t(key, score=f"{job[field]:.3g}")
            for key, field in (("job_score", "score"), ("job_twin_score", "twin_score"))
            if job.get(field) is not None
        ]
        shown.append(
            {
                "id": job["id"],
                "state": state,
                "title": t("job_title", id=job["id"], kit=where),
                "line": line,
                "detail": str(job.get("detail") or ""),
                "scores": ", ".join(scores),
                "replay": dashboard_url(
                    name, "kit.ipynb", lang, kit=kit, start=f"{start:.3f}", end=f"{end:.3f}"
                )
                if kit and start is not None and end is not None
                else None,
            }
        )
    return shown


def recordings(
    name: str, lang: str, sessions: list[dict[str, Any]], t: Texts, directory: Directory
) -> list[dict[str, str]]:
    """The person's latest ended sessions as links to their replay (the kit dashboard's
    replay mode, labs/widgets/replay.py), newest first."""
    ended = [s for s in sessions if s.get("released_at")]
    ended.sort(key=lambda s: float(s["granted_at"]), reverse=True)
    return [
        {
            "text": t(
                "recording_line",
                kit=directory.kit_name(s["kit"], lang) or s["kit"],
                start=clock(float(s["granted_at"])),
                end=time.strftime("%H:%M", time.localtime(float(s["released_at"]))),
            ),
            "url": dashboard_url(
                name,
                "kit.ipynb",
                lang,
                kit=s["kit"],
                start=f"{float(s['granted_at']):.3f}",
                end=f"{float(s['released_at']):.3f}",
            ),
        }
        for s in ended[:RECORDINGS_SHOWN]
    ]


def sparkline(values: list[float], width: int = 120, height: int = 32) -> str | None:
    """The `points` of an SVG polyline through `values` (numbers only: nothing to escape)."""
    numbers = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) < 2:
        return None
    low, high = min(numbers), max(numbers)
    span = (high - low) or 1.0
    step = width / (len(numbers) - 1)
    return " ".join(
        f"{i * step:.1f},{height - 2 - (v - low) / span * (height - 4):.1f}"
        for i, v in enumerate(numbers)
    )
