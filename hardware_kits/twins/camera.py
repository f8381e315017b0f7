"""The twins' synthetic camera: each twin's state drawn as a small picture, JPEG-encoded.

A twin has no lens, but the whole video path (frames on the broker, stamps, recording, the
dashboards' picture) should run and be tested without hardware. So each kit model gets a
`scene` function that reads what a camera would see from the model (a small tuple, taken under
the runner's lock) and a `draw` function that paints that scene (outside the lock). Equal scenes
give equal pictures, so `SyntheticCamera` encodes a scene once and reuses the JPEG while it
stands still (a dark street with nobody about costs nothing per frame).

Pictures hold no text: they are the same for every language.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from typing import Any

from PIL import Image, ImageDraw

from hardware_kits import protocol as P
from hardware_kits.twins.base import TwinModel

WIDTH, HEIGHT = P.CAMERA_STREAMS[P.STREAM_FULL]["width"], P.CAMERA_STREAMS[P.STREAM_FULL]["height"]
JPEG_QUALITY = 80
FAN_REV_PER_S = 1.5  # how fast the drawn fan turns while the ventilation runs

Scene = tuple[Any, ...]
Color = tuple[int, int, int]

# ---------------------------------------------------------------- street lighting

# The lamp's head and the pool of light under it: the region a test measures.
LAMP_BOX = (120, 40, 200, 200)
NIGHT_SKY: Color = (12, 16, 40)
DAY_SKY: Color = (140, 180, 230)


def _mix(a: Color, b: Color, share: float) -> Color:
    share = min(1.0, max(0.0, share))
    return tuple(round(x + (y - x) * share) for x, y in zip(a, b, strict=True))  # type: ignore[return-value]


def street_lighting_scene(model: Any, now: float) -> Scene:
    """Lamp level (whole %), motion seen, daylight (0 night .. 1 day, in 8 steps)."""
    daylight = min(1.0, math.log10(1.0 + max(0.0, model.ambient_lx)) / 4.0)
    return (round(model.level), bool(model.motion), round(daylight * 8) / 8)


def draw_street_lighting(scene: Scene) -> Image.Image:
    level, motion, daylight = scene
    img = Image.new("RGB", (WIDTH, HEIGHT), _mix(NIGHT_SKY, DAY_SKY, daylight))
    d = ImageDraw.Draw(img)
    d.rectangle((0, 200, WIDTH, HEIGHT), fill=_mix((30, 30, 34), (110, 110, 115), daylight))
    d.rectangle((156, 48, 164, 200), fill=(70, 70, 78))  # pole
    d.rectangle((130, 40, 190, 48), fill=(70, 70, 78))  # arm
    glow = level / 100.0
    # The pool of light: brightness proportional to the lamp's level (and so to its power).
    pool = _mix(_mix((30, 30, 34), (110, 110, 115), daylight), (255, 225, 150), 0.8 * glow)
    d.polygon([(140, 56), (180, 56), (200, 200), (120, 200)], fill=pool)
    d.ellipse((120, 192, 200, 208), fill=pool)
    d.rectangle((136, 48, 184, 58), fill=_mix((50, 50, 55), (255, 245, 200), glow))  # head
    if motion:  # a passer-by, where the PIR looks
        x, y = 230, 150
        # A red coat, as lit as the scene is (seen dimly even in the dark: the PIR saw it).
        person = _mix((70, 30, 20), (220, 80, 50), max(glow, daylight))
        d.ellipse((x - 7, y - 30, x + 7, y - 16), fill=person)
        d.line((x, y - 16, x, y + 14), fill=person, width=4)
        d.line((x - 10, y - 6, x + 10, y - 6), fill=person, width=3)
        d.line((x, y + 14, x - 8, y + 40), fill=person, width=3)
        d.line((x, y + 14, x + 8, y + 40), fill=person, width=3)
    return img


# ---------------------------------------------------------------- intersection

APPROACH_HEADS = {  # where each approach's signal head stands, and its queue's direction
    "north": ((176, 50), (0, -1)),
    "south": ((136, 184), (0, 1)),
    "east": ((214, 134), (1, 0)),
    "west": ((98, 96), (-1, 0)),
}
RED: Color = (230, 30, 30)
AMBER: Color = (250, 170, 0)
GREEN: Color = (40, 220, 60)
OFF: Color = (40, 40, 40)
MAX_DRAWN_CARS = 6


def intersection_scene(model: Any, now: float) -> Scene:
    """Each approach's head colour and queue (drawn up to MAX_DRAWN_CARS), pedestrians' walk."""
    plan = model.actuators["phase-plan"]
    shown = frozenset(plan[model.stage]["green"]) if 0 <= model.stage < len(plan) else frozenset()
    heads = []
    for approach in APPROACH_HEADS:
        if model.signal == "flashing-amber":
            color = AMBER if int(now * 2) % 2 == 0 else OFF
        elif model.signal == "green" and approach in model.green:
            color = GREEN
        elif model.signal == "amber" and approach in shown:
            color = AMBER
        else:
            color = RED
        heads.append((color, min(model.queues[approach], MAX_DRAWN_CARS)))
    walk = model.signal == "green" and "pedestrians" in model.green
    return (tuple(heads), walk)


def draw_intersection(scene: Scene) -> Image.Image:
    heads, walk = scene
    img = Image.new("RGB", (WIDTH, HEIGHT), (60, 110, 60))
    d = ImageDraw.Draw(img)
    d.rectangle((130, 0, 190, HEIGHT), fill=(80, 80, 85))
    d.rectangle((0, 90, WIDTH, 150), fill=(80, 80, 85))
    zebra = (255, 255, 255) if walk else (150, 150, 150)
    for i in range(5):
        d.rectangle((134 + 11 * i, 152, 140 + 11 * i, 164), fill=zebra)
    for (color, cars), ((x, y), (dx, dy)) in zip(heads, APPROACH_HEADS.values(), strict=True):
        d.rectangle((x - 7, y - 7, x + 7, y + 7), fill=(15, 15, 15))
        d.ellipse((x - 5, y - 5, x + 5, y + 5), fill=color)
        lane_x = x - 20 * dy if dy else x
        lane_y = y + 20 * dx if dx else y
        for n in range(cars):  # queued cars behind the stop line, away from the junction
            cx, cy = lane_x + dx * (18 + 16 * n), lane_y + dy * (18 + 16 * n)
            half_w, half_h = (6, 4) if dx else (4, 6)
            d.rectangle((cx - half_w, cy - half_h, cx + half_w, cy + half_h), fill=(30, 80, 200))
    return img


# ---------------------------------------------------------------- parking


def parking_scene(model: Any, now: float) -> Scene:
    return (tuple(model.bays), model.gate == "open", min(model.waiting, 5))


def draw_parking(scene: Scene) -> Image.Image:
    bays, gate_open, waiting = scene
    img = Image.new("RGB", (WIDTH, HEIGHT), (70, 70, 75))
    d = ImageDraw.Draw(img)
    per_row = max(1, math.ceil(len(bays) / 2))
    width = min(40, (WIDTH - 20) // per_row)
    for i, taken in enumerate(bays):
        x = 10 + (i % per_row) * width
        y = 10 if i < per_row else 100
        d.rectangle((x, y, x + width - 4, y + 60), outline=(240, 240, 240), width=2)
        if taken:
            d.rectangle((x + 6, y + 8, x + width - 10, y + 52), fill=(200, 40, 40))
    d.rectangle((60, 190, 64, 214), fill=(200, 200, 200))  # the barrier's post
    if gate_open:
        d.line((62, 190, 62, 130), fill=(250, 200, 0), width=5)
    else:
        d.line((62, 192, 150, 192), fill=(250, 200, 0), width=5)
    for n in range(waiting):  # the queue in front of the gate
        x = 170 + 28 * n
        d.rectangle((x, 184, x + 22, 200), fill=(30, 80, 200))
    return img


# ---------------------------------------------------------------- environment station


def environment_scene(model: Any, now: float) -> Scene:
    """Fan running or not, and its blades' angle (whole degrees; turns only while it runs)."""
    running = bool(model.actuators["ventilation"])
    angle = round(now * 360.0 * FAN_REV_PER_S) % 90 if running else 0
    return (running, angle)


