"""The lab service's operations and the one route table (`ROUTES`) that builds both the HTTP
handlers (api_http.py) and the OpenAPI document (api_openapi.py), so the two cannot drift.
Operations only parse, call the service and answer: the rules live in `service.KitSharing`
(and the read-only exports in `records`)."""

from __future__ import annotations

import asyncio
import base64
import functools
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from hardware_kits.descriptor import load_models
from hardware_kits.mqtt import Credentials
from lab_service import history, records, replay
from lab_service.api_schemas import (
    EPOCH_TEXT,
    ISO_TIME,
    KIT_ID,
    MAX_ID,
    ApiError,
    BoardKit,
    Body,
    BookingCreate,
    BookingView,
    JobClaim,
    JobCreate,
    JobFinish,
    JobResult,
    JobScore,
    JobView,
    KitCreate,
    KitHealth,
    KitView,
    MaintenanceChange,
    Me,
    MqttUrls,
    QueueEntryView,
    QueueRequest,
    SessionView,
    Usage,
    _epoch,
)
from lab_service.jobs import JobBook
from lab_service.messages import CATALOGUE, message, one_line
from lab_service.service import KitSharing, NotFound, User

# ---------------------------------------------------------------- what handlers reach


class Accounts(Protocol):
    """The users' MQTT accounts (rights.BrokerRights)."""

    def watch_account(self, user: str, kit_ids: list[str] | None) -> Credentials: ...
    def control_account(self, user: str) -> Credentials: ...


@dataclass
class ApiContext:
    """What the operations reach, in the service process."""

    service: KitSharing
    accounts: Accounts
    mqtt_url: Callable[[Credentials], str]  # the URL users connect with, for an account
    provision_kits: Callable[[list[str]], object]  # broker roles and account of new kits
    kit_health: Callable[[str], dict[str, Any]] = lambda _kit: {
        "mqtt_state": None,
        "last_telemetry_at": None,
        "counters": None,
    }
    models: frozenset[str] = frozenset()  # known kit models (empty: any)
    jobs: JobBook | None = None  # experiment jobs (None: the service runs none)
    openapi: dict[str, Any] = field(default_factory=dict)  # set by Operations
    queue_batcher: QueueBatcher = field(init=False)  # set by Operations


class QueueBatcher:
    """Queue requests that arrive in the same turn of the event loop are decided together
    (`KitSharing.request_many`): a burst costs the queue-wide work once. A lone request is
    decided on the very next turn, so nothing waits when the service is idle."""

    def __init__(self, service: KitSharing) -> None:
        self.service = service
        self._pending: list[tuple[User, str | None, str | None, asyncio.Future]] = []

    def submit(self, user: User, kit: str | None, model: str | None) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._pending:
            loop.call_soon(self._decide)
        self._pending.append((user, kit, model, future))
        return future

    def _decide(self) -> None:
        batch, self._pending = self._pending, []
        try:
            results = self.service.request_many([(u, k, m) for u, k, m, _ in batch])
        except Exception as err:  # the transaction failed: every request of it learns so
            results = [err] * len(batch)
        for (*_, future), result in zip(batch, results, strict=True):
            if future.cancelled():  # its front end went away
                continue
            if isinstance(result, Exception):
                future.set_exception(result)
            else:
                future.set_result(result)


@dataclass
class Call:
    ctx: ApiContext
    user: User | None  # None only on public routes
    args: dict[str, Any]
    query: dict[str, Any]
    body: Any

    @property
    def service(self) -> KitSharing:
        return self.ctx.service

    @property
    def jobs(self) -> JobBook:
        if self.ctx.jobs is None:
            raise ApiError(404, "no-api-path", path="/api/jobs")
        return self.ctx.jobs


# ---------------------------------------------------------------- operations


def list_kits(c: Call) -> list[dict]:
    return c.service.kits()


def board_kits(c: Call) -> list[dict]:
    """Every kit as an anonymous visitor may know it: available, in use (by which institution)
    or out of the pool, and how many wait. The public board reads this without a token."""
    return [board_view(k) for k in c.service.kits()]


