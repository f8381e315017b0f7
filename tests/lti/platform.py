"""A local LTI 1.3 platform (a small LMS) for the tests: real keys, real HTTP, real checks.

- `/jwks`: its public key;
- `/auth`: the OIDC authorization endpoint; answers a login initiation with the auto-submitting
  form post of a signed id_token, as Moodle and Canvas do;
- `/token`: the OAuth2 client_credentials endpoint; checks the tool's client assertion against
  the tool's JWKS (fetched from the hub);
- `/contexts/<id>/lineitems` and `.../lineitems/<n>/lineitem/scores`: Assignment and Grade
  Services, recording every score that arrives; `score_failures` / `refuse_scores` make it
  answer 503 to score posts.

Runs on its own asyncio loop in a thread of the test process.
"""

from __future__ import annotations

import asyncio
import html
import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import rsa
from tornado.httpserver import HTTPServer
from tornado.web import Application, HTTPError, RequestHandler

from site_config.runtime import free_port

LTI = "https://purl.imsglobal.org/spec/lti/claim/"
AGS = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
MEMBERSHIP = "http://purl.imsglobal.org/vocab/lis/v2/membership#"
LEARNER = MEMBERSHIP + "Learner"
INSTRUCTOR = MEMBERSHIP + "Instructor"
TA = "http://purl.imsglobal.org/vocab/lis/v2/membership/Instructor#TeachingAssistant"
SCORE_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/score"
LINEITEM_SCOPE = "https://purl.imsglobal.org/spec/lti-ags/scope/lineitem"


@dataclass
class LaunchSpec:
    """Who launches, from which course, and how the id_token is to be spoiled (if at all)."""

    sub: str
    roles: list[str]
    context_id: str
    target: str = ""  # the target_link_uri claim; default: the launch URL
    given_name: str = "Test"
    family_name: str = "User"
    spoil: Callable[[dict[str, Any]], None] | None = None  # edits the claims before signing
    signing_key: rsa.RSAPrivateKey | None = None  # another key: a forged signature


@dataclass
class Platform:
    name: str
    client_id: str = field(default_factory=lambda: str(10000000000000 + secrets.randbelow(999)))
    deployment_id: str = "1"
    query_style_lineitems: bool = False  # Moodle's line item URLs carry ?type_id=…
    tool_jwks_url: str = ""  # the hub's /hub/lti/jwks, set once the hub is up
    redirect_uris: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.kid = f"{self.name}-key-1"
        self.pending: dict[str, LaunchSpec] = {}
        self.auth_requests: list[dict[str, str]] = []
        self.tokens: dict[str, set[str]] = {}
        self.lineitems: dict[str, dict[str, Any]] = {}  # url -> line item
        self.scores: list[dict[str, Any]] = []  # accepted, with "lineitem" added
        self.score_attempts = 0
        self.score_failures = 0  # answer this many score posts with 503 first
        self.refuse_scores = False  # answer every score post with refuse_status
        self.refuse_status = 503
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def issuer(self) -> str:
        return self.url

    def site_entry(self, contexts: dict[str, str]) -> dict[str, Any]:
        return {
            "issuer": self.issuer,
            "client_ids": [self.client_id],
            "deployment_ids": [self.deployment_id],
            "authorization_endpoint": f"{self.url}/auth",
            "token_endpoint": f"{self.url}/token",
            "jwks_uri": f"{self.url}/jwks",
            "contexts": contexts,
        }

    def lineitems_url(self, context_id: str) -> str:
        return f"{self.url}/contexts/{context_id}/lineitems"

    def prepare(self, spec: LaunchSpec) -> str:
        """The login_hint under which the next launch will carry `spec`."""
        hint = uuid.uuid4().hex
        self.pending[hint] = spec
        return hint

    # ------------------------------------------------------------------ id_tokens

    def id_token(self, spec: LaunchSpec, nonce: str, target: str) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.client_id,
            "sub": spec.sub,
            "iat": now,
            "exp": now + 300,
            "nonce": nonce,
            "azp": self.client_id,
            "name": f"{spec.given_name} {spec.family_name}",
            "given_name": spec.given_name,
            "family_name": spec.family_name,
            "email": f"{spec.sub}@{self.name}.example",
            LTI + "message_type": "LtiResourceLinkRequest",
            LTI + "version": "1.3.0",
            LTI + "deployment_id": self.deployment_id,
            LTI + "target_link_uri": target,
            LTI + "resource_link": {"id": f"link-{spec.context_id}"},
            LTI + "roles": spec.roles,
            LTI + "context": {
                "id": spec.context_id,
                "title": f"Course {spec.context_id}",
                "label": spec.context_id,
            },
            AGS: {
                "scope": [LINEITEM_SCOPE, SCORE_SCOPE],
                "lineitems": self.lineitems_url(spec.context_id),
            },
        }
        if spec.spoil is not None:
            spec.spoil(claims)
        return jwt.encode(
            claims, spec.signing_key or self.key, algorithm="RS256", headers={"kid": self.kid}
        )

    # ------------------------------------------------------------------ server

    def start(self) -> Platform:
        ready = threading.Event()
        threading.Thread(target=self._serve, args=(ready,), daemon=True).start()
        ready.wait(10)
        return self

    def _serve(self, ready: threading.Event) -> None:
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)
        app = Application(
            [
                (r"/jwks", JwksHandler, {"platform": self}),
                (r"/course/launch/([0-9a-f]+)", CourseLinkHandler, {"platform": self}),
                (r"/auth", AuthHandler, {"platform": self}),
                (r"/token", TokenHandler, {"platform": self}),
                (r"/contexts/([^/]+)/lineitems", LineItemsHandler, {"platform": self}),
                (
                    r"/contexts/([^/]+)/lineitems/(\d+)/lineitem/scores",
                    ScoresHandler,
                    {"platform": self},
                ),
            ]
        )
        server = HTTPServer(app)
        server.listen(self.port, "127.0.0.1")
        self._server = server
        ready.set()
        self._loop.run_forever()

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._server.stop)
            self._loop.call_soon_threadsafe(self._loop.stop)


