"""Interface text of the dashboards in English and Russian.

Every text a dashboard shows comes from `CATALOGUES` by key, formatted with `str.format`
fields. The language comes from `?lang=` in the page's URL, else the browser's
`Accept-Language` header (Voilà hands it to the kernel as $HTTP_ACCEPT_LANGUAGE when
`VoilaConfiguration.http_header_envs` lists it), else English; a switch on the page changes it
live (`Texts.language` is a trait that widgets observe).

Kit data are named in the page's language from the kit's own descriptor (its `ru` names, see
docs/protocol.md): `Texts.name`, `Texts.unit`, `Texts.value`. State codes of kits, the pool,
sessions, queue entries and bookings go through `Texts.state`; a code this catalogue does not
know (a newer kit or service) shows as readable words, never as a traceback. The kit's own
rejection details stay as the kit sent them; rejection *reasons* are translated here.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

from traitlets import HasTraits, Unicode, observe

from hardware_kits.descriptor import DescriptorError, load_models, read_yaml
from site_config.languages import DEFAULT, LANGUAGES, negotiate
from site_config.paths import default_site

__all__ = ["CATALOGUES", "DEFAULT", "LANGUAGES", "Texts", "negotiate"]

log = logging.getLogger(__name__)


EN: dict[str, str] = {
    # experiment jobs (labs/widgets/jobs_view.py, the kit's session panel, the front door)
    "job_state_queued": "queued",
    "job_state_running": "running",
    "job_state_finished": "finished",
    "job_state_failed": "failed",
    "job_state_cancelled": "cancelled",
    "job_outcome_completed": "ran its full duration",
    "job_outcome_crashed": "the controller stopped with an error",
    "job_outcome_overran": "over its time limit",
    "job_outcome_flooded": "sent too many commands",
    "job_outcome_memory": "over its memory limit",
    "job_outcome_invalid": "the controller could not be started",
    "job_outcome_kit_unsafe": "the kit did not confirm its safe state",
    "job_outcome_cancelled": "cancelled",
    "job_of": "job of {owner}",
    "job_holds": "Job of {owner} is running on this kit, {left} left.",
    "course_jobs": "Experiment jobs of the course",
    "all_jobs": "Experiment jobs",
    "no_jobs": "No experiment jobs.",
    "col_job": "Job",
    "col_owner": "Owner",
    "col_twin_score": "Twin score",
    "col_kit_score": "Kit score",
    "col_outcome": "Outcome",
    "col_detail": "Detail",
    "col_action": "Action",
    "scores_differ": "differs by more than 20 %",
    "col_scores_differ": "Twin vs kit",
    "scores_chart": "Twin and kit score per student",
    "twin": "twin",
    "on_kit": "kit",
    "cancel_job": "Cancel job {job}",
    "job_cancelled": "Job {job} cancelled.",
    # page frame
    "language": "Language",
    "front_door": "Smart City Lab: home",
    "loading": "Loading…",
    "no_kit": "No kit chosen: open this page with ?kit=<kit id> (known: {known}).",
    "unknown_kit": "No kit {kit} is on the broker (known: {known}).",
    "service_down": "The lab service is unreachable ({detail}); live values keep flowing, "
    "queue and session information will come back by itself.",
    "broker_down": "Cannot connect to the lab's MQTT broker: {detail}",
    "config_missing": "This dashboard is not configured: {detail}",
    # kit state
    "state_ready": "online",
    "state_init": "starting",
    "state_lost": "lost",
    "state_disconnected": "switched off",
    "state_sleeping": "sleeping",
    "state_none": "unknown",
    "kit_lost": "Kit {kit} is lost (no contact since {since}). The values below are the last "
    "received; the page recovers by itself when the kit returns.",
    "kit_off": "Kit {kit} is switched off; the page recovers by itself when it returns.",
    "kit_back": "Kit {kit} is back online.",
    "stale": "No data from kit {kit} for {seconds} s.",
    # the kit's picture (labs/widgets/kit_picture.py)
    "picture_alt": "Live picture of kit {kit}",
    "picture_frame": "Frame of sample {seq}, {time}",
    "picture_telemetry": "latest sample {seq}",
    "picture_stale": "Camera stopped — last frame at {time}",
    "picture_waiting": "Waiting for the camera…",
    "picture_none": "This kit has no camera.",
    "picture_col": "Picture",
    # kit dashboard
    "sensors": "Sensors",
    "actuators": "Actuators",
    "window": "Time window",
    "window_s": "{n} s",
    "window_min": "{n} min",
    "window_h": "{n} h",
    # replay mode (labs/widgets/replay.py)
    "replay_title": "Recording",
    "replay_commands": "Commands sent",
    "replay_no_commands": "No commands sent up to this moment.",
    "replay_applied": "applied",
    "replay_rejected": "rejected",
    "replay_by_service": "the lab service",
    "replay_recordings": "Recordings you may replay",
    "replay_none": "No recordings of this kit that you may replay.",
    "replay_forbidden": "{detail}",  # the service's one line, in the page's language
    "replay_bad_link": "This replay link is broken: start and end must be times.",
    "replay_needs_service": "Replays need the lab service, which this page cannot reach.",
    "latest": "latest",
    "at": "at {time}",
    "no_value": "no value yet",
    "first_paint": "Connecting to the live view…",
    "now": "now: {value}",
    "send": "Send",
    "observer_hint": "You are watching. Queue for the kit to control it.",
    "controller_hint": "You control this kit until {until}.",
    "acks": "Acknowledgements",
    "no_acks": "No commands sent yet.",
    "ack_applied": "{target} = {value}: applied ({ms} ms)",
    "ack_rejected": "{target} = {value}: rejected: {reason}",
    "ack_failed": "{target} = {value}: {reason}",
    "true": "on",
    "false": "off",
    # rejection reasons (protocol.REJECTION_REASONS) and client-side failures
    "reason_malformed": "not a valid value for this actuator",
    "reason_out_of_range": "outside the allowed range",
    "reason_unknown_actuator": "the kit has no such actuator",
    "reason_oversize": "the value is too large",
    "reason_wrong_kit": "the command reached the wrong kit",
    "reason_stale": "the command arrived too late and was dropped",
    "reason_missing_id": "the command carried no id",
    "reason_missing_deadline": "the command carried no deadline",
    "reason_interlock": "not allowed in the kit's current state",
    "reason_deadline_too_far": "the command's deadline is further ahead than a kit accepts",
    "reason_bad_response_topic": "the response topic cannot be answered on (wildcard or empty)",
    "reason_kit_error": "the kit failed while handling the command; nothing was changed",
    "reason_requires": "{actuator} can only be set while {other} is {value}",
    "reason_not_authorized": "you no longer hold the kit (the session has ended)",
    "reason_timeout": "the kit did not answer in time",
    "reason_closed": "the connection was closed",
    "reason_bad_json": "not valid JSON: {detail}",
    "reason_other": "{detail}",
    # queue and session panel
    "session": "Queue and session",
    "join": "Queue for this kit",
    "leave": "Leave the queue",
    "release": "Release the kit",
    "idle": "You do not hold this kit and are not in its queue.",
    "waiting": "In the queue: position {position}, estimated wait {wait}.",
    "waiting_unknown": "In the queue: position {position}; no estimate yet.",
    "waiting_none": "In the queue: no kit available right now.",
    "granted": "You hold the kit: {left} left.",
    "connecting": "Granted; connecting the control account…",
    "ended": "Your session has ended ({reason}).",
    "released": "You released the kit.",
    "end_time_up": "time is up",
    "end_released": "released",
    "end_no_heartbeat": "the page stopped sending heartbeats",
    "end_ended_by_admin": "ended by a lab admin",
    "end_kit_offline": "the kit went offline",
    "end_booked_slot": "a booked slot of a course began",
    "end_kit_retired": "the kit was retired",
    "held_by": "Held by someone from {institution}.",
    "queue_length": "{n} waiting",
    "wait_under_minute": "under a minute",
    "wait_minutes": "about {n} min",
    "my_bookings": "My bookings",
    "no_bookings": "No coming bookings.",
    "booking_line": "{kit}, {course}: {start} – {end}",
    "action_failed": "{detail}",
    "pool_maintenance": "in maintenance",
    "pool_needs_attention": "needs attention",
    "pool_in_pool": "available",
    "pool_retired": "retired",
    # overview board
    "overview": "Lab overview",
    "kit": "Kit",
    "model": "Model",
    "status": "Status",
    "pool": "Pool",
    "holder": "Held by",
    "queue": "Queue",
    "values": "Latest values",
    "nobody": "free",
    "public_note": "Read-only public view.",
    "updated": "Updated {time}",
    # instructor and admin views
    "instructor": "Instructor view",
    "course": "Course",
    "no_courses": "You teach no course known to the lab service.",
    "course_sessions": "Sessions of the course's students",
    "no_sessions": "No sessions yet.",
    "course_bookings": "Bookings of the course",
    "usage": "Usage",
    "usage_kit": "Session time per kit (min)",
    "usage_student": "Session time per student (min)",
    "usage_institution": "Session time per institution (min)",
    "admin": "Lab administration",
    "admin_only": "This view is for lab admins.",
    "health": "Kit health",
    "attention": "Kits needing attention",
    "no_attention": "No kit needs attention.",
    "rejections": "Recent rejections",
    "no_rejections": "No rejected commands.",
    "errors": "errors",
    "applied": "applied",
    "rejected": "rejected",
    "last_sample": "last sample",
    "seconds_ago": "{n} s ago",
    "never": "never",
    "safe": "safe",
    "maintenance_on": "Take into maintenance",
    "maintenance_off": "Back into the pool",
    "reason": "Reason",
    "col_user": "User",
    "col_kit": "Kit",
    "col_state": "State",
    "col_start": "Start",
    "col_end": "End",
    "col_minutes": "Minutes",
    "col_sessions": "Sessions",
    "col_wait": "Mean wait (s)",
    "col_target": "Target",
    "col_reason": "Reason",
    "col_time": "Time",
    "col_end_reason": "End reason",
    # the public board and responsive pages (issue 22, looks)
    "availability": "Availability",
    "avail_available": "available",
    "avail_in_use": "in use",
    "avail_maintenance": "in maintenance",
    "avail_needs_attention": "out of service",
    "holder_none": "no one",
    # booking calendar (labs/widgets/calendar.py)
    "cal_heading": "Booking calendar",
    "cal_week": "Bookings of {course}, week",
    "cal_zone": "Times in the lab's time zone ({zone})",
    "cal_grid_label": "Bookings of the week: days as columns, hours as rows",
    "cal_weekdays": "Mon,Tue,Wed,Thu,Fri,Sat,Sun",
    "cal_block_title": "{course}: {kit} (booked by {who})",
    "cal_prev": "Previous week",
    "cal_next": "Next week",
    "cal_this_week": "This week",
    "cal_own": "Your coming bookings",
    "cal_no_own": "You have no coming bookings.",
    "cal_booking": "{kit}, {day} {start}–{end}",
    "cal_cancel": "Cancel booking",
    "cal_cancel_tooltip": "Cancel booking: {what}",
    "cal_confirm": "Cancel the booking {what}?",
    "cal_confirm_yes": "Yes, cancel it",
    "cal_confirm_no": "Keep it",
    "cal_kit": "Kit",
    "cal_day": "Day",
    "cal_start": "Start",
    "cal_duration": "Duration",
    "cal_minutes": "{n} min",
    "cal_hours": "{n} h",
    "cal_hours_minutes": "{h} h {m} min",
    "cal_book": "Book",
    "cal_need_kit": "Choose a kit.",
    "cal_need_day": "Choose a day.",
    "cal_need_start": "Choose a start time.",
    "cal_need_duration": "Choose a duration.",
    "cal_booked": "Booked: {what}.",
    "cal_cancelled": "Cancelled: {what}.",
    "cal_refused": "Not booked: {reason}",
    "cal_unreachable": "The lab service is unreachable ({detail}); nothing was changed.",
    # kits at rest (a kit nobody holds runs its automatic operation)
    "at_rest": "automatic",
    # states of sessions, queue entries and bookings (Texts.state; kit and pool states above)
    "status_granted": "granted",
    "status_active": "active",
    "status_ending": "ending",
    "status_safe": "returning to safe state",
    "status_released": "released",
    "status_waiting": "waiting",
    "status_served": "served",
    "status_left": "left the queue",
    "status_booked": "booked",
    "status_cancelled": "cancelled",
    "status_alert": "alert",
}

RU: dict[str, str] = {
    # experiment jobs
    "job_state_queued": "в очереди",
    "job_state_running": "выполняется",
    "job_state_finished": "завершено",
    "job_state_failed": "не удалось",
    "job_state_cancelled": "отменено",
    "job_outcome_completed": "отработало всё заданное время",
    "job_outcome_crashed": "регулятор остановился с ошибкой",
    "job_outcome_overran": "превышен лимит времени",
    "job_outcome_flooded": "слишком много команд",
    "job_outcome_memory": "превышен лимит памяти",
    "job_outcome_invalid": "регулятор не удалось запустить",
    "job_outcome_kit_unsafe": "стенд не подтвердил безопасное состояние",
    "job_outcome_cancelled": "отменено",
    "job_of": "задание {owner}",
    "job_holds": "На стенде выполняется задание {owner}, осталось {left}.",
    "course_jobs": "Задания-эксперименты курса",
    "all_jobs": "Задания-эксперименты",
    "no_jobs": "Заданий-экспериментов нет.",
    "col_job": "Задание",
    "col_owner": "Автор",
    "col_twin_score": "Оценка на двойнике",
    "col_kit_score": "Оценка на стенде",
    "col_outcome": "Итог",
    "col_detail": "Подробности",
    "col_action": "Действие",
    "scores_differ": "расходятся более чем на 20 %",
    "col_scores_differ": "Двойник и стенд",
    "scores_chart": "Оценки на двойнике и на стенде по студентам",
    "twin": "двойник",
    "on_kit": "стенд",
    "cancel_job": "Отменить задание {job}",
    "job_cancelled": "Задание {job} отменено.",
    "language": "Язык",
    "front_door": "Смарт Сити Лаб: главная",
    "loading": "Загрузка…",
    "no_kit": "Стенд не выбран: откройте страницу с ?kit=<id стенда> (есть: {known}).",
    "unknown_kit": "Стенда {kit} нет на брокере (есть: {known}).",
    "service_down": "Сервис лаборатории недоступен ({detail}); данные продолжают поступать, "
    "сведения об очереди и сеансе вернутся сами.",
    "broker_down": "Не удаётся подключиться к MQTT-брокеру лаборатории: {detail}",
    "config_missing": "Панель не настроена: {detail}",
    "state_ready": "на связи",
    "state_init": "запускается",
    "state_lost": "потерян",
    "state_disconnected": "выключен",
    "state_sleeping": "спит",
    "state_none": "неизвестно",
    "kit_lost": "Стенд {kit} потерян (нет связи с {since}). Ниже последние полученные "
    "значения; страница восстановится сама, когда стенд вернётся.",
    "kit_off": "Стенд {kit} выключен; страница восстановится сама, когда он вернётся.",
    "kit_back": "Стенд {kit} снова на связи.",
    "stale": "Нет данных от стенда {kit} уже {seconds} с.",
    # изображение стенда (labs/widgets/kit_picture.py)
    "picture_alt": "Живое изображение стенда {kit}",
    "picture_frame": "Кадр отсчёта {seq}, {time}",
    "picture_telemetry": "последний отсчёт {seq}",
    "picture_stale": "Камера остановлена — последний кадр в {time}",
    "picture_waiting": "Ожидание камеры…",
    "picture_none": "У этого стенда нет камеры.",
    "picture_col": "Изображение",
    "sensors": "Датчики",
    "actuators": "Исполнительные устройства",
    "window": "Окно времени",
    "window_s": "{n} с",
    "window_min": "{n} мин",
    "window_h": "{n} ч",
    # режим повтора (labs/widgets/replay.py)
    "replay_title": "Запись",
    "replay_commands": "Отправленные команды",
    "replay_no_commands": "До этого момента команд не было.",
    "replay_applied": "выполнена",
    "replay_rejected": "отклонена",
    "replay_by_service": "служба лаборатории",
    "replay_recordings": "Записи, которые вы можете посмотреть",
    "replay_none": "Нет записей этого стенда, которые вам можно посмотреть.",
    "replay_forbidden": "{detail}",
    "replay_bad_link": "Ссылка на запись повреждена: начало и конец должны быть временем.",
    "replay_needs_service": "Для записей нужна служба лаборатории, а она недоступна.",
    "latest": "последнее",
    "at": "в {time}",
    "no_value": "значений пока нет",
    "first_paint": "Подключение к живому просмотру…",
    "now": "сейчас: {value}",
    "send": "Отправить",
    "observer_hint": "Вы наблюдаете. Встаньте в очередь, чтобы управлять стендом.",
    "controller_hint": "Вы управляете стендом до {until}.",
    "acks": "Подтверждения",
    "no_acks": "Команды ещё не отправлялись.",
    "ack_applied": "{target} = {value}: применено ({ms} мс)",
    "ack_rejected": "{target} = {value}: отклонено: {reason}",
    "ack_failed": "{target} = {value}: {reason}",
    "true": "вкл",
    "false": "выкл",
    "reason_malformed": "недопустимое значение для этого устройства",
    "reason_out_of_range": "вне допустимого диапазона",
    "reason_unknown_actuator": "у стенда нет такого устройства",
    "reason_oversize": "слишком большое значение",
    "reason_wrong_kit": "команда попала не на тот стенд",
    "reason_stale": "команда пришла слишком поздно и отброшена",
    "reason_missing_id": "у команды нет идентификатора",
    "reason_missing_deadline": "у команды нет срока действия",
    "reason_interlock": "запрещено в текущем состоянии стенда",
    "reason_deadline_too_far": "срок действия команды дальше, чем принимает стенд",
    "reason_bad_response_topic": "на указанный топик ответа нельзя ответить (шаблон или пусто)",
    "reason_kit_error": "стенд не смог обработать команду; ничего не изменено",
    "reason_requires": "«{actuator}» можно менять, только когда «{other}» — {value}",
    "reason_not_authorized": "стенд больше не за вами (сеанс завершён)",
    "reason_timeout": "стенд не ответил вовремя",
    "reason_closed": "соединение закрыто",
    "reason_bad_json": "некорректный JSON: {detail}",
    "reason_other": "{detail}",
    "session": "Очередь и сеанс",
    "join": "Встать в очередь",
    "leave": "Выйти из очереди",
    "release": "Освободить стенд",
    "idle": "Стенд не за вами, и вы не в очереди.",
    "waiting": "Вы в очереди: место {position}, ожидание {wait}.",
    "waiting_unknown": "Вы в очереди: место {position}; оценки пока нет.",
    "waiting_none": "Вы в очереди: свободных стендов сейчас нет.",
    "granted": "Стенд за вами: осталось {left}.",
    "connecting": "Стенд выделен; подключаем управление…",
    "ended": "Ваш сеанс завершён ({reason}).",
    "released": "Вы освободили стенд.",
    "end_time_up": "время истекло",
    "end_released": "стенд освобождён",
    "end_no_heartbeat": "страница перестала подтверждать присутствие",
    "end_ended_by_admin": "завершён администратором",
    "end_kit_offline": "стенд отключился",
    "end_booked_slot": "началось забронированное время курса",
    "end_kit_retired": "стенд списан",
    "held_by": "Стенд занят пользователем из {institution}.",
    "queue_length": "ждут: {n}",
    "wait_under_minute": "меньше минуты",
    "wait_minutes": "около {n} мин",
    "my_bookings": "Мои бронирования",
    "no_bookings": "Предстоящих бронирований нет.",
    "booking_line": "{kit}, {course}: {start} – {end}",
    "action_failed": "{detail}",
    "pool_maintenance": "на обслуживании",
    "pool_needs_attention": "требует внимания",
    "pool_in_pool": "доступен",
    "pool_retired": "списан",
    "overview": "Обзор лаборатории",
    "kit": "Стенд",
    "model": "Модель",
    "status": "Связь",
    "pool": "Доступность",
    "holder": "Занят",
    "queue": "Очередь",
    "values": "Последние значения",
    "nobody": "свободен",
    "public_note": "Публичный просмотр, только чтение.",
    "updated": "Обновлено {time}",
    "instructor": "Панель преподавателя",
    "course": "Курс",
    "no_courses": "Сервис лаборатории не знает курсов, которые вы ведёте.",
    "course_sessions": "Сеансы студентов курса",
    "no_sessions": "Сеансов пока нет.",
    "course_bookings": "Бронирования курса",
    "usage": "Использование",
    "usage_kit": "Время сеансов по стендам (мин)",
    "usage_student": "Время сеансов по студентам (мин)",
    "usage_institution": "Время сеансов по организациям (мин)",
    "admin": "Администрирование лаборатории",
    "admin_only": "Эта панель только для администраторов лаборатории.",
    "health": "Состояние стендов",
    "attention": "Стенды, требующие внимания",
    "no_attention": "Все стенды в порядке.",
    "rejections": "Последние отклонённые команды",
    "no_rejections": "Отклонённых команд нет.",
    "errors": "ошибки",
    "applied": "применено",
    "rejected": "отклонено",
    "last_sample": "последние данные",
    "seconds_ago": "{n} с назад",
    "never": "никогда",
    "safe": "безопасно",
    "maintenance_on": "На обслуживание",
    "maintenance_off": "Вернуть в работу",
    "reason": "Причина",
    "col_user": "Пользователь",
    "col_kit": "Стенд",
    "col_state": "Состояние",
    "col_start": "Начало",
    "col_end": "Конец",
    "col_minutes": "Минуты",
    "col_sessions": "Сеансы",
    "col_wait": "Среднее ожидание (с)",
    "col_target": "Устройство",
    "col_reason": "Причина",
    "col_time": "Время",
    "col_end_reason": "Причина завершения",
    # the public board and responsive pages (issue 22, looks)
    "availability": "Доступность",
    "avail_available": "свободен",
    "avail_in_use": "занят",
    "avail_maintenance": "на обслуживании",
    "avail_needs_attention": "не работает",
    "holder_none": "никто",
    # booking calendar (labs/widgets/calendar.py)
    "cal_heading": "Календарь бронирований",
    "cal_week": "Бронирования курса {course}, неделя",
    "cal_zone": "Время по часовому поясу лаборатории ({zone})",
    "cal_grid_label": "Бронирования недели: дни по столбцам, часы по строкам",
    "cal_weekdays": "Пн,Вт,Ср,Чт,Пт,Сб,Вс",
    "cal_block_title": "{course}: {kit} (забронировал(а) {who})",
    "cal_prev": "Предыдущая неделя",
    "cal_next": "Следующая неделя",
    "cal_this_week": "Эта неделя",
    "cal_own": "Ваши предстоящие бронирования",
    "cal_no_own": "Предстоящих бронирований у вас нет.",
    "cal_booking": "{kit}, {day} {start}–{end}",
    "cal_cancel": "Отменить бронь",
    "cal_cancel_tooltip": "Отменить бронь: {what}",
    "cal_confirm": "Отменить бронь {what}?",
    "cal_confirm_yes": "Да, отменить",
    "cal_confirm_no": "Оставить",
    "cal_kit": "Стенд",
    "cal_day": "День",
    "cal_start": "Начало",
    "cal_duration": "Длительность",
    "cal_minutes": "{n} мин",
    "cal_hours": "{n} ч",
    "cal_hours_minutes": "{h} ч {m} мин",
    "cal_book": "Забронировать",
    "cal_need_kit": "Выберите стенд.",
    "cal_need_day": "Выберите день.",
    "cal_need_start": "Выберите время начала.",
    "cal_need_duration": "Выберите длительность.",
    "cal_booked": "Забронировано: {what}.",
    "cal_cancelled": "Отменено: {what}.",
    "cal_refused": "Не забронировано: {reason}",
    "cal_unreachable": "Сервис лаборатории недоступен ({detail}); ничего не изменено.",
    # kits at rest (a kit nobody holds runs its automatic operation)
    "at_rest": "автоматический режим",
    "status_granted": "выделен",
    "status_active": "идёт",
    "status_ending": "завершается",
    "status_safe": "возврат в безопасное состояние",
    "status_released": "завершён",
    "status_waiting": "в очереди",
    "status_served": "обслужен",
    "status_left": "вышел из очереди",
    "status_booked": "забронировано",
    "status_cancelled": "отменено",
    "status_alert": "тревога",
}

CATALOGUES: dict[str, dict[str, str]] = {"en": EN, "ru": RU}


class Texts(HasTraits):
    """The page's current language and its catalogue; widgets re-label on `language` changes."""

    language = Unicode(DEFAULT)

    def __init__(self, language: str = DEFAULT) -> None:
        self._bindings: list[Callable[[], None]] = []
        super().__init__(language=language if language in CATALOGUES else DEFAULT)

    def __call__(self, key: str, **fields: Any) -> str:
        catalogue = CATALOGUES[self.language]
        template = catalogue.get(key) or EN.get(key) or key
        try:
            return template.format(**fields)
        except (KeyError, IndexError, ValueError):
            return template

    def bind(self, apply: Callable[[], None]) -> Callable[[], None]:
        """Run `apply()` now and again after every language change (it sets widget traits)."""
        apply()
        self._bindings.append(apply)
        return apply

    def label(self, widget: Any, key: str, attribute: str = "description", **fields: Any) -> Any:
        """Keep `widget.<attribute>` set to the text of `key`; returns the widget."""
        self.bind(lambda: setattr(widget, attribute, self(key, **fields)))
        return widget

    @observe("language")
    def _relabel(self, _change: dict[str, Any]) -> None:
        for apply in list(self._bindings):
            try:
                apply()
            except Exception:  # one broken label must not leave the rest untranslated
                log.exception("re-labelling with %r failed", apply)

    def end_reason(self, code: str | None) -> str:
        """Why a session ended (the service's end_reason code), in the current language."""
        key = f"end_{(code or '').replace('-', '_')}"
        return self(key) if key in EN else (code or "?")

    # ------------------------------------------------ codes and kit data in the page's language

    def state(self, code: str | None) -> str:
        """A state code (kit, pool, session, queue entry, booking) as words; an unknown code
        from a newer kit or service reads as its words rather than failing."""
        if not code:
            return self("state_none")
        slug = str(code).replace("-", "_")
        for prefix in ("state_", "pool_", "status_"):
            if prefix + slug in EN:
                return self(prefix + slug)
        return readable(code)

    def _local(self, item: Mapping[str, Any] | None) -> Mapping[str, Any]:
        local = (item or {}).get(self.language) if self.language != DEFAULT else None
        return local if isinstance(local, Mapping) else {}

    def name(self, item: Mapping[str, Any] | None, fallback: str = "") -> str:
        """The name of a descriptor item (a kit model, a sensor, an actuator) in the page's
        language: its `ru.name` on a Russian page, its (English) `name` otherwise."""
        return str(self._local(item).get("name") or (item or {}).get("name") or fallback)

    def unit(self, spec: Mapping[str, Any] | None) -> str:
        """A sensor's or actuator's unit as this language writes it (lx, лк)."""
        local = self._local(spec)
        return str(local.get("unit") or (spec or {}).get("unit") or "")

    def value(self, spec: Mapping[str, Any] | None, value: Any) -> str:
        """An enum value (or a word inside a JSON value) by its name in this language."""
        words = self._local(spec).get("values") or {}
        return str(words.get(value) or readable(str(value)))

    def model(self, code: str | None) -> str:
        """A kit model by its name, for pages that know only its code (the lab service's kit
        lists); the names come from the descriptors in this checkout."""
        return self.name(known_models().get(code or ""), readable(code or "?"))

    def institution(self, code: str | None) -> str:
        """An institution by its name (the site file's `name` / `ru.name`), else its id."""
        return self.name(site_institutions().get(code or ""), code or "–")

    def course(self, code: str | None) -> str:
        """A course by its title (the site file's, one language: it is the course's name)."""
        return str(site_entries("courses").get(code or "", {}).get("title") or code or "–")

    def point(self, model: str | None, actuator: str | None) -> dict[str, Any] | None:
        """The spec of a model's actuator from the descriptors in this checkout, if known."""
        return known_models().get(model or "", {}).get("actuators", {}).get(actuator or "")

    def description(self, descriptor: Mapping[str, Any] | None) -> str:
        return str(
            self._local(descriptor).get("description")
            or (descriptor or {}).get("description")
            or ""
        ).strip()

    def reason(
        self,
        reason: str | None,
        detail: str | None = None,
        descriptor: dict[str, Any] | None = None,
        target: str | None = None,
    ) -> str:
        """A command's failure reason in the current language.

        An interlock of kind `requires` is explained from the kit's descriptor (the kit's own
        detail text is English); other kit reasons get their translated description."""
        if reason == "interlock" and descriptor and target:
            for rule in descriptor.get("interlocks", []):
                if rule.get("kind") == "requires" and rule.get("actuator") == target:
                    ((other, value),) = list((rule.get("when") or {"?": "?"}).items())[:1]
                    actuators = descriptor.get("actuators", {})
                    other_spec = actuators.get(other)
                    return self(
                        "reason_requires",
                        actuator=self.name(actuators.get(target), target),
                        other=self.name(other_spec, other),
                        value=self.value(other_spec, value),
                    )
        key = f"reason_{reason}"
        if reason and key in EN:
            return self(key)
        return self("reason_other", detail=detail or reason or "?")


