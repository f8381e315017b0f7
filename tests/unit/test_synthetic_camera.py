"""The twins' synthetic camera: every model renders, the picture follows the state, frames are
cheap enough for a kit host, and the frame stamps survive the trip through their properties."""

from __future__ import annotations

import io
import time

import numpy as np
import pytest
from PIL import Image

from hardware_kits import protocol as P
from hardware_kits.descriptor import load_models
from hardware_kits.twins import camera as C
from hardware_kits.twins.base import twin_class

MODELS = load_models()
MIDNIGHT = 1767225600.0  # 2026-01-01 00:00 UTC: a dark street


def twin(name: str, start: float = MIDNIGHT):
    return twin_class(name)(MODELS[name], seed=3, start=start)


def pixels(jpeg: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(jpeg)).convert("RGB"))


def lamp_brightness(img: Image.Image) -> float:
    return float(np.asarray(img.crop(C.LAMP_BOX).convert("L")).mean())


def manual_lamp(level: int):
    model = twin("street-lighting")
    model.apply("mode", "manual")
    model.apply("dimming", level)
    model.advance(60.0)  # the driver ramps down at 10 %/s
    return model


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_renders_a_jpeg_of_both_stream_sizes(name: str):
    model = twin(name)
    model.advance(120.0)
    full, thumb = C.SyntheticCamera(model).frames(C.SyntheticCamera(model).scene(time.time()))
    for data, stream in ((full, P.STREAM_FULL), (thumb, P.STREAM_THUMB)):
        P.check_frame(data)
        size = P.CAMERA_STREAMS[stream]
        assert pixels(data).shape == (size["height"], size["width"], 3)


def test_dimming_the_lamp_makes_the_rendered_lamp_darker():
    bright, half, dark = (lamp_brightness(C.render(manual_lamp(v))) for v in (100, 40, 0))
    assert bright > half + 20 > dark + 20, (bright, half, dark)


def test_a_person_appears_only_while_motion_is_seen():
    model = manual_lamp(100)
    model.since_motion_s = 100.0
    nobody = np.asarray(C.render(model), dtype=int)
    model.since_motion_s = 0.0
    somebody = np.asarray(C.render(model), dtype=int)
    assert np.abs(somebody - nobody).sum(axis=2)[110:195, 215:245].max() > 100


def test_the_intersection_shows_green_only_on_the_approaches_of_the_green_stage():
    model = twin("intersection")
    model.apply("mode", "fixed")
    model.advance(10.0)  # all-red, then stage 0's green
    assert model.signal == "green"
    heads = dict(zip(C.APPROACH_HEADS, C.intersection_scene(model, 0.0)[0], strict=True))
    greens = {a for a, (color, _cars) in heads.items() if color == C.GREEN}
    assert greens == set(model.green) & set(C.APPROACH_HEADS)
    img = C.render(model)
    x, y = C.APPROACH_HEADS[sorted(greens)[0]][0]
    assert img.getpixel((x, y)) == C.GREEN


def test_parking_draws_occupied_bays_and_the_gate():
    model = twin("smart-parking")
    model.bays = [False] * len(model.bays)
    empty = np.asarray(C.render(model), dtype=int)
    model.bays[0] = True
    taken = np.asarray(C.render(model), dtype=int)
    assert np.abs(taken - empty).sum() > 0
    model.gate = "open"
    opened = np.asarray(C.render(model), dtype=int)
    assert np.abs(opened - taken)[130:190, 55:70].sum() > 0  # the barrier stands up


def test_the_fan_turns_only_while_the_ventilation_runs():
    model = twin("environment-station")
    assert C.environment_scene(model, 0.0) == C.environment_scene(model, 0.1)  # off: still
    model.apply("ventilation", True)
    assert C.environment_scene(model, 0.0) != C.environment_scene(model, 0.1)


def test_an_unchanged_scene_is_encoded_once():
    camera = C.SyntheticCamera(manual_lamp(50))
    first = camera.frames(camera.scene(0.0))
    assert camera.frames(camera.scene(1.0)) is not None
    assert camera.frames(camera.scene(2.0)) == first
    assert camera.encoded == 1


def test_frame_properties_round_trip():
    props = P.frame_properties(1767225600123, 4711, 9)
    assert all(isinstance(v, str) and v.isdigit() for _k, v in props)
    assert P.parse_frame_properties(props) == (1767225600123, 4711, 9)
    assert P.parse_frame_properties(dict(props)) == (1767225600123, 4711, 9)


@pytest.mark.parametrize(
    "props",
    [{}, {"ts": "1", "seq": "2"}, {"ts": "-1", "seq": "2", "frame": "3"}, {"ts": "1" * 17}],
)
def test_frame_properties_that_are_missing_or_not_digits_are_malformed(props):
    with pytest.raises(P.ProtocolError) as err:
        P.parse_frame_properties(props)
    assert err.value.reason == P.R_MALFORMED


def test_a_receiver_refuses_oversize_and_non_jpeg_frames_and_other_topics():
    good = C.jpeg(C.render(manual_lamp(50)))
    props = P.frame_properties(1000, 1, 1)
    frame = P.decode_frame(P.camera_topic("k1", P.STREAM_FULL), good, props)
    assert (frame["kit"], frame["stream"], frame["ts"], frame["seq"]) == ("k1", "full", 1.0, 1)
    cases = [
        (P.camera_topic("k1", P.STREAM_FULL), b"\xff\xd8" + bytes(P.MAX_FRAME_BYTES), "oversize"),
        (P.camera_topic("k1", P.STREAM_FULL), b"\x89PNG....", "malformed"),
        (P.camera_topic("k1", "huge"), good, "malformed"),
        (P.telemetry_topic("k1"), good, "malformed"),
    ]
    for topic, payload, reason in cases:
        with pytest.raises(P.ProtocolError) as err:
            P.decode_frame(topic, payload, props)
        assert err.value.reason == reason


def test_synthetic_frames_per_second_on_one_core():
    """Bench line: frames drawn and encoded per second when every scene differs (the worst
    case: a spinning fan), which bounds a kit host's camera cost."""
    model = twin("environment-station")
    model.apply("ventilation", True)
    camera = C.SyntheticCamera(model)
    count, started = 0, time.process_time()
    while time.process_time() - started < 1.0:
        camera.frames(camera.scene(count / 10.0))
        count += 1
    rate = count / (time.process_time() - started)
    print(f"synthetic camera: {rate:.0f} frames/s on one core (full + thumbnail, all distinct)")
    assert camera.encoded == count
    assert rate > 50  # five kits at 10 frames/s stay well below one core
