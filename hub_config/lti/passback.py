"""Grade passback with LTI Advantage Assignment and Grade Services (AGS 2.0).

For one course and assignment: read each submission's score from the course's nbgrader
gradebook, and for every LMS course (LTI context) its LTI students launched from, post the score
to the assignment's line item there (found by `resourceId` = assignment name, else created).
Authorisation is the LTI Security Framework's client_credentials grant with a JWT client
assertion signed by the tool key (keys.py). Transient failures (network, 408, 429, 5xx) are
retried with exponential backoff; what was sent, or why not, is recorded in the LTI store, so a
second push sends only what is missing or changed.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from hub_config.lti import gradebook
from hub_config.lti.keys import ToolKey
from hub_config.lti.platforms import STUDENT, Platform, platforms
from hub_config.lti.store import Context, LtiStore
from site_config.site import Site

SCORE_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
# RFC 7523: the tool proves who it is with a JWT signed by its key.
CLIENT_ASSERTION_JWT = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
LINEITEM_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem"
LINEITEM_READ_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly"
LINEITEM_TYPE = "application/vnd.ims.lis.v2.lineitem+json"
CONTAINER_TYPE = "application/vnd.ims.lis.v2.lineitemcontainer+json"
SCORE_TYPE = "application/vnd.ims.lis.v1.score+json"
TAG = "nbgrader"

log = logging.getLogger(__name__)


class PassbackError(Exception):
    """A request the LMS did not accept, after the retries it deserved."""

    def __init__(self, message: str, attempts: int, status: int | None = None) -> None:
        super().__init__(message)
        self.attempts, self.status = attempts, status


@dataclass(frozen=True)
class Retry:
    attempts: int = 4
    backoff: float = 1.0  # seconds before the 2nd attempt; doubles each time
    timeout: float = 20.0

    def delays(self) -> list[float]:
        return [self.backoff * 2**i for i in range(self.attempts - 1)]


def transient(status: int) -> bool:
    return status in (408, 429) or status >= 500


def with_query(url: str, path_suffix: str = "", **params: str) -> str:
    """`url` with `path_suffix` added to its path and `params` to its query (Moodle's line
    item URLs carry their own query, which must stay)."""
    parts = urlsplit(url)
    query = urlencode([*parse_qsl(parts.query), *params.items()])
    return urlunsplit(parts._replace(path=parts.path.rstrip("/") + path_suffix, query=query))


class AgsClient:
    """One LMS as seen by the tool: access token, line items, scores."""

    def __init__(
        self,
        platform: Platform,
        client_id: str,
        key: ToolKey,
        retry: Retry,
        session: requests.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.platform, self.client_id, self.key, self.retry = platform, client_id, key, retry
        self.session = session or requests.Session()
        self.sleep = sleep
        self._token: tuple[str, float] | None = None

    def _send(self, method: str, url: str, **kwargs: Any) -> tuple[requests.Response, int]:
        """The response and the number of attempts it took; PassbackError if none succeeded."""
        delays = self.retry.delays()
        attempt, problem = 0, ""
        while True:
            attempt += 1
            try:
                response = self.session.request(method, url, timeout=self.retry.timeout, **kwargs)
            except requests.RequestException as err:
                problem = f"{type(err).__name__}: {err}"
            else:
                if response.status_code < 400:
                    return response, attempt
                problem = f"HTTP {response.status_code} {response.text[:200].strip()}"
                if not transient(response.status_code):
                    raise PassbackError(
                        f"{method} {url} refused: {problem}", attempt, response.status_code
                    )
            if attempt > len(delays):
                raise PassbackError(
                    f"{method} {url} failed {attempt} times, last: {problem}", attempt
                )
            delay = delays[attempt - 1]
            log.info("%s %s: %s; retrying in %.1f s", method, url, problem, delay)
            self.sleep(delay)

    def token(self) -> str:
        if self._token is None or self._token[1] < time.monotonic():
            assertion = self.key.client_assertion(self.client_id, self.platform.token_audience)
            response, _ = self._send(
                "POST",
                self.platform.token_endpoint,
                data={
                    "grant_type": "client_credentials",
                    "client_assertion_type": CLIENT_ASSERTION_JWT,
                    "client_assertion": assertion,
                    "scope": " ".join([LINEITEM_SCOPE, LINEITEM_READ_SCOPE, SCORE_SCOPE]),
                },
            )
            body = response.json()
            lifetime = float(body.get("expires_in", 3600))
            self._token = (body["access_token"], time.monotonic() + lifetime - 60)
        return self._token[0]

    def _authorised(
        self,
        method: str,
        url: str,
        content_type: str | None = None,
        accept: str | None = None,
        **kwargs: Any,
    ) -> tuple[requests.Response, int]:
        headers = {"Authorization": f"Bearer {self.token()}"}
        if content_type:
            headers["Content-Type"] = content_type
        if accept:
            headers["Accept"] = accept
        try:
            return self._send(method, url, headers=headers, **kwargs)
        except PassbackError as err:
            if err.status != 401:
                raise
        self._token = None  # expired or revoked early: one more try with a fresh token
        headers["Authorization"] = f"Bearer {self.token()}"
        return self._send(method, url, headers=headers, **kwargs)

    def lineitem(self, context: Context, assignment: str, max_score: float) -> str:
        """The URL of the assignment's line item in this LMS course, created if missing."""
        assert context.lineitems is not None
        response, _ = self._authorised(
            "GET", with_query(context.lineitems, resource_id=assignment), accept=CONTAINER_TYPE
        )
        for item in response.json():
            if item.get("resourceId") == assignment and item.get("id"):
                return item["id"]
        if LINEITEM_SCOPE not in context.scopes:
            raise PassbackError(
                f"no line item for {assignment!r} and this LMS course does not "
                "let the tool create one",
                1,
            )
        response, _ = self._authorised(
            "POST",
            context.lineitems,
            content_type=LINEITEM_TYPE,
            accept=LINEITEM_TYPE,
            json={
                "label": assignment,
                "scoreMaximum": max_score,
                "resourceId": assignment,
                "tag": TAG,
            },
        )
        return response.json()["id"]

    def post_score(self, lineitem: str, sub: str, score: float, max_score: float) -> int:
        """Post one score; the number of attempts it took."""
        _, attempts = self._authorised(
            "POST",
            with_query(lineitem, "/scores"),
            content_type=SCORE_TYPE,
            json={
                "userId": sub,
                "scoreGiven": score,
                "scoreMaximum": max_score,
                "activityProgress": "Completed",
                "gradingProgress": "FullyGraded",
                "timestamp": datetime.now(UTC).isoformat(timespec="milliseconds"),
            },
        )
        return attempts


