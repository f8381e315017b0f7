"""The lab service's REST API over HTTP (tornado): JSON in and out, under `/api/`.

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

import inspect
import json
import logging
import re
from collections.abc import Callable
from typing import Any

from pydantic import (
    ValidationError,
)
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
from lab_service.api_schemas import ApiError, Body, one_line, validation_message
from lab_service.service import SharingError, User

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024


def parse_body(model: type[Body], raw: bytes) -> Body:
    if not raw.strip():
        raise ApiError(400, "this request needs a JSON body")
    try:
        return model.model_validate_json(raw)
    except ValidationError as err:
        raise ApiError(400, f"invalid body: {validation_message(err)}") from None


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
