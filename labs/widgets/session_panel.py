"""The queue and session panel of a kit dashboard: join and leave the queue, position and
estimated wait, time left, release, my bookings; heartbeats while the page is open.

Every REST call runs in the runner's pool and its answer is applied on the kernel's loop. The
panel is a small state machine:

    idle --join--> waiting --granted--> holding --time up / released / ended--> idle
                      `--leave--> idle

While holding, the panel opens the user's control account (`/api/me/mqtt` "control") and hands
the kit to the dashboard through `on_control(kit, ends_at)`; when the session ends it hands
`None` and closes that connection. When the lab service cannot be reached a banner says so and
the polls go on; the live values (MQTT) do not depend on the service.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import ipywidgets as W

from labs.client import Kit, Lab, LabService, LabServiceError, LabServiceUnavailable, connect
from labs.i18n import Texts, wait_text
from labs.widgets.live import Runner
from labs.widgets.markup import html, join

log = logging.getLogger(__name__)

IDLE, WAITING, CONNECTING, HOLDING = "idle", "waiting", "connecting", "holding"
LIVE = ("granted", "active")

ControlHandler = Callable[[Kit | None, float | None], None]


def clock_time(t: float) -> str:
    return dt.datetime.fromtimestamp(t).strftime("%H:%M")


def left_text(seconds: float) -> str:
    seconds = max(0, int(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


class ServiceBanner:
    """One banner per page for "the lab service is unreachable"; cleared by the next answer."""

    def __init__(self, texts: Texts) -> None:
        self.texts = texts
        self.widget = W.HTML(layout=W.Layout(display="none"))
        self.widget.add_class("smartlab-service-banner")
        self.detail: str | None = None
        texts.bind(self._render)

    def down(self, err: BaseException) -> None:
        self.detail = str(err)
        self._render()

    def up(self) -> None:
        if self.detail is not None:
            self.detail = None
            self._render()

    def _render(self) -> None:
        if self.detail is None:
            self.widget.layout.display = "none"
            self.widget.value = ""
            return
        self.widget.value = html(
            "<div style='background:#fff3cd;border:1px solid #e0b84d;padding:6px'>⚠ {}</div>",
            self.texts("service_down", detail=self.detail),
        )
        self.widget.layout.display = None


class SessionPanel:
    def __init__(
        self,
        service: LabService,
        kit_id: str,
        runner: Runner,
        texts: Texts,
        banner: ServiceBanner,
        on_control: ControlHandler,
        *,
        poll_s: float = 1.0,
        heartbeat_s: float = 15.0,
        kits_poll_s: float = 3.0,
        bookings_poll_s: float = 30.0,
    ) -> None:
        self.service = service
        self.kit_id = kit_id
        self.runner = runner
        self.texts = texts
        self.banner = banner
        self.on_control = on_control
        self.heartbeat_s = heartbeat_s
        self.state = IDLE
        self.entry: dict[str, Any] | None = None
        self.session: dict[str, Any] | None = None
        self.kit_view: dict[str, Any] | None = None
        self.bookings: list[dict[str, Any]] = []
        self.note: tuple[str, dict[str, Any]] | None = None  # last event line (key, fields)
        self.control_lab: Lab | None = None
        self._last_beat = 0.0
        self._polling = False

        self.join = W.Button(button_style="primary", icon="sign-in")
        self.leave = W.Button(icon="sign-out")
        self.release = W.Button(button_style="warning", icon="unlock")
        for button, key, action in (
            (self.join, "join", self._join),
            (self.leave, "leave", self._leave),
            (self.release, "release", self._release),
        ):
            texts.label(button, key)
            button.add_class(f"smartlab-{key}")
            button.on_click(lambda _b, act=action: act())
        self.status = W.HTML()
        self.status.add_class("smartlab-session-status")
        self.kit_line = W.HTML()
        self.kit_line.add_class("smartlab-kit-line")
        self.bookings_box = W.HTML()
        self.title = texts.label(W.HTML(), "session", "value")
        self.widget = W.VBox(
            [
                self.title,
                W.HBox(
                    [self.join, self.leave, self.release], layout=W.Layout(flex_flow="row wrap")
                ),
                self.status,
                self.kit_line,
                self.bookings_box,
            ],
            layout=W.Layout(border="1px solid #ccd", padding="6px", margin="4px 0"),
        )
        self.widget.add_class("smartlab-session-panel")
        texts.bind(self._render)
        self._stops = [
            runner.every(poll_s, self._poll),
            runner.every(kits_poll_s, self._poll_kit),
            runner.every(bookings_poll_s, self._poll_bookings),
            runner.every(1.0, self._render_status, now=False),
        ]
        self._discover()

    # ------------------------------------------------------------ REST plumbing

    def _call(
        self,
        fn: Callable[..., Any],
        *args: Any,
        done: Callable[[Any], Any],
        failed: Callable[[BaseException], Any] | None = None,
    ) -> None:
        def ok(result: Any) -> None:
            self.banner.up()
            done(result)

        def error(err: BaseException) -> None:
            unreachable = isinstance(err, LabServiceUnavailable)
            if unreachable:
                self.banner.down(err)
            else:
                self.banner.up()
            if failed is not None:
                failed(err)
            elif not unreachable:
                self._note("action_failed", detail=str(err))

        self.runner.submit(fn, *args, done=ok, failed=error)

    def _note(self, key: str, **fields: Any) -> None:
        self.note = (key, fields)
        self._render_status()

    def _action_failed(self, err: BaseException) -> None:
        self._render()
        if not isinstance(err, LabServiceUnavailable):
            self._note("action_failed", detail=str(err))

    # ------------------------------------------------------------ discovery and polls

    def _discover(self) -> None:
        """After a page reload: pick up a waiting entry or a live session of this kit."""

        def found(result: tuple[list[dict], list[dict]]) -> None:
            queue, sessions = result
            if self.state != IDLE:
                return
            live = [s for s in sessions if s["kit"] == self.kit_id and s["state"] in LIVE]
            if live:
                self._granted(live[-1])
                return
            mine = [e for e in queue if e.get("kit") == self.kit_id]
            if mine:
                self.entry, self.state = mine[-1], WAITING
                self._render()

        self._call(lambda: (self.service.my_queue(), self.service.sessions(live=True)), done=found)

    def _poll(self) -> None:
        if self._polling:
            return
        if self.state == WAITING and self.entry is not None:
            self._polling = True
            self._call(
                self.service.queue_entry,
                self.entry["id"],
                done=self._entry_polled,
                failed=self._poll_failed,
            )
        elif self.state == HOLDING and self.session is not None and self.control_lab is None:
            self._granted(self.session)  # the control connection failed: try again
        elif self.state == HOLDING and self.session is not None:
            self._polling = True
            beat = time.monotonic() - self._last_beat >= self.heartbeat_s
            if beat:
                self._last_beat = time.monotonic()
                self._call(
                    self.service.heartbeat,
                    self.session["id"],
                    done=self._session_polled,
                    failed=self._heartbeat_failed,
                )
            else:
                self._call(
                    lambda: self.service.sessions(live=True),
                    done=self._sessions_polled,
                    failed=self._poll_failed,
                )

    def _poll_failed(self, _err: BaseException) -> None:
        self._polling = False

    def _entry_polled(self, entry: dict[str, Any]) -> None:
        self._polling = False
        if self.state != WAITING:
            return
        self.entry = entry
        if entry["state"] == "served" and entry.get("session"):
            self._granted(entry["session"])
        elif entry["state"] != "waiting":
            self.entry, self.state = None, IDLE
            self._render()
        else:
            self._render_status()

    def _sessions_polled(self, sessions: list[dict[str, Any]]) -> None:
        self._polling = False
        if self.state != HOLDING or self.session is None:
            return
        mine = next((s for s in sessions if s["id"] == self.session["id"]), None)
        if mine is not None and mine["state"] in LIVE:
            self.session = mine
        elif mine is not None:
            self._ended(mine)
        else:  # no longer live: all my sessions say how it ended
            self._polling = True
            self._call(
                lambda: self.service.sessions(),
                done=self._all_sessions_polled,
                failed=self._poll_failed,
            )

    def _all_sessions_polled(self, sessions: list[dict[str, Any]]) -> None:
        self._polling = False
        if self.state != HOLDING or self.session is None:
            return
        mine = next((s for s in sessions if s["id"] == self.session["id"]), None)
        if mine is None or mine["state"] not in LIVE:
            self._ended(mine or self.session)

    def _session_polled(self, session: dict[str, Any]) -> None:
        self._polling = False
        if self.state != HOLDING:
            return
        if session["state"] in LIVE:
            self.session = session
        else:
            self._ended(session)

    def _heartbeat_failed(self, err: BaseException) -> None:
        self._polling = False
        if (
            isinstance(err, LabServiceError)
            and err.status in (404, 409)
            and self.state == HOLDING
            and self.session is not None
        ):
            # 409: the session has ended; find out why.
            self._polling = True
            self._call(
                lambda: self.service.sessions(),
                done=self._all_sessions_polled,
                failed=self._poll_failed,
            )

    def _poll_kit(self) -> None:
        def got(kits: list[dict[str, Any]]) -> None:
            self.kit_view = next((k for k in kits if k["id"] == self.kit_id), None)
            self._render_kit()

        self._call(self.service.kits, done=got, failed=lambda _e: None)

    def _poll_bookings(self) -> None:
        def got(bookings: list[dict[str, Any]]) -> None:
            self.bookings = [b for b in bookings if not b.get("cancelled")]
            self._render_bookings()

        self._call(self.service.bookings, done=got, failed=lambda _e: None)

    # ------------------------------------------------------------ actions

    def _join(self) -> None:
        if self.state != IDLE:
            return
        self.join.disabled = True
        self.note = None

        def joined(entry: dict[str, Any]) -> None:
            if entry["state"] == "served" and entry.get("session"):
                self._granted(entry["session"])
            else:
                self.entry, self.state = entry, WAITING
                self._render()

        self._call(self.service.join, self.kit_id, done=joined, failed=self._action_failed)

    def _leave(self) -> None:
        if self.state != WAITING or self.entry is None:
            return
        entry_id = self.entry["id"]
        self.leave.disabled = True

        def left(_entry: dict[str, Any]) -> None:
            self.entry, self.state = None, IDLE
            self._render()

        def refused(err: BaseException) -> None:
            self._action_failed(err)
            if isinstance(err, LabServiceError) and err.status == 409:
                self._poll()  # granted meanwhile: the poll picks the session up

        self._call(self.service.leave, entry_id, done=left, failed=refused)

    def _release(self) -> None:
        if self.state not in (CONNECTING, HOLDING) or self.session is None:
            return
        session = self.session
        self.release.disabled = True

        def released(view: dict[str, Any]) -> None:
            self._ended(view, released=True)

        self._call(self.service.release, session["id"], done=released, failed=self._action_failed)

    # ------------------------------------------------------------ session life

    def _granted(self, session: dict[str, Any]) -> None:
        self.session, self.entry, self.state = session, None, CONNECTING
        self._render()
        kit_id, session_id = self.kit_id, session["id"]

        def open_control() -> Lab:
            urls = self.service.mqtt_urls()
            lab = connect(
                urls["control"],
                history=0,
                client_id=f"smartlab-dash-{session_id}-{uuid.uuid4().hex[:6]}",
            )
            try:
                lab.kit(kit_id, timeout=5)
                self.service.heartbeat(session_id)  # granted -> active
            except BaseException:
                lab.close()
                raise
            return lab

        def opened(lab: Lab) -> None:
            if self.state != CONNECTING or self.session is None or self.session["id"] != session_id:
                self.runner.submit(lab.close)  # ended meanwhile
                return
            self.control_lab, self.state = lab, HOLDING
            self._last_beat = time.monotonic()
            self._render()
            self.on_control(lab.kit(kit_id, timeout=0), session["ends_at"])

        def failed(err: BaseException) -> None:
            if isinstance(err, LabServiceError) and err.status in (404, 409):
                self.state = HOLDING  # the session ended before the page could take it
                self._ended({**session, "end_reason": None})
                return
            if self.state == CONNECTING:
                self._note("action_failed", detail=str(err))
                # Still granted on the service's side: try again on the next poll.
                self.state = HOLDING
                self._render()

        self._call(open_control, done=opened, failed=failed)

    def _ended(self, session: dict[str, Any], released: bool = False) -> None:
        if self.state not in (CONNECTING, HOLDING):
            return
        self.state, self.session = IDLE, None
        lab, self.control_lab = self.control_lab, None
        self.on_control(None, None)
        if lab is not None:
            self.runner.submit(lab.close)
        if released:
            self._note("released")
        else:
            self._note("ended", reason=session.get("end_reason") or "?")
        self._render()

    # ------------------------------------------------------------ rendering

    def _render(self) -> None:
        self.join.layout.display = None if self.state == IDLE else "none"
        self.leave.layout.display = None if self.state == WAITING else "none"
        self.release.layout.display = None if self.state in (CONNECTING, HOLDING) else "none"
        self.join.disabled = self.leave.disabled = self.release.disabled = False
        self._render_status()
        self._render_kit()
        self._render_bookings()

    def _render_status(self) -> None:
        t = self.texts
        if self.state == WAITING and self.entry is not None:
            position = self.entry.get("position")
            if not position:
                line = t("waiting_none")
            elif self.entry.get("estimated_wait_s") is None:
                line = t("waiting_unknown", position=position)
            else:
                line = t(
                    "waiting", position=position, wait=wait_text(t, self.entry["estimated_wait_s"])
                )
        elif self.state == CONNECTING:
            line = t("connecting")
        elif self.state == HOLDING and self.session is not None:
            line = t("granted", left=left_text(self.session["ends_at"] - time.time()))
        elif self.note is not None and self.note[0] == "ended":
            line = t("ended", reason=t.end_reason(self.note[1].get("reason")))
        elif self.note is not None:
            line = t(self.note[0], **self.note[1])
        else:
            line = t("idle")
        if self.note is not None and self.state != IDLE and self.note[0] == "action_failed":
            line += " " + t(self.note[0], **self.note[1])
        value = html("<span data-state='{}'>{}</span>", self.state, line)
        if self.status.value != value:
            self.status.value = value

    def _render_kit(self) -> None:
        kit, t = self.kit_view, self.texts
        if kit is None:
            self.kit_line.value = ""
            return
        parts = [t.state(kit["pool"])]
        if kit.get("reason"):
            parts[-1] += f" ({kit['reason']})"
        if kit.get("job_owner"):
            # A job holds the kit: observers see whose and for how long, never its codes.
            parts.append(
                t(
                    "job_holds",
                    owner=kit["job_owner"],
                    left=left_text(kit.get("job_time_left_s") or 0),
                )
            )
        elif kit.get("holder_institution") and self.state not in (CONNECTING, HOLDING):
            parts.append(t("held_by", institution=t.institution(kit["holder_institution"])))
        parts.append(t("queue_length", n=kit.get("queue_length", 0)))
        self.kit_line.value = html("<small>{}</small>", " · ".join(parts))

    def _render_bookings(self) -> None:
        t = self.texts
        lines = [
            t(
                "booking_line",
                kit=b["kit"],
                course=t.course(b["course"]),
                start=dt.datetime.fromtimestamp(b["starts_at"]).strftime("%d.%m %H:%M"),
                end=clock_time(b["ends_at"]),
            )
            for b in self.bookings[:5]
        ]
        body = join(lines, html("<br>")) or t("no_bookings")
        self.bookings_box.value = html("<small><b>{}</b>: {}</small>", t("my_bookings"), body)

    # ------------------------------------------------------------ closing

    def close(self) -> None:
        """Give the kit back and leave the queue (the page is closing); blocking, best effort."""
        for stop in self._stops:
            stop()
        try:
            if self.state in (CONNECTING, HOLDING) and self.session is not None:
                self.service.release(self.session["id"])
            elif self.state == WAITING and self.entry is not None:
                self.service.leave(self.entry["id"])
        except LabServiceError as err:
            log.warning("closing the session panel: %s", err)
        finally:
            self.state = IDLE
            if self.control_lab is not None:
                self.control_lab.close()
                self.control_lab = None