def board_view(kit: dict[str, Any]) -> dict[str, Any]:
    if kit["pool"] != "in-pool":
        availability = kit["pool"]  # maintenance, needs-attention
    else:
        availability = "in-use" if kit["session_state"] else "available"
    return {
        "id": kit["id"],
        "model": kit["model"],
        "name": kit["name"],
        "availability": availability,
        "online": kit["online"],
        "holder_institution": kit["holder_institution"],
        "queue_length": kit["queue_length"],
    }


def register_kit(c: Call) -> dict:
    body: KitCreate = c.body
    if c.ctx.models and body.model not in c.ctx.models:
        raise ApiError(
            400, "unknown-model", model=body.model, known=", ".join(sorted(c.ctx.models))
        )
    if any(k["id"] == body.id for k in c.service.kits()):
        # Checked before provisioning: re-provisioning resets the kit's account, which
        # disconnects the kit and would end its holder's session.
        raise ApiError(409, "kit-registered", kit=body.id)
    c.ctx.provision_kits([body.id])  # idempotent; a kit in the pool must be commandable
    return c.service.register_kit(c.user, body.id, body.model, body.name)


def kit_health(c: Call) -> dict:
    kit_id = c.args["kit_id"]
    view = next((k for k in c.service.kits() if k["id"] == kit_id), None)
    if view is None:
        raise NotFound("no-kit", kit=kit_id)
    return {**view, **c.ctx.kit_health(kit_id)}


def retire_kit(c: Call) -> dict:
    return c.service.retire_kit(c.user, c.args["kit_id"])


def set_maintenance(c: Call) -> dict:
    body: MaintenanceChange = c.body
    return c.service.set_maintenance(c.user, c.args["kit_id"], body.on, body.reason)


def join_queue(c: Call) -> Awaitable[dict]:
    body: QueueRequest = c.body
    return c.ctx.queue_batcher.submit(c.user, body.kit, body.model)


def my_queue(c: Call) -> list[dict]:
    return c.service.my_queue(c.user)


def queue_entry(c: Call) -> dict:
    return c.service.queue_entry(c.user, c.args["entry_id"])


def leave_queue(c: Call) -> dict:
    return c.service.leave(c.user, c.args["entry_id"])


def list_sessions(c: Call) -> list[dict]:
    return c.service.sessions(
        c.user, live_only=c.query.get("live", False), course=c.query.get("course") or None
    )


def heartbeat(c: Call) -> dict:
    return c.service.heartbeat(c.user, c.args["session_id"])


def release(c: Call) -> dict:
    return c.service.release(c.user, c.args["session_id"])


def end_session(c: Call) -> dict:
    return c.service.end_session(c.user, c.args["session_id"])


def list_bookings(c: Call) -> list[dict]:
    return c.service.bookings(c.user)


def book(c: Call) -> dict:
    b: BookingCreate = c.body
    return c.service.book(c.user, b.kit, b.course, b.starts_at, b.ends_at, b.group)


def cancel_booking(c: Call) -> dict:
    return c.service.cancel_booking(c.user, c.args["booking_id"])


def me(c: Call) -> dict:
    u = c.user
    return {
        "name": u.name,
        "institution": u.institution,
        "courses": sorted(u.courses),
        "instructor_of": sorted(u.instructor_of),
        "lab_admin": u.lab_admin,
        "priority": u.priority,
    }


def mqtt_urls(c: Call) -> dict:
    accounts = c.ctx.accounts
    return {
        "watch": c.ctx.mqtt_url(accounts.watch_account(c.user.name, None)),
        "control": c.ctx.mqtt_url(accounts.control_account(c.user.name)),
    }


def sessions_csv(c: Call) -> str:
    return records.sessions_csv(c.service.store, c.user)


def commands_csv(c: Call) -> str:
    return records.commands_csv(c.service.store, c.user)


def usage(c: Call) -> dict:
    return records.usage(c.service.store, c.service.clock())