# ------------------------------------------------------------------ one push


@dataclass(frozen=True)
class Grade:
    score: float
    max_score: float
    needs_manual_grade: bool


@dataclass
class PushOutcome:
    platform: str
    context_id: str
    username: str
    status: str  # sent, unchanged, failed, not graded, no submission
    score: float | None = None
    attempts: int = 0
    error: str | None = None


@dataclass
class Report:
    course: str
    assignment: str
    outcomes: list[PushOutcome] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # whole LMS courses that got nothing

    def count(self, status: str) -> int:
        return sum(1 for o in self.outcomes if o.status == status)

    @property
    def failed(self) -> list[PushOutcome]:
        return [o for o in self.outcomes if o.status == "failed"]

    def summary(self) -> str:
        counts = ", ".join(
            f"{self.count(s)} {s}"
            for s in ("sent", "unchanged", "failed", "not graded", "no submission")
            if self.count(s)
        )
        return f"{self.course}/{self.assignment}: {counts or 'nothing to send'}"


def read_grades(course_dir: Path, course: str, assignment: str) -> tuple[float, dict[str, Grade]]:
    """The assignment's maximum and each submitting student's grade from the gradebook."""
    from nbgrader.api import Gradebook, MissingEntry

    if not (course_dir / gradebook.GRADEBOOK).exists():
        raise FileNotFoundError(f"{course_dir / gradebook.GRADEBOOK}: no gradebook")
    with Gradebook(gradebook.gradebook_url(course_dir), course_id=course) as book:
        try:
            found = book.find_assignment(assignment)
        except MissingEntry:
            raise ValueError(f"{course}: no assignment {assignment!r} in the gradebook") from None
        grades = {
            s.student.id: Grade(float(s.score), float(found.max_score), bool(s.needs_manual_grade))
            for s in found.submissions
        }
        return float(found.max_score), grades