class PlatformHandler(RequestHandler):
    def initialize(self, platform: Platform) -> None:
        self.platform = platform

    def check_xsrf_cookie(self) -> None:
        pass


class JwksHandler(PlatformHandler):
    def get(self) -> None:
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.platform.key.public_key()))
        self.write({"keys": [{**jwk, "kid": self.platform.kid, "alg": "RS256", "use": "sig"}]})


class CourseLinkHandler(PlatformHandler):
    """The tool's link in an LMS course: a third-party initiated login, form-posted to the tool
    (as Moodle does), for a launch prepared under `hint`."""

    def get(self, hint: str) -> None:
        p = self.platform
        fields = {
            "iss": p.issuer,
            "login_hint": hint,
            "target_link_uri": self.get_argument("target"),
            "client_id": p.client_id,
            "lti_deployment_id": p.deployment_id,
        }
        inputs = "".join(
            f"<input type='hidden' name='{k}' value='{html.escape(v)}'>" for k, v in fields.items()
        )
        self.write(
            "<!doctype html><html><body onload='document.forms[0].submit()'>"
            f"<form method='post' action='{html.escape(self.get_argument('tool'))}'>"
            f"{inputs}</form></body></html>"
        )


class AuthHandler(PlatformHandler):
    """The OIDC authorization endpoint (LTI 1.3 core §5.1.1.2 checks of the request)."""

    def get(self) -> None:
        p = self.platform
        args = {k: self.get_argument(k) for k in self.request.arguments}
        p.auth_requests.append(args)
        expected = {
            "scope": "openid",
            "response_type": "id_token",
            "response_mode": "form_post",
            "prompt": "none",
            "client_id": p.client_id,
        }
        for name, value in expected.items():
            if args.get(name) != value:
                raise HTTPError(400, f"bad {name}: {args.get(name)!r}")
        if p.redirect_uris and args.get("redirect_uri") not in p.redirect_uris:
            raise HTTPError(400, f"unregistered redirect_uri {args.get('redirect_uri')!r}")
        spec = p.pending.pop(args.get("login_hint", ""), None)
        if spec is None or not args.get("nonce") or not args.get("state"):
            raise HTTPError(400, "unknown login_hint or no nonce/state")
        token = p.id_token(spec, args["nonce"], spec.target or args["redirect_uri"])
        action = html.escape(args["redirect_uri"])
        self.write(
            "<!doctype html><html><body onload='document.forms[0].submit()'>"
            f"<form method='post' action='{action}'>"
            f"<input type='hidden' name='id_token' value='{html.escape(token)}'>"
            f"<input type='hidden' name='state' value='{html.escape(args['state'])}'>"
            "<noscript><button>Continue</button></noscript></form></body></html>"
        )