def _history_rows(c: Call) -> tuple[list[dict], list[str]]:
    """The kit's recorded samples in [from, to) (default: the last hour)."""
    kit_id = c.args["kit_id"]
    view = next((k for k in c.service.kits() if k["id"] == kit_id), None)
    if view is None:
        raise NotFound("no-kit", kit=kit_id)
    descriptor = _descriptors().get(view["model"])
    end = _query_time(c.query, "to", c.service.clock())
    start = _query_time(c.query, "from", end - 3600.0)
    wanted = [s for s in c.query.get("sensors", "").split(",") if s] or None
    if end < start:  # history.history would refuse it too, in English
        raise ApiError(400, "history-range", start=start, end=end)
    known = list((descriptor or {}).get("sensors", {}))
    unknown = [name for name in wanted or [] if descriptor is not None and name not in known]
    if unknown:
        raise ApiError(
            400,
            "history-sensors",
            model=view["model"],
            unknown=", ".join(unknown),
            known=", ".join(known),
        )
    try:
        rows = history.history(c.service.store, kit_id, start, end, wanted, descriptor=descriptor)
    except ValueError as err:
        raise ApiError(400, "history-invalid", detail=one_line(str(err))) from None
    sensors = wanted or list((descriptor or {}).get("sensors", {}))
    return rows, sensors


def history_json(c: Call) -> list[dict]:
    return _history_rows(c)[0]


def history_csv(c: Call) -> str:
    return history.history_csv(*_history_rows(c))


FRAMES_PER_ANSWER = 300  # a page of recorded frames (~3 MB of JPEG); the client pages on


def frames_json(c: Call) -> list[dict]:
    """The kit's recorded camera frames in [from, to), oldest first, JPEG as base64; at most
    FRAMES_PER_ANSWER (ask again from the last one's ts for more)."""
    kit_id = c.args["kit_id"]
    if not any(k["id"] == kit_id for k in c.service.kits()):
        raise NotFound("no-kit", kit=kit_id)
    end = _query_time(c.query, "to", c.service.clock())
    start = _query_time(c.query, "from", end - 3600.0)
    if end < start:
        raise ApiError(400, "history-range", start=start, end=end)
    rows = replay.recorded_frames(
        c.service.store, c.user, kit_id, start, end, c.service.clock(), limit=FRAMES_PER_ANSWER
    )
    return [
        {"ts": r.ts, "seq": r.seq, "jpeg": base64.b64encode(r.jpeg).decode("ascii")} for r in rows
    ]


def _query_time(query: dict[str, Any], name: str, default: float) -> float:
    """`from`/`to`: epoch seconds or an ISO 8601 time; absent or empty: the default."""
    text = query.get(name, "")
    if not text:
        return default
    try:
        return float(_epoch(float(text) if re.fullmatch(EPOCH_TEXT, text) else text))
    except (ValueError, TypeError):
        raise ApiError(400, "query-time", name=name) from None


@functools.cache
def _descriptors() -> dict[str, dict]:
    return load_models()


def kit_replay(c: Call) -> dict:
    """A recorded range of a kit as the caller may see it (lab_service/replay.py's rules)."""
    kit_id = c.args["kit_id"]
    for name in ("start", "end"):
        if not c.query.get(name):
            raise ApiError(400, "replay-query", name=name)
    start = _query_time(c.query, "start", 0.0)
    end = _query_time(c.query, "end", 0.0)
    model = next((k["model"] for k in c.service.kits() if k["id"] == kit_id), None)
    return replay.replay(
        c.service.store,
        c.user,
        kit_id,
        start,
        end,
        c.service.clock(),
        descriptor=_descriptors().get(model or ""),
    )


def kit_frame(c: Call) -> bytes:
    raw = c.args["ts"]
    if not re.fullmatch(EPOCH_TEXT, raw):
        raise ApiError(400, "frame-ts", value=raw[:40])
    return replay.frame(c.service.store, c.user, c.args["kit_id"], float(raw), c.service.clock())


# ---------------------------------------------------------------- experiment jobs


def submit_job(c: Call) -> dict:
    b: JobCreate = c.body
    return c.jobs.submit(
        c.user,
        kit_id=b.kit,
        model=b.model,
        duration_s=b.duration_s,
        inputs=b.inputs,
        source=b.controller.source,
        entry=b.controller.entry,
        course=b.course,
        assignment=b.assignment,
        owner=b.owner,
    )


