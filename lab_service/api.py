"""The lab service's REST API: KitSharing over HTTP, JSON in and out, under `/api/`.

One route table (`ROUTES`) builds both the tornado handlers and the OpenAPI document, so the two
cannot drift. Handlers only parse, call the service and answer: the rules live in
`service.KitSharing` (and the read-only exports in `records`).

Every refusal is a 4xx with `{"error": "<one line>"}`; bodies are parsed strictly (no unknown
fields, no type coercion), so a request either is understood exactly or changes nothing.
Operations run on the service process's event loop thread, the one thread that drives the
service (see app.py); the handlers, on that thread too or in HTTP front-end processes.

Identity is pluggable: `Identity.user_for(handler)` returns the caller (or an awaitable of it,
for identities that ask another server: `hub_identity.HubIdentity` asks JupyterHub).
`TokenIdentity` maps `Authorization: token <t>` to users from configuration, for standalone use
and tests.

Handlers authenticate and validate; what a route does runs through an `invoke(route key, user,
path args, query, body)` function: `Operations.invoke` in the service process itself, or a
front end's link to it (`frontend.py`), so the HTTP work can be spread over several processes
while one thread decides.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import functools
import hashlib
import inspect
import json
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Annotated, Any, Protocol

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from tornado.web import Application, HTTPError, RequestHandler

from hardware_kits.descriptor import load_models
from hardware_kits.dynsec import DynSecError
from hardware_kits.mqtt import ConnectError, Credentials
from lab_service import history, records
from lab_service.rights import validate_user
from lab_service.service import KitSharing, NotFound, SharingError, User

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
MAX_ID = 2**63 - 1  # SQLite's INTEGER: a larger id would be an overflow error, not a 404
KIT_ID = r"^[a-z0-9][a-z0-9-]{0,63}$"  # a Homie topic level: the kit's MQTT id


class ApiError(Exception):
    """A request refused by the API layer itself (before the service is asked)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def one_line(text: str) -> str:
    return " ".join(str(text).split()) or "error"


# ---------------------------------------------------------------- identity


class Identity:
    """Says who is calling. Subclass and override `user_for`; it may also raise ApiError (403)
    for a caller it knows but refuses, with the reason."""

    unauthenticated = "authentication required"

    def user_for(self, handler: RequestHandler) -> User | Awaitable[User | None] | None:
        raise NotImplementedError

    def handler_bases(self) -> tuple[type, ...]:
        """Mixins the API handlers need (e.g. JupyterHub's HubOAuthenticated)."""
        return ()

    def handlers(self, base_url: str) -> list[tuple]:
        """Extra routes of the identity (e.g. an OAuth callback), as tornado rules."""
        return []

    def settings(self) -> dict[str, Any]:
        """Extra tornado application settings (e.g. cookie_secret)."""
        return {}


