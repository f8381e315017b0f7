"""Every user-facing message of the lab service, in English and Russian.

A refusal is raised with a stable code and its fields (`Coded`: `SharingError`, `ApiError`);
the HTTP edge renders it in the request's language (`render`) and also sends the code, so a
client may word it itself. A field's value may itself be a message, `(code, fields)`, rendered
in the same language (a validation problem inside "invalid body: ...", a state word).
"""

from __future__ import annotations

from typing import Any

LANGUAGES = ("en", "ru")

# code: (English, Russian). English wording is the service's historical one (clients match it).
CATALOGUE: dict[str, tuple[str, str]] = {
    # kits and the pool
    "kit-registered": ("kit {kit} is already registered", "стенд {kit} уже зарегистрирован"),
    "kit-retired": ("kit {kit} is retired", "стенд {kit} списан"),
    "no-kit": ("no kit {kit}", "нет стенда {kit}"),
    "no-kit-of-model": ("no kit of model {model}", "нет стенда модели {model}"),
    "unknown-model": (
        "unknown kit model {model!r} (known: {known})",
        "неизвестная модель стенда {model!r} (известны: {known})",
    ),
    "lab-admin-only": ("this needs a lab admin", "это может только администратор лаборатории"),
    # queue and sessions
    "kit-or-model": ("ask for either a kit or a kit model", "укажите либо стенд, либо модель"),
    "already-holding": ("you already hold this kit", "этот стенд уже у вас"),
    "already-waiting": ("you are already waiting", "вы уже в очереди"),
    "already-waiting-entry": (
        "you are already waiting (queue entry {entry})",
        "вы уже в очереди (запись {entry})",
    ),
    "no-queue-entry": ("no queue entry {entry} of yours", "у вас нет записи {entry} в очереди"),
    "entry-not-waiting": (
        "queue entry {entry} is no longer waiting ({state})",
        "запись {entry} в очереди больше не ждёт ({state})",
    ),
    "session-ended": (
        "session {session} has ended ({reason})",
        "сеанс {session} завершён ({reason})",
    ),
    "no-session": ("no session {session}", "нет сеанса {session}"),
    "no-session-of-yours": ("no session {session} of yours", "у вас нет сеанса {session}"),
    "course-sessions-forbidden": (
        "only instructors of {course} and lab admins see its sessions",
        "сеансы курса {course} видят только его преподаватели и администраторы лаборатории",
    ),
    # experiment jobs (jobs.py)
    "job-state-queued": ("queued", "в очереди"),
    "job-state-running": ("running", "выполняется"),
    "job-state-finished": ("finished", "завершено"),
    "job-state-failed": ("failed", "не удалось"),
    "job-state-cancelled": ("cancelled", "отменено"),
    "job-outcome-completed": ("ran its full duration", "отработало всё заданное время"),
    "job-outcome-crashed": (
        "the controller raised an error or stopped",
        "регулятор завершился с ошибкой или остановился",
    ),
    "job-outcome-overran": (
        "stopped: it went over its CPU or time limit",
        "остановлено: превышен лимит процессорного времени или длительности",
    ),
    "job-outcome-flooded": (
        "stopped: it sent too many commands",
        "остановлено: отправлено слишком много команд",
    ),
    "job-outcome-memory": (
        "stopped: it went over its memory limit",
        "остановлено: превышен лимит памяти",
    ),
    "job-outcome-invalid": (
        "the controller could not be started (no such name, not callable or a syntax error)",
        "регулятор не удалось запустить (нет такого имени, не вызывается или синтаксическая "
        "ошибка)",
    ),
    "job-outcome-kit-unsafe": (
        "the kit did not confirm its safe state or went offline",
        "стенд не подтвердил безопасное состояние или отключился",
    ),
    "job-outcome-cancelled": ("cancelled", "отменено"),
    "job-outcome-platform-error": (
        "the lab could not run it (a fault of the platform, not of the controller); "
        "submit it again",
        "лаборатория не смогла его запустить (сбой платформы, а не регулятора); отправьте "
        "задание ещё раз",
    ),
    "no-job": ("no job {job}", "нет задания {job}"),
    "job-runner-only": (
        "only the job runner may do this",
        "это может только исполнитель заданий",
    ),
    "job-course-not-yours": (
        "you do not take or teach course {course}",
        "вы не слушаете и не ведёте курс {course}",
    ),
    "job-owner-forbidden": (
        "only instructors of {course} submit jobs for its students",
        "задания за студентов курса {course} отправляют только его преподаватели",
    ),
    "job-owner": ("{owner} cannot own a job", "{owner} не может быть владельцем задания"),
    "job-score-field": ("no score field {field}", "нет поля оценки {field}"),
    "job-course-forbidden": (
        "only instructors of {course} and lab admins see its jobs",
        "задания курса {course} видят только его преподаватели и администраторы лаборатории",
    ),
    "job-cancel-forbidden": (
        "only the owner of job {job} and lab admins may cancel it",
        "отменить задание {job} могут только его автор и администраторы лаборатории",
    ),
    "job-ended": ("job {job} has already ended ({state})", "задание {job} уже закончено ({state})"),
    "job-not-running": (
        "job {job} is not running ({state})",
        "задание {job} не выполняется ({state})",
    ),
    "job-not-ended": ("job {job} has not ended yet", "задание {job} ещё не закончено"),
    "job-too-many": (
        "you already have {n} jobs queued or running",
        "у вас уже {n} заданий в очереди или в работе",
    ),
    "job-outcome-unknown": (
        "unknown outcome {outcome!r} (known: {known})",
        "неизвестный итог {outcome!r} (известны: {known})",
    ),
    "job-duration": (
        "duration_s: from {low} to {high} seconds",
        "duration_s: от {low} до {high} секунд",
    ),
    "job-inputs": (
        "inputs: a JSON object of at most {kb} KB",
        "inputs: JSON-объект не больше {kb} КБ",
    ),
    "job-source": (
        "controller.source: at most {kb} KB",
        "controller.source: не больше {kb} КБ",
    ),
    "job-entry": (
        "controller.entry: {entry!r} is not a Python name",
        "controller.entry: {entry!r} — не имя в Python",
    ),
    # bookings
    "booking-not-instructor": (
        "only instructors of {course} can book for it",
        "бронировать для курса {course} могут только его преподаватели",
    ),
    "booking-clash": (
        "kit {kit} is already booked from {starts} to {ends} (booking {booking})",
        "стенд {kit} уже забронирован с {starts} до {ends} (бронь {booking})",
    ),
    "no-booking": ("no booking {booking}", "нет брони {booking}"),
    "booking-not-yours": (
        "booking {booking} is not yours to cancel",
        "бронь {booking} не ваша, отменить её нельзя",
    ),
    "booking-in-past": (
        "a booking cannot start in the past",
        "бронь не может начинаться в прошлом",
    ),
    "booking-too-soon": (
        "bookings must start at least {minutes} minutes ahead; use the queue for now",
        "бронь должна начинаться не раньше чем через {minutes} мин; сейчас встаньте в очередь",
    ),
    "booking-too-far": (
        "bookings can be made at most {days} days ahead",
        "бронировать можно не больше чем на {days} дн. вперёд",
    ),
    "booking-length": (
        "a booking lasts {min_minutes} to {max_minutes} minutes",
        "бронь длится от {min_minutes} до {max_minutes} мин",
    ),
    "booking-grain": (
        "bookings start and end on {minutes}-minute boundaries",
        "бронь начинается и кончается на границе {minutes}-минутного интервала",
    ),
    "quota-user": (
        "over your weekly booking quota of {hours} h",
        "превышена ваша недельная квота брони ({hours} ч)",
    ),
    "quota-institution": (
        "over the weekly booking quota of {institution} ({hours} h)",
        "превышена недельная квота брони организации {institution} ({hours} ч)",
    ),
    # requests: bodies, paths, queries
    "body-not-json": (
        "the body must be JSON (Content-Type: application/json), not {media!r}",
        "тело запроса должно быть JSON (Content-Type: application/json), а не {media!r}",
    ),
    "body-missing": ("this request needs a JSON body", "этому запросу нужно тело JSON"),
    "body-invalid": ("invalid body: {problem}", "неверное тело запроса: {problem}"),
    "body-chunked": (
        "send the body with a Content-Length (chunked bodies are not taken)",
        "отправьте тело с Content-Length (тела по частям не принимаются)",
    ),
    "content-length-malformed": ("malformed Content-Length", "неверный Content-Length"),
    "body-too-large": (
        "the body is larger than the limit of {limit} bytes",
        "тело запроса больше предела в {limit} байт",
    ),
    "malformed-request": (
        "malformed request ({kind}): {detail}",
        "неверный запрос ({kind}): {detail}",
    ),
    "kit-id-invalid": (
        "a kit id is a-z, 0-9 and -, at most 64, not {value!r}",
        "номер стенда состоит из a-z, 0-9 и -, не длиннее 64, а не {value!r}",
    ),
    "id-invalid": (
        "{what} id must be a positive integer, not {value!r}",
        "номер {what} должен быть целым положительным, а не {value!r}",
    ),
    "query-unknown": ("unknown query parameter {name!r}", "неизвестный параметр запроса {name!r}"),
    "query-bool": (
        "query parameter {name} must be 1/true or 0/false",
        "параметр запроса {name} должен быть 1/true или 0/false",
    ),
    "query-time": (
        "query parameter {name} must be an ISO 8601 time or epoch seconds",
        "параметр запроса {name} должен быть временем ISO 8601 или секундами эпохи",
    ),
    "history-range": (
        "end {end} is before start {start} (epoch seconds)",
        "конец {end} раньше начала {start} (секунды эпохи)",
    ),
    "history-sensors": (
        "unknown sensor(s) of a {model} kit: {unknown} (it has {known})",
        "у стенда {model} нет датчиков: {unknown} (есть: {known})",
    ),
    "history-invalid": ("{detail}", "неверный запрос истории: {detail}"),
    "no-api-path": ("no such API path: {path}", "нет такого пути API: {path}"),
    "method-not-allowed": (
        "{method} is not allowed on {path}; allowed: {allowed}",
        "{method} недопустим для {path}; допустимы: {allowed}",
    ),
    "method-not-allowed-here": (
        "{method} is not allowed on this path; allowed: {allowed}",
        "{method} недопустим для этого пути; допустимы: {allowed}",
    ),
    "http-error": ("{reason}", "ошибка HTTP {status} ({reason})"),
    # who is calling
    "auth-required": ("authentication required", "нужно войти"),
    "auth-token": (
        "missing or unknown token: send the header 'Authorization: token <token>'",
        "нет токена или он неизвестен: отправьте заголовок 'Authorization: token <токен>'",
    ),
    "auth-hub": (
        "missing, unknown or expired JupyterHub token: send 'Authorization: "
        "token <token>' (in a user's server: $JUPYTERHUB_API_TOKEN), or log in "
        "through the hub",
        "нет токена JupyterHub, он неизвестен или истёк: отправьте 'Authorization: token "
        "<токен>' (на сервере пользователя: $JUPYTERHUB_API_TOKEN) или войдите через хаб",
    ),
    "hub-unreachable": (
        "cannot ask JupyterHub who is calling: {detail}",
        "не удалось спросить JupyterHub, кто обращается: {detail}",
    ),
    "hub-not-user": (
        "{kind} {name} is not a hub user: the lab serves users only",
        "{kind} {name} не пользователь хаба: лаборатория обслуживает только пользователей",
    ),
    "hub-scope": (
        "this token of hub user {name} does not give access to the lab service "
        "(it lacks the scope {scope})",
        "этот токен пользователя хаба {name} не даёт доступа к лаборатории (нет права {scope})",
    ),
    "hub-down": (
        "cannot reach JupyterHub at {url}: {detail}",
        "JupyterHub по адресу {url} недоступен: {detail}",
    ),
    "hub-user-gone": ("hub user {name} no longer exists", "пользователя хаба {name} больше нет"),
    "hub-groups-forbidden": (
        "the lab service may not read users' groups at the hub "
        "(its role needs read:users:groups); an admin must fix this",
        "лаборатории не разрешено читать группы пользователей хаба "
        "(её роли нужно read:users:groups); это должен исправить администратор",
    ),
    "hub-answer": (
        "JupyterHub answered {code} when asked for {name}'s groups",
        "JupyterHub ответил {code} на запрос групп пользователя {name}",
    ),
    "hub-no-institution": (
        "hub user {name} belongs to no institution: a hub admin adds "
        "them to a group {prefix}<institution>",
        "пользователь хаба {name} не входит ни в одну организацию: администратор хаба "
        "добавляет его в группу {prefix}<организация>",
    ),
    "hub-many-institutions": (
        "hub user {name} belongs to several institutions ({listed}); the lab needs exactly one",
        "пользователь хаба {name} входит в несколько организаций ({listed}); нужна ровно одна",
    ),
    "hub-bad-name": (
        "hub user {name!r} cannot use the lab: {detail}",
        "пользователь хаба {name!r} не может работать в лаборатории: {detail}",
    ),
    # replay of recorded ranges
    "replay-forbidden": (
        "you may not replay this time of kit {kit}: only your own sessions, your courses' "
        "booked slots (instructors: their courses' sessions) and, for lab admins, everything",
        "этот отрезок стенда {kit} вам смотреть нельзя: доступны только ваши сеансы, "
        "забронированные занятия ваших курсов (преподавателям — сеансы их курсов), "
        "администраторам лаборатории — всё",
    ),
    "replay-range": (
        "start and end must be times with start before end (got {start} and {end})",
        "start и end должны быть временем, start раньше end (получено {start} и {end})",
    ),
    "replay-too-long": (
        "a replay covers at most {hours} hours; ask for a shorter range",
        "повтор охватывает не больше {hours} ч; запросите отрезок короче",
    ),
    "replay-query": ("query parameter {name} is required", "нужен параметр запроса {name}"),
    "frame-ts": (
        "frame time {value!r} is not epoch seconds",
        "время кадра {value!r} — не секунды эпохи",
    ),
    "no-frame": (
        "no recorded frame of kit {kit} at {ts}",
        "нет записанного кадра стенда {kit} в {ts}",
    ),
    # the service itself
    "broker-failed": (
        "the MQTT broker failed, try again: {detail}",
        "сбой брокера MQTT, попробуйте ещё раз: {detail}",
    ),
    "internal-error": (
        "internal error ({kind}); it has been logged",
        "внутренняя ошибка ({kind}); она записана в журнал",
    ),
    "service-stopping": (
        "the lab service is stopping, try again",
        "служба лаборатории останавливается, попробуйте ещё раз",
    ),
    "text": ("{text}", "{text}"),  # a reason with no code (raised with free text): as given
    # words inside messages: what an id names (Russian: genitive), states, end reasons
    "noun-entry": ("entry", "записи в очереди"),
    "noun-session": ("session", "сеанса"),
    "noun-job": ("job", "задания"),
    "noun-booking": ("booking", "брони"),
    "state-waiting": ("waiting", "ждёт"),
    "state-served": ("served", "обслужена"),
    "state-left": ("left", "покинута"),
    "reason-time-up": ("time-up", "время вышло"),
    "reason-released": ("released", "освобождён"),
    "reason-no-heartbeat": ("no-heartbeat", "нет сигнала присутствия"),
    "reason-ended-by-admin": ("ended-by-admin", "завершён администратором"),
    "reason-kit-offline": ("kit-offline", "стенд не в сети"),
    "reason-booked-slot": ("booked-slot", "началась бронь"),
    "reason-kit-retired": ("kit-retired", "стенд списан"),
    "reason-job-finished": ("job-finished", "задание завершено"),
    "reason-job-cancelled": ("job-cancelled", "задание отменено"),
    # validation problems of a body (pydantic error types); English: pydantic's own words
    "v-json_invalid": ("malformed JSON: {detail}", "некорректный JSON: {detail}"),
    "v-missing": ("{msg}", "обязательное поле"),
    "v-extra_forbidden": ("{msg}", "лишнее поле"),
    "v-string_type": ("{msg}", "должно быть строкой"),
    "v-bool_type": ("{msg}", "должно быть true или false"),
    "v-int_type": ("{msg}", "должно быть целым числом"),
    "v-float_type": ("{msg}", "должно быть числом"),
    "v-finite_number": ("{msg}", "должно быть конечным числом"),
    "v-model_type": ("{msg}", "должно быть объектом JSON"),
    "v-model_attributes_type": ("{msg}", "должно быть объектом JSON"),
    "v-dict_type": ("{msg}", "должно быть объектом JSON"),
    "v-string_too_short": ("{msg}", "строка короче {min_length} симв."),
    "v-string_too_long": ("{msg}", "строка длиннее {max_length} симв."),
    "v-string_pattern_mismatch": ("{msg}", "строка не подходит под шаблон {pattern!r}"),
    "v-time-format": (
        "expected an ISO 8601 time or epoch seconds",
        "ожидается время ISO 8601 или секунды эпохи",
    ),
    "v-time-range": (
        "a time must be {low}..{high} s",
        "время должно быть в пределах {low}..{high} с",
    ),
    "v-queue-null": (
        "kit and model are strings; leave out the one not asked for",
        "kit и model — строки; не указывайте то, что не нужно",
    ),
    "v-kit-or-model": ("ask for either a kit or a kit model", "укажите либо стенд, либо модель"),
    "v-job-inputs": (
        "inputs: a JSON object of at most 16 KB",
        "inputs: JSON-объект не больше 16 КБ",
    ),
    "v-located": ("{where}: {problem} {more}", "{where}: {problem} {more}"),
    "v-plain": ("{problem} {more}", "{problem} {more}"),  # `more`: "" or v-more
    "v-more": ("(and {n} more)", "(и ещё {n})"),
    "v-other": ("{msg}", "{msg}"),  # a pydantic type with no Russian words here
}

