"""The kit's live picture: the frames of its camera (`$camera/full` or `$camera/thumb`, see
docs/protocol.md) in an image, the frame's telemetry seq and time under it, and a notice in the
page's language when the camera stops.

Data flow, as in the kit dashboard (labs/widgets/live.py):

    paho thread (FrameFeed: its own connection) --Runner.from_thread--> loop: KitPicture.frame()
    loop: Coalescer (<= 2 x the stream's fps) --> flush(): Image.value, the caption

Frames come over a connection of their own, with the page's own credentials (the broker's rights
on `$camera/#` are those of the kit's telemetry): tens of kilobytes ten times a second must not
queue in front of the telemetry and the acknowledgements in the lab connection's network thread.
A viewer subscribes only to the stream it shows, so a thumbnail viewer is never sent full frames.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import ipywidgets as W
import paho.mqtt.client as mqtt
import traitlets

from hardware_kits import protocol as P
from hardware_kits.mqtt import BrokerAddress, ConnectError, connect_client, user_properties
from labs.i18n import Texts
from labs.widgets.live import Coalescer, Runner
from labs.widgets.markup import html

log = logging.getLogger(__name__)

ALL_KITS = "+"
CHECK_EVERY_S = 0.5  # how often a picture looks whether its camera went quiet
RESEND_S = 5.0  # an unchanged picture is sent again this often (see KitPicture.flush)


@dataclass(frozen=True)
class Frame:
    """One received frame (the fields of `protocol.decode_frame`)."""

    kit: str
    stream: str
    ts: float  # the kit's clock, epoch seconds
    seq: int  # the `$telemetry` seq whose state the frame shows
    frame: int  # the stream's own counter
    jpeg: bytes


def stale_after(fps: float) -> float:
    """Seconds without a frame after which a picture says its camera stopped: three frame
    periods and a second (the shared rule of every viewer)."""
    return 3.0 / max(fps, 0.01) + 1.0


def stream_fps(info: dict[str, Any] | None, stream: str) -> float:
    """The stream's frame rate from the kit's `$camera` document, else the protocol's default."""
    default = float(P.CAMERA_STREAMS[stream]["fps"])
    try:
        fps = float(((info or {}).get("streams") or {})[stream]["fps"])
    except (KeyError, TypeError, ValueError):
        return default
    return fps if fps > 0 else default


def parse_camera_info(payload: bytes) -> dict[str, Any] | None:
    """The `$camera` document, or None when the kit has no camera (empty, NUL or not JSON)."""
    text = payload.decode("utf-8", "replace")
    if text in ("", P.EMPTY_STRING):
        return None
    try:
        info = json.loads(text)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


class NamedImage(W.Image):
    """An image whose `tooltip` becomes its `title`, the accessible name of an <img> without
    `alt`. The front end's tooltip code reads the model's `description`, which Image lacks
    (ipywidgets 8: the view then fails to render at all); an empty one makes it work."""

    description = traitlets.Unicode("").tag(sync=True)


FrameCallback = Callable[[Frame], None]
InfoCallback = Callable[[str, "dict[str, Any] | None"], None]


