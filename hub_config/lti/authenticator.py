"""`LtiAuthenticator`: the site's password login plus LTI 1.3 launches from partner LMSs.

    c.JupyterHub.authenticator_class = "hub_config.lti.authenticator.LtiAuthenticator"
    c.Authenticator.manage_groups = True

The site's people keep logging in at /hub/login with their passwords (SiteAuthenticator).
Users of an institution's LMS arrive through `/hub/lti/login` → LMS → `/hub/lti/launch`; they
need no account in the site file: a verified launch from a declared LMS course is their ticket.
Each launch records the user's roles in that LMS course; the groups handed to the hub are the
union over all their courses, so launching from a second course keeps the first.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from traitlets import Unicode, default

from hub_config.hub import SiteAuthenticator
from hub_config.lti import gradebook
from hub_config.lti.handlers import (
    CanvasConfigHandler,
    JwksHandler,
    LaunchHandler,
    LoginInitiationHandler,
)
from hub_config.lti.keys import KEY_FILE, ToolKey
from hub_config.lti.launch import AGS_ENDPOINT, JwksCache, Launch
from hub_config.lti.platforms import STUDENT, hub_groups
from hub_config.lti.store import Context, LtiStore
from site_config.paths import LTI_DB_URL_ENV, default_state_dir


class LtiAuthenticator(SiteAuthenticator):
    state_dir = Unicode(
        help="Folder of the LTI records (lti.sqlite) and the tool key; default "
        "$SMARTLAB_STATE_DIR/lti (./var/lti)."
    ).tag(config=True)

    @default("state_dir")
    def _state_dir_default(self) -> str:
        return str(default_state_dir() / "lti")

    db_url = Unicode(
        help="SQLAlchemy URL of the LTI records (e.g. postgresql+psycopg://…); default "
        "$SMARTLAB_LTI_DB_URL, else lti.sqlite in state_dir."
    ).tag(config=True)

    @default("db_url")
    def _db_url_default(self) -> str:
        return os.environ.get(LTI_DB_URL_ENV, "")

    tool_key_path = Unicode(
        help="The tool's RSA private key (PEM), made on first use; default <state_dir>/" + KEY_FILE
    ).tag(config=True)

    @default("tool_key_path")
    def _tool_key_path_default(self) -> str:
        return str(Path(self.state_dir) / KEY_FILE)

    tool_url = Unicode(
        "",
        help="Scheme and host the LMSs reach the hub at, e.g. https://lab.example.org; "
        "default: JupyterHub.public_url, else the request's own.",
    ).tag(config=True)

    tool_title = Unicode("Smart City Lab", help="The tool's name in LMS menus.").tag(config=True)

    course_dir_template = Unicode(
        gradebook.COURSE_DIR_TEMPLATE,
        help="Each course's nbgrader folder ({course} is the course id); launches add students "
        "to its gradebook.db, courses without a folder here are skipped.",
    ).tag(config=True)

    _store: LtiStore | None = None
    _jwks: JwksCache | None = None
    _tool_key: ToolKey | None = None

    def store(self) -> LtiStore:
        if self._store is None:
            self._store = LtiStore(Path(self.state_dir), self.db_url)
        return self._store

    def jwks(self) -> JwksCache:
        if self._jwks is None:
            self._jwks = JwksCache()
        return self._jwks

    def tool_key(self) -> ToolKey:
        if self._tool_key is None:
            self._tool_key = ToolKey.load_or_create(Path(self.tool_key_path))
        return self._tool_key

    def get_handlers(self, app: Any) -> list[tuple[str, Any]]:
        return [
            *super().get_handlers(app),
            ("/lti/login", LoginInitiationHandler),
            ("/lti/launch", LaunchHandler),
            ("/lti/jwks", JwksHandler),
            ("/lti/canvas.json", CanvasConfigHandler),
        ]

    async def authenticate(self, handler: Any, data: dict[str, Any]) -> dict[str, Any] | None:
        launch = data.get("lti_launch") if data else None
        # Only LaunchHandler puts a Launch object here; a login form carries strings only.
        if not isinstance(launch, Launch):
            return await super().authenticate(handler, data)
        return await self.authenticate_launch(handler, launch, data["course"], data["course_roles"])

    async def authenticate_launch(
        self, handler: Any, launch: Launch, course: str, roles: set[str]
    ) -> dict[str, Any]:
        name, platform = launch.username, launch.platform
        ags = launch.ags
        context = Context(
            platform.key,
            launch.context_id,
            course,
            launch.client_id,
            launch.context_title,
            ags.get("lineitems"),
            [s for s in ags.get("scope", []) if isinstance(s, str)],
        )
        store = self.store()
        store.record_launch(
            name, platform.key, launch.sub, launch.name, launch.email, context, roles
        )
        enrolments = {(e.course, e.role) for e in store.enrolments(username=name)}
        existing = handler.find_user(name)
        groups = hub_groups(
            platform.institution, enrolments, [g.name for g in existing.groups] if existing else []
        )
        if STUDENT in roles:
            await self._add_to_gradebook(launch, course)
        self.log.info(
            "LTI launch: %s (%s sub %r) in %s as %s",
            name,
            platform.key,
            launch.sub,
            course,
            ", ".join(sorted(roles)),
        )
        return {
            "name": name,
            "groups": groups,
            "admin": False,
            "lti_platform": platform.key,
            "auth_state": {
                "lti": {
                    "issuer": platform.issuer,
                    "sub": launch.sub,
                    "name": launch.name,
                    "email": launch.email,
                    AGS_ENDPOINT: ags,
                }
            },
        }

    async def _add_to_gradebook(self, launch: Launch, course: str) -> None:
        try:
            added = await asyncio.to_thread(
                gradebook.ensure_student,
                self.course_dir_template,
                course,
                launch.username,
                first_name=launch.given_name,
                last_name=launch.family_name,
                email=launch.email,
                lms_user_id=launch.sub,
            )
        except Exception:  # the gradebook is nbgrader's; a broken one must not block logins
            self.log.exception(
                "LTI: could not add %s to the gradebook of %s", launch.username, course
            )
            return
        if not added:
            self.log.info(
                "LTI: no course folder %s; %s gets a gradebook record when the "
                "formgrader first sees them",
                gradebook.course_dir(self.course_dir_template, course),
                launch.username,
            )

    def check_allowed(self, username: str, authentication: dict[str, Any] | None = None) -> bool:
        # A verified launch from a declared LMS course is the permission (no allowed_users).
        if authentication and authentication.get("lti_platform"):
            return True
        return super().check_allowed(username, authentication)
