"""Who calls the API: `Identity` (pluggable; `hub_identity.HubIdentity` asks JupyterHub) and
`TokenIdentity`, users and tokens from configuration for standalone use and tests."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Mapping
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)
from tornado.web import RequestHandler

from lab_service.api_schemas import validation_message
from lab_service.rights import validate_user
from lab_service.service import User

# ---------------------------------------------------------------- identity


class Identity:
    """Says who is calling. Subclass and override `user_for`; it may also raise ApiError (403)
    for a caller it knows but refuses, with the reason."""

    unauthenticated = "auth-required"  # a message code (messages.py)

    def user_for(self, handler: RequestHandler) -> User | Awaitable[User | None] | None:
        raise NotImplementedError

    def handler_bases(self) -> tuple[type, ...]:
        """Mixins the API handlers need (e.g. JupyterHub's HubOAuthenticated)."""
        return ()

    def handlers(self, base_url: str) -> list[tuple]:
        """Extra routes of the identity (e.g. an OAuth callback), as tornado rules."""
        return []

    def settings(self) -> dict[str, Any]:
        """Extra tornado application settings (e.g. cookie_secret)."""
        return {}


class UserSpec(BaseModel):
    """One user in `TokenIdentity`'s configuration."""

    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    institution: str = Field(min_length=1)
    courses: list[str] = []
    instructor_of: list[str] = []
    lab_admin: bool = False
    priority: int = 0
    job_runner: bool = False  # may claim experiment jobs and report their end

    def user(self) -> User:
        return User(
            validate_user(self.name),
            self.institution,
            frozenset(self.courses),
            frozenset(self.instructor_of),
            self.lab_admin,
            self.priority,
            self.job_runner,
        )


def _digest(token: str) -> str:
    # Tokens are looked up by hash, so a timing difference cannot reveal a token's prefix.
    return hashlib.sha256(token.encode()).hexdigest()


class TokenIdentity(Identity):
    """`Authorization: token <t>`, with tokens mapped to users in configuration:
    {token: {"name", "institution", "courses", "instructor_of", "lab_admin", "priority"}}."""

    unauthenticated = "auth-token"

    def __init__(self, users: Mapping[str, Mapping[str, Any]]) -> None:
        self._users: dict[str, User] = {}
        for n, (token, spec) in enumerate(users.items(), 1):
            if not isinstance(token, str) or len(token) < 8:
                raise ValueError(f"users: token #{n} must be a string of at least 8 characters")
            try:
                self._users[_digest(token)] = UserSpec.model_validate(spec).user()
            except ValidationError as err:
                raise ValueError(f"users: user #{n}: {validation_message(err)}") from None
            except ValueError as err:
                raise ValueError(f"users: user #{n}: {err}") from None

    def user_for(self, handler: RequestHandler) -> User | None:
        scheme, _, token = handler.request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "token" or not token.strip():
            return None
        return self._users.get(_digest(token.strip()))
