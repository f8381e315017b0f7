"""The lab service's REST API over HTTP (tornado): JSON in and out, under `/api/`.

One route table (`ROUTES`) builds both the tornado handlers and the OpenAPI document, so the two
cannot drift. Handlers only parse, call the service and answer: the rules live in
`service.KitSharing` (and the read-only exports in `records`).

Every refusal is a 4xx with `{"error": "<one line>", "code": "<message code>"}`, the line in the
language of the request's `Accept-Language` (English by default; messages.py); bodies are
parsed strictly (no unknown fields, no type coercion), so a request either is understood
exactly or changes nothing.
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
import inspect
import json
import logging
import re
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pydantic import (
    ValidationError,
)
from tornado import httputil, iostream
from tornado.httpserver import HTTPServer
from tornado.web import Application, HTTPError, RequestHandler

from hardware_kits.dynsec import DynSecError
from hardware_kits.mqtt import ConnectError
from lab_service.api_identity import Identity
from lab_service.api_openapi import openapi
from lab_service.api_routes import (
    ROUTES,
    ApiContext,
    Call,
    QueueBatcher,
    Route,
    _convert_path_arg,
    _convert_query,
    path_regex,
)
from lab_service.api_schemas import ApiError, Body, validation_problem
from lab_service.messages import Words, one_line, render
from lab_service.service import SharingError, User
from site_config.languages import negotiate

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 128 * 1024  # an experiment job carries up to 64 KB of source and 16 KB of inputs
JSON_TYPE = "application/json; charset=UTF-8"


@dataclass(frozen=True)
class HttpLimits:
    """What one connection may cost the server (LabServiceApp's traitlets)."""

    max_body_bytes: int = MAX_BODY_BYTES  # larger: 413 before the body is read
    header_timeout_s: float = 10.0  # a request head (or an idle keep-alive) within this
    body_timeout_s: float = 10.0  # the whole body within this
    linger_s: float = 2.0  # after a refusal, unread input is drained this long at most


def parse_body(model: type[Body], raw: bytes, content_type: str = "") -> Body:
    """The body as `model`. A body declared as anything but JSON is a 415; one with no
    Content-Type is read as JSON (HTTP lets the recipient assume the type then)."""
    media = content_type.split(";", 1)[0].strip().lower()
    if media not in ("", "application/json"):
        raise ApiError(415, "body-not-json", media=media[:60])
    if not raw.strip():
        raise ApiError(400, "body-missing")
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        raise ApiError(400, "body-invalid", problem=validation_problem(err)) from None


# ---------------------------------------------------------------- tornado


def error_body(code: str, fields: dict[str, Any], lang: str) -> str:
    """The JSON of a refusal: its line in `lang`, and its code for clients that word it."""
    return json.dumps({"error": render(code, fields, lang), "code": code})


class JsonErrors(RequestHandler):
    """Every error this server sends is {"error": "<one line>", "code": "<code>"}, tornado's
    own ones too, the line in the language of the request's Accept-Language."""

    @property
    def lang(self) -> str:
        return negotiate(self.request.headers.get("Accept-Language"))

    # Methods tornado does not know (TRACE, CONNECT, ...) get its 405 before any handler code:
    # write_error adds the Allow header there.
    def allowed_methods(self) -> list[str]:
        return []

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        self.set_header("Content-Type", JSON_TYPE)
        exc = kwargs.get("exc_info", (None, None, None))[1]
        message = exc.log_message if isinstance(exc, HTTPError) and exc.log_message else None
        code, fields = "http-error", {"status": status_code, "reason": message or self._reason}
        if status_code == 405:
            allowed = ", ".join(self.allowed_methods())
            self.set_header("Allow", allowed)
            code = "method-not-allowed-here"
            fields = {"method": self.request.method, "allowed": allowed}
        self.finish(error_body(code, fields, self.lang))

    def fail(self, status: int, code: str, fields: dict[str, Any] | None = None) -> None:
        self.set_status(status)
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(error_body(code, fields or {}, self.lang))


class NotFoundHandler(JsonErrors):
    def prepare(self) -> None:
        self.fail(404, "no-api-path", {"path": self.request.path[:200]})

    def send_error(self, status_code: int = 500, **kwargs: Any) -> None:
        if status_code == 405:  # an unknown method on an unknown path: the path is the news
            self.clear()
            self.fail(404, "no-api-path", {"path": self.request.path[:200]})
            return
        super().send_error(status_code, **kwargs)


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


def refusal(err: Exception, what: str) -> tuple[int, str, dict[str, Any]]:
    """HTTP status, message code and fields for an exception of a call (`what`: method and
    path); the HTTP edge words it in the caller's language."""
    if isinstance(err, ApiError | SharingError):
        return err.status, err.code, err.fields
    if isinstance(err, DynSecError | ConnectError | ConnectionError | TimeoutError):
        log.warning("%s: the broker failed: %s", what, err)
        return 503, "broker-failed", {"detail": one_line(str(err))}
    log.error("%s failed", what, exc_info=err)
    return 500, "internal-error", {"kind": type(err).__name__}


class ApiHandler(JsonErrors):
    """All methods of one path; dispatches to the route of the request's method."""

    def initialize(self, identity: Identity, invoke: Invoke, routes: dict[str, Route]) -> None:
        self.identity = identity
        self.invoke = invoke
        self.routes = routes

    def allowed_methods(self) -> list[str]:
        return list(self.routes)

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
                "method-not-allowed",
                {
                    "method": self.request.method,
                    "path": self.request.path,
                    "allowed": ", ".join(self.routes),
                },
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
                raise ApiError(403, "lab-admin-only")
        args, query, body = self._parse(route, raw_args)
        result = self.invoke(route.key, user, args, query, body)
        return await result if inspect.isawaitable(result) else result

    def _parse(self, route: Route, raw_args: dict[str, str]) -> tuple[dict, dict, Any]:
        """Path arguments, query and body; anything that goes wrong here is the request's
        fault, so it is a 400 with its reason, never a 500."""
        try:
            args = {name: _convert_path_arg(name, value) for name, value in raw_args.items()}
            query = _convert_query(route, self.request.query_arguments)
            body = None
            if route.body:
                content_type = self.request.headers.get("Content-Type", "")
                body = parse_body(route.body, self.request.body, content_type)
        except ApiError:
            raise
        except Exception as err:
            log.info("%s %s: malformed request: %r", route.method, self.request.path, err)
            raise ApiError(
                400, "malformed-request", kind=type(err).__name__, detail=one_line(str(err))
            ) from None
        return args, query, body

    def _answer(self, route: Route, result: Any) -> None:
        self.set_status(route.status)
        if route.media == "text/csv":
            self.set_header("Content-Type", "text/csv; charset=UTF-8")
            name = route.path.rsplit("/", 1)[-1]
            self.set_header("Content-Disposition", f'attachment; filename="{name}"')
            self.finish(result)
        elif route.media == "image/jpeg":
            self.set_header("Content-Type", route.media)
            self.set_header("Cache-Control", "private, max-age=86400")  # a recording never changes
            self.finish(result)
        else:
            if result is None:  # nothing to give (a runner's claim with no job waiting)
                self.set_status(204)
                self.finish()
                return
            self.set_header("Content-Type", JSON_TYPE)
            self.finish(json.dumps(result, default=self._words))

    def _words(self, value: Any) -> str:
        """Words for people in an answer, in the caller's language."""
        if isinstance(value, Words):
            return value.text(self.lang)
        raise TypeError(f"{type(value).__name__} is not JSON serializable")


def make_app(
    identity: Identity,
    invoke: Invoke,
    routes: tuple[Route, ...] = ROUTES,
    base_url: str = "/",
    limits: HttpLimits = HttpLimits(),
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
    return LimitedApplication(
        limits, handlers, default_handler_class=NotFoundHandler, **identity.settings()
    )


def make_server(app: Application, limits: HttpLimits) -> HTTPServer:
    """The HTTP server of `app`: bounded bodies, and every read bounded in time, so that a
    connection that never finishes its request is closed (tornado's defaults wait an hour)."""
    return HTTPServer(
        app,
        max_body_size=limits.max_body_bytes,
        idle_connection_timeout=limits.header_timeout_s,  # tornado's header timeout too
        body_timeout=limits.body_timeout_s,
        xheaders=True,
    )


# ---------------------------------------------------------------- bodies over the limit


class LimitedApplication(Application):
    """Refuses a request whose body would exceed the limit as soon as its head is read."""

    def __init__(self, limits: HttpLimits, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limits = limits

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        return BodyLimit(super().start_request(server_conn, request_conn), request_conn, self)


class BodyLimit(httputil.HTTPMessageDelegate):
    """Checks a request's head before its body is read: a Content-Length over the limit is a
    413, a chunked body (size unknown) a 411, an unreadable Content-Length a 400, a form body
    (which tornado would parse itself) a 415, each with the error JSON. Tornado's own refusal
    would be a bare 400 and a close that resets the connection under the client's feet (losing
    the answer), so the refusal takes the stream over: answer, stop writing, drain what the
    client still sends for a short time, close."""

    def __init__(
        self,
        inner: httputil.HTTPMessageDelegate,
        conn: httputil.HTTPConnection,
        app: LimitedApplication,
    ) -> None:
        self.inner, self.conn, self.limits = inner, conn, app.limits

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        refused = self._refusal(headers)
        if refused is None:
            return self.inner.headers_received(start_line, headers)
        status, code, fields = refused
        log.info("%s: refused before its body: %s", start_line, render(code, fields))
        body = error_body(code, fields, negotiate(headers.get("Accept-Language")))
        stream = self.conn.detach()  # type: ignore[attr-defined]  # HTTP1Connection
        task = asyncio.ensure_future(refuse_and_close(stream, status, body, self.limits))
        _REFUSALS.add(task)
        task.add_done_callback(_REFUSALS.discard)
        return None

    def _refusal(self, headers: httputil.HTTPHeaders) -> tuple[int, str, dict[str, Any]] | None:
        limit = self.limits.max_body_bytes
        if "chunked" in headers.get("Transfer-Encoding", "").lower():
            return 411, "body-chunked", {}
        lengths = headers.get_list("Content-Length")
        if not lengths:
            return None
        text = lengths[0].strip()
        if len(set(lengths)) > 1 or not text.isascii() or not text.isdigit():
            return 400, "content-length-malformed", {}
        if int(text) > limit:
            return 413, "body-too-large", {"limit": limit}
        media = headers.get("Content-Type", "").split(";", 1)[0].strip().lower()
        if media in FORM_TYPES and int(text):  # tornado would parse it before any handler
            return 415, "body-not-json", {"media": media}
        return None

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self.inner.data_received(chunk)

    def finish(self) -> None:
        self.inner.finish()

    def on_connection_close(self) -> None:
        self.inner.on_connection_close()


FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
_REFUSALS: set[asyncio.Task] = set()  # refusals in progress (a task needs a reference)
_REASONS = {
    400: "Bad Request",
    411: "Length Required",
    413: "Content Too Large",
    415: "Unsupported Media Type",
}


async def refuse_and_close(
    stream: iostream.IOStream, status: int, error_json: str, limits: HttpLimits
) -> None:
    """Answer `status` with the error JSON on a stream taken from tornado, then close it
    gently: closing with unread input makes the kernel reset the connection, and the client
    could lose the answer before reading it."""
    body = error_json.encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {JSON_TYPE}\r\nContent-Length: {len(body)}\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    loop = asyncio.get_running_loop()
    try:
        await stream.write(head + body)
        stream.socket.shutdown(socket.SHUT_WR)
        deadline = loop.time() + limits.linger_s
        while loop.time() < deadline:  # discard, never keep: bounded in time only
            await asyncio.wait_for(
                stream.read_bytes(64 * 1024, partial=True), deadline - loop.time()
            )
    except (iostream.StreamClosedError, OSError, TimeoutError):
        pass
    finally:
        stream.close()