class UserSpec(BaseModel):
    """One user in `TokenIdentity`'s configuration."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    institution: str = Field(min_length=1)
    courses: list[str] = []
    instructor_of: list[str] = []
    lab_admin: bool = False
    priority: int = 0

    def user(self) -> User:
        return User(
            validate_user(self.name),
            self.institution,
            frozenset(self.courses),
            frozenset(self.instructor_of),
            self.lab_admin,
            self.priority,
        )


def _digest(token: str) -> str:
    # Tokens are looked up by hash, so a timing difference cannot reveal a token's prefix.
    return hashlib.sha256(token.encode()).hexdigest()


class TokenIdentity(Identity):
    """`Authorization: token <t>`, with tokens mapped to users in configuration:
    {token: {"name", "institution", "courses", "instructor_of", "lab_admin", "priority"}}."""

    unauthenticated = "missing or unknown token: send the header 'Authorization: token <token>'"

    def __init__(self, users: Mapping[str, Mapping[str, Any]]) -> None:
        self._users: dict[str, User] = {}
        for n, (token, spec) in enumerate(users.items(), 1):
            if not isinstance(token, str) or len(token) < 8:
                raise ValueError(f"users: token #{n} must be a string of at least 8 characters")
            try:
                self._users[_digest(token)] = UserSpec.model_validate(spec).user()
            except ValidationError as err:
                raise ValueError(f"users: user #{n}: {_validation_message(err)}") from None
            except ValueError as err:
                raise ValueError(f"users: user #{n}: {err}") from None

    def user_for(self, handler: RequestHandler) -> User | None:
        scheme, _, token = handler.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "token" or not token.strip():
            return None
        return self._users.get(_digest(token.strip()))


# ---------------------------------------------------------------- request bodies


def _epoch(value: Any) -> Any:
    """ISO 8601 (naive means UTC) or epoch seconds -> epoch seconds."""
    if isinstance(value, str):
        try:
            t = dt.datetime.fromisoformat(value)
        except ValueError:
            raise ValueError("expected an ISO 8601 time or epoch seconds") from None
        return (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value  # a float passes; anything else fails the float check


Timestamp = Annotated[
    float,
    BeforeValidator(_epoch),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "description": "epoch seconds"},
                {
                    "type": "string",
                    "format": "date-time",
                    "description": "ISO 8601; UTC if no offset is given",
                },
            ]
        }
    ),
]


class Body(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False)


class KitCreate(Body):
    """Register a kit (or bring a retired one back) and provision its broker account."""

    id: str = Field(pattern=KIT_ID, description="MQTT id: a-z, 0-9 and -, at most 64")
    model: str = Field(min_length=1, max_length=64)
    name: str = Field("", max_length=200)


class MaintenanceChange(Body):
    on: bool
    reason: str = Field("", max_length=500)


class QueueRequest(Body):
    """Wait for one kit, or for any working kit of a model."""

    model_config = ConfigDict(
        json_schema_extra={"oneOf": [{"required": ["kit"]}, {"required": ["model"]}]}
    )

    kit: str | None = Field(None, min_length=1, max_length=64)
    model: str | None = Field(None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one_target(self) -> QueueRequest:
        if (self.kit is None) == (self.model is None):
            raise ValueError("ask for either a kit or a kit model")
        return self


class BookingCreate(Body):
    kit: str = Field(min_length=1, max_length=64)
    course: str = Field(min_length=1, max_length=64)
    starts_at: Timestamp
    ends_at: Timestamp
    group: str | None = Field(None, min_length=1, max_length=64)


# ---------------------------------------------------------------- responses (documentation)


class Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KitView(Out):
    id: str
    model: str
    name: str
    pool: str = Field(description="in-pool, maintenance, needs-attention or retired")
    reason: str
    online: bool
    holder_institution: str | None
    session_state: str | None
    queue_length: int


class KitCounters(Out):
    """The kit's own counters, from its retained `$status`."""

    applied: int
    rejected: int
    rejections: dict[str, int]
    errors: int
    duplicates: int
    uptime: float
    safe: bool | None


class KitHealth(KitView):
    mqtt_state: str | None = Field(description="Homie state the kit announced last")
    last_telemetry_at: float | None = Field(description="the kit's time of its last sample")
    counters: KitCounters | None


class SessionView(Out):
    id: int
    kit: str
    user: str
    institution: str
    state: str = Field(description="granted, active, ending, safe or released")
    granted_at: float
    ends_at: float
    time_left_s: float
    queue_wait_s: float
    end_reason: str | None
    released_at: float | None


class QueueEntryView(Out):
    id: int
    user: str
    kit: str | None
    model: str | None
    state: str = Field(description="waiting, served or left")
    enqueued_at: float
    position: int | None = Field(None, description="while waiting: 1 is next")
    estimated_wait_s: float | None = Field(None, description="while waiting; null: unknown")
    session: SessionView | None = Field(None, description="once served")


class BookingView(Out):
    id: int
    kit: str
    course: str
    group: str | None
    booked_by: str
    institution: str
    starts_at: float
    ends_at: float
    cancelled: bool


class Me(Out):
    name: str
    institution: str
    courses: list[str]
    instructor_of: list[str]
    lab_admin: bool
    priority: int


class MqttUrls(Out):
    watch: str = Field(description="mqtt:// URL of the account that watches every kit")
    control: str = Field(description="mqtt:// URL of the account that commands the kit held")


