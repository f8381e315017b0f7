"""The lab service end to end: the real broker, twins, and `smartlab lab serve` in its own process,
driven over HTTP only (and MQTT for commanding the kits, as students do).

Tests share one service and run in file order; each leaves the kits free and the queue empty.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from typing import Any

import jsonschema
import pytest

from hardware_kits import protocol as P
from hardware_kits.kit_runner import KitRunner
from hardware_kits.mqtt import connect_client, frame_publish_properties
from hardware_kits.twins.base import twin_class
from lab_service.rights import control_username
from labs.client import (
    CommandNotAuthorized,
    Lab,
    LabService,
    LabServiceError,
    connect,
    open_lab,
)
from tests.conftest import REPO, wait_until
from tests.stack import FAST_POLICY, ServiceProcess, call_api, token, with_tokens

pytestmark = pytest.mark.broker

LAMP1, LAMP2, PARK = "api-lamp-1", "api-lamp-2", "api-park-1"
KITS = {LAMP1: "street-lighting", LAMP2: "street-lighting", PARK: "smart-parking"}
COURSE = "iot101"
USERS = {
    "admin": {"name": "lab-admin", "institution": "centre", "lab_admin": True},
    "alice": {"name": "alice", "institution": "univ-a"},
    "bob": {"name": "bob", "institution": "univ-b"},
    "carol": {"name": "carol", "institution": "univ-a", "instructor_of": [COURSE]},
    "dave": {"name": "dave", "institution": "univ-b"},
    "erin": {"name": "erin", "institution": "univ-c"},
    "frank": {"name": "frank", "institution": "univ-c", "courses": [COURSE]},
}
QUOTA_S = 90 * 60  # carol's weekly booking quota


# Booking quota and second-grained bookings that may start soon: a walk-in session can then be
# made to end (its slot booked by a course) while the service is down.
SETTINGS = FAST_POLICY + f"c.SharingPolicy.booking_quota_user_week_seconds = {float(QUOTA_S)}\n"


class Stack:
    def __init__(self, broker, service: ServiceProcess) -> None:
        self.broker = broker
        self.service = service
        self.labs: list[Lab] = []

    def call(
        self,
        method: str,
        path: str,
        who: str | None = "alice",
        body: Any = None,
        raw: bytes | None = None,
        lang: str | None = None,
    ) -> tuple[int, Any]:
        """One HTTP request; (status, decoded JSON or text); `lang`: its Accept-Language."""
        return call_api(
            self.service.port, method, path, token(who) if who else None, body, raw, 10, lang
        )

    def ok(self, method: str, path: str, who: str = "alice", body: Any = None) -> Any:
        status, answer = self.call(method, path, who, body)
        assert 200 <= status < 300, f"{method} {path} as {who}: {status} {answer}"
        return answer

    def control(self, who: str, kit_id: str) -> Any:
        """The kit as `who` commands it: the control account from /api/me/mqtt."""
        urls = self.ok("GET", "/api/me/mqtt", who)
        lab = connect(urls["control"], client_id=f"api-test-{who}-{len(self.labs)}")
        self.labs.append(lab)
        lab.wait_for_kits([kit_id], timeout=10)
        return lab.kit(kit_id)

    def close_labs(self) -> None:
        for lab in self.labs:
            lab.close()
        self.labs.clear()

    def session(self, session_id: int, who: str = "admin") -> dict:
        return next(s for s in self.ok("GET", "/api/sessions", who) if s["id"] == session_id)

    def wait_released(self, session_id: int) -> dict:
        def released() -> dict | None:
            """session released"""
            s = self.session(session_id)
            return s if s["state"] == "released" else None

        return wait_until(released, timeout=10, interval=0.05)

    def openapi(self) -> dict:
        return self.ok("GET", "/api/openapi.json", None)  # type: ignore[arg-type]

    def conforms(self, schema_name: str, instance: Any, many: bool = False) -> None:
        """The answer matches the schema the OpenAPI document gives for it."""
        ref = {"$ref": f"#/components/schemas/{schema_name}"}
        schema = {"type": "array", "items": ref} if many else ref
        jsonschema.Draft202012Validator(
            {**schema, "components": self.openapi()["components"]}
        ).validate(instance)


@pytest.fixture(scope="module")
def stack(broker, models, state_root):
    service = ServiceProcess(
        broker, state_root, with_tokens(USERS), name="lab-api", settings=SETTINGS
    ).start()
    runners: list[KitRunner] = []
    stack = Stack(broker, service)
    try:
        for kit_id, model in KITS.items():  # registering provisions the kit's broker account
            registered = stack.ok(
                "POST",
                "/api/kits",
                "admin",
                {"id": kit_id, "model": model, "name": f"test {kit_id}"},
            )
            assert registered["pool"] == "in-pool"
        for kit_id, model in KITS.items():
            runners.append(
                KitRunner(
                    kit_id,
                    twin_class(model)(models[model], seed=3),
                    broker.address(f"kit-{kit_id}"),
                    rate_hz=5,
                ).start()
            )
        wait_until(lambda: all(k["online"] for k in stack.ok("GET", "/api/kits")), timeout=10)
        yield stack
    finally:
        stack.close_labs()
        service.stop()
        for runner in runners:
            runner.stop()


def next_slot(after: float, grain: float = 900.0) -> float:
    return math.ceil(after / grain) * grain


def iso(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat()


# ---------------------------------------------------------------- tests


def test_kits_are_listed_with_their_health(stack):
    kits = stack.ok("GET", "/api/kits")
    stack.conforms("KitView", kits, many=True)
    assert {k["id"]: k["model"] for k in kits} == KITS
    assert all(k["pool"] == "in-pool" and k["online"] for k in kits)

    def reported() -> dict | None:
        """the kit's telemetry and $status reached the service"""
        health = stack.ok("GET", f"/api/kits/{LAMP1}", "bob")
        return health if health["last_telemetry_at"] and health["counters"] else None

    health = wait_until(reported, timeout=10)
    stack.conforms("KitHealth", health)
    assert health["mqtt_state"] == "ready"
    assert time.time() - health["last_telemetry_at"] < 5
    assert health["counters"]["errors"] == 0