@functools.cache
def known_models() -> dict[str, dict[str, Any]]:
    """The kit models of this checkout (empty if they cannot be read: codes then show as words)."""
    try:
        return load_models()
    except DescriptorError:
        log.exception("cannot read the kit model descriptors")
        return {}


@functools.cache
def site_entries(section: str) -> dict[str, dict[str, Any]]:
    """The site file's `institutions` or `courses` by id (names and titles only are used);
    empty if this account cannot read the site file: pages then show ids."""
    try:
        data = read_yaml(default_site())
    except DescriptorError:
        return {}
    listed = data.get(section) if isinstance(data, dict) else None
    return {str(i["id"]): i for i in listed or () if isinstance(i, dict) and "id" in i}


def site_institutions() -> dict[str, dict[str, Any]]:
    return site_entries("institutions")


def readable(code: str) -> str:
    """A code nobody translated, as words ("needs-attention" -> "needs attention")."""
    return code.replace("-", " ").replace("_", " ")


def job_state(texts: Callable[..., str], code: str | None) -> str:
    """A job's state (queued, running, …) as words; `texts` is any page's catalogue."""
    key = f"job_state_{code}"
    word = texts(key)
    return readable(code or "?") if word == key else word


def job_outcome(texts: Callable[..., str], code: str | None) -> str:
    """A job's outcome code as words ("–" while it has none)."""
    if not code:
        return "–"
    key = f"job_outcome_{code.replace('-', '_')}"
    word = texts(key)
    return readable(code) if word == key else word


def wait_text(texts: Texts, seconds: float | None) -> str:
    """An estimated wait in words ("under a minute", "about 3 min")."""
    if seconds is None:
        return "?"
    if seconds < 60:
        return texts("wait_under_minute")
    return texts("wait_minutes", n=int(-(-seconds // 60)))
