"""The front door: the hub-managed service `home` at /services/home/, where JupyterHub sends
everyone after login (`c.JupyterHub.default_url`). One page per person, sections by their hub
groups (labs/home/model.py), in Russian or English (site_config/languages.py).

It logs people in through the hub's OAuth (HubOAuthenticated) and calls the lab service with
the person's own token (the service's `oauth_client_allowed_scopes` include access to the lab
service), so it sees and may do exactly what the person may. Configured by the hub
(hub_config/hub.py `home_service`) through the environment:

    JUPYTERHUB_*              the hub's service settings (prefix, OAuth client, API)
    SMARTLAB_LAB_URL          the lab service
    SMARTLAB_EXCHANGE         nbgrader's exchange (released assignments, submissions: names only)
    SMARTLAB_HOME_DIRECTORY   the site file's public facts as JSON (model.Directory)
    SMARTLAB_SCHEDULE         optional: published due dates (exchange.due_dates)
    SMARTLAB_WARMUPS          optional: the class warm-ups' record (warmups.latest_by_course)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import urllib.parse
from pathlib import Path
from typing import Any

import jinja2
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from tornado.httpserver import HTTPServer
from tornado.web import Application, RequestHandler, authenticated

from labs.home import exchange, warmups
from labs.home.lab_calls import LabRefused, LabUnreachable, call, gather
from labs.home.model import Directory, Roles, build_page, course_kits, kit_view, roles
from labs.home.texts import Texts
from site_config.languages import COOKIE, COOKIE_MAX_AGE, negotiate, supported

TEMPLATES = Path(__file__).resolve().parent / "templates"
ENVIRONMENT = jinja2.Environment(
    loader=jinja2.FileSystemLoader(TEMPLATES),
    autoescape=True,  # every value from a kit, the site file or a person is escaped
)


class Settings:
    def __init__(self, env: dict[str, str] | None = None) -> None:
        env = dict(os.environ if env is None else env)
        self.prefix = env.get("JUPYTERHUB_SERVICE_PREFIX", "/services/home/")
        self.lab_url = env.get("SMARTLAB_LAB_URL", "http://127.0.0.1:8181")
        self.exchange = Path(env.get("SMARTLAB_EXCHANGE", "/srv/nbgrader/exchange"))
        self.directory = Directory.from_json(json.loads(env.get("SMARTLAB_HOME_DIRECTORY", "{}")))
        schedule = env.get("SMARTLAB_SCHEDULE")
        self.schedule = Path(schedule) if schedule else None
        record = env.get("SMARTLAB_WARMUPS")
        self.warmups = Path(record) if record else None


class Base(HubOAuthenticated, RequestHandler):
    @property
    def settings_(self) -> Settings:
        return self.application.settings["home"]

    def language(self) -> str:
        """?lang= (remembered in the shared cookie), else the cookie, else the browser."""
        requested = supported(self.get_query_argument("lang", None))
        if requested:
            self.set_cookie(COOKIE, requested, path="/", expires_days=COOKIE_MAX_AGE / 86400)
        return negotiate(
            self.request.headers.get("Accept-Language"), requested, self.get_cookie(COOKIE)
        )

    def visitor(self) -> tuple[str, str, list[str], Roles]:
        """The page's language, the person's name and hub groups, and their roles here."""
        user = self.current_user
        name, groups = user["name"], list(user.get("groups") or [])
        return self.language(), name, groups, roles(name, groups, self.settings_.directory)

    def token(self) -> str:
        return self.hub_auth.get_token(self) or ""

    def set_default_headers(self) -> None:
        # Only this page's own script runs (its nonce), nothing frames it, nothing loads
        # from elsewhere: a value that slipped past escaping still could not run.
        self.nonce = secrets.token_urlsafe(16)
        self.set_header(
            "Content-Security-Policy",
            f"default-src 'self'; script-src 'nonce-{self.nonce}'; style-src 'unsafe-inline'; "
            "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        )
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "same-origin")
        self.set_header("Cache-Control", "no-store")


class HomePage(Base):
    @authenticated
    async def get(self) -> None:
        lang, name, groups, who = self.visitor()
        home = self.settings_
        lab: dict[str, Any]
        try:
            lab = await gather(
                home.lab_url,
                self.token(),
                lang,
                usage=bool(who.teaches),
                recordings=bool(who.student_of),
                jobs=bool(who.student_of),
                spark_kits=course_kits(list(who.student_of), home.directory),
            )
        except Exception:  # never a blank page: the line below says the service failed
            self.log.exception("home: calling the lab service failed")
            lab = {"unreachable": True}
        assignments = {c: exchange.released_assignments(home.exchange, c) for c in who.student_of}
        submissions = {c: exchange.submissions(home.exchange, c) for c in who.teaches}
        page = build_page(
            name,
            groups,
            lang,
            home.directory,
            lab,
            assignments,
            exchange.due_dates(home.schedule),
            submissions,
            warmups.latest_by_course(home.warmups) if who.teaches else {},
        )
        self.finish(render("home.html", lang, self, page=page, lab_down=lab.get("unreachable")))


class KitStatus(Base):
    """GET api/kits: the person's kits as the page shows them, for its refresh script."""

    @authenticated
    async def get(self) -> None:
        lang, name, _, who = self.visitor()
        home = self.settings_
        wanted = set(course_kits(list(who.student_of), home.directory))
        t = Texts(lang)
        self.set_header("Content-Type", "application/json")
        try:
            kits = await call(home.lab_url, "/api/kits", self.token(), lang)
        except LabUnreachable:
            self.finish(json.dumps({"error": t("lab_down")}))
            return
        except LabRefused as err:
            self.finish(json.dumps({"error": str(err)}))
            return
        views = [
            kit_view(k, name, lang, t, home.directory)
            for k in kits
            if k["id"] in wanted or who.lab_admin
        ]
        self.finish(json.dumps({"kits": views}))