def test_the_board_route_answers_anyone_without_a_token(stack):
    status, kits = stack.call("GET", "/api/board", None)
    assert status == 200, kits
    stack.conforms("BoardKit", kits, many=True)
    assert {k["id"]: k["model"] for k in kits} == KITS
    assert {k["availability"] for k in kits} <= {"available", "in-use"}
    assert stack.call("GET", "/api/kits", None)[0] == 401  # the full view still needs one


def test_queue_grant_wait_command_release_handover(stack):
    first = stack.ok("POST", "/api/queue", "alice", {"kit": LAMP1})
    stack.conforms("QueueEntryView", first)
    assert first["state"] == "served"
    alice_session = first["session"]
    assert alice_session["kit"] == LAMP1 and alice_session["state"] == "granted"

    waiting = stack.ok("POST", "/api/queue", "bob", {"kit": LAMP1})
    assert waiting["state"] == "waiting"
    assert waiting["position"] == 1 and waiting["estimated_wait_s"] > 0
    assert [e["id"] for e in stack.ok("GET", "/api/queue", "bob")] == [waiting["id"]]
    assert stack.ok("GET", f"/api/queue/{waiting['id']}", "bob")["position"] == 1

    beat = stack.ok("POST", f"/api/sessions/{alice_session['id']}/heartbeat", "alice")
    stack.conforms("SessionView", beat)
    assert beat["state"] == "active"

    alice_kit = stack.control("alice", LAMP1)
    assert alice_kit.set("mode", "manual").status == "applied"
    wait_until(lambda: alice_kit.actuators.get("mode") == "manual", timeout=5)
    bob_kit = stack.control("bob", LAMP1)
    with pytest.raises(CommandNotAuthorized):
        bob_kit.set("mode", "auto")

    stack.ok("POST", f"/api/sessions/{alice_session['id']}/release", "alice")
    ended = stack.wait_released(alice_session["id"])
    assert ended["end_reason"] == "released"
    # The kit acknowledged its safe state (what released the session), then announced it.
    wait_until(lambda: alice_kit.actuators["mode"] == "auto", timeout=5)
    wait_until(lambda: stack.ok("GET", f"/api/kits/{LAMP1}")["counters"]["safe"], timeout=5)
    assert stack.ok("GET", f"/api/kits/{LAMP1}")["pool"] == "in-pool"

    def granted() -> dict | None:
        """bob's entry served"""
        entry = stack.ok("GET", f"/api/queue/{waiting['id']}", "bob")
        return entry if entry["state"] == "served" else None

    bob_session = wait_until(granted, timeout=5)["session"]
    assert bob_session["kit"] == LAMP1
    with pytest.raises(CommandNotAuthorized):  # rights went with the session
        alice_kit.set("mode", "manual", timeout=5)
    assert bob_kit.set("mode", "manual", timeout=5).status == "applied"
    stack.ok("POST", f"/api/sessions/{bob_session['id']}/release", "bob")
    stack.wait_released(bob_session["id"])
    stack.close_labs()


def test_booking_rules(stack):
    start = next_slot(time.time() + 2 * 3600)
    hour = 3600.0
    status, answer = stack.call(
        "POST",
        "/api/bookings",
        "carol",
        {"kit": LAMP2, "course": COURSE, "starts_at": time.time() - hour, "ends_at": time.time()},
    )
    assert (status, answer) == (
        400,
        {"error": "a booking cannot start in the past", "code": "booking-in-past"},
    )

    booking = stack.ok(
        "POST",
        "/api/bookings",
        "carol",
        {"kit": LAMP2, "course": COURSE, "starts_at": iso(start), "ends_at": iso(start + hour)},
    )
    stack.conforms("BookingView", booking)
    assert (booking["starts_at"], booking["ends_at"]) == (start, start + hour)

    status, answer = stack.call(
        "POST",
        "/api/bookings",
        "carol",
        {
            "kit": LAMP2,
            "course": COURSE,
            "starts_at": start + hour / 2,
            "ends_at": start + 2 * hour,
        },
    )
    assert status == 409 and "already booked" in answer["error"]
    status, answer = stack.call(
        "POST",
        "/api/bookings",
        "carol",
        {"kit": LAMP1, "course": COURSE, "starts_at": start, "ends_at": start + 2 * hour},
    )
    assert status == 409 and "quota" in answer["error"]
    status, answer = stack.call(
        "POST",
        "/api/bookings",
        "alice",
        {"kit": LAMP1, "course": COURSE, "starts_at": start, "ends_at": start + hour},
    )
    assert status == 403 and COURSE in answer["error"]

    assert [b["id"] for b in stack.ok("GET", "/api/bookings", "frank")] == [booking["id"]]
    assert stack.ok("GET", "/api/bookings", "dave") == []  # not in the course
    assert stack.call("DELETE", f"/api/bookings/{booking['id']}", "alice")[0] == 403
    assert stack.ok("DELETE", f"/api/bookings/{booking['id']}", "carol")["cancelled"] is True
    assert stack.ok("GET", "/api/bookings", "carol") == []