class KitUsage(Out):
    kit: str
    sessions: int
    session_seconds: float
    mean_queue_wait_s: float


class InstitutionUsage(Out):
    institution: str
    sessions: int
    session_seconds: float
    mean_queue_wait_s: float


class Usage(Out):
    generated_at: float
    kits: list[KitUsage]
    institutions: list[InstitutionUsage]


class ErrorView(Out):
    error: str = Field(description="why, in one line")


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


# ---------------------------------------------------------------- operations


def list_kits(c: Call) -> list[dict]:
    return c.service.kits()


def register_kit(c: Call) -> dict:
    body: KitCreate = c.body
    if c.ctx.models and body.model not in c.ctx.models:
        raise ApiError(
            400, f"unknown kit model {body.model!r} (known: {', '.join(sorted(c.ctx.models))})"
        )
    if any(k["id"] == body.id for k in c.service.kits()):
        # Checked before provisioning: re-provisioning resets the kit's account, which
        # disconnects the kit and would end its holder's session.
        raise ApiError(409, f"kit {body.id} is already registered")
    c.ctx.provision_kits([body.id])  # idempotent; a kit in the pool must be commandable
    return c.service.register_kit(c.user, body.id, body.model, body.name)


def kit_health(c: Call) -> dict:
    kit_id = c.args["kit_id"]
    view = next((k for k in c.service.kits() if k["id"] == kit_id), None)
    if view is None:
        raise NotFound(f"no kit {kit_id}")
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
        raise NotFound(f"no kit {kit_id}")
    descriptor = _descriptors().get(view["model"])
    end = _query_time(c.query, "to", c.service.clock())
    start = _query_time(c.query, "from", end - 3600.0)
    wanted = [s for s in c.query.get("sensors", "").split(",") if s] or None
    try:
        rows = history.history(c.service.store, kit_id, start, end, wanted, descriptor=descriptor)
    except ValueError as err:
        raise ApiError(400, one_line(str(err))) from None
    sensors = wanted or list((descriptor or {}).get("sensors", {}))
    return rows, sensors


def history_json(c: Call) -> list[dict]:
    return _history_rows(c)[0]


def history_csv(c: Call) -> str:
    return history.history_csv(*_history_rows(c))


def _query_time(query: dict[str, Any], name: str, default: float) -> float:
    if name not in query:
        return default
    text = query[name]
    try:
        return float(text) if text.replace(".", "", 1).isdigit() else float(_epoch(text))
    except (ValueError, TypeError):
        raise ApiError(
            400, f"query parameter {name} must be an ISO 8601 time or epoch seconds"
        ) from None


@functools.cache
def _descriptors() -> dict[str, dict]:
    return load_models()


def openapi_document(c: Call) -> dict:
    return c.ctx.openapi


# ---------------------------------------------------------------- the route table


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    kind: type = bool


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
HISTORY_QUERY = (
    Query("from", "start, ISO 8601 or epoch seconds (default: an hour before `to`)", str),
    Query("to", "end, exclusive (default: now)", str),
    Query("sensors", "comma-separated sensor names (default: all)", str),
)

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
    if not name.endswith("_id") or name == "kit_id":
        return raw
    if not raw.isascii() or not raw.isdigit() or not 0 < int(raw) <= MAX_ID:
        raise ApiError(
            400,
            f"{name.removesuffix('_id').replace('_', ' ')} id must be a "
            f"positive integer, not {raw[:40]!r}",
        )
    return int(raw)


def _convert_query(route: Route, arguments: dict[str, list[bytes]]) -> dict[str, Any]:
    known = {q.name: q for q in route.query}
    values: dict[str, Any] = {}
    for name, raw in arguments.items():
        if name not in known:
            raise ApiError(400, f"unknown query parameter {name[:40]!r}")
        text = raw[-1].decode(errors="replace").strip()
        if known[name].kind is bool:
            text = text.lower()
            if text not in ("1", "true", "yes", "0", "false", "no"):
                raise ApiError(400, f"query parameter {name} must be 1/true or 0/false")
            values[name] = text in ("1", "true", "yes")
        else:
            values[name] = text
    return values


