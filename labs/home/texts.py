"""The front door's interface text in English and Russian, by key (`str.format` fields).

Kit pool and session states reuse the dashboards' catalogue (labs/i18n.py), so a state reads
the same on the front door and on a dashboard."""

from __future__ import annotations

from typing import Any

from labs.i18n import CATALOGUES as DASHBOARD_TEXTS

CENTRE = {"en": "Smart City Lab", "ru": "Смарт Сити Лаб"}

EN: dict[str, str] = {
    "title": "Home",
    "skip": "Skip to the content",
    "language": "Language",
    "hello": "Hello, {name}",
    "logout": "Log out",
    "hub_home": "My server",
    "board": "Public lab board",
    "board_intro": "The live state of every kit of the lab, open to everyone.",
    "nothing": "You have no course or lab role yet. The public board shows the lab's kits.",
    "lab_down": "The lab service cannot be reached; kit status will return by itself.",
    # student
    "my_courses": "My courses",
    "assignments": "Assignments",
    "no_assignments": "No assignment released yet.",
    "due": "due {when}",
    "no_due": "no deadline set",
    "open_assignments": "Open my assignments",
    "open_lab": "Open JupyterLab",
    "my_kits": "Kits of my courses",
    "kit_status": "Status",
    "kit_online": "online",
    "kit_offline": "offline",
    "open_dashboard": "Open the dashboard of {kit}",
    "queue_length": "{n} in the queue",
    "my_queue": "My queue places",
    "queue_place": "{kit}: place {position}",
    "queue_place_model": "any {model}: place {position}",
    "no_queue": "You are not waiting for a kit.",
    "my_sessions": "My session",
    "session_line": "{kit}: {state}, {left} left",
    "no_session": "You hold no kit now.",
    "my_recordings": "My recorded sessions",
    "recording_line": "Replay {kit}, {start} – {end}",
    "no_recordings": "No recorded sessions yet.",
    "my_jobs": "My experiment jobs",
    "no_jobs": "No experiment jobs yet.",
    "job_title": "Job {id} on {kit}",
    "job_queued": "place {position} in the queue, starts about {start}",
    "job_queued_unknown": "in the queue, start not known yet",
    "job_queued_no_estimate": "place {position} in the queue, start not known yet",
    "job_running": "running since {start}",
    "job_ended": "{state}: {outcome}",
    "job_score": "score {score}",
    "job_twin_score": "score on the twin {score}",
    "job_replay": "Replay the job's run",
    "course_jobs_link": "Experiment jobs and scores",
    "all_jobs_link": "Experiment jobs of the lab (see and cancel)",
    "my_bookings": "Bookings of my courses",
    "booking_line": "{kit} for {course}: {start} – {end}",
    "no_bookings": "No coming bookings.",
    "recent": "Recent values of {sensor}",
    # instructor
    "teaching": "Courses I teach",
    "formgrader": "Formgrader of {course} (opens a new tab)",
    "submissions": "Submissions received: {n}",
    "submissions_unknown": "Submissions: cannot be counted here",
    "kit_usage": "Kit use: {sessions} sessions, {hours} h",
    "booking_calendar": "Booking calendar",
    "warmup_line": "Warm-up for the slot at {start}: {started} servers started at {at}, "
    "{running} already running, {left_out} without room",
    # lab admin
    "lab_admin": "Lab administration",
    "kit_health": "Kit health",
    "health_ok": "all in order",
    "admin_dashboard": "Open the admin dashboard",
    "col_kit": "Kit",
    "col_state": "Connection",
    "col_pool": "Availability",
    "col_reason": "Why",
    # hub admin
    "hub_admin": "Hub administration",
    "hub_admin_link": "Users and servers (hub admin page)",
    # session states
    "session_granted": "granted",
    "session_active": "active",
    "session_ending": "ending",
    "session_safe": "returning to safe state",
    "session_released": "released",
}

