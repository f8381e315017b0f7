"""What the dashboard notebooks in labs/dashboards/ call: each notebook is two cells,

    page = KitPage.prepare()     # imports and connections (run ahead in a preheated kernel)
    page.show()                  # waits for the visitor's request, returns the page's widget

Credentials come from the environment, never from the visitor: the lab service from
$SMARTLAB_LAB_URL and $SMARTLAB_TOKEN (`LabService()`), the broker from $SMARTLAB_MQTT_URL or
else the user's watch account from the service's /api/me/mqtt. The language comes from `?lang=`,
else the browser's Accept-Language ($HTTP_ACCEPT_LANGUAGE, see `voila_settings`), else English.

A page releases what it holds when its kernel ends (the tab is closed: Voilà shuts the kernel
down): the session is released, the queue entry withdrawn, MQTT connections closed.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import urllib.parse
from collections.abc import Callable
from typing import Any, ClassVar

import ipywidgets as W
import traitlets

from labs.client import (
    Kit,
    Lab,
    LabConfigError,
    LabError,
    LabService,
    LabServiceError,
    UnknownKit,
    connect,
)
from labs.i18n import LANGUAGES, Texts, negotiate

# Everything a page needs is imported with this module, i.e. in the notebook's first cell:
# in a preheated kernel that happens before any visitor is waiting.
from labs.widgets.admin import AdminView
from labs.widgets.instructor import InstructorView
from labs.widgets.kit_dashboard import KitDashboard
from labs.widgets.live import DEFAULT_MAX_RATE, Runner
from labs.widgets.markup import html
from labs.widgets.overview import OverviewBoard
from labs.widgets.replay import recordings_list, replay_view
from labs.widgets.session_panel import ServiceBanner, SessionPanel

log = logging.getLogger(__name__)

MAX_RATE_ENV = "SMARTLAB_DASHBOARD_MAX_RATE"  # flushes per second per plot (default 10)
SNAPSHOT_MIME = "application/vnd.smartlab.snapshot+html"  # see PageBox
FIRST_SAMPLE_WAIT_S = 1.0  # a new connection waits this long for a value to paint first


def preheated() -> bool:
    """This kernel was started ahead of its visitor (Voilà's preheated pool)."""
    return os.environ.get("VOILA_PREHEAT", "False") == "True"


def wait_for_request() -> None:
    """In a preheated kernel, block until a visitor's request arrives (its query string and
    headers are then in os.environ); at once otherwise."""
    if not preheated():
        return
    from voila.utils import wait_for_request as voila_wait  # imported by prepare()

    voila_wait()


def query() -> dict[str, str]:
    parsed = urllib.parse.parse_qs(os.environ.get("QUERY_STRING", ""))
    return {key: values[-1] for key, values in parsed.items() if values}


def page_language() -> str:
    return negotiate(os.environ.get("HTTP_ACCEPT_LANGUAGE"), query().get("lang"))


def max_rate() -> float:
    try:
        return max(0.1, float(os.environ.get(MAX_RATE_ENV, DEFAULT_MAX_RATE)))
    except ValueError:
        return DEFAULT_MAX_RATE


def service_from_env() -> LabService | None:
    """The lab service client, or None when this server has no token for it."""
    try:
        return LabService()
    except LabConfigError:
        return None


def lab_from_env(service: LabService | None) -> Lab:
    """The MQTT connection: $SMARTLAB_MQTT_URL, else the user's watch account."""
    try:
        return connect(client_id=_client_id("watch"))
    except LabConfigError:
        if service is None:
            raise
    return connect(service.mqtt_urls()["watch"], client_id=_client_id("watch"))


def _client_id(kind: str) -> str:
    import uuid

    return f"smartlab-dash-{kind}-{uuid.uuid4().hex[:10]}"


def wait_for_first_sample(kit: Kit, timeout: float) -> None:
    """Block until `kit` has sent a sample, at most `timeout` seconds; at once if it has one
    already (a preheated kernel) or is not online (nothing is coming)."""
    if kit.latest_ts is not None or kit.state != "ready":
        return
    arrived = threading.Event()
    unsubscribe = kit.subscribe(lambda _kit_id, _body: arrived.set())
    try:
        if kit.latest_ts is None:
            arrived.wait(timeout)
    finally:
        unsubscribe()


def error_box(texts: Texts, key: str, **fields: Any) -> W.HTML:
    """A one-line problem in the page's language (no traceback for the visitor)."""
    box = W.HTML()
    box.add_class("smartlab-error")
    texts.bind(
        lambda: setattr(
            box,
            "value",
            html(
                "<div style='background:#fde8e8;border:1px solid #e5a0a0;padding:8px'>⚠ {}</div>",
                texts(key, **fields),
            ),
        )
    )
    return box


def language_switch(texts: Texts) -> W.ToggleButtons:
    switch = W.ToggleButtons(
        options=[(code.upper(), code) for code in LANGUAGES],
        value=texts.language,
        style={"button_width": "44px"},
    )
    switch.add_class("smartlab-language")
    traitlets.link((switch, "value"), (texts, "language"))
    texts.label(switch, "language", "tooltip")
    return switch


def front_door_link(texts: Texts) -> W.HTML:
    """The way back to the front door (hub_config: the `home` service), in a person's own
    server; the public board, which has no hub around it, shows none."""
    link = W.HTML()
    link.add_class("smartlab-front-door")
    hub = os.environ.get("JUPYTERHUB_BASE_URL")
    if hub is None or os.environ.get("SMARTLAB_BOARD_PUBLIC") == "1":
        link.layout.display = "none"
        return link
    url = hub.rstrip("/") + "/services/home/"

    def relabel() -> None:
        link.value = html('<a href="{}">{}</a>', url, texts("front_door"))

    texts.bind(relabel)
    return link


class PageBox(W.VBox):
    """A page's root widget. Displayed, it also carries `snapshot`: static HTML of what the
    page shows. The `smartlab` Voilà template (labs/share/voila/templates/smartlab) puts it on
    screen with the page's first paint, before Voilà's scripts have loaded and the widgets
    have rendered, and removes it when a live value is on screen. Front ends that do not know
    its MIME type ignore it."""

    def __init__(self, children: list[W.Widget], snapshot: str = "", **kwargs: Any) -> None:
        super().__init__(children, **kwargs)
        self.snapshot = snapshot

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any] | None:
        bundle = super()._repr_mimebundle_(**kwargs)
        if bundle is not None and self.snapshot:
            bundle[SNAPSHOT_MIME] = self.snapshot
        return bundle


