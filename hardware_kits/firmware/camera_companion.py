"""The camera companion: a host script beside a real board that publishes its camera's picture.

It publishes exactly what a twin's synthetic camera does (`$camera`, then `$camera/full` and
`$camera/thumb` frames, see docs/protocol.md), with an MQTT account of its own whose role may
publish only the kit's `$camera` topics (`hardware_kits.broker.camera_role`). It reads the kit's
`$telemetry` to stamp each frame with the seq of the last sample and with the kit's clock (the
host's clock corrected by the offset of the last sample's `ts`).

Frames come from a V4L2 camera (a USB camera on the kit's host; needs the optional `camera`
extra, linuxpy) or from a folder of recorded JPEGs, published in name order (tests, demos).
It is never flashed (firmware_bundle.py lists what is).

    python -m hardware_kits.firmware.camera_companion --kit streetlight-1 \\
        --broker mqtt://camera-streetlight-1:<password>@127.0.0.1:1883 --device /dev/video0
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from PIL import Image

from hardware_kits import protocol as P
from hardware_kits.mqtt import BrokerAddress, connect_client, frame_publish_properties

FULL = P.CAMERA_STREAMS[P.STREAM_FULL]
THUMB = P.CAMERA_STREAMS[P.STREAM_THUMB]


def folder_frames(folder: Path, loop: bool = False) -> Iterator[bytes]:
    """The files `*.jpg` of a folder in name order, as they are (no check: the receivers check)."""
    files = sorted(folder.glob("*.jpg"))
    if not files:
        raise FileNotFoundError(f"{folder}: no *.jpg frames")
    while True:
        for path in files:
            yield path.read_bytes()
        if not loop:
            return


def v4l2_frames(device: str) -> Iterator[bytes]:
    """JPEGs of a V4L2 camera, scaled to the full stream's size."""
    try:
        from linuxpy.video.device import BufferType, Device
    except ImportError:
        raise SystemExit(
            "a V4L2 camera needs linuxpy: pip install 'smartlab[camera]' (the lock holds it)"
        ) from None
    with Device(device) as cam:
        cam.set_format(BufferType.VIDEO_CAPTURE, FULL["width"], FULL["height"], "MJPG")
        for frame in cam:
            yield scaled(bytes(frame), (FULL["width"], FULL["height"]))


def scaled(jpeg: bytes, size: tuple[int, int]) -> bytes:
    """A JPEG at `size` (unchanged when it already is)."""
    img = Image.open(io.BytesIO(jpeg))
    if img.size == size:
        return jpeg
    out = io.BytesIO()
    img.convert("RGB").resize(size, Image.Resampling.BILINEAR).save(out, "JPEG", quality=80)
    return out.getvalue()


class CameraCompanion:
    """Publishes frames for one kit; `run(frames)` paces them at the full stream's rate."""

    def __init__(self, kit_id: str, address: BrokerAddress, fps: float = FULL["fps"]) -> None:
        self.kit_id = kit_id
        self.address = address
        self.fps = fps
        self.seq = 0  # of the kit's last telemetry
        self.clock_offset = 0.0  # kit clock minus host clock, from the last telemetry
        self.sent = {P.STREAM_FULL: 0, P.STREAM_THUMB: 0}
        self._stop = threading.Event()
        self.client: mqtt.Client | None = None

    def start(self) -> CameraCompanion:
        self.client = connect_client(
            self.address.host,
            self.address.port,
            self.address.credentials,
            client_id=f"camera-{self.kit_id}",
            # A companion that dies takes its picture with it: an empty `$camera` says "none".
            will=(P.camera_info_topic(self.kit_id), P.EMPTY_STRING, 1, True),
            on_connect=self._announce,
            on_message=self._on_telemetry,
            subscribe=[(P.telemetry_topic(self.kit_id), 0)],
            **self.address.tls_options(),
        )
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.client is not None:
            info = P.camera_info_topic(self.kit_id)
            self.client.publish(info, P.EMPTY_STRING, qos=1, retain=True).wait_for_publish(2)
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None

    def __enter__(self) -> CameraCompanion:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _announce(self, client: mqtt.Client) -> None:
        client.publish(
            P.camera_info_topic(self.kit_id), P.camera_info("device"), qos=1, retain=True
        )

    def _on_telemetry(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        try:
            body = P.decode_telemetry(msg.payload)
        except P.ProtocolError:
            return  # the kit's own business; keep the last good stamp
        self.seq = body["seq"]
        self.clock_offset = body["ts"] - time.time()

    def publish(self, jpeg: bytes, thumb: bytes | None = None) -> None:
        """One full frame (and a thumbnail with it when given), stamped now."""
        client = self.client
        if client is None:
            raise RuntimeError("the companion is not connected")
        ts_ms = int((time.time() + self.clock_offset) * 1000)
        for stream, data in ((P.STREAM_FULL, jpeg), (P.STREAM_THUMB, thumb)):
            if data is None:
                continue
            self.sent[stream] += 1
            props = frame_publish_properties(ts_ms, self.seq, self.sent[stream])
            client.publish(P.camera_topic(self.kit_id, stream), data, qos=0, properties=props)

    def run(self, frames: Iterator[bytes]) -> None:
        """Publish frames at `fps`, a thumbnail every 1/thumb-fps seconds, until stopped."""
        thumb_every = max(1, round(self.fps / THUMB["fps"]))
        period = 1.0 / self.fps
        next_tick = time.monotonic()
        for count, jpeg in enumerate(frames):
            if self._stop.is_set():
                break
            thumb = None
            if count % thumb_every == 0:
                try:
                    thumb = scaled(jpeg, (THUMB["width"], THUMB["height"]))
                except OSError:  # not an image: sent as it is, for the receivers to refuse
                    thumb = None
            self.publish(jpeg, thumb)
            next_tick += period
            self._stop.wait(max(0.0, next_tick - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kit", required=True, help="the kit's id")
    parser.add_argument("--broker", required=True, help="mqtt://camera-<kit>:<password>@host:port")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--device", help="a V4L2 camera, e.g. /dev/video0")
    source.add_argument("--folder", type=Path, help="a folder of recorded *.jpg frames")
    parser.add_argument("--fps", type=float, default=FULL["fps"])
    parser.add_argument("--loop", action="store_true", help="repeat the folder's frames")
    args = parser.parse_args(argv)
    try:
        address = BrokerAddress.from_url(args.broker)
        frames = folder_frames(args.folder, args.loop) if args.folder else v4l2_frames(args.device)
        with CameraCompanion(args.kit, address, args.fps) as companion:
            companion.run(frames)
    except (ValueError, OSError) as err:
        print(f"camera companion: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    print(json.dumps({"kit": args.kit, "sent": companion.sent}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
