"""The kit's live picture (labs/widgets/kit_picture.py) against a real Mosquitto: frames from a
kit account's publisher reach the page's image with their stamps, bad frames are dropped and
counted, a thumbnail viewer gets no full frames, a stopped camera is announced and recovers, and
an account without rights on a kit gets none of its frames."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from hardware_kits import protocol as P
from hardware_kits.broker import Broker
from hardware_kits.mqtt import ConnectError, connect_client
from labs.i18n import Texts
from labs.widgets.kit_picture import (
    ALL_KITS,
    FrameFeed,
    KitPicture,
    parse_camera_info,
    stale_after,
    stream_fps,
)
from labs.widgets.live import Runner


def jpeg(tag: int, size: int = 64) -> bytes:
    """Bytes that pass a receiver's check (a JPEG's start marker): the viewer never decodes a
    frame, the browser does."""
    return b"\xff\xd8" + bytes([tag % 256]) * size + b"\xff\xd9"


class Camera:
    """A kit account publishing frames as the protocol says (what a twin's camera does)."""

    def __init__(self, broker: Broker, kit_id: str) -> None:
        self.kit_id = kit_id
        creds = broker.provision_kits([kit_id])[kit_id]
        self.client = connect_client(broker.host, broker.port, creds, f"cam-{kit_id}")
        self.counter = 0

    def info(self, fps: float | None = 10, retained_none: bool = False) -> None:
        payload = (
            P.EMPTY_STRING
            if retained_none
            else json.dumps(
                {"source": "synthetic", "streams": {"full": {"fps": fps}, "thumb": {"fps": 1}}}
            )
        )
        self.client.publish(P.camera_info_topic(self.kit_id), payload, qos=1, retain=True)

    def frame(
        self, payload: bytes, seq: int, stream: str = P.STREAM_FULL, stamps: bool = True
    ) -> None:
        self.counter += 1
        props = Properties(PacketTypes.PUBLISH)
        if stamps:
            props.UserProperty = P.frame_properties(int(time.time() * 1000), seq, self.counter)
        self.client.publish(P.camera_topic(self.kit_id, stream), payload, qos=0, properties=props)

    def close(self) -> None:
        self.client.publish(P.camera_info_topic(self.kit_id), b"", qos=1, retain=True)
        self.client.disconnect()
        self.client.loop_stop()


def on_loop(coro_fn: Callable[[], Any]) -> Any:
    """Run a coroutine on a fresh loop in its own thread, like a kernel's loop."""
    result: dict[str, Any] = {}

    def main() -> None:
        try:
            result["value"] = asyncio.run(coro_fn())
        except BaseException as err:
            result["error"] = err

    thread = threading.Thread(target=main)
    thread.start()
    thread.join(60)
    if "error" in result:
        raise result["error"]
    return result["value"]


async def until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def fed_picture(
    broker: Broker, viewer: str, kit_id: str, texts: Texts, stream: str = P.STREAM_FULL
) -> tuple[Runner, KitPicture, FrameFeed]:
    runner = Runner()
    picture = KitPicture(kit_id, runner, texts, stream=stream)
    feed = FrameFeed(
        broker.address(viewer),
        kit_id,
        stream,
        lambda frame: runner.from_thread(picture.frame, frame),
        lambda _kit, info: runner.from_thread(picture.camera_info, info),
    )
    return runner, picture, feed


@pytest.fixture
def viewer(broker: Broker) -> str:
    broker.provision_user("pic-viewer")
    return "pic-viewer"


def test_stale_rule_and_stream_rates_come_from_the_camera_document():
    assert stale_after(10) == pytest.approx(1.3)
    assert stale_after(1) == pytest.approx(4.0)
    assert stream_fps({"streams": {"full": {"fps": 5}}}, "full") == 5
    assert stream_fps({"streams": {"full": {"fps": "fast"}}}, "full") == 10  # bad: the default
    assert stream_fps(None, "thumb") == 1
    assert parse_camera_info(P.EMPTY_STRING.encode()) is None
    assert parse_camera_info(b"{not json") is None
    assert parse_camera_info(b'{"streams": {}}') == {"streams": {}}


def test_frames_reach_the_image_with_their_seq_and_time_beside_the_telemetry_seq(broker, viewer):
    camera = Camera(broker, "pic-live")

    async def main() -> dict[str, Any]:
        runner, picture, feed = fed_picture(broker, viewer, "pic-live", Texts("ru"))
        camera.info(fps=10)
        for seq in range(1, 6):
            picture.telemetry_seq(seq)
            camera.frame(jpeg(seq), seq)
            await asyncio.sleep(0.05)
        await until(lambda: picture.shown is not None and picture.shown.seq == 5)
        await asyncio.sleep(0.1)
        seen = {
            "image": picture.image.value,
            "caption": picture.caption.value,
            "notice": picture.notice.value,
            "alt": picture.image.tooltip,
            "received": feed.received,
        }
        picture.texts.language = "en"
        seen["alt_en"] = picture.image.tooltip
        feed.close()
        picture.close()
        runner.close()
        return seen

    try:
        seen = on_loop(main)
    finally:
        camera.close()
    assert seen["image"] == jpeg(5)
    assert "data-seq='5'" in seen["caption"] and "Кадр отсчёта 5" in seen["caption"]
    assert "последний отсчёт 5" in seen["caption"]
    assert "data-state='live'" in seen["notice"]
    assert seen["alt"] == "Живое изображение стенда pic-live"
    assert seen["alt_en"] == "Live picture of kit pic-live"
    assert seen["received"] == 5


def test_oversize_unstamped_and_non_jpeg_frames_are_dropped_and_counted(broker, viewer):
    camera = Camera(broker, "pic-bad")

    async def main() -> tuple[int, int, bytes]:
        runner, picture, feed = fed_picture(broker, viewer, "pic-bad", Texts("en"))
        camera.frame(jpeg(1), 1)
        await until(lambda: feed.received == 1)
        camera.frame(b"\x89PNG\r\n" + b"x" * 50, 2)  # not a JPEG
        camera.frame(jpeg(3), 3, stamps=False)  # no ts / seq / frame
        await until(lambda: feed.dropped_frames == 2)
        # Over MAX_FRAME_BYTES: the broker's packet limit leaves room for it (and headers),
        # so the viewer's own check is what drops it.
        camera.frame(jpeg(4, P.MAX_FRAME_BYTES), 4)
        await until(lambda: feed.dropped_frames == 3)
        await asyncio.sleep(0.3)
        result = (feed.dropped_frames, feed.received, picture.image.value)
        feed.close()
        picture.close()
        runner.close()
        return result

    try:
        dropped, received, image = on_loop(main)
    finally:
        camera.close()
    assert (dropped, received) == (3, 1)
    assert image == jpeg(1)  # the picture keeps the last good frame


def test_a_thumbnail_viewer_is_sent_thumbnails_only(broker, viewer):
    camera = Camera(broker, "pic-thumb")

    async def main() -> list[tuple[str, int]]:
        runner = Runner()
        got: list[tuple[str, int]] = []
        feed = FrameFeed(
            broker.address(viewer),
            ALL_KITS,
            P.STREAM_THUMB,
            # Other tests' kits share the session's broker: only this camera's frames count.
            lambda frame: frame.kit == "pic-thumb" and got.append((frame.stream, frame.seq)),
        )

        async def subscribed() -> None:
            """a probe thumbnail arrives: the subscription is in place"""
            while not got:
                camera.frame(jpeg(0), 0, P.STREAM_THUMB)
                await asyncio.sleep(0.1)

        await asyncio.wait_for(subscribed(), 10)
        await asyncio.sleep(0.2)
        got.clear()
        for seq in range(1, 4):
            camera.frame(jpeg(seq, 4000), seq, P.STREAM_FULL)
            camera.frame(jpeg(seq), seq, P.STREAM_THUMB)
        await until(lambda: len(got) >= 3)
        await asyncio.sleep(0.2)
        feed.close()
        runner.close()
        return got

    try:
        got = on_loop(main)
    finally:
        camera.close()
    assert got == [("thumb", 1), ("thumb", 2), ("thumb", 3)]


def test_a_stopped_camera_is_announced_with_its_last_frame_time_then_recovers(broker, viewer):
    camera = Camera(broker, "pic-stop")

    async def main() -> dict[str, str]:
        runner, picture, feed = fed_picture(broker, viewer, "pic-stop", Texts("ru"))
        camera.info(fps=10)  # stale after 3 x 0.1 s + 1 s
        camera.frame(jpeg(1), 1)
        await until(lambda: picture.shown is not None)
        live = picture.notice.value
        await until(lambda: "stale" in picture.notice.value, timeout=3)
        stale_notice = picture.notice.value
        stale_since = time.time()
        camera.frame(jpeg(2), 2)
        await until(lambda: "data-state='live'" in picture.notice.value, timeout=2)
        seen = {
            "live": live,
            "stale": stale_notice,
            "recovered": picture.notice.value,
            "recovered_after": f"{time.time() - stale_since:.2f}",
            "image": picture.image.value,
        }
        feed.close()
        picture.close()
        runner.close()
        return seen

    try:
        seen = on_loop(main)
    finally:
        camera.close()
    assert "data-state='live'" in seen["live"]
    assert "Камера остановлена — последний кадр в" in seen["stale"]
    assert float(seen["recovered_after"]) < 1.0
    assert seen["image"] == jpeg(2)


def test_a_kit_without_a_camera_says_so(broker, viewer):
    camera = Camera(broker, "pic-none")
    camera.info(retained_none=True)

    async def main() -> str:
        runner, picture, feed = fed_picture(broker, viewer, "pic-none", Texts("en"))
        await until(lambda: picture.has_camera is False)
        notice = picture.notice.value
        feed.close()
        picture.close()
        runner.close()
        return notice

    try:
        notice = on_loop(main)
    finally:
        camera.close()
    assert "This kit has no camera." in notice


def test_an_account_without_rights_on_a_kit_gets_no_frames_of_it(broker):
    Camera(broker, "pic-secret").close()
    other = broker.provision_kits(["pic-other"])["pic-other"]  # a kit's own account
    assert other.username  # its role reads only its own commands
    with pytest.raises(ConnectError, match="refused a subscription"):
        FrameFeed(
            broker.address(other.username),
            "pic-secret",
            P.STREAM_FULL,
            lambda frame: None,
        )


def test_feed_refuses_an_unknown_stream(broker, viewer):
    with pytest.raises(ValueError, match="stream"):
        FrameFeed(broker.address(viewer), "pic-live", "huge", lambda frame: None)


def test_a_page_runs_its_additions_after_building_and_the_kit_picture_skips_a_page_without_kit():
    import ipywidgets as W

    from labs.pages import Page
    from labs.widgets.kit_picture import add_kit_picture

    class Built(Page):
        def build(self) -> W.Widget:
            self.built = W.HTML("content")
            return self.built

    async def main() -> tuple[list[str], Any]:
        page = Built()
        order: list[str] = []
        page.after_build(lambda p: order.append("added" if p.built else "early"))
        page.after_build(add_kit_picture)  # no `dashboard`: nothing added, nothing raised
        shown = page.show()
        page.close()
        Page._open.remove(page)
        return order, shown

    order, shown = on_loop(main)
    assert order == ["added"]
    assert shown.children[-1].value == "content"