class TokenHandler(PlatformHandler):
    """client_credentials with a JWT client assertion signed by the tool's key."""

    def post(self) -> None:
        p = self.platform
        if self.get_argument("grant_type", "") != "client_credentials" or self.get_argument(
            "client_assertion_type", ""
        ) != ("urn:ietf:params:oauth:client-assertion-type:jwt-bearer"):
            raise HTTPError(400, "unsupported grant")
        assertion = self.get_argument("client_assertion")
        keys = requests.get(p.tool_jwks_url, timeout=10).json()
        kid = jwt.get_unverified_header(assertion).get("kid")
        match = [k for k in keys["keys"] if k.get("kid") == kid]
        if not match:
            raise HTTPError(401, "unknown tool key")
        try:
            claims = jwt.decode(
                assertion,
                jwt.PyJWK(match[0]).key,
                algorithms=["RS256"],
                audience=f"{p.url}/token",
                options={"require": ["iss", "sub", "exp", "iat", "jti"]},
            )
        except jwt.PyJWTError as err:
            raise HTTPError(401, f"bad client assertion: {err}") from None
        if claims["iss"] != p.client_id or claims["sub"] != p.client_id:
            raise HTTPError(401, "client assertion for another client")
        scopes = set(self.get_argument("scope", "").split())
        token = secrets.token_urlsafe(16)
        p.tokens[token] = scopes & {SCORE_SCOPE, LINEITEM_SCOPE}
        self.write(
            {
                "access_token": token,
                "token_type": "Bearer",
                "expires_in": 3600,
                "scope": " ".join(sorted(p.tokens[token])),
            }
        )


class AgsHandler(PlatformHandler):
    def authorise(self, scope: str) -> None:
        header = self.request.headers.get("Authorization", "")
        scopes = self.platform.tokens.get(header.removeprefix("Bearer "), set())
        if scope not in scopes:
            raise HTTPError(401, f"token lacks {scope}")


class LineItemsHandler(AgsHandler):
    def lineitem_url(self, context_id: str, number: int) -> str:
        url = f"{self.platform.lineitems_url(context_id)}/{number}/lineitem"
        return url + ("?type_id=7" if self.platform.query_style_lineitems else "")

    def get(self, context_id: str) -> None:
        self.authorise(LINEITEM_SCOPE)
        resource = self.get_argument("resource_id", None)
        items = [
            item
            for item in self.platform.lineitems.values()
            if item["context"] == context_id
            and (resource is None or item.get("resourceId") == resource)
        ]
        self.set_header("Content-Type", "application/vnd.ims.lis.v2.lineitemcontainer+json")
        self.write(json.dumps([{k: v for k, v in i.items() if k != "context"} for i in items]))

    def post(self, context_id: str) -> None:
        self.authorise(LINEITEM_SCOPE)
        if self.request.headers.get("Content-Type") != "application/vnd.ims.lis.v2.lineitem+json":
            raise HTTPError(415)
        body = json.loads(self.request.body)
        if not isinstance(body.get("scoreMaximum"), int | float) or not body.get("label"):
            raise HTTPError(400, "a line item needs label and scoreMaximum")
        url = self.lineitem_url(context_id, len(self.platform.lineitems) + 1)
        item = {**body, "id": url, "context": context_id}
        self.platform.lineitems[url] = item
        self.set_status(201)
        self.set_header("Content-Type", "application/vnd.ims.lis.v2.lineitem+json")
        self.write({k: v for k, v in item.items() if k != "context"})


class ScoresHandler(AgsHandler):
    def post(self, context_id: str, number: str) -> None:
        p = self.platform
        self.authorise(SCORE_SCOPE)
        p.score_attempts += 1
        if p.score_failures > 0:
            p.score_failures -= 1
            raise HTTPError(503, "gradebook busy")
        if p.refuse_scores:
            raise HTTPError(p.refuse_status, "score refused")
        if self.request.headers.get("Content-Type") != "application/vnd.ims.lis.v1.score+json":
            raise HTTPError(415)
        lineitem = f"{p.lineitems_url(context_id)}/{number}/lineitem"
        if p.query_style_lineitems:
            if self.get_argument("type_id", None) != "7":
                raise HTTPError(404, "line item URL lost its query")
            lineitem += "?type_id=7"
        if lineitem not in p.lineitems:
            raise HTTPError(404, "no such line item")
        score = json.loads(self.request.body)
        for name in ("userId", "activityProgress", "gradingProgress", "timestamp"):
            if name not in score:
                raise HTTPError(400, f"score without {name}")
        p.scores.append({**score, "lineitem": lineitem})
        self.set_status(204)


def login_query(platform: Platform, hint: str, target: str) -> str:
    return urlencode(
        {
            "iss": platform.issuer,
            "login_hint": hint,
            "target_link_uri": target,
            "client_id": platform.client_id,
            "lti_deployment_id": platform.deployment_id,
        }
    )