def render(template: str, lang: str, handler: RequestHandler, **values: Any) -> str:
    t = Texts(lang)
    path = handler.request.path
    return ENVIRONMENT.get_template(template).render(
        t=t,
        lang=lang,
        centre=t.centre,
        xsrf=handler.xsrf_token.decode(),
        switch={code: f"{path}?{urllib.parse.urlencode({'lang': code})}" for code in ("en", "ru")},
        prefix=handler.settings["home"].prefix,
        nonce=getattr(handler, "nonce", ""),
        **values,
    )


def make_app(settings: Settings | None = None) -> Application:
    settings = settings or Settings()
    prefix = settings.prefix
    auth = HubOAuth.instance()  # what HubOAuthenticated handlers use: from $JUPYTERHUB_*
    return Application(
        [
            (prefix, HomePage),
            (url_path_join(prefix, "api/kits"), KitStatus),
            (url_path_join(prefix, "oauth_callback"), HubOAuthCallbackHandler),
        ],
        home=settings,
        cookie_secret=secrets.token_bytes(32),  # sessions end with the process: OAuth again
        xsrf_cookies=True,
        xsrf_cookie_kwargs={"path": prefix, "httponly": True, "samesite": "Lax"},
        login_url=auth.login_url,
    )


async def serve(port: int, ip: str) -> None:
    server = HTTPServer(make_app(), xheaders=True)
    server.listen(port, ip)
    await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the Smart City Lab front door (hub service)")
    url = urllib.parse.urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:0"))
    parser.add_argument("--port", type=int, default=url.port or 8383)
    parser.add_argument("--ip", default=url.hostname or "127.0.0.1")
    args = parser.parse_args(argv)
    print(f"front door on http://{args.ip}:{args.port}", flush=True)
    asyncio.run(serve(args.port, args.ip))
    return 0