RU: dict[str, str] = {
    "title": "Главная",
    "skip": "Перейти к содержимому",
    "language": "Язык",
    "hello": "Здравствуйте, {name}",
    "logout": "Выйти",
    "hub_home": "Мой сервер",
    "board": "Общее табло лаборатории",
    "board_intro": "Состояние всех стендов лаборатории в реальном времени, для всех.",
    "nothing": "У вас пока нет курсов и ролей в лаборатории. Стенды лаборатории видны на общем "
    "табло.",
    "lab_down": "Сервис лаборатории недоступен; состояние стендов вернётся само.",
    "my_courses": "Мои курсы",
    "assignments": "Задания",
    "no_assignments": "Заданий пока нет.",
    "due": "срок: {when}",
    "no_due": "срок не назначен",
    "open_assignments": "Открыть мои задания",
    "open_lab": "Открыть JupyterLab",
    "my_kits": "Стенды моих курсов",
    "kit_status": "Состояние",
    "kit_online": "на связи",
    "kit_offline": "нет связи",
    "open_dashboard": "Открыть панель стенда {kit}",
    "queue_length": "в очереди: {n}",
    "my_queue": "Мои места в очереди",
    "queue_place": "{kit}: место {position}",
    "queue_place_model": "любой стенд {model}: место {position}",
    "no_queue": "Вы не стоите в очереди.",
    "my_sessions": "Мой сеанс",
    "session_line": "{kit}: {state}, осталось {left}",
    "no_session": "Сейчас у вас нет стенда.",
    "my_recordings": "Записи моих сеансов",
    "recording_line": "Повтор: {kit}, {start} – {end}",
    "no_recordings": "Записанных сеансов пока нет.",
    "my_jobs": "Мои задания-эксперименты",
    "no_jobs": "Заданий-экспериментов пока нет.",
    "job_title": "Задание {id} на стенде {kit}",
    "job_queued": "место {position} в очереди, начнётся около {start}",
    "job_queued_unknown": "в очереди, время начала пока неизвестно",
    "job_queued_no_estimate": "место {position} в очереди, время начала пока неизвестно",
    "job_running": "выполняется с {start}",
    "job_ended": "{state}: {outcome}",
    "job_score": "оценка {score}",
    "job_twin_score": "оценка на двойнике {score}",
    "job_replay": "Повтор прогона задания",
    "course_jobs_link": "Задания-эксперименты и оценки",
    "all_jobs_link": "Задания-эксперименты лаборатории (просмотр и отмена)",
    "my_bookings": "Бронирования моих курсов",
    "booking_line": "{kit} для курса {course}: {start} – {end}",
    "no_bookings": "Ближайших бронирований нет.",
    "recent": "Последние значения: {sensor}",
    "teaching": "Мои курсы (преподаватель)",
    "formgrader": "Formgrader курса {course} (в новой вкладке)",
    "submissions": "Получено работ: {n}",
    "submissions_unknown": "Работы: подсчитать здесь нельзя",
    "kit_usage": "Использование стендов: сеансов {sessions}, {hours} ч",
    "booking_calendar": "Календарь бронирований",
    "warmup_line": "Подготовка к занятию {start}: в {at} запущено серверов: {started}, "
    "уже работали: {running}, не хватило памяти: {left_out}",
    "lab_admin": "Администрирование лаборатории",
    "kit_health": "Состояние стендов",
    "health_ok": "всё в порядке",
    "admin_dashboard": "Открыть панель администратора",
    "col_kit": "Стенд",
    "col_state": "Связь",
    "col_pool": "Доступность",
    "col_reason": "Причина",
    "hub_admin": "Администрирование хаба",
    "hub_admin_link": "Пользователи и серверы (страница администратора хаба)",
    "session_granted": "выдан",
    "session_active": "идёт",
    "session_ending": "завершается",
    "session_safe": "переход в безопасное состояние",
    "session_released": "завершён",
}

CATALOGUES: dict[str, dict[str, str]] = {"en": EN, "ru": RU}


def texts(lang: str) -> Texts:
    return Texts(lang)


class Texts:
    """`t("key", field=...)` in one language; falls back to the dashboards' catalogue (kit
    states, pool states), then to English, then to the key itself."""

    def __init__(self, lang: str) -> None:
        self.lang = lang if lang in CATALOGUES else "en"

    def __call__(self, key: str, **fields: Any) -> str:
        for catalogue in (CATALOGUES[self.lang], DASHBOARD_TEXTS[self.lang], EN):
            if key in catalogue:
                return catalogue[key].format(**fields) if fields else catalogue[key]
        return key

    @property
    def centre(self) -> str:
        return CENTRE[self.lang]

    def pool(self, code: str) -> str:
        return self(f"pool_{code.replace('-', '_')}")

    def session(self, code: str | None) -> str:
        return self(f"session_{code}") if code else ""