def draw_environment(scene: Scene) -> Image.Image:
    running, angle = scene
    img = Image.new("RGB", (WIDTH, HEIGHT), (200, 205, 210))
    d = ImageDraw.Draw(img)
    d.rectangle((90, 50, 230, 190), fill=(120, 125, 130), outline=(60, 60, 60), width=3)
    cx, cy, r = 160, 120, 56
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=(35, 35, 40))
    blade = (120, 200, 255) if running else (110, 110, 110)
    for k in range(4):
        a = math.radians(angle + 90 * k)
        tip = (cx + r * 0.9 * math.cos(a), cy + r * 0.9 * math.sin(a))
        side = (cx + r * 0.5 * math.cos(a + 0.6), cy + r * 0.5 * math.sin(a + 0.6))
        d.polygon([(cx, cy), side, tip], fill=blade)
    d.ellipse((cx - 8, cy - 8, cx + 8, cy + 8), fill=(200, 200, 200))
    d.ellipse((250, 60, 266, 76), fill=GREEN if running else OFF)  # the relay's lamp
    return img


# ---------------------------------------------------------------- per model

RENDERERS: dict[str, tuple[Callable[[Any, float], Scene], Callable[[Scene], Image.Image]]] = {
    "street-lighting": (street_lighting_scene, draw_street_lighting),
    "intersection": (intersection_scene, draw_intersection),
    "smart-parking": (parking_scene, draw_parking),
    "environment-station": (environment_scene, draw_environment),
}


def render(model: TwinModel, now: float = 0.0) -> Image.Image:
    """The picture of a twin's present state (`now`: wall-clock seconds, for motion)."""
    scene_of, draw = RENDERERS[model.model]
    return draw(scene_of(model, now))


def jpeg(img: Image.Image, quality: int = JPEG_QUALITY) -> bytes:
    out = io.BytesIO()
    img.save(out, "JPEG", quality=quality)
    return out.getvalue()


class SyntheticCamera:
    """Frames of one twin, both streams, each JPEG made once per distinct scene.

    `scene(now)` runs under the caller's lock (it reads the model); `frames(scene)` does the
    drawing and encoding outside it."""

    def __init__(self, model: TwinModel) -> None:
        if model.model not in RENDERERS:
            raise KeyError(f"no synthetic camera for kit model {model.model!r}")
        self.model = model
        self._scene_of, self._draw = RENDERERS[model.model]
        thumb = P.CAMERA_STREAMS[P.STREAM_THUMB]
        self.thumb_size = (thumb["width"], thumb["height"])
        self._last: tuple[Scene | None, bytes, bytes] = (None, b"", b"")
        self.encoded = 0  # scenes drawn and encoded (the rest were reused)

    def scene(self, now: float) -> Scene:
        return self._scene_of(self.model, now)

    def frames(self, scene: Scene) -> tuple[bytes, bytes]:
        """(full JPEG, thumbnail JPEG) of a scene."""
        last_scene, full, thumb = self._last
        if scene != last_scene:
            img = self._draw(scene)
            full = jpeg(img)
            thumb = jpeg(img.resize(self.thumb_size, Image.Resampling.BILINEAR))
            self._last = (scene, full, thumb)
            self.encoded += 1
        return full, thumb
