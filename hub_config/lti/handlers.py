"""The hub's LTI 1.3 pages: login initiation, launch, the tool's JWKS and Canvas configuration.

The flow (LTI 1.3 core §4 and the Security Framework §5.1.1, OIDC third-party initiated login):

1. the LMS sends the browser to `/hub/lti/login` (GET or POST: iss, login_hint,
   target_link_uri, client_id, lti_deployment_id, lti_message_hint);
2. we remember a fresh state and nonce, bind the state to this browser with a signed cookie,
   and redirect to the platform's authorization endpoint;
3. the LMS form-posts a signed id_token and the state to `/hub/lti/launch`;
4. we check state (once, this browser), token (launch.verify) and nonce (once), map the
   context to a course and the roles to groups, log the user in and send them on.

The LMS posts from its own site, so these handlers cannot carry JupyterHub's `_xsrf` token: the
state cookie, the one-time state and nonce and the platform's signature do that job.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import TYPE_CHECKING, Any, NoReturn
from urllib.parse import urlparse

from jupyterhub.handlers import BaseHandler
from jupyterhub.utils import url_path_join
from tornado.httputil import url_concat
from tornado.web import HTTPError

from hub_config.lti import launch as lti_launch
from hub_config.lti.platforms import (
    Platform,
    ReservedUsername,
    course_roles,
    find_platform,
    platforms,
)
from hub_config.lti.store import LoginState, StateError
from site_config.redirects import local_path

if TYPE_CHECKING:
    from hub_config.lti.authenticator import LtiAuthenticator

STATE_COOKIE_DAYS = 600 / 86400  # a launch must complete within the state's lifetime
AGS_SCOPES = [
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem",
    "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem.readonly",
    "https://purl.imsglobal.org/spec/lti-ags/scope/result.readonly",
    "https://purl.imsglobal.org/spec/lti-ags/scope/score",
]


class LtiHandler(BaseHandler):
    @property
    def lti(self) -> LtiAuthenticator:
        return self.authenticator  # type: ignore[return-value]

    def check_xsrf_cookie(self) -> None:
        """Cross-site posts from the LMS; see the module docstring for what protects them."""

    def tool_url(self) -> str:
        """Scheme and host the LMS reaches the hub at (`LtiAuthenticator.tool_url` if set)."""
        if self.lti.tool_url:
            return self.lti.tool_url.rstrip("/")
        public = self.settings.get("public_url")
        if public:
            return f"{public.scheme}://{public.netloc}"
        return f"{self.request.protocol}://{self.request.host}"

    def lti_url(self, page: str) -> str:
        return self.tool_url() + url_path_join(self.hub.base_url, "lti", page)

    def refuse(self, status: int, reason: str, **context: Any) -> NoReturn:
        where = " ".join(f"{k}={v!r}" for k, v in context.items() if v)
        self.log.warning("LTI launch refused: %s%s", reason, f" ({where})" if where else "")
        # `reason` heads JupyterHub's error page; the message below it says what was wrong.
        raise HTTPError(status, "LTI launch refused: %s", reason, reason="LTI launch refused")

    def state_cookie(self, state: str) -> str:
        return "lti-state-" + hashlib.sha256(state.encode()).hexdigest()[:16]


class LoginInitiationHandler(LtiHandler):
    """Step 1–2: the LMS's third-party initiated login → the platform's authorization endpoint."""

    async def get(self) -> None:
        self.initiate()

    async def post(self) -> None:
        self.initiate()

    def initiate(self) -> None:
        issuer = self.get_argument("iss", "")
        login_hint = self.get_argument("login_hint", "")
        target = self.get_argument("target_link_uri", "")
        client_id = self.get_argument("client_id", None)
        deployment = self.get_argument("lti_deployment_id", None)
        missing = [
            name
            for name, value in (
                ("iss", issuer),
                ("login_hint", login_hint),
                ("target_link_uri", target),
            )
            if not value
        ]
        if missing:
            self.refuse(400, f"the login initiation has no {', '.join(missing)}")
        platform = self.platform_for(issuer, client_id)
        if client_id is None:
            if len(platform.client_ids) > 1:
                self.refuse(
                    400,
                    f"{issuer} has several client ids here: the login initiation "
                    "must name its client_id",
                    issuer=issuer,
                )
            client_id = platform.client_ids[0]  # optional in LTI 1.3 when there is one
        if deployment is not None and deployment not in platform.deployment_ids:
            self.refuse(403, f"unknown deployment {deployment!r} of {issuer}", issuer=issuer)
        state, nonce = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self.lti.store().add_state(state, LoginState(nonce, issuer, client_id, target))
        secure = self.tool_url().startswith("https://")
        # SameSite=None: the launch is a cross-site POST from the LMS (needs HTTPS, i.e. Secure).
        self.set_signed_cookie(
            self.state_cookie(state),
            "1",
            expires_days=STATE_COOKIE_DAYS,
            path=url_path_join(self.hub.base_url, "lti"),
            httponly=True,
            secure=secure,
            samesite="None" if secure else "Lax",
        )
        params = {
            "scope": "openid",
            "response_type": "id_token",
            "response_mode": "form_post",
            "prompt": "none",
            "client_id": client_id,
            "redirect_uri": self.lti_url("launch"),
            "login_hint": login_hint,
            "state": state,
            "nonce": nonce,
        }
        message_hint = self.get_argument("lti_message_hint", None)
        if message_hint is not None:
            params["lti_message_hint"] = message_hint
        self.redirect(url_concat(platform.authorization_endpoint, params))

    def platform_for(self, issuer: str, client_id: str | None) -> Platform:
        site = self.lti.site()
        if not any(p.issuer == issuer for p in platforms(site)):
            self.refuse(
                403, f"unknown issuer {issuer!r}: no LMS of the site file has it", issuer=issuer
            )
        platform = find_platform(site, issuer, client_id)
        if platform is None and client_id is None:
            self.refuse(
                400,
                f"several LMSs share the issuer {issuer}: the login initiation "
                "must name its client_id",
                issuer=issuer,
            )
        if platform is None:
            self.refuse(403, f"unknown client id {client_id!r} for {issuer}", issuer=issuer)
        return platform


class LaunchHandler(LtiHandler):
    """Step 3–4: the platform's form post with the id_token."""

    async def get(self) -> None:
        self.refuse(405, "a launch is a form post from the LMS; start from the LMS course")

    async def post(self) -> None:
        error = self.get_argument("error", None)
        if error:
            self.refuse(
                403,
                f"the LMS answered {error}: "
                f"{self.get_argument('error_description', '(no description)')}",
            )
        id_token, state = self.get_argument("id_token", ""), self.get_argument("state", "")
        if not id_token or not state:
            self.refuse(400, "the launch has no id_token or no state")
        try:
            login = self.lti.store().use_state(state)
        except StateError as err:
            self.refuse(403, str(err))
        cookie = self.state_cookie(state)
        if self.get_signed_cookie(cookie, max_age_days=STATE_COOKIE_DAYS) is None:
            self.refuse(
                403,
                "this browser did not start the launch (no login state cookie; "
                "is it blocking cookies?)",
                issuer=login.issuer,
            )
        self.clear_cookie(cookie, path=url_path_join(self.hub.base_url, "lti"))
        launch = await self.verified(id_token, login)
        course = launch.platform.contexts.get(launch.context_id)
        context = dict(issuer=login.issuer, sub=launch.sub, context=launch.context_id)
        try:
            launch.username  # noqa: B018 (the mapping refuses the platform's own names)
        except ReservedUsername as err:
            self.refuse(403, str(err), **context)
        if course is None:
            title = f" ({launch.context_title})" if launch.context_title else ""
            self.refuse(
                403,
                f"LMS course {launch.context_id!r}{title} is not linked to a course "
                f"here: the centre adds it to `contexts` of this LMS in the site "
                "file",
                **context,
            )
        roles = course_roles(launch.roles)
        if not roles:
            self.refuse(
                403,
                "no course role: the LMS sent none of learner, instructor, teaching assistant",
                **context,
            )
        user = await self.login_user(
            {"lti_launch": launch, "course": course, "course_roles": roles}
        )
        if user is None:
            self.refuse(403, f"{launch.username} may not use this hub", **context)
        self.redirect(self.landing_url(launch, login, user))

    async def verified(self, id_token: str, login: LoginState) -> lti_launch.Launch:
        try:
            _, claims = lti_launch.unverified_claims(id_token)
            issuer = claims.get("iss")
            if issuer != login.issuer:
                known = any(p.issuer == issuer for p in platforms(self.lti.site()))
                raise lti_launch.LaunchError(
                    f"{'issuer mismatch' if known else 'unknown issuer'} {issuer!r}: the login "
                    f"began for {login.issuer}"
                )
            platform = find_platform(self.lti.site(), login.issuer, login.client_id)
            if platform is None:
                raise lti_launch.LaunchError(f"{login.issuer} is no longer in the site file")
            launch = await lti_launch.verify(
                id_token, platform, login.client_id, login.nonce, self.lti.jwks()
            )
            if not self.lti.store().use_nonce(login.issuer, login.nonce, claims.get("exp", 0)):
                raise lti_launch.LaunchError("replayed id_token: its nonce was already used")
        except lti_launch.LaunchError as err:
            self.refuse(403, str(err), issuer=login.issuer, client_id=login.client_id)
        return launch

    def landing_url(self, launch: lti_launch.Launch, login: LoginState, user: Any) -> str:
        """The target link if it is a page of this hub (not the LTI pages), else the default."""
        local = hub_page(
            launch.target_link_uri or login.target_link_uri,
            urlparse(self.tool_url()).netloc,
            self.base_url,
            url_path_join(self.hub.base_url, "lti"),
        )
        return local or self.get_next_url(user)