def _validation_message(err: ValidationError) -> str:
    errors = err.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return f"malformed JSON: {first['msg'].removeprefix('Invalid JSON: ')}"
    where = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return one_line(f"{where}: {msg}{more}" if where else f"{msg}{more}")


def parse_body(model: type[Body], raw: bytes) -> Body:
    if not raw.strip():
        raise ApiError(400, "this request needs a JSON body")
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        raise ApiError(400, f"invalid body: {_validation_message(err)}") from None


# ---------------------------------------------------------------- tornado


class JsonErrors(RequestHandler):
    """Every error this server sends is {"error": "<one line>"}, tornado's own ones too."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, HTTPError) and exc.log_message else None
        self.finish(json.dumps({"error": one_line(message or self._reason)}))

    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"error": one_line(message)}))


class NotFoundHandler(JsonErrors):
    def prepare(self) -> None:
        self.fail(404, f"no such API path: {self.request.path[:200]}")


Invoke = Callable[[str, "User | None", dict, dict, Any], Any]  # route key, user, args, ...


class Operations:
    """Runs the routes' operations against the service; only in the service process."""

    def __init__(self, ctx: ApiContext, routes: tuple[Route, ...] = ROUTES) -> None:
        ctx.openapi = openapi(routes)
        ctx.queue_batcher = QueueBatcher(ctx.service)
        self.ctx = ctx
        self._routes = {route.key: route for route in routes}

    def invoke(
        self, key: str, user: User | None, args: dict[str, Any], query: dict[str, Any], body: Any
    ) -> Any:
        """The route's result, or an awaitable of it (queue requests wait for their batch)."""
        return self._routes[key].op(Call(self.ctx, user, args, query, body))


def refusal(err: Exception, what: str) -> tuple[int, str]:
    """HTTP status and one-line reason for an exception of a call (`what`: method and path)."""
    if isinstance(err, ApiError | SharingError):
        return err.status, str(err)
    if isinstance(err, DynSecError | ConnectError | ConnectionError | TimeoutError):
        log.warning("%s: the broker failed: %s", what, err)
        return 503, one_line(f"the MQTT broker failed, try again: {err}")
    log.error("%s failed", what, exc_info=err)
    return 500, f"internal error ({type(err).__name__}); it has been logged"


class ApiHandler(JsonErrors):
    """All methods of one path; dispatches to the route of the request's method."""

    def initialize(self, identity: Identity, invoke: Invoke, routes: dict[str, Route]) -> None:
        self.identity = identity
        self.invoke = invoke
        self.routes = routes

    async def get(self, **args: str) -> None:
        await self._dispatch(args)

    async def post(self, **args: str) -> None:
        await self._dispatch(args)

    async def put(self, **args: str) -> None:
        await self._dispatch(args)

    async def delete(self, **args: str) -> None:
        await self._dispatch(args)

    async def patch(self, **args: str) -> None:
        await self._dispatch(args)

    async def _dispatch(self, raw_args: dict[str, str]) -> None:
        route = self.routes.get(self.request.method or "")
        if route is None:
            self.set_header("Allow", ", ".join(self.routes))
            self.fail(
                405,
                f"{self.request.method} is not allowed on {self.request.path}; "
                f"allowed: {', '.join(self.routes)}",
            )
            return
        try:
            result = await self._call(route, raw_args)
        except Exception as err:
            self.fail(*refusal(err, f"{route.method} {self.request.path}"))
        else:
            self._answer(route, result)

    async def _call(self, route: Route, raw_args: dict[str, str]) -> Any:
        user = None
        if not route.public:
            found = self.identity.user_for(self)
            user = await found if inspect.isawaitable(found) else found
            if user is None:
                self.set_header("WWW-Authenticate", "token")
                raise ApiError(401, self.identity.unauthenticated)
            if route.admin and not user.lab_admin:
                raise ApiError(403, "this needs a lab admin")
        args = {name: _convert_path_arg(name, value) for name, value in raw_args.items()}
        query = _convert_query(route, self.request.query_arguments)
        body = parse_body(route.body, self.request.body) if route.body else None
        result = self.invoke(route.key, user, args, query, body)
        return await result if inspect.isawaitable(result) else result

    def _answer(self, route: Route, result: Any) -> None:
        self.set_status(route.status)
        if route.media == "text/csv":
            self.set_header("Content-Type", "text/csv; charset=UTF-8")
            name = route.path.rsplit("/", 1)[-1]
            self.set_header("Content-Disposition", f'attachment; filename="{name}"')
            self.finish(result)
        else:
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(json.dumps(result))