class Page:
    """Connections, the loop runner and the page frame (language switch, banners)."""

    needs_service: ClassVar[bool] = False
    _open: ClassVar[list[Page]] = []  # closed at interpreter exit

    def __init__(self) -> None:
        self.problem: tuple[str, str] | None = None  # (text key, detail): why nothing shows
        self.runner = Runner()
        self.texts = Texts()
        self.banner = ServiceBanner(self.texts)
        self.service: LabService | None = None
        self.lab: Lab | None = None
        self._closables: list[Any] = []
        self._additions: list[Callable[[Page], None]] = []
        Page._open.append(self)

    @classmethod
    def prepare(cls, **options: Any) -> Page:
        if preheated():
            # voila.utils imports the Jupyter server: seconds that must not be spent after
            # the visitor's request arrives.
            import voila.utils  # noqa: F401
        page = cls(**options)
        try:
            page.connect()
        except LabConfigError as err:
            page.problem = ("config_missing", str(err))
        except LabServiceError as err:
            page.problem = ("service_down", str(err))
        except LabError as err:
            page.problem = ("broker_down", str(err))
        return page

    def connect(self) -> None:
        self.service = service_from_env()
        if self.needs_service and self.service is None:
            raise LabConfigError("no lab service token ($SMARTLAB_TOKEN)")
        self.lab = lab_from_env(self.service)

    def show(self) -> W.Widget:
        wait_for_request()
        self.texts.language = page_language()
        if self.service is not None:  # the service words its refusals in the page's language
            service = self.service
            self.texts.bind(lambda: setattr(service, "lang", self.texts.language))
        if self.problem is not None:
            key, detail = self.problem
            return W.VBox([language_switch(self.texts), error_box(self.texts, key, detail=detail)])
        try:
            content = self.build()
            for add in self._additions:
                add(self)
        except LabServiceError as err:
            content = error_box(self.texts, "service_down", detail=str(err))
        except LabError as err:
            content = error_box(self.texts, "reason_other", detail=str(err))
        return PageBox(
            [
                W.HBox(
                    [front_door_link(self.texts), language_switch(self.texts)],
                    layout=W.Layout(justify_content="space-between", align_items="center"),
                ),
                self.banner.widget,
                content,
            ],
            snapshot=self.snapshot_html(),
        )

    def build(self) -> W.Widget:
        raise NotImplementedError

    def after_build(self, add: Callable[[Page], None]) -> None:
        """Run `add(page)` once the page's widgets are built, before it is shown: a notebook's
        cell adds a part (the kit's picture, the board's thumbnails) from a module of its own."""
        self._additions.append(add)

    def closing(self, closable: Any) -> None:
        """Close `closable` (its `close()`) when the page's kernel ends."""
        self._closables.append(closable)

    def snapshot_html(self) -> str:
        """Static HTML of the page's values for its first paint ("" for none)."""
        return ""

    def close(self) -> None:
        """Release what the page holds; runs when the kernel ends."""
        for closable in reversed(self._closables):
            try:
                closable.close()
            except Exception:  # best effort: the kernel is going away
                log.exception("closing %r", closable)
        self._closables.clear()
        if self.lab is not None:
            self.lab.close()
        self.runner.close()


