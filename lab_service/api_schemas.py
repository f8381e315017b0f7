"""The lab service API's bodies and answers (pydantic), its ids and its one error shape."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)
from pydantic_core import PydanticCustomError

from lab_service.jobs import OUTCOMES
from lab_service.messages import CATALOGUE, Coded, Message, message, render

MAX_ID = 2**63 - 1  # SQLite's INTEGER: a larger id would be an overflow error, not a 404
KIT_ID = r"^[a-z0-9][a-z0-9-]{0,63}$"  # a Homie topic level: the kit's MQTT id
# Times the API takes: 1970-01-01 .. 9999-12-31 (what a datetime can show; the document says so).
MIN_EPOCH, MAX_EPOCH = 0.0, 253402300799.0
# The ISO 8601 times the API takes (a subset of what fromisoformat reads): date, T, hours and
# minutes, optional seconds and fraction, optional offset (none: UTC). The document says the same.
ISO_TIME = (
    r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
    r"(Z|[+-][0-9]{2}:[0-9]{2})?$"
)
EPOCH_TEXT = r"^[0-9]{1,12}(\.[0-9]{1,9})?$"  # epoch seconds in a query parameter


class ApiError(Coded):
    """A request refused by the API layer itself (before the service is asked): the HTTP
    status, a message code of messages.py and its fields (or a free text: shown as given)."""

    def __init__(self, status: int, code: str, /, **fields: Any) -> None:
        super().__init__(code, **fields)
        self.status = status


# ---------------------------------------------------------------- request bodies


def _epoch(value: Any) -> Any:
    """ISO 8601 (naive means UTC) or epoch seconds -> epoch seconds, within the API's range.

    Every failure is a ValueError (pydantic's 400): an integer of 400 digits is an
    OverflowError in float(), which pydantic would let through as a 500."""
    if isinstance(value, str):
        try:
            if not re.fullmatch(ISO_TIME, value):
                raise ValueError(value)
            t = dt.datetime.fromisoformat(value)
            value = (t if t.tzinfo else t.replace(tzinfo=dt.UTC)).timestamp()
        except (ValueError, OverflowError):
            raise _problem("time-format") from None
    elif isinstance(value, int) and not isinstance(value, bool):
        try:
            value = float(value)
        except OverflowError:
            raise _problem("time-range", low=f"{MIN_EPOCH:.0f}", high=f"{MAX_EPOCH:.0f}") from None
    if isinstance(value, float) and not MIN_EPOCH <= value <= MAX_EPOCH:
        raise _problem("time-range", low=f"{MIN_EPOCH:.0f}", high=f"{MAX_EPOCH:.0f}")
    return value  # a float passes; anything else fails the float check


Timestamp = Annotated[
    float,
    BeforeValidator(_epoch),
    WithJsonSchema(
        {
            "anyOf": [
                {
                    "type": "number",
                    "minimum": MIN_EPOCH,
                    "maximum": MAX_EPOCH,
                    "description": "epoch seconds",
                },
                {
                    "type": "string",
                    "pattern": ISO_TIME,
                    "description": "ISO 8601 (YYYY-MM-DDTHH:MM[:SS[.ffffff]][Z|±HH:MM]); "
                    "UTC if no offset is given",
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

    model_config = ConfigDict(json_schema_extra=lambda schema: _one_of_kit_or_model(schema))

    # Strings or absent, never null: the document and the server say the same of
    # {"model": null} (refused by both).
    kit: Annotated[
        str | None, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 64})
    ] = Field(None, min_length=1, max_length=64)
    model: Annotated[
        str | None, WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 64})
    ] = Field(None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one_target(self) -> QueueRequest:
        given = self.model_fields_set
        if ("kit" in given and self.kit is None) or ("model" in given and self.model is None):
            raise _problem("queue-null")
        if (self.kit is None) == (self.model is None):
            raise _problem("kit-or-model")
        return self


def _one_of_kit_or_model(schema: dict[str, Any]) -> None:
    schema["oneOf"] = [{"required": ["kit"]}, {"required": ["model"]}]
    for prop in schema["properties"].values():
        prop.pop("default", None)  # absent, not null


class BookingCreate(Body):
    kit: str = Field(min_length=1, max_length=64)
    course: str = Field(min_length=1, max_length=64)
    starts_at: Timestamp
    ends_at: Timestamp
    group: str | None = Field(None, min_length=1, max_length=64)


IDENTIFIER = r"^[A-Za-z_][A-Za-z0-9_]{0,127}$"
JOB_OUTCOME = Literal[OUTCOMES]  # the job book's one list of outcome codes


class ControllerSpec(Body):
    """A controller as text: Python source defining `entry`, a function
    `(readings, t, **inputs) -> dict | None` or a class with `step(readings, t)`."""

    source: str = Field(min_length=1, max_length=64 * 1024)
    entry: str = Field(pattern=IDENTIFIER, description="the function or class to run")


class JobCreate(Body):
    """An experiment job: a controller to run on one kit, or on any working kit of a model."""

    kit: str | None = Field(None, pattern=KIT_ID)
    model: str | None = Field(None, min_length=1, max_length=64)
    duration_s: float = Field(30.0, ge=5, le=600, description="seconds of the run")
    inputs: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments of the controller (<= 16 KB JSON)"
    )
    controller: ControllerSpec
    course: str | None = Field(None, min_length=1, max_length=64)
    assignment: str | None = Field(None, min_length=1, max_length=128)
    owner: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        description="a student of `course` the job is for (the course's instructors: a graded "
        "controller confirmed on a kit); default: the caller",
    )

    @model_validator(mode="after")
    def _one_target_small_inputs(self) -> JobCreate:
        if (self.kit is None) == (self.model is None):
            raise _problem("kit-or-model")
        if len(json.dumps(self.inputs)) > 16 * 1024:
            raise _problem("job-inputs")
        return self


class JobFinish(Body):
    outcome: JOB_OUTCOME
    detail: str = Field("", max_length=300)


class JobScore(Body):
    """Only the fields given change: the runner sets `score` (the kit's run), the course's
    instructors `twin_score` (the autograder's)."""

    score: float | None = None
    twin_score: float | None = None


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
    job: int | None = Field(None, description="the experiment job holding the kit, if one does")
    job_owner: str | None = Field(None, description="whose job holds the kit")
    job_time_left_s: float | None = Field(None, description="how long the job keeps the kit")


class BoardKit(Out):
    """A kit as anyone may see it (the public board): no person's name, no admin's reason."""

    id: str
    model: str
    name: str
    availability: str = Field(description="available, in-use, maintenance or needs-attention")
    online: bool
    holder_institution: str | None = Field(description="the institution of whoever holds it")
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
    at_rest: bool | None = Field(
        default=None, description="in its automatic operation while nobody holds it"
    )
    fault: str | None = Field(default=None, description="a fault that keeps the kit safe")


class KitHealth(KitView):
    mqtt_state: str | None = Field(description="Homie state the kit announced last")
    last_telemetry_at: float | None = Field(description="the kit's time of its last sample")
    counters: KitCounters | None
    dropped_frames: int = Field(
        default=0, description="camera frames dropped as oversize or malformed (not JPEG, stamps)"
    )


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
    job: int | None = Field(None, description="the experiment job that holds the session")
    owner: str = Field(description="who answers for it: the person, or the job's owner")


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


class JobView(Out):
    id: int
    owner: str
    institution: str
    kit: str | None = Field(description="the kit asked for, or the one it runs or ran on")
    model: str | None
    state: str = Field(description="queued, running, finished, failed or cancelled")
    state_text: str = Field(description="the state in words, in the request's language")
    position: int | None = Field(description="while queued: 1 is next")
    estimated_start: str | None = Field(description="while queued: ISO 8601; null: unknown")
    wait_seconds: float | None
    duration_s: float
    inputs: dict[str, Any]
    entry: str
    course: str | None
    assignment: str | None
    created_at: str
    started_at: str | None
    ended_at: str | None
    session_id: int | None
    outcome: str | None = Field(
        description="completed, crashed, overran, flooded, memory, invalid, kit-unsafe or cancelled"
    )
    outcome_text: str | None
    detail: str | None
    score: float | None
    twin_score: float | None


class JobMqtt(Out):
    username: str = Field(description="job-<id>: may watch and command the job's kit only")
    password: str


class JobClaim(Out):
    job: JobView
    source: str
    entry: str
    inputs: dict[str, Any]
    kit: str
    model: str | None
    duration_s: float
    session_id: int
    mqtt: JobMqtt


class JobResult(Out):
    job: JobView
    telemetry: list[dict[str, Any]]
    commands: list[dict[str, Any]]
    frames: list[dict[str, Any]]


class ErrorView(Out):
    error: str = Field(
        description="why, in one line, in the language of the request's Accept-Language "
        "(ru or en; English by default)"
    )
    code: str = Field(description="the message's stable code (e.g. booking-too-soon)")


def validation_message(err: ValidationError) -> str:
    """The first problem of a validation error, in English (configuration files, logs)."""
    code, fields = validation_problem(err)
    return render(code, fields)


def validation_problem(err: ValidationError) -> Message:
    """The first problem of a validation error as a message ("where: what (and n more)"),
    rendered in the caller's language at the HTTP edge."""
    errors = err.errors(include_url=False)
    first = errors[0]
    if first["type"] == "json_invalid":
        return message("v-json_invalid", detail=first["msg"].removeprefix("Invalid JSON: "))
    where = ".".join(str(p) for p in first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    ctx = {k: v for k, v in (first.get("ctx") or {}).items() if isinstance(v, str | int | float)}
    code = f"v-{first['type']}" if f"v-{first['type']}" in CATALOGUE else "v-other"
    problem = message(code, **{**ctx, "msg": msg})
    more = message("v-more", n=len(errors) - 1) if len(errors) > 1 else ""
    if not where:
        return message("v-plain", problem=problem, more=more) if more else problem
    return message("v-located", where=where, problem=problem, more=more)


def _problem(code: str, **fields: Any) -> PydanticCustomError:
    """A validator's refusal with its own message code (`v-<code>` in messages.py)."""
    return PydanticCustomError(code, render(f"v-{code}", fields), fields)