def list_jobs(c: Call) -> list[dict]:
    return c.jobs.jobs(c.user, course=c.query.get("course") or None, everyone=c.query.get("all"))


def get_job(c: Call) -> dict:
    return c.jobs.job(c.user, c.args["job_id"])


def job_result(c: Call) -> dict:
    return c.jobs.result(c.user, c.args["job_id"])


def cancel_job(c: Call) -> dict:
    return c.jobs.cancel(c.user, c.args["job_id"])


def claim_job(c: Call) -> dict | None:
    return c.jobs.claim(c.user)


def job_heartbeat(c: Call) -> dict:
    return c.jobs.heartbeat(c.user, c.args["job_id"])


def finish_job(c: Call) -> dict:
    b: JobFinish = c.body
    return c.jobs.finish(c.user, c.args["job_id"], b.outcome, b.detail)


def score_job(c: Call) -> dict:
    b: JobScore = c.body
    given = {name: getattr(b, name) for name in b.model_fields_set & {"score", "twin_score"}}
    return c.jobs.score(c.user, c.args["job_id"], **given)


def openapi_document(c: Call) -> dict:
    return c.ctx.openapi


# ---------------------------------------------------------------- the route table


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    kind: type = bool
    schema: dict[str, Any] | None = None  # the document's, when more than its kind says
    required: bool = False


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # OpenAPI template: /api/kits/{kit_id}; names ending in _id are integers
    op: Callable[[Call], Any]
    summary: str
    body: type[Body] | None = None
    response: Any = None  # a model, [a model] for an array, or a media type's schema
    status: int = 200
    query: tuple[Query, ...] = ()
    admin: bool = False  # lab admins only (also checked by the service)
    public: bool = False  # no identity needed
    media: str = "application/json"

    @property
    def key(self) -> str:
        return f"{self.method} {self.path}"


LIVE = Query("live", "only sessions that are not yet released (1/true or 0/false)")
COURSE = Query("course", "the sessions of a course's students (its instructors, lab admins)", str)
CSV = {"type": "string", "description": "CSV with a header row"}
# What `from`/`to` take, as the document says it: empty, epoch seconds or an ISO 8601 time.
TIME_QUERY = {"type": "string", "pattern": f"^$|{EPOCH_TEXT}|{ISO_TIME}"}
HISTORY_QUERY = (
    Query(
        "from",
        "start, ISO 8601 or epoch seconds (empty or absent: an hour before `to`)",
        str,
        TIME_QUERY,
    ),
    Query("to", "end, exclusive (empty or absent: now)", str, TIME_QUERY),
    Query("sensors", "comma-separated sensor names (default: all)", str),
)

GIVEN_TIME = {"type": "string", "pattern": f"{EPOCH_TEXT}|{ISO_TIME}"}
REPLAY_QUERY = (
    Query("start", "start, epoch seconds or ISO 8601", str, GIVEN_TIME, required=True),
    Query("end", "end, exclusive; at most three hours after start", str, GIVEN_TIME, True),
)
# Path parameters that are neither ids nor kits: what the document says they take.
PATH_TEXT = {"ts": {"type": "string", "pattern": EPOCH_TEXT}}
JPEG = {"type": "string", "format": "binary", "description": "one JPEG image"}

