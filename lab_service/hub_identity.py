"""The lab service behind JupyterHub: who calls, and in which groups, is the hub's word.

`c.LabServiceApp.identity = "hub"`. A caller shows a token the hub issued (`Authorization:
token <t>`; a user's server and its kernels carry one in $JUPYTERHUB_API_TOKEN) or, in a
browser, the cookie of the hub's OAuth flow for services (jupyterhub.services.auth.HubOAuth:
`<prefix>` starts the login, the hub sends the browser back to `<prefix>oauth_callback`).

1. The hub resolves the token (GET /hub/api/user, with the caller's token): the user's name and
   the token's scopes, which must give access to this service (`access:services!service=lab`).
2. The service asks, with its own token, for the user's groups (GET /hub/api/users/<name>; its
   role needs only `list:users`, `read:users:name`, `read:users:groups`): a token that merely
   grants access to the service does not show its owner's groups.
3. Groups map to the lab user: `inst-<id>` the institution (exactly one), `nbgrader-<course>`
   courses taken, `instructors-<course>` courses taught, `lab-admins` lab admin.

Both answers are cached for `cache_max_age` seconds (the token's in HubAuth's own cache), so a
class's burst asks the hub at most once per student, and a change of groups shows within that
time. The hub's settings come from JupyterHub's service environment: $JUPYTERHUB_API_TOKEN,
$JUPYTERHUB_API_URL, $JUPYTERHUB_SERVICE_PREFIX, $JUPYTERHUB_CLIENT_ID,
$JUPYTERHUB_OAUTH_CALLBACK_URL, $JUPYTERHUB_SERVICE_NAME (set by the hub for a managed service,
by whoever starts an external one).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import secrets
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from jupyterhub.services.auth import (
    HubOAuth,
    HubOAuthCallbackHandler,
    HubOAuthenticated,
    _ExpiringDict,
)
from jupyterhub.utils import url_path_join
from tornado.httpclient import AsyncHTTPClient
from tornado.web import HTTPError, RequestHandler
from traitlets import Integer, Unicode, default
from traitlets.config import LoggingConfigurable

from lab_service.api_identity import Identity
from lab_service.api_schemas import ApiError
from lab_service.messages import one_line
from lab_service.rights import validate_user
from lab_service.service import User
from site_config.redirects import local_path

COOKIE_SECRET_FILE = "lab-service-cookie-secret"
OAUTH_STATES_DIR = "lab-service-oauth-states"
STATE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")  # secrets.token_urlsafe's alphabet


class HubIdentity(Identity, LoggingConfigurable):
    """Callers as JupyterHub knows them (see the module's documentation)."""

    cache_max_age = Integer(
        60,
        min=1,
        help="Seconds a token's owner and a user's groups are cached: a group "
        "change shows within this time.",
    ).tag(config=True)
    service_name = Unicode(
        help="This service's name at the hub; default $JUPYTERHUB_SERVICE_NAME or 'lab'."
    ).tag(config=True)
    institution_prefix = Unicode("inst-", help="Group inst-<id>: the institution.").tag(config=True)
    course_prefix = Unicode(
        "nbgrader-",
        help="Group nbgrader-<course>: a course taken (as nbgrader's multi-course setup).",
    ).tag(config=True)
    instructor_prefix = Unicode(
        "instructors-", help="Group instructors-<course>: a course taught."
    ).tag(config=True)
    admin_group = Unicode("lab-admins", help="Members are lab admins.").tag(config=True)
    job_runner_service = Unicode(
        "job-runner",
        help="The hub service that runs experiment jobs (claims them, reports their end); "
        "its token needs access to this service. Empty: none.",
    ).tag(config=True)
    refused_token_seconds = Integer(
        10,
        min=1,
        help="Seconds a token the hub did not accept is remembered as refused: junk traffic "
        "repeating a token costs the hub one lookup, not one per request.",
    ).tag(config=True)
    cache_size = Integer(
        10_000,
        min=10,
        help="Most tokens (accepted, and refused) and users each cache keeps; the oldest "
        "go first, so junk tokens cannot grow the service's memory.",
    ).tag(config=True)
    cookie_secret_file = Unicode(
        help="Key signing the login cookies, shared by the HTTP "
        "front ends; created if missing. Default: "
        f"<state folder>/{COOKIE_SECRET_FILE}."
    ).tag(config=True)

    base_url = Unicode("/")  # the service's prefix behind the hub's proxy
    state_dir = Unicode(".")

    unauthenticated = "auth-hub"  # a message code (messages.py)

    @default("service_name")
    def _service_name_default(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_NAME") or "lab"

    @default("cookie_secret_file")
    def _cookie_secret_file_default(self) -> str:
        return str(Path(self.state_dir) / COOKIE_SECRET_FILE)

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not os.environ.get("JUPYTERHUB_API_TOKEN"):
            raise ValueError(
                "identity 'hub' needs $JUPYTERHUB_API_TOKEN (this service's token "
                "at the hub) and $JUPYTERHUB_API_URL"
            )
        self.scope = f"access:services!service={self.service_name}"
        self.hub_auth = LocalHubOAuth(
            parent=self,
            cache_max_age=self.cache_max_age,
            access_scopes={self.scope},
            base_url=self.base_url,
            oauth_client_id=os.environ.get("JUPYTERHUB_CLIENT_ID")
            or f"service-{self.service_name}",
            _oauth_states=SharedOAuthStates(Path(self.state_dir) / OAUTH_STATES_DIR, 600),
            cache=BoundedCache(self.cache_max_age, self.cache_size),
            refused=BoundedCache(self.refused_token_seconds, self.cache_size),
        )
        self._groups: _ExpiringDict = BoundedCache(self.cache_max_age, self.cache_size)
        self._cookie_secret = _cookie_secret(Path(self.cookie_secret_file))

    # ------------------------------------------------------------ the API's callers

    async def user_for(self, handler: RequestHandler) -> User | None:
        try:
            model = await self.hub_auth.get_user(handler, sync=False)
        except HTTPError as err:  # the hub could not be asked
            raise ApiError(
                503, "hub-unreachable", detail=one_line(str(err.log_message or err))
            ) from None
        if not model:
            return None
        name, kind = model["name"], model.get("kind", "user")
        if kind == "service" and self.job_runner_service and name == self.job_runner_service:
            if not self.hub_auth.check_scopes(self.hub_auth.access_scopes, model):
                raise ApiError(403, "hub-scope", name=name, scope=self.scope)
            # The runner is nobody's person: no institution, no course, only runner rights.
            return User(name, "", job_runner=True)
        if kind != "user":
            raise ApiError(403, "hub-not-user", kind=kind, name=name)
        if not self.hub_auth.check_scopes(self.hub_auth.access_scopes, model):
            raise ApiError(403, "hub-scope", name=name, scope=self.scope)
        return self.lab_user(name, await self.groups_of(name))

    async def groups_of(self, name: str) -> list[str]:
        """The user's hub groups, asked with the service's own token (cached)."""
        try:
            return self._groups[name]
        except KeyError:
            pass
        url = url_path_join(self.hub_auth.api_url, "users", urllib.parse.quote(name, safe=""))
        answer = await AsyncHTTPClient().fetch(  # one per event loop, made on first use
            url,
            headers={"Authorization": f"token {self.hub_auth.api_token}"},
            raise_error=False,
            request_timeout=10,
        )
        if answer.code == 599:
            raise ApiError(
                503, "hub-down", url=self.hub_auth.api_url, detail=one_line(str(answer.error))
            )
        if answer.code == 404:
            raise ApiError(403, "hub-user-gone", name=name)
        if answer.code == 403:
            self.log.error(
                "the hub refused to show %s's groups: the service's token needs "
                "read:users:groups and read:users:name",
                name,
            )
            raise ApiError(503, "hub-groups-forbidden")
        if answer.code != 200:
            raise ApiError(503, "hub-answer", code=answer.code, name=name)
        groups = list(json.loads(answer.body).get("groups") or [])
        self._groups[name] = groups
        return groups

    def lab_user(self, name: str, groups: Iterable[str]) -> User:
        """The lab user of a hub user in `groups`; ApiError(403) if they cannot be one."""
        groups = set(groups)

        def suffixes(prefix: str) -> set[str]:
            return {g[len(prefix) :] for g in groups if g.startswith(prefix) and g != prefix}

        institutions = sorted(suffixes(self.institution_prefix))
        if not institutions:
            raise ApiError(403, "hub-no-institution", name=name, prefix=self.institution_prefix)
        if len(institutions) > 1:
            listed = ", ".join(self.institution_prefix + i for i in institutions)
            raise ApiError(403, "hub-many-institutions", name=name, listed=listed)
        try:
            validate_user(name)
        except ValueError as err:
            raise ApiError(403, "hub-bad-name", name=name[:64], detail=str(err)) from None
        return User(
            name,
            institutions[0],
            frozenset(suffixes(self.course_prefix)),
            frozenset(suffixes(self.instructor_prefix)),
            self.admin_group in groups,
        )

    # ------------------------------------------------------------ browsers (HubOAuth)

    def handler_bases(self) -> tuple[type, ...]:
        return (self._authenticated(),)

    def handlers(self, base_url: str) -> list[tuple]:
        prefix = re.escape(base_url.rstrip("/"))
        callback = type(
            "OAuthCallbackHandler", (self._authenticated(), HubOAuthCallbackHandler), {}
        )
        home = type("LoginHandler", (self._authenticated(), LoginHandler), {})
        return [(prefix + "/oauth_callback", callback), (prefix + "/?", home)]

    def settings(self) -> dict[str, Any]:
        return {"cookie_secret": self._cookie_secret}

    def _authenticated(self) -> type:
        """JupyterHub's handler mixin, bound to this identity's HubOAuth (not the singleton):
        its XSRF rules then apply to cookie-authenticated API calls."""
        return type("HubAuthenticated", (HubOAuthenticated,), {"_hub_auth": self.hub_auth})


class BoundedCache(_ExpiringDict):
    """HubAuth's expiring cache with a bound on its size (the oldest entry goes first). It
    keeps no None: a refused token is the `refused` cache's, for a shorter time."""

    def __init__(self, max_age: float, max_size: int) -> None:
        super().__init__(max_age)
        self.max_size = max_size

    def __setitem__(self, key: Any, value: Any) -> None:
        if value is None:
            return
        self.values.pop(key, None)  # a key set again is the newest
        super().__setitem__(key, value)
        while len(self.values) > self.max_size:
            oldest = next(iter(self.values))
            self.values.pop(oldest)
            self.timestamps.pop(oldest, None)


class LocalHubOAuth(HubOAuth):
    """HubOAuth that sends a browser, once logged in, only to a path of this service; that
    remembers the tokens the hub refused (briefly); and that asks the hub once for a token
    however many requests carrying it arrive while the hub answers."""

    def __init__(self, *, refused: BoundedCache, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.refused = refused
        self._asking: dict[str, asyncio.Future] = {}
        self.lookups = 0  # questions put to the hub about tokens (for tests and logs)

    def user_for_token(
        self, token: str, use_cache: bool = True, session_id: str = "", *, sync: bool = True
    ) -> Any:
        if sync:  # not used by the service; HubAuth's own path
            return super().user_for_token(token, use_cache, session_id, sync=True)
        return self._user_for_token(token, use_cache, session_id)

    async def _user_for_token(self, token: str, use_cache: bool, session_id: str) -> Any:
        key = hashlib.sha256(token.encode("utf8", "replace")).hexdigest()
        if use_cache and key in self.refused:
            return None
        asking = self._asking.get(key)
        if asking is not None:  # the same token is being asked about: share the answer
            return await asyncio.shield(asking)
        future = asyncio.get_running_loop().create_future()
        self._asking[key] = future
        try:
            cached = self.cache.get(f"token:{session_id}:{key}") if use_cache else None
            if cached is None:
                self.lookups += 1
            model = await super().user_for_token(token, use_cache, session_id, sync=False)
        except BaseException as err:
            future.set_exception(err)
            future.exception()  # retrieved: no "never retrieved" warning if nobody waits
            raise
        finally:
            self._asking.pop(key, None)
        if model is None:
            self.refused[key] = True
        future.set_result(model)
        return model

    def get_next_url(self, state_id: str = "", /) -> str:
        target = super().get_next_url(state_id)
        if local_path(target, self.base_url.rstrip("/")) is None:
            self.log.warning(
                "login redirect refused: %.200r is not a path of %s", target, self.base_url
            )
            return self.base_url
        return target


class LoginHandler(HubOAuthenticated, RequestHandler):
    """`<prefix>`: log in through the hub if needed, then show who you are (`api/me`).

    It also sets the hub's `_xsrf` cookie: a page's script sends it back as the X-XSRFToken
    header, without which a cookie-authenticated write is refused."""

    async def get(self) -> None:
        model = await self.hub_auth.get_user(self, sync=False)
        if not model:
            self.redirect(self.get_login_url())
            return
        self.xsrf_token  # noqa: B018 (sets the cookie)
        self.redirect(url_path_join(self.hub_auth.base_url, "api/me"))


class SharedOAuthStates(_ExpiringDict):
    """HubOAuth's pending logins (next URL, PKCE verifier) in files of the state folder rather
    than in one process's memory: a login started by one HTTP front end may end in another."""

    def __init__(self, folder: Path, max_age: float) -> None:
        super().__init__(max_age=max_age)
        self.folder = folder
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _path(self, key: str) -> Path:
        if not isinstance(key, str) or not STATE_ID.fullmatch(key):
            raise KeyError(key)  # state ids come back in URLs: never a path of their choosing
        return self.folder / key

    def __setitem__(self, key: str, value: Any) -> None:
        path = self._path(key)
        partial = path.with_suffix(".part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            json.dump(value, out)
        partial.replace(path)

    def __getitem__(self, key: str) -> Any:
        path = self._path(key)
        try:
            if time.time() - path.stat().st_mtime > self.max_age:
                path.unlink(missing_ok=True)
                raise KeyError(key)
            return json.loads(path.read_text())
        except (OSError, ValueError):
            raise KeyError(key) from None

    def __contains__(self, key: object) -> bool:
        try:
            self[key]  # type: ignore[index]
        except KeyError:
            return False
        return True

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def __delitem__(self, key: str) -> None:
        try:
            self._path(key).unlink()
        except OSError:
            raise KeyError(key) from None

    def pop(self, key: str, default: Any = "_raise") -> Any:
        try:
            value = self[key]
        except KeyError:
            if default == "_raise":
                raise
            return default
        self._path(key).unlink(missing_ok=True)
        return value

    def purge_expired(self) -> None:
        now = time.time()
        for path in self.folder.glob("*"):
            try:
                if now - path.stat().st_mtime > self.max_age:
                    path.unlink(missing_ok=True)
            except OSError:
                continue

    def __len__(self) -> int:
        return sum(1 for _ in self.folder.glob("*"))

    def __repr__(self) -> str:
        return f"<SharedOAuthStates {self.folder}>"


def _cookie_secret(path: Path) -> bytes:
    """The key of the login cookies, made on first use and kept (0600) across restarts."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    secret = path.read_text().strip()
    if len(secret) < 32:
        raise ValueError(
            f"{path}: the cookie secret is too short (remove the file to make a new one)"
        )
    return secret.encode()
