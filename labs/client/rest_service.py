"""The lab service's REST API from Python (`LabService`), and a held kit's session helper."""

from __future__ import annotations

import contextlib
import http.client
import json
import logging
import math
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from labs.client.errors import (
    LabConfigError,
    LabServiceError,
    LabServiceUnavailable,
    LabTimeout,
)
from labs.client.jobs import Job, submit_job
from labs.client.mqtt_kits import Kit, open_lab

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- the lab service (REST)

SERVICE_URL_ENV = "SMARTLAB_LAB_URL"
TOKEN_ENV = "SMARTLAB_TOKEN"
HUB_TOKEN_ENV = "JUPYTERHUB_API_TOKEN"  # a hub user's server and kernels carry it
LANG_ENV = "SMARTLAB_LANG"  # the caller's language (ru/en): the service's refusals in it
DEFAULT_SERVICE_URL = "http://127.0.0.1:8181"

Progress = Callable[[str], None]


class LabService:
    """A client of the lab service's REST API: kits, the queue, sessions and bookings.

    `url` defaults to $SMARTLAB_LAB_URL (else http://127.0.0.1:8181), `token` to
    $SMARTLAB_TOKEN, else $JUPYTERHUB_API_TOKEN: in a user's server of the hub the service
    knows the user from the server's own token. `lang` (default $SMARTLAB_LANG) is sent as
    Accept-Language, so refusals come back in that language. Every method returns the service's
    JSON answer (dicts and lists)."""

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        timeout: float = 10.0,
        lang: str | None = None,
        *,
        anonymous: bool = False,
    ) -> None:
        self.url = (url or os.environ.get(SERVICE_URL_ENV) or DEFAULT_SERVICE_URL).rstrip("/")
        if not anonymous:
            token = token or os.environ.get(TOKEN_ENV) or os.environ.get(HUB_TOKEN_ENV)
        if not token and not anonymous:
            raise LabConfigError(
                f"no lab service token: pass LabService(url, token) or set "
                f"{TOKEN_ENV} (in a hub server {HUB_TOKEN_ENV} is used)"
            )
        self.token = token  # None when anonymous: only the public routes answer
        self.timeout = timeout
        self.lang = lang or os.environ.get(LANG_ENV) or None
        # The service is on the lab's own network: no proxy from the environment in between.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def __repr__(self) -> str:
        return f"<LabService {self.url}>"

    def request(
        self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
    ) -> Any:
        """One call: JSON in, JSON (or CSV text) out; LabServiceError on a refusal."""
        raw, media = self.request_raw(method, path, body, query)
        if media != "application/json":
            return raw.decode()
        try:
            return json.loads(raw)
        except ValueError:
            raise LabServiceError(f"unreadable answer to {method} {path}") from None

    def request_raw(
        self, method: str, path: str, body: Any = None, query: dict[str, Any] | None = None
    ) -> tuple[bytes, str]:
        """One call: the answer's bytes and media type (a JPEG frame); LabServiceError on a
        refusal."""
        url = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"token {self.token}"
        if self.lang:
            headers["Accept-Language"] = self.lang
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif method in ("POST", "PUT"):
            data = b""
        request = urllib.request.Request(url, data=data, method=method, headers=headers)
        try:
            with self._opener.open(request, timeout=self.timeout) as answer:
                raw, media = answer.read(), answer.headers.get_content_type()
        except urllib.error.HTTPError as err:
            reason, code = _error_reason(err)
            raise LabServiceError(
                f"{reason} ({method} {path}: {err.code})", err.code, reason, code
            ) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as err:
            reason = getattr(err, "reason", None) or err
            raise LabServiceUnavailable(
                f"cannot reach the lab service at {self.url}: {reason}"
            ) from None
        return raw, media

    # ------------------------------------------------------------ kits

    def replay(self, kit_id: str, start: float, end: float) -> dict[str, Any]:
        """A recorded range of a kit as the service's JSON (`Kit.replay` gives it as a
        `labs.client.recorded.Replay`)."""
        query = {"start": repr(float(start)), "end": repr(float(end))}
        return self.request("GET", f"/api/kits/{_quote(kit_id)}/replay", query=query)

    def frame_jpeg(self, url: str) -> bytes:
        """One recorded frame's JPEG, by the `url` a replay's frame index gives."""
        return self.request_raw("GET", url)[0]

    def kits(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/kits")

    def board(self) -> list[dict[str, Any]]:
        """Every kit as anyone may see it (public: no token needed)."""
        return self.request("GET", "/api/board")

    def kit(self, kit_id: str) -> dict[str, Any]:
        """A kit's health: pool state, online, last telemetry and the kit's counters."""
        return self.request("GET", f"/api/kits/{_quote(kit_id)}")

    def register_kit(self, kit_id: str, model: str, name: str = "") -> dict[str, Any]:
        return self.request("POST", "/api/kits", {"id": kit_id, "model": model, "name": name})

    def retire_kit(self, kit_id: str) -> dict[str, Any]:
        return self.request("DELETE", f"/api/kits/{_quote(kit_id)}")

    def set_maintenance(self, kit_id: str, on: bool, reason: str = "") -> dict[str, Any]:
        return self.request(
            "PUT", f"/api/kits/{_quote(kit_id)}/maintenance", {"on": on, "reason": reason}
        )

    # ------------------------------------------------------------ queue and sessions

    def join(self, kit: str | None = None, model: str | None = None) -> dict[str, Any]:
        """Queue for a kit or a model; the entry (with its session if granted at once)."""
        body = {"kit": kit} if kit is not None else {"model": model}
        return self.request("POST", "/api/queue", body)

    def my_queue(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/queue")

    def queue_entry(self, entry_id: int) -> dict[str, Any]:
        return self.request("GET", f"/api/queue/{int(entry_id)}")

    def leave(self, entry_id: int) -> dict[str, Any]:
        return self.request("DELETE", f"/api/queue/{int(entry_id)}")

    def sessions(self, live: bool = False, course: str | None = None) -> list[dict[str, Any]]:
        """My sessions (lab admins: all); with `course`, its students' (its instructors)."""
        query: dict[str, Any] = {"live": 1} if live else {}
        if course is not None:
            query["course"] = course
        return self.request("GET", "/api/sessions", query=query or None)

    def heartbeat(self, session_id: int) -> dict[str, Any]:
        return self.request("POST", f"/api/sessions/{int(session_id)}/heartbeat")

    def release(self, session_id: int) -> dict[str, Any]:
        return self.request("POST", f"/api/sessions/{int(session_id)}/release")

    def end_session(self, session_id: int) -> dict[str, Any]:
        return self.request("POST", f"/api/sessions/{int(session_id)}/end")

    # ------------------------------------------------------------ bookings and the rest

    def bookings(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/bookings")

    def book(
        self,
        kit: str,
        course: str,
        starts_at: float | str,
        ends_at: float | str,
        group: str | None = None,
    ) -> dict[str, Any]:
        """Times are epoch seconds or ISO 8601 strings (UTC unless they carry an offset)."""
        body = {"kit": kit, "course": course, "starts_at": starts_at, "ends_at": ends_at}
        if group is not None:
            body["group"] = group
        return self.request("POST", "/api/bookings", body)

    def cancel_booking(self, booking_id: int) -> dict[str, Any]:
        return self.request("DELETE", f"/api/bookings/{int(booking_id)}")

    def me(self) -> dict[str, Any]:
        return self.request("GET", "/api/me")

    def mqtt_urls(self) -> dict[str, str]:
        """{"watch": URL, "control": URL} of this user's MQTT accounts."""
        return self.request("GET", "/api/me/mqtt")

    # ------------------------------------------------------------ experiment jobs

    def submit_job(
        self,
        controller: Any,
        kit: str | None = None,
        model: str | None = None,
        duration_s: float = 30,
        inputs: dict[str, Any] | None = None,
        course: str | None = None,
        assignment: str | None = None,
    ) -> Job:
        """Queue a controller (a function or a class with `step`, defined in the notebook) to
        run on a kit, or on any working kit of a model, for `duration_s` seconds."""
        return submit_job(self, controller, kit, model, duration_s, inputs, course, assignment)

    def jobs(self, course: str | None = None) -> list[Job]:
        """My jobs; with `course`, that course's (its instructors)."""
        views = self.request("GET", "/api/jobs", query={"course": course} if course else None)
        return [Job(self, view) for view in views]

    def job(self, job_id: int) -> Job:
        return Job(self, self.request("GET", f"/api/jobs/{int(job_id)}"))

    # ------------------------------------------------------------ the session helper

    @contextlib.contextmanager
    def session(
        self,
        kit_or_model: str,
        *,
        progress: Progress | None = print,
        heartbeat_s: float = 15.0,
        poll_s: float = 1.0,
        wait_timeout: float | None = None,
    ) -> Iterator[Kit]:
        """Queue for a kit (or any kit of a model), wait, and command it while the block runs::

            lab = LabService("http://127.0.0.1:8181", token)
            with lab.session("streetlight-1") as kit:
                kit.set("mode", "manual")

        While waiting, `progress` gets one line whenever the position or estimated wait
        changes. Once granted, commands go through the user's control account; a background
        thread sends a heartbeat every `heartbeat_s`. On leaving the block (also on an
        exception) the session is released and the connections are closed; interrupted while
        waiting, the queue entry is withdrawn. If the session ends early (time up, an admin),
        the next `set` raises CommandNotAuthorized. Raises LabTimeout after `wait_timeout` s."""
        say = progress or (lambda _line: None)
        entry = self.join(**self._target(kit_or_model))
        try:
            granted = self._wait_for_grant(entry, say, poll_s, wait_timeout)
        except BaseException:
            self._withdraw(entry["id"], say)
            raise
        session_id, kit_id = granted["id"], granted["kit"]
        say(f"granted {kit_id} (session {session_id}) for {_duration(granted['time_left_s'])}")
        try:
            urls = self.mqtt_urls()
            # The control account watches too; only its command right comes and goes.
            lab = open_lab(
                urls["control"], client_id=f"smartlab-session-{session_id}-{uuid.uuid4().hex[:6]}"
            )
            try:
                self.heartbeat(session_id)  # granted -> active
                with _Heartbeat(self, session_id, heartbeat_s, say):
                    yield lab.kit(kit_id)
            finally:
                lab.close()
        finally:
            self._release(session_id, kit_id, say)

    def _target(self, kit_or_model: str) -> dict[str, str]:
        kits = self.kits()
        if any(k["id"] == kit_or_model for k in kits):
            return {"kit": kit_or_model}
        if any(k["model"] == kit_or_model for k in kits):
            return {"model": kit_or_model}
        return {"kit": kit_or_model}  # the service says "no kit …"

    def _wait_for_grant(
        self, entry: dict[str, Any], say: Progress, poll_s: float, wait_timeout: float | None
    ) -> dict[str, Any]:
        deadline = None if wait_timeout is None else time.monotonic() + wait_timeout
        shown = None
        while entry["state"] == "waiting":
            line = _waiting_line(entry)
            if line != shown:
                say(line)
                shown = line
            if deadline is not None and time.monotonic() >= deadline:
                raise LabTimeout(f"not granted within {wait_timeout} s ({line})")
            time.sleep(poll_s)
            entry = self.queue_entry(entry["id"])
        if entry["state"] != "served" or not entry.get("session"):
            raise LabServiceError(f"queue entry {entry['id']} is {entry['state']}, not served")
        return entry["session"]

    def _withdraw(self, entry_id: int, say: Progress) -> None:
        """Leave the queue; if the kit was granted meanwhile, give the session back."""
        try:
            self.leave(entry_id)
            say(f"left the queue (entry {entry_id})")
        except LabServiceError as err:
            if err.status != 409:
                log.warning("could not leave the queue: %s", err)
                return
            try:
                session = self.queue_entry(entry_id).get("session")
                if session:
                    self._release(session["id"], session["kit"], say)
            except LabServiceError as late:
                log.warning("could not release a session granted while leaving: %s", late)

    def _release(self, session_id: int, kit_id: str, say: Progress) -> None:
        try:
            self.release(session_id)
            say(f"released {kit_id} (session {session_id})")
        except LabServiceError as err:
            log.warning("could not release session %s: %s", session_id, err)


def session(
    kit_or_model: str, service: LabService | None = None, **options: Any
) -> contextlib.AbstractContextManager[Kit]:
    """`LabService.session` with a service from $SMARTLAB_LAB_URL and $SMARTLAB_TOKEN::

    from labs.client import session
    with session("street-lighting") as kit:     # any kit of the model
        kit.set("mode", "manual")
    """
    return (service or LabService()).session(kit_or_model, **options)


class _Heartbeat:
    """Keeps a session alive from a background thread until stopped or the session ends."""

    def __init__(self, service: LabService, session_id: int, every_s: float, say: Progress) -> None:
        self.service = service
        self.session_id = session_id
        self.every_s = every_s
        self.say = say
        self.ended: str | None = None  # why the service refused a heartbeat
        self._stopping = threading.Event()
        self._thread = threading.Thread(
            target=self._run, daemon=True, name=f"heartbeat-{session_id}"
        )

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stopping.set()
        self._thread.join(self.service.timeout + 1)

    def _run(self) -> None:
        while not self._stopping.wait(self.every_s):
            try:
                self.service.heartbeat(self.session_id)
            except LabServiceUnavailable as err:
                log.warning("heartbeat of session %s: %s", self.session_id, err)
            except LabServiceError as err:
                if err.status in (404, 409):  # ended: the broker refuses commands from now on
                    self.ended = str(err)
                    self.say(f"session {self.session_id} has ended: {err}")
                    return
                log.warning("heartbeat of session %s: %s", self.session_id, err)


def _error_reason(err: urllib.error.HTTPError) -> tuple[str, str | None]:
    """The refusal's one line and message code (None from an older service or a proxy)."""
    try:
        answer = json.loads(err.read())
        code = answer.get("code")
        return " ".join(str(answer["error"]).split()), code if isinstance(code, str) else None
    except (ValueError, KeyError, TypeError, AttributeError, OSError):
        return str(err.reason), None


def _quote(part: str) -> str:
    return urllib.parse.quote(part, safe="")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "an unknown time"
    if seconds < 60:
        return "under a minute"
    return f"about {math.ceil(seconds / 60)} min"


def _waiting_line(entry: dict[str, Any]) -> str:
    target = entry["kit"] or f"a {entry['model']} kit"
    if not entry.get("position"):
        return f"waiting for {target}: no kit available now (queue entry {entry['id']})"
    return (
        f"waiting for {target}: position {entry['position']}, estimated wait "
        f"{_duration(entry.get('estimated_wait_s'))} (queue entry {entry['id']})"
    )
