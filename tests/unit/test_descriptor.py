"""Descriptor and site-file validation: one line naming file, field and reason."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from hardware_kits import protocol as P
from hardware_kits.descriptor import MODELS_DIR, DescriptorError, load_descriptor
from site_config.kits import load_kits
from site_config.paths import DEMO_SITE

REQUIRED_MODELS = {"street-lighting", "intersection", "environment-station", "smart-parking"}


def test_every_required_model_is_described(models):
    assert set(models) >= REQUIRED_MODELS
    for desc in models.values():
        for spec in desc["sensors"].values():
            assert spec["rate_hz"] > 0
            if spec["datatype"] in ("integer", "float"):
                assert spec["min"] < spec["max"]
        for spec in desc["actuators"].values():
            assert "safe" in spec


def test_every_model_names_the_largest_packet_its_boards_take(models):
    for desc in models.values():
        assert P.MIN_MAX_PACKET_BYTES <= P.max_packet_bytes(desc) <= 64 * 1024
    assert P.max_packet_bytes({}) == P.DEFAULT_MAX_PACKET_BYTES


def test_kits_announce_the_extension_as_the_homie_template_asks(models):
    # extension ID:extension version (semver):[homie versions]
    entry = re.fullmatch(r"([a-z0-9.-]+):(\d+\.\d+\.\d+):\[5\.x\]", P.PROTOCOL_EXTENSION)
    assert entry is not None and entry.group(1) == "org.smartcitylab.kit"
    description = P.homie_description("k", models["street-lighting"])
    assert description["extensions"] == [P.PROTOCOL_EXTENSION]


def test_parking_has_at_least_eight_bays(models):
    assert models["smart-parking"]["sensors"]["bays"]["schema"]["minItems"] >= 8


def write(tmp_path: Path, name: str, data: dict) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def broken(mutate) -> dict:
    data = yaml.safe_load((MODELS_DIR / "street-lighting.yaml").read_text())
    mutate(data)
    return data


@pytest.mark.parametrize(
    ("mutate", "field", "reason"),
    [
        (lambda d: d["actuators"]["dimming"].update(safe=150), "actuators.dimming.safe", "outside"),
        (
            lambda d: d["sensors"]["ambient-light"].pop("rate_hz"),
            "sensors.ambient-light.rate_hz",
            "required",
        ),
        (lambda d: d["sensors"]["ambient-light"].pop("unit"), "sensors.ambient-light", "unit"),
        (
            lambda d: d["actuators"]["mode"].update(datatype="colour"),
            "actuators.mode.datatype",
            "Input should be",
        ),
        (lambda d: d["interlocks"][0].update(actuator="brightness"), "interlocks.0", "brightness"),
        (
            lambda d: d["sensors"].update({"Bad_Name": d["sensors"]["motion"]}),
            "sensors.Bad_Name",
            "Homie id",
        ),
        (lambda d: d.update(colour="red"), "colour", "Extra inputs"),
        # A board must be able to take every command the kit answers itself (MAX_COMMAND_BYTES).
        (lambda d: d.update(max_packet_bytes=4096), "max_packet_bytes", "greater than or equal"),
        # Every name a page shows exists in Russian too (docs/protocol.md, 1.2.0).
        (lambda d: d["sensors"]["motion"].pop("ru"), "sensors.motion.ru", "required"),
        (lambda d: d.pop("ru"), "ru", "required"),
        (lambda d: d["actuators"]["dimming"]["ru"].pop("name"), "actuators.dimming.ru.name", "req"),
        (
            lambda d: d["actuators"]["mode"]["ru"]["values"].pop("manual"),
            "actuators.mode",
            "no Russian name for manual",
        ),
    ],
)
def test_invalid_descriptor_names_file_field_reason(tmp_path, mutate, field, reason):
    path = write(tmp_path, "street-lighting", broken(mutate))
    with pytest.raises(DescriptorError) as err:
        load_descriptor(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {field}"), message
    assert reason in message


def test_unparseable_yaml_names_line(tmp_path):
    path = tmp_path / "street-lighting.yaml"
    path.write_text("model: [unclosed\n")
    with pytest.raises(DescriptorError, match=r"street-lighting.yaml: line \d+"):
        load_descriptor(path)


def test_safe_plan_must_not_conflict(tmp_path):
    data = yaml.safe_load((MODELS_DIR / "intersection.yaml").read_text())
    data["actuators"]["phase-plan"]["safe"][0]["green"] = ["north", "west"]
    path = write(tmp_path, "intersection", data)
    with pytest.raises(DescriptorError, match=r"phase-plan\.safe: breaks an interlock"):
        load_descriptor(path)


@pytest.mark.parametrize(
    ("kits", "message"),
    [
        ([{"id": "a", "model": "hovercraft"}], "kits.0.model: no kit model 'hovercraft'"),
        (
            [{"id": "a", "model": "intersection"}, {"id": "a", "model": "intersection"}],
            "kits.1.id: 'a' is used twice",
        ),
        ([{"id": "Not OK", "model": "intersection"}], "kits.0.id:"),
        ([{"id": "a", "model": "intersection", "rate_hz": 0}], "kits.0.rate_hz:"),
    ],
)
def test_invalid_site_kits(tmp_path, models, kits, message):
    path = write(tmp_path, "site", {"kits": kits})
    with pytest.raises(DescriptorError, match=message.replace(".", r"\.")):
        load_kits(path, models)


def test_demo_site_is_valid(models):
    site = DEMO_SITE
    kits = load_kits(site, models)
    assert {k.model for k in kits} == REQUIRED_MODELS
    assert sum(k.model == "street-lighting" for k in kits) == 2


@pytest.mark.parametrize(
    ("at_rest", "message"),
    [
        ({"brightness": 3}, r"at_rest\.brightness: no actuator named 'brightness'"),
        ({"mode": "party"}, r"at_rest\.mode: .*value at rest"),
        (
            {
                "phase-plan": [
                    {"green": ["north", "east"], "seconds": 30},
                    {"green": ["west"], "seconds": 9},
                ]
            },
            r"at_rest\.phase-plan: breaks an interlock",
        ),
    ],
)
def test_invalid_state_at_rest_is_refused(tmp_path, at_rest, message):
    data = yaml.safe_load((MODELS_DIR / "intersection.yaml").read_text())
    data["at_rest"] = at_rest
    path = write(tmp_path, "intersection", data)
    with pytest.raises(DescriptorError, match=message):
        load_descriptor(path)