ROUTES: tuple[Route, ...] = (
    Route("GET", "/api/kits", list_kits, "Kits in the pool (not retired)", response=[KitView]),
    Route(
        "POST",
        "/api/kits",
        register_kit,
        "Register a kit and provision its broker account",
        body=KitCreate,
        response=KitView,
        status=201,
        admin=True,
    ),
    Route(
        "GET",
        "/api/kits/{kit_id}",
        kit_health,
        "A kit's health: pool state, online, last telemetry, the kit's counters",
        response=KitHealth,
    ),
    Route(
        "DELETE",
        "/api/kits/{kit_id}",
        retire_kit,
        "Retire a kit (its session ends)",
        response=KitView,
        admin=True,
    ),
    Route(
        "PUT",
        "/api/kits/{kit_id}/maintenance",
        set_maintenance,
        "Take a kit out of the pool for maintenance, or put it back",
        body=MaintenanceChange,
        response=KitView,
        admin=True,
    ),
    Route(
        "POST",
        "/api/queue",
        join_queue,
        "Queue for a kit or a model: the entry, with the session if granted at once",
        body=QueueRequest,
        response=QueueEntryView,
        status=201,
    ),
    Route("GET", "/api/queue", my_queue, "My waiting queue entries", response=[QueueEntryView]),
    Route(
        "GET",
        "/api/queue/{entry_id}",
        queue_entry,
        "One of my queue entries: position and wait, or its session once served",
        response=QueueEntryView,
    ),
    Route(
        "DELETE", "/api/queue/{entry_id}", leave_queue, "Leave the queue", response=QueueEntryView
    ),
    Route(
        "GET",
        "/api/sessions",
        list_sessions,
        "My sessions (lab admins: all); with ?course=, that course's",
        response=[SessionView],
        query=(LIVE, COURSE),
    ),
    Route(
        "POST",
        "/api/sessions/{session_id}/heartbeat",
        heartbeat,
        "Keep my session alive (409 once it has ended)",
        response=SessionView,
    ),
    Route(
        "POST",
        "/api/sessions/{session_id}/release",
        release,
        "Release my session: rights revoked, the kit put in its safe state",
        response=SessionView,
    ),
    Route(
        "POST",
        "/api/sessions/{session_id}/end",
        end_session,
        "End any session",
        response=SessionView,
        admin=True,
    ),
    Route(
        "GET",
        "/api/bookings",
        list_bookings,
        "Coming bookings of my courses (lab admins: all)",
        response=[BookingView],
    ),
    Route(
        "POST",
        "/api/bookings",
        book,
        "Book a kit for a course I teach",
        body=BookingCreate,
        response=BookingView,
        status=201,
    ),
    Route(
        "DELETE",
        "/api/bookings/{booking_id}",
        cancel_booking,
        "Cancel a booking",
        response=BookingView,
    ),
    Route("GET", "/api/me", me, "Who the service takes me for", response=Me),
    Route(
        "GET",
        "/api/me/mqtt",
        mqtt_urls,
        "My MQTT accounts (created on first use): watch every kit; command the kit I hold",
        response=MqttUrls,
    ),
    Route(
        "GET",
        "/api/records/sessions.csv",
        sessions_csv,
        "Sessions as CSV (lab admins: all; others: their own)",
        response=CSV,
        media="text/csv",
    ),
    Route(
        "GET",
        "/api/records/commands.csv",
        commands_csv,
        "Acknowledged commands as CSV (lab admins: all; others: those of their sessions)",
        response=CSV,
        media="text/csv",
    ),
    Route(
        "GET",
        "/api/usage",
        usage,
        "Utilisation per kit and per institution: session time, sessions, mean queue wait",
        response=Usage,
    ),
    Route(
        "GET",
        "/api/kits/{kit_id}/history.json",
        history_json,
        "Recorded telemetry of a kit, oldest first (default: the last hour)",
        response={"type": "array", "items": {"type": "object"}},
        query=HISTORY_QUERY,
    ),
    Route(
        "GET",
        "/api/kits/{kit_id}/history.csv",
        history_csv,
        "Recorded telemetry of a kit as CSV: ts, seq, time, then one column per sensor",
        response=CSV,
        media="text/csv",
        query=HISTORY_QUERY,
    ),
    Route(
        "GET",
        "/api/kits/{kit_id}/frames.json",
        frames_json,
        "Recorded camera frames of a kit within my replay rights, oldest first, at most 300 per "
        "answer (default: the last hour): ts, seq and the JPEG in base64",
        response={"type": "array", "items": {"type": "object"}},
        query=HISTORY_QUERY[:2],
    ),
    Route(
        "GET",
        "/api/kits/{kit_id}/replay",
        kit_replay,
        "A recorded range of a kit within my rights: telemetry, commands, frames' index",
        response={"type": "object"},
        query=REPLAY_QUERY,
    ),
    Route(
        "GET",
        "/api/kits/{kit_id}/frames/{ts}",
        kit_frame,
        "One recorded camera frame (its `ts` from a replay's frame index), within my rights",
        response=JPEG,
        media="image/jpeg",
    ),
    Route(
        "POST",
        "/api/jobs",
        submit_job,
        "Submit an experiment job: a controller to run on a kit (or any kit of a model)",
        body=JobCreate,
        response=JobView,
        status=201,
    ),
    Route(
        "GET",
        "/api/jobs",
        list_jobs,
        "My jobs; with ?course=, that course's (its instructors); with ?all=1, all (lab admins)",
        response=[JobView],
        query=(
            Query("course", "the jobs of a course (its instructors, lab admins)", str),
            Query("all", "every job (lab admins)"),
        ),
    ),
    # Before /api/jobs/{job_id}: the first pattern that matches a path serves it.
    Route(
        "POST",
        "/api/jobs/claim",
        claim_job,
        "The job runner takes a granted job: its controller and the job's MQTT account "
        "(204: none waiting)",
        response=JobClaim,
    ),
    Route(
        "GET",
        "/api/jobs/{job_id}",
        get_job,
        "A job (its owner, its course's instructors, lab admins)",
        response=JobView,
    ),
    Route(
        "GET",
        "/api/jobs/{job_id}/result",
        job_result,
        "A job and the recorded replay of its session: telemetry, commands, frames' index",
        response=JobResult,
    ),
    Route(
        "POST",
        "/api/jobs/{job_id}/cancel",
        cancel_job,
        "Cancel a queued or running job (its owner, lab admins)",
        response=JobView,
    ),
    Route(
        "POST",
        "/api/jobs/{job_id}/heartbeat",
        job_heartbeat,
        "The job runner says the job still runs",
        response=JobView,
    ),
    Route(
        "POST",
        "/api/jobs/{job_id}/finish",
        finish_job,
        "The job runner reports how the run ended: the session ends, the kit goes safe",
        body=JobFinish,
        response=JobView,
    ),
    Route(
        "POST",
        "/api/jobs/{job_id}/score",
        score_job,
        "The job runner attaches the assignment's scores to an ended job",
        body=JobScore,
        response=JobView,
    ),
    Route(
        "GET",
        "/api/board",
        board_kits,
        "Every kit for anyone (the public board): availability, holder's institution, queue",
        response=[BoardKit],
        public=True,
    ),
    Route(
        "GET",
        "/api/openapi.json",
        openapi_document,
        "This document",
        response={"type": "object"},
        public=True,
    ),
)