Message = tuple[str, dict[str, Any]]  # (code, fields): a message before it has a language


def message(code: str, **fields: Any) -> Message:
    return (code, fields)


def _value(value: Any, lang: str) -> Any:
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], dict)
    ):
        return render(value[0], value[1], lang)
    return value


def render(code: str, fields: dict[str, Any], lang: str = "en") -> str:
    """The message `code` in `lang` (English for any other), as one line. An unknown code or a
    field the wording lacks never fails: the English text, or the code itself, is shown."""
    texts = CATALOGUE.get(code)
    if texts is None:
        return one_line(str(fields.get("text") or code))
    values = {name: _value(v, lang) for name, v in fields.items()}
    template = texts[1] if lang == "ru" else texts[0]
    try:
        return one_line(template.format(**values))
    except (KeyError, IndexError, ValueError):
        try:
            return one_line(texts[0].format(**values))
        except (KeyError, IndexError, ValueError):
            return code


def one_line(text: str) -> str:
    return " ".join(str(text).split()) or "error"


class Words:
    """Words for people inside an answer (a job's state, its outcome): rendered in the request's
    language when the answer is written (api_http), English by str()."""

    __slots__ = ("code", "fields")

    def __init__(self, code: str, /, **fields: Any) -> None:
        self.code, self.fields = code, fields

    def text(self, lang: str = "en") -> str:
        return render(self.code, self.fields, lang)

    def __str__(self) -> str:
        return self.text()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Words) and (self.code, self.fields) == (other.code, other.fields)

    __hash__ = None  # type: ignore[assignment]


class Coded(Exception):
    """An exception that carries a message code and its fields; str() is the English text.

    `Coded("no-kit", kit="x")` names a catalogue entry; `Coded("free text")` (a code not in
    the catalogue, with no fields) keeps working, shown as given in every language."""

    def __init__(self, code: str, /, **fields: Any) -> None:
        if code not in CATALOGUE:
            code, fields = "text", {"text": code}
        self.code, self.fields = code, fields
        super().__init__(render(code, fields))

    def text(self, lang: str) -> str:
        return render(self.code, self.fields, lang)