class FrameFeed:
    """A connection of its own subscribed to one camera stream of one kit (or of every kit,
    `kit_id=ALL_KITS`) and to the kits' `$camera` documents. Callbacks run on paho's network
    thread: hand them over to the loop (`Runner.from_thread`). Frames that break the protocol
    (too large, not a JPEG, stamps missing) are dropped and counted in `dropped_frames`."""

    def __init__(
        self,
        address: BrokerAddress,
        kit_id: str,
        stream: str,
        on_frame: FrameCallback,
        on_info: InfoCallback | None = None,
        *,
        timeout: float = 10.0,
    ) -> None:
        if stream not in P.CAMERA_STREAMS:
            raise ValueError(f"stream: must be one of {', '.join(P.CAMERA_STREAMS)}")
        self.stream = stream
        self.dropped_frames = 0
        self.received = 0
        self._on_frame = on_frame
        self._on_info = on_info
        self._lock = threading.Lock()
        self._client = connect_client(
            address.host,
            address.port,
            address.credentials,
            f"smartlab-dash-camera-{uuid.uuid4().hex[:10]}",
            on_message=self._on_message,
            subscribe=[(P.camera_topic(kit_id, stream), 0), (P.camera_info_topic(kit_id), 1)],
            timeout=timeout,
            **address.tls_options(),
        )

    def _on_message(self, _client: mqtt.Client, _userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # Never raise here: an exception would end paho's network thread.
        try:
            kit_id, rest = P.split_topic(msg.topic)
            if rest == P.CAMERA_PROPERTY:
                if self._on_info is not None and kit_id is not None:
                    self._on_info(kit_id, parse_camera_info(msg.payload))
                return
            try:
                body = P.decode_frame(msg.topic, msg.payload, user_properties(msg.properties))
            except P.ProtocolError as err:
                with self._lock:
                    self.dropped_frames += 1
                log.info("dropped a frame on %s: %s", msg.topic, err)
                return
            with self._lock:
                self.received += 1
            self._on_frame(
                Frame(
                    body["kit"],
                    body["stream"],
                    body["ts"],
                    body["seq"],
                    body["frame"],
                    body["jpeg"],
                )
            )
        except Exception:  # a bug here must not take the connection down
            log.exception("cannot handle a message on %s", msg.topic)

    def close(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()


class KitPicture:
    """One kit's picture: an image, a caption (the frame's telemetry seq and time, and the
    latest telemetry seq beside it when the page has it) and the camera's notice. Build and
    feed it on the kernel's loop; `frame()`, `camera_info()` and `telemetry_seq()` take what
    the feed and the kit send."""

    def __init__(
        self,
        kit_id: str,
        runner: Runner,
        texts: Texts,
        *,
        stream: str = P.STREAM_FULL,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kit_id = kit_id
        self.runner = runner
        self.texts = texts
        self.stream = stream
        self.clock = clock
        self.fps = float(P.CAMERA_STREAMS[stream]["fps"])
        self.has_camera: bool | None = None  # None: the kit has not said yet
        self.latest: Frame | None = None  # the newest frame received
        self.shown: Frame | None = None  # the frame on screen
        self.received_at: float | None = None
        self.sent_at = 0.0  # when the image's bytes last went to the page
        self.tel_seq: int | None = None
        self.stale = False
        full = stream == P.STREAM_FULL
        size = P.CAMERA_STREAMS[stream]
        self.image = NamedImage(
            format="jpeg",
            layout=W.Layout(
                width="100%",
                max_width=f"{size['width']}px",
                height="auto",
                object_fit="contain",
            ),
        )
        self.image.add_class("smartlab-picture-image")
        self.caption = W.HTML()
        self.caption.add_class("smartlab-picture-caption")
        self.notice = W.HTML()
        self.notice.add_class("smartlab-picture-notice")
        parts = [self.image, self.caption, self.notice] if full else [self.image, self.notice]
        self.widget = W.VBox(
            parts,
            layout=W.Layout(
                width="100%" if full else f"{size['width']}px",
                max_width="100%",
                margin="4px 0",
                padding="4px" if full else "0",
            ),
        )
        self.widget.add_class("smartlab-picture")
        self.widget.add_class(f"smartlab-picture-{stream}")
        self.widget.add_class(f"smartlab-picture-kit-{kit_id}")
        self.coalescer = Coalescer(runner, self.flush, min(2 * self.fps, 20.0))
        texts.bind(self._render_texts)
        self._stop_check = runner.every(CHECK_EVERY_S, self.check_stale, now=False)

    # ------------------------------------------------------------ input (on the loop)

    def frame(self, frame: Frame) -> None:
        self.latest = frame
        self.received_at = self.clock()
        self.has_camera = True  # frames say so, whatever a late or stale `$camera` said
        self.coalescer.mark()

    def camera_info(self, info: dict[str, Any] | None) -> None:
        self.has_camera = info is not None
        self.fps = stream_fps(info, self.stream)
        self.coalescer.interval = 1.0 / min(2 * self.fps, 20.0)
        self._render_notice()

    def telemetry_seq(self, seq: int) -> None:
        """The latest `$telemetry` seq of the kit (the kit page passes each sample's)."""
        self.tel_seq = seq
        self.coalescer.mark()

    # ------------------------------------------------------------ output

    def flush(self) -> None:
        frame = self.latest
        if frame is not None and frame is not self.shown:
            now = self.clock()
            if frame.jpeg != self.image.value:
                self.image.value = frame.jpeg
                self.sent_at = now
            elif now - self.sent_at > RESEND_S:
                # An unchanged scene repeats the same bytes, which traitlets never sends again:
                # an update a page lost while it was loading would leave it blank for good.
                self.image.send_state("value")
                self.sent_at = now
            self.shown = frame
        self.stale = self._is_stale()
        self._render_notice()  # unchanged text sends nothing (traitlets compares)
        self._render_caption()

    def _is_stale(self) -> bool:
        if self.received_at is None:
            return False
        return self.clock() - self.received_at > stale_after(self.fps)

    def check_stale(self) -> None:
        stale = self._is_stale()
        if stale != self.stale:
            self.stale = stale
            self._render_notice()

    def _render_texts(self) -> None:
        t = self.texts
        self.image.tooltip = t("picture_alt", kit=self.kit_id)  # the image's accessible name
        self._render_caption()
        self._render_notice()

    def _render_caption(self) -> None:
        if self.stream != P.STREAM_FULL:
            return
        t, frame = self.texts, self.shown
        if frame is None:
            shown = html("<span class='smartlab-picture-frame' data-seq=''>{}</span>", "")
        else:
            shown = html(
                "<span class='smartlab-picture-frame' data-seq='{seq}' data-ts='{ts}' "
                "data-frame='{n}'>{text}</span>",
                seq=frame.seq,
                ts=round(frame.ts * 1000),
                n=frame.frame,
                text=t("picture_frame", seq=frame.seq, time=_clock(frame.ts)),
            )
        telemetry = (
            html(
                " · <span class='smartlab-picture-telemetry' data-seq='{}'>{}</span>",
                self.tel_seq,
                t("picture_telemetry", seq=self.tel_seq),
            )
            if self.tel_seq is not None
            else ""
        )
        self.caption.value = html("<small>{}{}</small>", shown, telemetry)

    def _render_notice(self) -> None:
        t = self.texts
        if self.has_camera is False:
            text, state = t("picture_none"), "none"
        elif self.stale and self.latest is not None:
            text, state = t("picture_stale", time=_clock(self.latest.ts)), "stale"
        elif self.latest is None:
            text, state = t("picture_waiting"), "waiting"
        else:
            text, state = "", "live"
        self.widget.remove_class("smartlab-picture-stale")
        if state == "stale":
            self.widget.add_class("smartlab-picture-stale")
        style = "color:#b42318" if state == "stale" else "color:#555"
        self.notice.value = (
            html(
                "<small class='smartlab-picture-state' data-state='{}' role='status' "
                "style='{}'>{}</small>",
                state,
                style,
                text,
            )
            if text
            else html("<small class='smartlab-picture-state' data-state='live'></small>")
        )

    def close(self) -> None:
        self._stop_check()


def _clock(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S")


class LiveKitPicture:
    """The kit page's picture: a `KitPicture` of the full stream fed by its own `FrameFeed`,
    and the kit's telemetry seq beside it (from the page's lab connection)."""

    def __init__(
        self,
        address: BrokerAddress,
        kit: Any,  # labs.client.Kit: its `subscribe` gives every sample's seq
        runner: Runner,
        texts: Texts,
        *,
        stream: str = P.STREAM_FULL,
    ) -> None:
        self.picture = KitPicture(kit.kit_id, runner, texts, stream=stream)
        self.widget = self.picture.widget
        self.feed: FrameFeed | None = None
        self._unsubscribe = kit.subscribe(
            lambda _kit_id, body: runner.from_thread(self.picture.telemetry_seq, body["seq"])
        )
        try:
            self.feed = FrameFeed(
                address,
                kit.kit_id,
                stream,
                lambda frame: runner.from_thread(self.picture.frame, frame),
                lambda _kit_id, info: runner.from_thread(self.picture.camera_info, info),
            )
        except ConnectError as err:  # the page still shows the plots; the picture says why
            log.warning("no camera feed for %s: %s", kit.kit_id, err)
            self.picture.camera_info(None)

    def close(self) -> None:
        self._unsubscribe()
        if self.feed is not None:
            self.feed.close()
        self.picture.close()


def add_kit_picture(page: Any) -> None:
    """The kit page's picture beside its plots (`page.after_build(add_kit_picture)` in
    labs/dashboards/kit.ipynb); nothing when the page shows no kit."""
    dashboard = getattr(page, "dashboard", None)
    if dashboard is None or page.lab is None:
        return
    picture = LiveKitPicture(page.lab.address, dashboard.kit, page.runner, page.texts)
    page.closing(picture)
    dashboard.beside_plots(picture.widget)