_PARAM = re.compile(r"\{([a-z_]+)\}")


def path_params(path: str) -> list[str]:
    return _PARAM.findall(path)


def path_regex(path: str) -> str:
    """/api/kits/{kit_id} -> /api/kits/(?P<kit_id>[^/]+), literal parts escaped."""
    parts = _PARAM.split(path)  # literal, name, literal, name, ...
    return "".join(re.escape(p) if i % 2 == 0 else f"(?P<{p}>[^/]+)" for i, p in enumerate(parts))


def _convert_path_arg(name: str, raw: str) -> Any:
    if name == "kit_id":
        if not re.fullmatch(KIT_ID, raw):
            raise ApiError(400, "kit-id-invalid", value=raw[:40])
        return raw
    if not name.endswith("_id"):
        return raw
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= MAX_ID:
        noun = name.removesuffix("_id")
        what = message(f"noun-{noun}") if f"noun-{noun}" in CATALOGUE else noun.replace("_", " ")
        raise ApiError(400, "id-invalid", what=what, value=raw[:40])
    return int(raw)


def _convert_query(route: Route, arguments: dict[str, list[bytes]]) -> dict[str, Any]:
    known = {q.name: q for q in route.query}
    values: dict[str, Any] = {}
    for name, raw in arguments.items():
        if name not in known:
            raise ApiError(400, "query-unknown", name=name[:40])
        text = raw[-1].decode(errors="replace").strip()
        if known[name].kind is bool:
            text = text.lower()
            if text not in ("1", "true", "yes", "0", "false", "no"):
                raise ApiError(400, "query-bool", name=name)
            values[name] = text in ("1", "true", "yes")
        else:
            values[name] = text
    return values