def test_refusals_are_worded_in_the_callers_language(stack):
    """The same invalid booking: Russian with Accept-Language: ru, English without; the code
    is the same in both, and nothing was booked."""
    before = stack.ok("GET", "/api/bookings", "carol")
    past = {"kit": LAMP2, "course": COURSE, "starts_at": time.time() - 3600, "ends_at": time.time()}
    english = stack.call("POST", "/api/bookings", "carol", past)
    russian = stack.call("POST", "/api/bookings", "carol", past, lang="ru-RU,ru;q=0.9,en;q=0.8")
    preferred = stack.call("POST", "/api/bookings", "carol", past, lang="de, en;q=0.5, ru;q=0.9")
    assert english == (
        400,
        {"error": "a booking cannot start in the past", "code": "booking-in-past"},
    )
    assert russian == (
        400,
        {"error": "бронь не может начинаться в прошлом", "code": "booking-in-past"},
    )
    assert preferred == russian  # the better-weighted supported language
    # refused by the front end itself (a body that fails validation), and an unknown path
    status, answer = stack.call(
        "POST", "/api/bookings", "carol", {"kit": LAMP2, "course": COURSE}, lang="ru"
    )
    assert status == 400 and answer["code"] == "body-invalid", answer
    assert answer["error"] == "неверное тело запроса: starts_at: обязательное поле (и ещё 1)"
    status, answer = stack.call("GET", "/api/nothing", "carol", lang="ru")
    assert (status, answer) == (
        404,
        {"error": "нет такого пути API: /api/nothing", "code": "no-api-path"},
    )
    status, answer = stack.call("GET", "/api/me", None, lang="ru")
    assert status == 401 and answer["code"] == "auth-token" and "токен" in answer["error"]
    # the client library sends its language ($SMARTLAB_LANG or lang=) and keeps line and code
    client = stack.service.client(token("carol"))
    client.lang = "ru"
    with pytest.raises(LabServiceError) as refused:
        client.book(LAMP2, COURSE, past["starts_at"], past["ends_at"])
    assert (refused.value.status, refused.value.code) == (400, "booking-in-past")
    assert refused.value.reason == "бронь не может начинаться в прошлом"
    assert stack.ok("GET", "/api/bookings", "carol") == before


def _snapshot(stack) -> dict:
    """What bad requests must not change (minus what moves with the clock)."""
    volatile = {"time_left_s", "estimated_wait_s", "last_telemetry_at"}

    def strip(value: Any) -> Any:
        if isinstance(value, list):
            return [strip(v) for v in value]
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in volatile}
        return value

    return {
        (who, path): strip(stack.ok("GET", path, who))
        for who in ("admin", "alice", "bob", "carol")
        for path in ("/api/kits", "/api/queue", "/api/sessions", "/api/bookings")
    }


