"""Verify an LTI 1.3 launch: the platform's signed id_token, checked claim by claim.

LTI 1.3 core §5.1 and the LTI Security Framework §5.1.3: signature against the platform's
JWKS, `iss` a registered platform, `aud` (and `azp`) our client id, `exp`/`iat` in range, `nonce`
the one we sent, used once; then the LTI claims: message type, version, deployment, roles,
context. Every refusal is a LaunchError whose text is shown on the page and logged.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import jwt
from tornado.httpclient import AsyncHTTPClient, HTTPClientError

from hub_config.lti.platforms import Platform

LTI = "https://purl.imsglobal.org/spec/lti/claim/"
AGS_ENDPOINT = "https://purl.imsglobal.org/spec/lti-ags/claim/endpoint"
RESOURCE_LINK_REQUEST = "LtiResourceLinkRequest"
LEEWAY = 60  # seconds of clock difference tolerated between LMS and hub
JWKS_TTL = 3600.0  # refetch the platform's keys at least hourly (key rotation)
JWKS_MIN_REFETCH = 30.0  # an unknown kid refetches, but not more often than this


class LaunchError(Exception):
    """A refused launch; the message says what was wrong in one line."""


@dataclass(frozen=True)
class Launch:
    """A verified launch: who, from which platform and course, in which roles."""

    platform: Platform
    client_id: str
    sub: str
    context_id: str
    context_title: str | None
    roles: list[str]
    name: str | None = None
    given_name: str | None = None
    family_name: str | None = None
    email: str | None = None
    target_link_uri: str = ""
    ags: dict[str, Any] = field(default_factory=dict)

    @property
    def username(self) -> str:
        return self.platform.username(self.sub)


class JwksCache:
    """Platform public keys by JWKS URL, fetched without blocking the hub's event loop."""

    def __init__(self) -> None:
        self._keys: dict[str, tuple[float, dict[str, jwt.PyJWK]]] = {}

    async def key(self, url: str, kid: str | None) -> jwt.PyJWK:
        fetched, keys = self._keys.get(url, (0.0, {}))
        age = time.monotonic() - fetched
        stale = age > JWKS_TTL or (kid not in keys and age > JWKS_MIN_REFETCH)
        if stale:
            keys = await self._fetch(url)
            self._keys[url] = (time.monotonic(), keys)
        if kid is None and len(keys) == 1:
            return next(iter(keys.values()))
        if kid not in keys:
            raise LaunchError(f"bad signature: the platform's JWKS ({url}) has no key {kid!r}")
        return keys[kid]

    @staticmethod
    async def _fetch(url: str) -> dict[str, jwt.PyJWK]:
        try:
            response = await AsyncHTTPClient().fetch(url, request_timeout=10.0)
            data = json.loads(response.body)
        except (HTTPClientError, OSError, ValueError) as err:
            raise LaunchError(f"cannot read the platform's keys at {url}: {err}") from None
        keys = {}
        for entry in data.get("keys", []) if isinstance(data, dict) else []:
            try:
                keys[entry.get("kid")] = jwt.PyJWK(entry)
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue  # keys for other algorithms or uses
        return keys