def make_app(
    identity: Identity, invoke: Invoke, routes: tuple[Route, ...] = ROUTES, base_url: str = "/"
) -> Application:
    """The tornado application: every route under /api/, and under `base_url` + api/ too when
    the service sits behind JupyterHub's proxy (e.g. /services/lab/api/...)."""
    by_path: dict[str, dict[str, Route]] = {}
    for route in routes:
        by_path.setdefault(route.path, {})[route.method] = route
    handler = ApiHandler
    if identity.handler_bases():
        handler = type("ApiHandler", (*identity.handler_bases(), ApiHandler), {})
    prefixes = [""] + ([base_url.rstrip("/")] if base_url.strip("/") else [])
    handlers = [
        (
            re.escape(prefix) + path_regex(path),
            handler,
            {"identity": identity, "invoke": invoke, "routes": methods},
        )
        for prefix in prefixes
        for path, methods in by_path.items()
    ]
    handlers += identity.handlers(base_url)
    return Application(handlers, default_handler_class=NotFoundHandler, **identity.settings())


# ---------------------------------------------------------------- OpenAPI

REF = "#/components/schemas/{model}"


@dataclass
class _Schemas:
    components: dict[str, Any] = field(default_factory=dict)

    def ref(self, model: type[BaseModel]) -> dict[str, str]:
        if model.__name__ not in self.components:
            schema = model.model_json_schema(ref_template=REF)
            self.components.update(schema.pop("$defs", {}))
            self.components[model.__name__] = schema
        return {"$ref": REF.format(model=model.__name__)}

    def response(self, spec: Any) -> dict[str, Any]:
        if isinstance(spec, list):
            return {"type": "array", "items": self.ref(spec[0])}
        if isinstance(spec, type) and issubclass(spec, BaseModel):
            return self.ref(spec)
        return spec or {}


def openapi(routes: tuple[Route, ...] = ROUTES) -> dict[str, Any]:
    """The OpenAPI 3.1 document of `routes`."""
    schemas = _Schemas()
    error = {
        "description": "refused: the reason in one line",
        "content": {"application/json": {"schema": schemas.ref(ErrorView)}},
    }
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        op: dict[str, Any] = {
            "summary": route.summary,
            "operationId": route.op.__name__,
            "responses": {
                str(route.status): {
                    "description": "OK",
                    "content": {route.media: {"schema": schemas.response(route.response)}},
                },
                "4XX": error,
                "5XX": error,
            },
        }
        params = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "integer", "minimum": 1}
                if name.endswith("_id") and name != "kit_id"
                else {"type": "string"},
            }
            for name in path_params(route.path)
        ]
        params += [
            {
                "name": q.name,
                "in": "query",
                "required": False,
                "description": q.description,
                "schema": {"type": "boolean" if q.kind is bool else "string"},
            }
            for q in route.query
        ]
        if params:
            op["parameters"] = params
        if route.body is not None:
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": schemas.ref(route.body)}},
            }
        if route.public:
            op["security"] = []
        if route.admin:
            op["description"] = "Lab admins only."
        paths.setdefault(route.path, {})[route.method.lower()] = op
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Smart City Lab service",
            "version": "1",
            "description": "Queue, bookings and sessions of the shared lab kits.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas.components,
            "securitySchemes": {
                "token": {
                    "type": "apiKey",
                    "in": "header",
                    "name": "Authorization",
                    "description": "'token <token>'",
                }
            },
        },
        "security": [{"token": []}],
    }