def test_bad_requests_are_one_line_4xx_and_change_nothing(stack):
    held = stack.ok("POST", "/api/queue", "alice", {"kit": LAMP2})["session"]
    waiting = stack.ok("POST", "/api/queue", "bob", {"kit": LAMP2})
    start = next_slot(time.time() + 3 * 3600)
    booking = stack.ok(
        "POST",
        "/api/bookings",
        "carol",
        {"kit": LAMP1, "course": COURSE, "starts_at": start, "ends_at": start + 900},
    )
    good_booking = {
        "kit": LAMP1,
        "course": COURSE,
        "starts_at": start + 3600,
        "ends_at": start + 4500,
    }
    before = _snapshot(stack)
    cases: list[tuple[str, str, str | None, Any, int]] = [
        ("POST", "/api/queue", "bob", b"{not json", 400),
        ("POST", "/api/queue", "bob", b"", 400),
        ("POST", "/api/queue", "bob", b"[]", 400),
        ("POST", "/api/queue", "bob", {}, 400),
        ("POST", "/api/queue", "bob", {"kit": LAMP1, "colour": "red"}, 400),
        ("POST", "/api/queue", "bob", {"kit": 7}, 400),
        ("POST", "/api/queue", "bob", {"kit": LAMP1, "model": "street-lighting"}, 400),
        ("POST", "/api/queue", "bob", {"kit": "no-such-kit"}, 404),
        ("POST", "/api/queue", "bob", {"model": "hovercraft"}, 404),
        ("POST", "/api/queue", "bob", {"kit": LAMP2}, 409),  # already waiting
        ("POST", "/api/queue", "alice", {"kit": LAMP2}, 409),  # already holding
        ("POST", "/api/bookings", "carol", {**good_booking, "starts_at": 1e9}, 400),  # past
        (
            "POST",
            "/api/bookings",
            "carol",
            {**good_booking, "ends_at": start + 3600 + 7200},
            409,
        ),  # over quota
        ("POST", "/api/bookings", "carol", {**good_booking, "starts_at": "tomorrow"}, 400),
        # 1 and 400 zeros: an OverflowError in float(), once a 500 for any logged-in user.
        ("POST", "/api/bookings", "alice", {**good_booking, "starts_at": 10**400}, 400),
        ("POST", "/api/bookings", "carol", {**good_booking, "ends_at": -(10**400)}, 400),
        ("POST", "/api/bookings", "carol", {**good_booking, "starts_at": "2026-01-01"}, 400),
        ("POST", "/api/queue", "bob", {"model": None}, 400),
        ("POST", "/api/queue", "bob", b'{"kit": "\\ud800"}', 400),  # a lone surrogate
        ("POST", "/api/queue", "bob", {"kit": LAMP1, "model": None}, 400),
        ("GET", f"/api/queue/{2**63}", "bob", None, 400),
        ("GET", f"/api/kits/{LAMP1}/history.json?from=yesterday", "bob", None, 400),
        ("GET", "/api/kits/Not%20A%20Kit", "bob", None, 400),
        ("POST", "/api/bookings", "carol", {**good_booking, "starts_at": True}, 400),
        ("POST", "/api/bookings", "carol", {**good_booking, "ends_at": None}, 400),
        ("POST", "/api/bookings", "carol", {**good_booking, "kit": "no-such-kit"}, 404),
        ("POST", "/api/bookings", "carol", {**good_booking, "room": "A1"}, 400),
        ("POST", "/api/bookings", "alice", good_booking, 403),
        ("DELETE", f"/api/bookings/{booking['id']}", "alice", None, 403),
        ("DELETE", "/api/bookings/999999", "carol", None, 404),
        ("POST", f"/api/sessions/{held['id']}/release", "bob", None, 404),
        ("POST", f"/api/sessions/{held['id']}/heartbeat", "bob", None, 404),
        ("POST", f"/api/sessions/{held['id']}/end", "bob", None, 403),
        ("DELETE", f"/api/queue/{waiting['id']}", "alice", None, 404),
        ("GET", "/api/queue/abc", "bob", None, 400),
        ("GET", "/api/queue/99999999999999999999999", "bob", None, 400),
        ("GET", "/api/queue/999999", "bob", None, 404),
        ("GET", "/api/sessions?live=maybe", "bob", None, 400),
        ("GET", "/api/sessions?colour=red", "bob", None, 400),
        ("GET", f"/api/sessions?course={COURSE}", "bob", None, 403),
        ("POST", "/api/kits", "alice", {"id": "api-new", "model": "street-lighting"}, 403),
        ("POST", "/api/kits", "admin", {"id": "Not An Id!", "model": "street-lighting"}, 400),
        ("POST", "/api/kits", "admin", {"id": "api-new", "model": "hovercraft"}, 400),
        ("POST", "/api/kits", "admin", {"id": LAMP1, "model": "street-lighting"}, 409),
        ("PUT", f"/api/kits/{LAMP1}/maintenance", "admin", {"on": "yes"}, 400),
        ("PUT", f"/api/kits/{LAMP1}/maintenance", "alice", {"on": True}, 403),
        ("PUT", "/api/kits/no-such-kit/maintenance", "admin", {"on": True}, 404),
        ("DELETE", "/api/kits/no-such-kit", "admin", None, 404),
        ("DELETE", f"/api/kits/{LAMP1}", "bob", None, 403),
        ("GET", "/api/kits/no-such-kit", "alice", None, 404),
        ("GET", "/api/records/sessions.csv", None, None, 401),
        ("GET", "/api/kits", None, None, 401),
        ("PATCH", "/api/kits", "admin", None, 405),
        ("GET", "/api/nothing-here", "alice", None, 404),
    ]
    for method, path, who, body, expected in cases:
        raw = body if isinstance(body, bytes) else None
        status, answer = stack.call(method, path, who, None if raw is not None else body, raw)
        what = f"{method} {path} as {who} with {body!r}"
        assert status == expected, f"{what}: {status} {answer}"
        assert isinstance(answer, dict) and set(answer) == {"error", "code"}, f"{what}: {answer!r}"
        assert answer["error"] and "\n" not in answer["error"], what
        assert "Traceback" not in answer["error"], what
    status, answer = stack.call("GET", "/api/kits", "nobody")  # an unknown token
    assert status == 401 and "token" in answer["error"]
    assert _snapshot(stack) == before
    with stack.broker.admin() as dynsec:  # the refused registration provisioned nothing either
        answer = dynsec.call(
            {"command": "getClient", "username": "kit-api-new"}, tolerate=("not found",)
        )[0]
    assert answer.get("error") == "Client not found"

    # bob leaves first: after alice's release the next tick would hand him the kit.
    stack.ok("DELETE", f"/api/queue/{waiting['id']}", "bob")
    stack.ok("POST", f"/api/sessions/{held['id']}/release", "alice")
    stack.ok("DELETE", f"/api/bookings/{booking['id']}", "carol")
    stack.wait_released(held["id"])


ROUTES = {
    ("GET", "/api/kits"),
    ("POST", "/api/kits"),
    ("GET", "/api/kits/{kit_id}"),
    ("DELETE", "/api/kits/{kit_id}"),
    ("PUT", "/api/kits/{kit_id}/maintenance"),
    ("POST", "/api/queue"),
    ("GET", "/api/queue"),
    ("GET", "/api/queue/{entry_id}"),
    ("DELETE", "/api/queue/{entry_id}"),
    ("GET", "/api/sessions"),
    ("POST", "/api/sessions/{session_id}/heartbeat"),
    ("POST", "/api/sessions/{session_id}/release"),
    ("POST", "/api/sessions/{session_id}/end"),
    ("GET", "/api/bookings"),
    ("POST", "/api/bookings"),
    ("DELETE", "/api/bookings/{booking_id}"),
    ("GET", "/api/me"),
    ("GET", "/api/me/mqtt"),
    ("GET", "/api/records/sessions.csv"),
    ("GET", "/api/records/commands.csv"),
    ("GET", "/api/usage"),
    ("GET", "/api/openapi.json"),
    ("GET", "/api/board"),
    ("GET", "/api/kits/{kit_id}/history.json"),
    ("GET", "/api/kits/{kit_id}/frames.json"),
    ("GET", "/api/kits/{kit_id}/history.csv"),
    ("GET", "/api/kits/{kit_id}/replay"),
    ("GET", "/api/kits/{kit_id}/frames/{ts}"),
    ("POST", "/api/jobs"),
    ("GET", "/api/jobs"),
    ("POST", "/api/jobs/claim"),
    ("GET", "/api/jobs/{job_id}"),
    ("GET", "/api/jobs/{job_id}/result"),
    ("POST", "/api/jobs/{job_id}/cancel"),
    ("POST", "/api/jobs/{job_id}/heartbeat"),
    ("POST", "/api/jobs/{job_id}/finish"),
    ("POST", "/api/jobs/{job_id}/score"),
}