def unverified_claims(id_token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        header = jwt.get_unverified_header(id_token)
        claims = jwt.decode(id_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise LaunchError("the id_token is not a JWT") from None
    return header, claims


def audiences(claims: dict[str, Any]) -> list[str]:
    aud = claims.get("aud")
    return [aud] if isinstance(aud, str) else [a for a in aud or [] if isinstance(a, str)]


async def verify(
    id_token: str, platform: Platform, client_id: str, nonce: str, jwks: JwksCache
) -> Launch:
    """The launch in `id_token`, or LaunchError naming the first thing wrong with it."""
    header, _ = unverified_claims(id_token)
    if header.get("alg") != "RS256":
        raise LaunchError(f"bad signature: algorithm {header.get('alg')!r}, LTI 1.3 uses RS256")
    key = await jwks.key(platform.jwks_uri, header.get("kid"))
    try:
        claims = jwt.decode(
            id_token,
            key.key,
            algorithms=["RS256"],
            audience=client_id,
            issuer=platform.issuer,
            leeway=LEEWAY,
            options={"require": ["iss", "aud", "exp", "iat", "nonce", "sub"]},
        )
    except jwt.ExpiredSignatureError:
        raise LaunchError("expired id_token: its `exp` has passed") from None
    except jwt.ImmatureSignatureError:
        raise LaunchError(
            "id_token from the future: its `iat`/`nbf` is ahead of our clock"
        ) from None
    except jwt.InvalidAudienceError:
        raise LaunchError(
            f"wrong audience: the id_token is not for client id {client_id!r}"
        ) from None
    except jwt.InvalidIssuerError:
        raise LaunchError(f"wrong issuer: the id_token is not from {platform.issuer!r}") from None
    except jwt.MissingRequiredClaimError as err:
        raise LaunchError(f"missing claim: the id_token has no `{err.claim}`") from None
    except jwt.InvalidSignatureError:
        raise LaunchError(
            "bad signature: the id_token is not signed by the platform's key"
        ) from None
    except jwt.PyJWTError as err:
        raise LaunchError(f"invalid id_token: {err}") from None
    # With several audiences, `azp` names the one the token was issued to (OIDC core 3.1.3.7).
    if len(audiences(claims)) > 1 and claims.get("azp") != client_id:
        raise LaunchError(f"wrong audience: `azp` is not client id {client_id!r}")
    if claims["nonce"] != nonce:
        raise LaunchError("nonce mismatch: the id_token answers another login")
    return _launch(claims, platform, client_id)


def _text(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if not isinstance(value, str) or not value:
        raise LaunchError(f"missing claim: the id_token has no `{name}`")
    return value


def _launch(claims: dict[str, Any], platform: Platform, client_id: str) -> Launch:
    message_type = _text(claims, LTI + "message_type")
    if message_type != RESOURCE_LINK_REQUEST:
        raise LaunchError(
            f"unsupported message type {message_type!r}: this tool takes "
            f"{RESOURCE_LINK_REQUEST} launches"
        )
    version = _text(claims, LTI + "version")
    if version != "1.3.0":
        raise LaunchError(f"unsupported LTI version {version!r}: this tool speaks 1.3.0")
    deployment = _text(claims, LTI + "deployment_id")
    if deployment not in platform.deployment_ids:
        raise LaunchError(
            f"unknown deployment {deployment!r} of {platform.issuer}: the site "
            f"file declares {', '.join(platform.deployment_ids)}"
        )
    link = claims.get(LTI + "resource_link")
    if not isinstance(link, dict) or not link.get("id"):
        raise LaunchError(f"missing claim: the id_token has no `{LTI}resource_link` id")
    roles = claims.get(LTI + "roles")
    if not isinstance(roles, list) or not all(isinstance(r, str) for r in roles):
        raise LaunchError(f"missing claim: the id_token has no `{LTI}roles` list")
    context = claims.get(LTI + "context")
    if not isinstance(context, dict) or not isinstance(context.get("id"), str | int):
        raise LaunchError(
            f"missing claim: the id_token has no `{LTI}context` id "
            "(launch the tool from inside an LMS course)"
        )
    ags = claims.get(AGS_ENDPOINT)

    def optional(name: str) -> str | None:
        value = claims.get(name)
        return value if isinstance(value, str) and value else None

    return Launch(
        platform=platform,
        client_id=client_id,
        sub=_text(claims, "sub"),
        context_id=str(context["id"]),
        context_title=context.get("title") if isinstance(context.get("title"), str) else None,
        roles=roles,
        name=optional("name"),
        given_name=optional("given_name"),
        family_name=optional("family_name"),
        email=optional("email"),
        target_link_uri=optional(LTI + "target_link_uri") or "",
        ags=ags if isinstance(ags, dict) else {},
    )