def hub_page(target_link: str, own_host: str, base_url: str, lti_pages: str) -> str | None:
    """The path (and query) of `target_link` if it is a page of this hub other than the LTI
    pages, else None. A browser reads `//host` and `/\\host` as another site, so a path that
    begins so, or holds a backslash or a control character anywhere, is never returned."""
    target = urlparse(target_link)
    if target.scheme not in ("", "http", "https") or target.netloc not in ("", own_host):
        return None
    path = target.path
    if (
        not path.startswith(base_url)
        or not path.startswith("/")
        or path.startswith("//")
        or any(c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in target_link)
        or path.startswith(lti_pages)
        or path.rstrip("/") == lti_pages
    ):
        return None
    # And what the platform's other redirects accept (`/%5Chost` decoded once is `/\host`).
    return local_path(path + (f"?{target.query}" if target.query else ""), base_url)


class JwksHandler(LtiHandler):
    """The tool's public key set: LMSs verify our client assertions with it."""

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(self.lti.tool_key().jwks())


class CanvasConfigHandler(LtiHandler):
    """Canvas developer key JSON ("Enter URL" method), with this hub's URLs filled in."""

    async def get(self) -> None:
        self.set_header("Content-Type", "application/json")
        self.write(canvas_configuration(self.tool_url(), self.hub.base_url, self.lti.tool_title))


def canvas_configuration(tool_url: str, hub_base_url: str, title: str) -> dict[str, Any]:
    def url(page: str) -> str:
        return tool_url + url_path_join(hub_base_url, "lti", page)

    domain = urlparse(tool_url).netloc
    return {
        "title": title,
        "description": "Jupyter notebooks, shared IoT lab kits and graded assignments",
        "oidc_initiation_url": url("login"),
        "target_link_uri": url("launch"),
        "public_jwk_url": url("jwks"),
        "scopes": AGS_SCOPES,
        "extensions": [
            {
                "domain": domain,
                "platform": "canvas.instructure.com",
                # Name and e-mail fill the nbgrader gradebook's student record.
                "privacy_level": "public",
                "settings": {
                    "placements": [
                        {
                            "placement": "course_navigation",
                            "message_type": "LtiResourceLinkRequest",
                            "target_link_uri": url("launch"),
                            "text": title,
                            # JupyterHub forbids framing (frame-ancestors 'none'): open a new tab.
                            "windowTarget": "_blank",
                        }
                    ]
                },
            }
        ],
        "custom_fields": {},
    }