@atexit.register
def _close_pages() -> None:
    for page in Page._open:
        page.close()
    Page._open.clear()


class KitPage(Page):
    """`kit.ipynb?kit=<kit id>`: live plots, controls, queue and session."""

    dashboard: KitDashboard | None = None  # once built for a known kit

    def build(self) -> W.Widget:
        assert self.lab is not None
        kit_id = query().get("kit", "")
        known = ", ".join(self.lab.kits()) or "-"
        if not kit_id:
            return error_box(self.texts, "no_kit", known=known)
        try:
            kit = self.lab.kit(kit_id, timeout=3)
        except UnknownKit:
            return error_box(self.texts, "unknown_kit", kit=kit_id, known=known)
        wanted = query()
        if "start" in wanted or "end" in wanted:  # replay mode: a recorded range
            return replay_view(
                self.service,
                kit_id,
                wanted.get("start", ""),
                wanted.get("end", ""),
                self.texts,
                kit.descriptor,
                error_box,
            )
        dashboard = KitDashboard(
            self.lab, kit_id, self.runner, self.texts, service=self.service, max_rate=max_rate()
        )
        self._closables.append(dashboard)
        parts: list[W.Widget] = [dashboard.widget]
        if self.service is not None:
            panel = SessionPanel(
                self.service, kit_id, self.runner, self.texts, self.banner, dashboard.set_control
            )
            self._closables.append(panel)
            parts.insert(0, panel.widget)
        parts.append(recordings_list(self.service, kit_id, self.texts))
        self.dashboard = dashboard
        return W.VBox(parts)

    def snapshot_html(self) -> str:
        if self.dashboard is None:
            return ""
        wait_for_first_sample(self.dashboard.kit, FIRST_SAMPLE_WAIT_S)
        return html("<div class='smartlab-snapshot-kit'>{}</div>", self.dashboard.snapshot_html())


class OverviewPage(Page):
    """`overview.ipynb`: every kit at a glance; read-only (the public board too)."""

    board: OverviewBoard | None = None  # once built

    @staticmethod
    def public() -> bool:
        return os.environ.get("SMARTLAB_BOARD_PUBLIC") == "1"

    def connect(self) -> None:
        if not self.public():
            super().connect()
            return
        # The public board holds no identity: it reads the service's public route, as any
        # visitor could, and a read-only observer account on the broker.
        self.service = LabService(anonymous=True)
        self.lab = lab_from_env(None)

    def build(self) -> W.Widget:
        assert self.lab is not None
        board = OverviewBoard(
            self.lab, self.runner, self.texts, service=self.service, public=self.public()
        )
        board.banner = self.banner
        self._closables.append(board)
        self.board = board
        return board.widget

    def snapshot_html(self) -> str:
        return "" if self.board is None else self.board.snapshot_html()


class AdminPage(Page):
    needs_service = True

    def connect(self) -> None:
        self.service = service_from_env()  # the admin view needs no MQTT connection
        if self.service is None:
            raise LabConfigError("no lab service token ($SMARTLAB_TOKEN)")

    def build(self) -> W.Widget:
        assert self.service is not None
        if not self.service.me().get("lab_admin"):
            return error_box(self.texts, "admin_only")
        view = AdminView(self.service, self.runner, self.texts, self.banner)
        self._closables.append(view)
        return view.widget


class InstructorPage(AdminPage):
    def build(self) -> W.Widget:
        assert self.service is not None
        view = InstructorView(self.service, self.service.me(), self.runner, self.texts, self.banner)
        self._closables.append(view)
        return view.widget