def test_openapi_describes_every_route_the_server_has(stack):
    doc = stack.openapi()
    assert doc["openapi"].startswith("3.1")
    documented = {(method.upper(), path) for path, ops in doc["paths"].items() for method in ops}
    assert documented == ROUTES
    bodies = {
        (m.upper(), p): op["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        for p, ops in doc["paths"].items()
        for m, op in ops.items()
        if "requestBody" in op
    }
    assert set(bodies) == {
        ("POST", "/api/kits"),
        ("PUT", "/api/kits/{kit_id}/maintenance"),
        ("POST", "/api/queue"),
        ("POST", "/api/bookings"),
        ("POST", "/api/jobs"),
        ("POST", "/api/jobs/{job_id}/finish"),
        ("POST", "/api/jobs/{job_id}/score"),
    }
    schemas = doc["components"]["schemas"]
    booking = schemas[bodies[("POST", "/api/bookings")].rsplit("/", 1)[-1]]
    assert set(booking["required"]) == {"kit", "course", "starts_at", "ends_at"}
    assert booking["additionalProperties"] is False
    for method, path in ROUTES:
        op = doc["paths"][path][method.lower()]
        assert any(code.startswith("2") for code in op["responses"]), (method, path)
        # The server answers every documented route (as a user without rights: no effect).
        concrete = path.replace("{kit_id}", LAMP1).replace("{ts}", "1.5")
        for name in ("entry_id", "session_id", "booking_id", "job_id"):
            concrete = concrete.replace("{" + name + "}", "999999")
        status, answer = stack.call(method, concrete, "erin", raw=b"")
        assert status not in (404, 405) or "no such API path" not in str(answer), (method, path)
        assert status != 405, (method, path)


def _raw(stack, request: bytes) -> tuple[int, dict[str, str], Any]:
    """One hand-made request: (status, headers, decoded JSON body)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", stack.service.port, timeout=10)
    try:
        conn.connect()
        conn.sock.sendall(request)
        answer = http.client.HTTPResponse(conn.sock, method=request.split(b" ", 1)[0].decode())
        answer.begin()
        body = answer.read()
        return answer.status, dict(answer.getheaders()), json.loads(body or b"null")
    finally:
        conn.close()


def test_methods_the_api_does_not_have_get_405_with_allow(stack):
    auth = f"Authorization: token {token('alice')}\r\n".encode()
    for method in (b"TRACE", b"CONNECT", b"FOO", b"HEAD", b"OPTIONS"):
        status, headers, answer = _raw(
            stack, method + b" /api/kits HTTP/1.1\r\nHost: lab\r\n" + auth + b"\r\n"
        )
        assert status == 405, (method, status, answer)
        assert headers.get("Allow") == "GET, POST", (method, headers)
        if method != b"HEAD":
            assert set(answer) == {"error", "code"}, (method, answer)
    status, headers, answer = _raw(stack, b"TRACE /api/nothing-here HTTP/1.1\r\nHost: l\r\n\r\n")
    assert status == 404 and set(answer) == {"error", "code"}


def test_a_body_that_is_not_json_gets_415(stack):
    body = b"kit=" + LAMP1.encode()
    for media in (b"application/x-www-form-urlencoded", b"text/plain", b"multipart/form-data"):
        status, _, answer = _raw(
            stack,
            b"POST /api/queue HTTP/1.1\r\nHost: lab\r\nAuthorization: token "
            + token("bob").encode()
            + b"\r\nContent-Type: "
            + media
            + b"\r\nContent-Length: "
            + str(len(body)).encode()
            + b"\r\n\r\n"
            + body,
        )
        assert status == 415 and "JSON" in answer["error"], (media, answer)
    assert stack.ok("GET", "/api/queue", "bob") == []  # nothing queued


def test_the_document_states_the_bounds_the_server_enforces(stack):
    """What the document allows the server takes, and what it forbids the server refuses: the
    three disagreements fuzzing found (ids above 2^63-1, `from=` empty, {"model": null})."""
    doc = stack.openapi()
    schemas = doc["components"]["schemas"]

    def valid(schema: dict, instance: Any) -> bool:
        validator = jsonschema.Draft202012Validator({**schema, "components": {"schemas": schemas}})
        return validator.is_valid(instance)

    entry = {
        p["name"]: p["schema"] for p in doc["paths"]["/api/queue/{entry_id}"]["get"]["parameters"]
    }
    assert entry["entry_id"]["maximum"] == 2**63 - 1
    assert stack.call("GET", f"/api/queue/{2**63 - 1}", "bob")[0] == 404  # taken, not found
    assert not valid(entry["entry_id"], 2**63)
    assert stack.call("GET", f"/api/queue/{2**63}", "bob")[0] == 400
    history = doc["paths"]["/api/kits/{kit_id}/history.json"]["get"]["parameters"]
    when = {p["name"]: p["schema"] for p in history}
    for text in ("", "1767225600", "1767225600.5", "2026-01-01T00:00", "2026-01-01T00:00:00+01:00"):
        assert valid(when["from"], text), text
        query = urllib.parse.urlencode({"from": text})
        status, answer = stack.call("GET", f"/api/kits/{LAMP1}/history.json?{query}", "bob")
        assert status == 200, (text, answer)
    for text in ("yesterday", "2026-01-01", "1e400"):
        assert not valid(when["from"], text), text
        query = urllib.parse.urlencode({"from": text})
        assert stack.call("GET", f"/api/kits/{LAMP1}/history.json?{query}", "bob")[0] == 400
    queue = {"$ref": "#/components/schemas/QueueRequest"}
    for body in ({"model": None}, {"kit": LAMP1, "model": None}, {}, {"kit": LAMP1, "model": "x"}):
        assert not valid(queue, body), body
        assert stack.call("POST", "/api/queue", "bob", body)[0] == 400, body
    booking = {"$ref": "#/components/schemas/BookingCreate"}
    big = {"kit": LAMP1, "course": COURSE, "starts_at": 10**400, "ends_at": 1e9}
    assert not valid(booking, big)
    assert stack.call("POST", "/api/bookings", "alice", big)[0] == 400


def test_records_and_usage(stack):
    def rows(path: str, who: str) -> list[dict]:
        text = stack.ok("GET", path, who)
        reader = csv.DictReader(io.StringIO(text))
        return list(reader) if reader.fieldnames else pytest.fail(f"{path}: no header")

    every = rows("/api/records/sessions.csv", "admin")
    assert {
        "id",
        "kit",
        "user",
        "institution",
        "state",
        "granted_at",
        "end_reason",
        "queue_wait_s",
    } <= set(every[0])
    on_lamp1 = [r for r in every if r["kit"] == LAMP1]
    assert {r["user"] for r in on_lamp1} >= {"alice", "bob"}
    assert all(r["state"] == "released" for r in on_lamp1)
    mine = rows("/api/records/sessions.csv", "alice")
    assert mine and {r["user"] for r in mine} == {"alice"}
    assert {r["id"] for r in mine} < {r["id"] for r in every}

    commands = rows("/api/records/commands.csv", "admin")
    alice_sessions = {r["id"] for r in mine}
    applied = [
        c
        for c in commands
        if c["target"] == "mode" and c["status"] == "applied" and c["session_id"] in alice_sessions
    ]
    assert applied and json.loads(applied[0]["value"]) == "manual"
    assert any(c["target"] == "$safe-state" for c in commands)
    own = rows("/api/records/commands.csv", "alice")
    assert own and {c["session_id"] for c in own} <= alice_sessions

    usage = stack.ok("GET", "/api/usage", "bob")
    stack.conforms("Usage", usage)
    lamp1 = next(k for k in usage["kits"] if k["kit"] == LAMP1)
    assert lamp1["sessions"] == len(on_lamp1) and lamp1["session_seconds"] > 0
    assert lamp1["mean_queue_wait_s"] > 0  # bob waited for alice
    institutions = {i["institution"]: i for i in usage["institutions"]}
    assert {"univ-a", "univ-b"} <= set(institutions)


def test_a_command_sent_many_times_is_one_record_with_its_duplicates(stack):
    """A real twin answers copies of a command id from its memory: the records show the one
    command it applied and how often it was repeated (once one "applied" row per message)."""
    from hardware_kits import protocol as P
    from hardware_kits.mqtt import BrokerAddress, command_properties, connect_client

    held = stack.ok("POST", "/api/queue", "dave", {"kit": PARK})["session"]
    address = BrokerAddress.from_url(stack.ok("GET", "/api/me/mqtt", "dave")["control"])
    acks: list[dict] = []
    client = connect_client(
        address.host,
        address.port,
        address.credentials,
        client_id="api-test-duplicates",
        on_message=lambda _c, _u, msg: acks.append(json.loads(msg.payload)),
        subscribe=[(P.ack_topic(PARK, address.credentials.username) + "/#", 1)],
    )
    actuator = "gate"
    try:
        props = command_properties(
            "dup-cmd-1", P.ack_topic(PARK, address.credentials.username) + "/x", time.time() + 60
        )
        for _ in range(200):
            client.publish(P.set_topic(PARK, actuator), "open", qos=1, properties=props)
        wait_until(lambda: len(acks) >= 200, timeout=20)
    finally:
        client.disconnect()
        client.loop_stop()
    assert sum(1 for a in acks if a.get("duplicate")) == 199, acks[:3]

    def recorded() -> list[dict] | None:
        text = stack.ok("GET", "/api/records/commands.csv", "admin")
        rows = [r for r in csv.DictReader(io.StringIO(text)) if r["command_id"] == "dup-cmd-1"]
        messages = sum(1 + int(r.get("duplicates") or 0) for r in rows)  # all 200 recorded
        return rows if messages >= 200 else None

    rows = wait_until(recorded, timeout=10)
    assert len(rows) == 1, f"{len(rows)} rows for one command"
    assert rows[0]["status"] == "applied" and rows[0]["duplicates"] == "199", rows
    stack.ok("POST", f"/api/sessions/{held['id']}/release", "dave")
    stack.wait_released(held["id"])


def test_kill9_and_restart_keep_state_and_reconcile_rights(stack):
    held = stack.ok("POST", "/api/queue", "alice", {"kit": LAMP2})["session"]
    stack.ok("POST", f"/api/sessions/{held['id']}/heartbeat", "alice")
    waiting = stack.ok("POST", "/api/queue", "bob", {"kit": LAMP2})
    # Carol's course books the parking kit in a few seconds: dave's walk-in session ends then,
    # which will be while the service is down. The margin covers the MQTT connections and
    # commands below on a loaded machine (dave must still hold the kit for his command).
    slot = math.ceil(time.time()) + 8
    booking = stack.ok(
        "POST",
        "/api/bookings",
        "carol",
        {"kit": PARK, "course": COURSE, "starts_at": slot, "ends_at": slot + 60},
    )
    daves = stack.ok("POST", "/api/queue", "dave", {"kit": PARK})["session"]
    assert daves["ends_at"] == slot
    alice_kit, dave_kit = stack.control("alice", LAMP2), stack.control("dave", PARK)
    assert dave_kit.set("gate", "open").status == "applied"
    # A right the database knows nothing of (as after a crash between grant and commit).
    erin_kit = stack.control("erin", LAMP1)
    with stack.broker.admin() as dynsec:
        dynsec.call(
            {
                "command": "addClientRole",
                "username": control_username("erin"),
                "rolename": f"command-{LAMP1}",
            }
        )
    assert erin_kit.set("mode", "manual", timeout=5).status == "applied"

    stack.service.kill()
    wait_until(lambda: time.time() > slot + 0.5, timeout=15)
    stack.service.start()

    assert stack.session(held["id"], "alice")["state"] == "active"
    assert alice_kit.set("mode", "manual", timeout=5).status == "applied"
    entry = stack.ok("GET", f"/api/queue/{waiting['id']}", "bob")
    assert entry["state"] == "waiting" and entry["position"] == 1
    assert [b["id"] for b in stack.ok("GET", "/api/bookings", "carol")] == [booking["id"]]

    ended = stack.wait_released(daves["id"])
    assert ended["end_reason"] == "booked-slot"
    with pytest.raises(CommandNotAuthorized):
        dave_kit.set("gate", "closed", timeout=5)
    with pytest.raises(CommandNotAuthorized):
        erin_kit.set("mode", "auto", timeout=5)
    assert f"revoked {LAMP1} from erin" in stack.service.output()

    stack.ok("DELETE", f"/api/queue/{waiting['id']}", "bob")  # before the kit is free again
    stack.ok("POST", f"/api/sessions/{held['id']}/release", "alice")
    stack.ok("DELETE", f"/api/bookings/{booking['id']}", "carol")
    stack.wait_released(held["id"])
    stack.close_labs()


def test_session_helper_end_to_end(stack):
    holder = stack.ok("POST", "/api/queue", "alice", {"kit": LAMP1})["session"]
    lines: list[str] = []
    frank = LabService(stack.service.url, token("frank"))
    release_later = threading.Timer(
        1.0, lambda: stack.ok("POST", f"/api/sessions/{holder['id']}/release", "alice")
    )
    release_later.start()
    try:
        with frank.session(LAMP1, progress=lines.append, heartbeat_s=0.3, poll_s=0.1) as kit:
            assert kit.kit_id == LAMP1
            assert kit.set("mode", "manual").status == "applied"
            mine = stack.ok("GET", "/api/sessions?live=1", "frank")
            assert [s["state"] for s in mine] == ["active"]
            stack.ok("POST", f"/api/sessions/{mine[0]['id']}/end", "admin")  # time is up
            wait_until(lambda: any("has ended" in line for line in lines), timeout=5)
            with pytest.raises(CommandNotAuthorized):
                kit.set("mode", "auto", timeout=5)
    finally:
        release_later.join()
    assert lines[0].startswith(f"waiting for {LAMP1}: position 1, estimated wait about 15 min")
    assert any(line.startswith(f"granted {LAMP1} (session ") for line in lines)
    assert lines[-1].startswith(f"released {LAMP1}")
    assert stack.wait_released(mine[0]["id"])["end_reason"] == "ended-by-admin"

    # By model, and an exception in the block still releases the kit.
    with (
        pytest.raises(RuntimeError, match="student code failed"),
        frank.session("smart-parking", progress=lines.append) as park,
    ):
        assert park.kit_id == PARK
        assert park.set("gate", "open").status == "applied"
        raise RuntimeError("student code failed")
    last = max(stack.ok("GET", "/api/sessions", "frank"), key=lambda s: s["id"])
    assert last["kit"] == PARK
    assert stack.wait_released(last["id"])["end_reason"] == "released"
    assert stack.ok("GET", "/api/sessions?live=true", "frank") == []
    # frank takes iot101: its instructor sees his sessions, not alice's (no course).
    of_course = stack.ok("GET", f"/api/sessions?course={COURSE}", "carol")
    assert {s["user"] for s in of_course} == {"frank"} and len(of_course) >= 2


def test_kit_admin_commands_of_smartlab_kits(stack):
    def smartlab(*args: str, who: str | None = "admin") -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k != "SMARTLAB_TOKEN"}
        if who:
            env["SMARTLAB_TOKEN"] = token(who)
        return subprocess.run(
            [sys.executable, "-m", "hub_config.cli", "kits", *args, "--url", stack.service.url],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
        )

    listed = smartlab("health")
    assert listed.returncode == 0, listed.stderr
    assert f"{LAMP1}: street-lighting, in-pool, online" in listed.stdout.splitlines()
    down = smartlab("maintenance", PARK, "--reason", "new gate motor")
    assert down.returncode == 0, down.stderr
    assert down.stdout.strip() == f"{PARK}: smart-parking, maintenance (new gate motor), online"
    assert json.loads(smartlab("health", PARK).stdout)["pool"] == "maintenance"
    assert smartlab("maintenance", PARK, "--off").returncode == 0
    assert stack.ok("GET", f"/api/kits/{PARK}")["pool"] == "in-pool"
    for refused, why in (
        (
            smartlab("register", LAMP1, "--model", "street-lighting"),
            f"smartlab: kit {LAMP1} is already registered (POST /api/kits: 409)",
        ),
        (
            smartlab("retire", LAMP1, who="alice"),
            f"smartlab: this needs a lab admin (DELETE /api/kits/{LAMP1}: 403)",
        ),
        (
            smartlab("health", who=None),
            "smartlab: set SMARTLAB_TOKEN to a lab admin's token of the lab service",
        ),
    ):
        assert refused.returncode == 2
        assert refused.stderr.strip() == why


def test_telemetry_history_as_json_and_csv(stack):
    """The service records every kit's telemetry; a notebook reads yesterday's data back."""

    def recorded() -> list[dict]:
        rows = stack.ok("GET", f"/api/kits/{LAMP1}/history.json?from={time.time() - 60:.3f}")
        return rows if len(rows) >= 10 else []

    rows = wait_until(recorded, timeout=15)
    seqs = [r["seq"] for r in rows]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert set(rows[0]["values"]) == {"ambient-light", "motion", "lamp-power"}
    until = rows[-1]["ts"]
    picked = stack.ok(
        "GET", f"/api/kits/{LAMP1}/history.json?from={rows[0]['ts']}&to={until}&sensors=lamp-power"
    )
    assert [r["seq"] for r in picked] == seqs[:-1]  # `to` is exclusive
    assert all(set(r["values"]) == {"lamp-power"} for r in picked)
    start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    text = stack.ok("GET", f"/api/kits/{LAMP1}/history.csv?from={start}")
    header, *lines = text.splitlines()
    assert header == "ts,seq,time,ambient-light,motion,lamp-power"
    assert len(lines) >= len(rows)
    for bad in ("sensors=colour", "from=yesterday", "from=2&to=1"):
        status, answer = stack.call("GET", f"/api/kits/{LAMP1}/history.json?{bad}", "alice")
        assert status == 400 and "\n" not in answer["error"], (bad, answer)
    assert stack.call("GET", "/api/kits/no-such-kit/history.json", "alice")[0] == 404


def test_recorded_frames_of_a_running_twin_come_back_through_the_client_as_arrays(stack):
    """The service keeps about a frame a second of every kit's picture; a notebook reads them
    with `lab.kit(id).frames(start, end)`, through the REST API with its own token, within its
    replay rights (a lab admin's: everything; a student who never held the kit: nothing)."""
    start = time.time() - 1
    url = stack.service.url
    watch = stack.ok("GET", "/api/me/mqtt", "admin")["watch"]
    lab = open_lab(
        watch, client_id="api-test-frames", service=lambda: LabService(url, token("admin"))
    )
    stack.labs.append(lab)
    lab.wait_for_kits([LAMP1], timeout=10)
    kit = lab.kit(LAMP1)

    def three_seconds_of_frames() -> list | None:
        got = kit.frames(start, time.time())
        return got if len(got) >= 3 else None

    pictures = wait_until(three_seconds_of_frames, timeout=15)
    assert all(shape == (240, 320, 3) for shape in (a.shape for _ts, a in pictures))
    assert all(a.dtype.name == "uint8" for _ts, a in pictures)
    times = [ts for ts, _a in pictures]
    assert times == sorted(times) and all(b - a >= 0.99 for a, b in itertools.pairwise(times))
    rows = stack.ok("GET", f"/api/kits/{LAMP1}/frames.json?from={start}", "admin")
    assert rows[0]["seq"] >= 1 and set(rows[0]) == {"ts", "seq", "jpeg"}
    status, answer = stack.call("GET", f"/api/kits/{LAMP1}/frames.json?from={start}", "erin")
    assert status == 403 and "jpeg" not in json.dumps(answer)
    assert stack.call("GET", "/api/kits/no-such-kit/frames.json", "alice")[0] == 404
    status, answer = stack.call("GET", f"/api/kits/{LAMP1}/frames.json?from=2&to=1", "admin")
    assert status == 400 and "\n" not in answer["error"]
    assert stack.call("GET", f"/api/kits/{LAMP1}/frames.json", None)[0] == 401


def test_a_kits_malformed_frames_are_counted_in_its_health(stack):
    before = stack.ok("GET", f"/api/kits/{LAMP2}")["dropped_frames"]
    kit = connect_client(
        stack.broker.host, stack.broker.port, stack.broker.credentials(f"kit-{LAMP2}"), "bad-cam"
    )
    try:
        props = frame_publish_properties(int(time.time() * 1000), 1, 1)
        topic = P.camera_topic(LAMP2, P.STREAM_FULL)
        kit.publish(topic, b"not a jpeg", qos=1, properties=props).wait_for_publish(5)
        oversize = b"\xff\xd8" + bytes(P.MAX_FRAME_BYTES)
        kit.publish(topic, oversize, qos=1, properties=props).wait_for_publish(5)
    finally:
        kit.disconnect()
        kit.loop_stop()
    wait_until(
        lambda: stack.ok("GET", f"/api/kits/{LAMP2}")["dropped_frames"] == before + 2, timeout=5
    )