def push(
    site: Site,
    store: LtiStore,
    key: ToolKey,
    course: str,
    assignment: str,
    course_dir: Path,
    retry: Retry | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> Report:
    """Send the assignment's scores to every LMS course linked to `course`; see the module."""
    retry = retry or Retry()
    if site.course(course) is None:
        raise ValueError(f"{site.source}: no course {course!r}")
    max_score, grades = read_grades(course_dir, course, assignment)
    report = Report(course, assignment)
    by_key = {p.key: p for p in platforms(site)}
    students: dict[tuple[str, str], list[str]] = {}
    for e in store.enrolments(course=course):
        if e.role == STUDENT:
            students.setdefault((e.platform, e.context_id), []).append(e.username)
    for context in store.contexts(course):
        members = students.get((context.platform, context.context_id), [])
        platform = by_key.get(context.platform)
        where = f"{context.platform} course {context.context_id!r}"
        if not members:
            continue
        if platform is None:
            report.problems.append(f"{where}: its LMS is no longer in the site file")
            continue
        if context.lineitems is None:
            report.problems.append(
                f"{where}: no Assignment and Grade Services endpoint came "
                "with its launches (enable AGS for the tool in the LMS)"
            )
            continue
        progress(f"{where}: {len(members)} students")
        client = AgsClient(platform, context.client_id, key, retry)
        _push_context(
            client,
            store,
            context,
            assignment,
            max_score,
            {m: grades.get(m) for m in members},
            report,
        )
    return report


def _push_context(
    client: AgsClient,
    store: LtiStore,
    context: Context,
    assignment: str,
    max_score: float,
    grades: dict[str, Grade | None],
    report: Report,
) -> None:
    todo: list[tuple[str, Grade]] = []
    for username, grade in sorted(grades.items()):
        outcome = PushOutcome(context.platform, context.context_id, username, "")
        if grade is None:
            outcome.status = "no submission"
        elif grade.needs_manual_grade:
            outcome.status = "not graded"
        else:
            sent = store.sent_score(context.platform, context.context_id, assignment, username)
            if (
                sent
                and sent.status == "sent"
                and (sent.score, sent.max_score) == (grade.score, grade.max_score)
            ):
                outcome.status, outcome.score = "unchanged", grade.score
            else:
                todo.append((username, grade))
                continue
        report.outcomes.append(outcome)
    if not todo:
        return
    try:
        lineitem = store.lineitem(context.platform, context.context_id, assignment)
        if lineitem is None:
            lineitem = client.lineitem(context, assignment, max_score)
            store.set_lineitem(context.platform, context.context_id, assignment, lineitem)
    except (PassbackError, ValueError, KeyError) as err:
        for username, grade in todo:
            _record(
                store,
                report,
                context,
                assignment,
                username,
                grade,
                "failed",
                0,
                f"line item: {err}",
            )
        return
    for username, grade in todo:
        user = store.user(username)
        sub = user["sub"] if user else None
        try:
            if sub is None:
                raise PassbackError(f"{username} has no LMS user id on record", 0)
            attempts = client.post_score(lineitem, sub, grade.score, grade.max_score)
        except (PassbackError, ValueError, KeyError) as err:  # ValueError: a token not JSON
            if isinstance(err, PassbackError) and err.status == 404:
                # The line item was deleted in the LMS: look it up (or make it) next time.
                store.forget_lineitem(context.platform, context.context_id, assignment)
            _record(
                store,
                report,
                context,
                assignment,
                username,
                grade,
                "failed",
                getattr(err, "attempts", 1),
                str(err),
            )
        else:
            _record(store, report, context, assignment, username, grade, "sent", attempts, None)


def _record(
    store: LtiStore,
    report: Report,
    context: Context,
    assignment: str,
    username: str,
    grade: Grade,
    status: str,
    attempts: int,
    error: str | None,
) -> None:
    store.record_score(
        context.platform,
        context.context_id,
        assignment,
        username,
        grade.score,
        grade.max_score,
        status,
        attempts,
        error,
    )
    report.outcomes.append(
        PushOutcome(
            context.platform, context.context_id, username, status, grade.score, attempts, error
        )
    )
