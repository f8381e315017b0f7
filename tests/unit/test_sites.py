"""The `sites:` section of the site file and the partner bridge generated from it."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from hardware_kits import protocol as P
from hardware_kits.bridge import bridge_acls, bridge_plan, bridge_state_topic
from hardware_kits.descriptor import DescriptorError
from site_config.kits import parse_kits
from site_config.paths import DEMO_SITE
from site_config.site import load_site
from site_config.sites import parse_sites
from tests.conftest import REPO


def network(demo: dict[str, Any]) -> dict[str, Any]:
    """The demo site with a partner `uni` that hosts the parking lot."""
    data = copy.deepcopy(demo)
    data["sites"] = [
        {"id": "hq", "kind": "centre", "broker": {"host": "lab.example", "tls_port": 8883}},
        {
            "id": "uni",
            "kind": "partner",
            "broker": {"host": "mqtt.uni.example"},
            "bridge": {"ca_file": "centre-ca.crt", "password_file": "bridge-password"},
        },
    ]
    data["kits"][4]["site"] = "uni"
    return data


@pytest.fixture(scope="module")
def demo() -> dict[str, Any]:
    return yaml.safe_load(DEMO_SITE.read_text(encoding="utf-8"))


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def test_site_file_without_sites_is_one_centre_with_every_kit(models, demo):
    site = load_site(DEMO_SITE, models)
    assert [s.kind for s in site.sites.entries] == ["centre"]
    assert set(site.sites.kits_of(site.sites.centre.id)) == {k.id for k in site.kits}
    assert site.sites.partner_kits() == {}


def test_partner_hosts_the_kits_that_name_it(tmp_path, models, demo):
    site = load_site(write(tmp_path, network(demo)), models)
    assert site.sites.partner_kits() == {"parking-1": "uni"}
    assert "parking-1" not in site.sites.kits_of("hq")


def _duplicate_site(d):
    d["sites"].append({**d["sites"][1], "broker": {"host": "other.example"}})


def _unknown_kit_site(d):
    d["kits"][0]["site"] = "elsewhere"


def _same_broker_address(d):
    d["sites"][1]["broker"] = {"host": "lab.example", "port": 8883}


def _partner_without_bridge(d):
    del d["sites"][1]["bridge"]


def _centre_with_bridge(d):
    d["sites"][0]["bridge"] = d["sites"][1]["bridge"]


def _two_centres(d):
    d["sites"][1] = {"id": "uni", "kind": "centre", "broker": {"host": "mqtt.uni.example"}}


def _no_centre(d):
    d["sites"][0]["kind"] = "partner"
    d["sites"][0]["bridge"] = d["sites"][1]["bridge"]


def _centre_without_mqtts(d):
    del d["sites"][0]["broker"]["tls_port"]


def _bad_site_id(d):
    d["sites"][1]["id"] = "Uni B"


def _unknown_kind(d):
    d["sites"][1]["kind"] = "branch"


def _bad_port(d):
    d["sites"][1]["broker"]["port"] = 70000


def _extra_bridge_field(d):
    d["sites"][1]["bridge"]["password"] = "secret"  # passwords are never in the file


def _kit_site_without_sites(d):
    del d["sites"]


def _empty_sites(d):
    d["sites"] = []


CASES = [
    (_duplicate_site, "sites.2.id", "used twice"),
    (_unknown_kit_site, "kits.0.site", "no site 'elsewhere'"),
    (_same_broker_address, "sites.1.broker.port", "also the broker of 'hq'"),
    (_partner_without_bridge, "sites.1.bridge", "needs bridge settings"),
    (_centre_with_bridge, "sites.0.bridge", "only partner sites"),
    (_two_centres, "sites.1.kind", "exactly one site of kind centre"),
    (_no_centre, "sites", "exactly one site of kind centre"),
    (_centre_without_mqtts, "sites.0.broker.tls_port", "mqtts"),
    (_bad_site_id, "sites.1.id", "lowercase"),
    (_unknown_kind, "sites.1.kind", "centre"),
    (_bad_port, "sites.1.broker.port", "65535"),
    (_extra_bridge_field, "sites.1.bridge.password", "Extra inputs"),
    (_kit_site_without_sites, "kits.4.site", "declares no sites"),
    (_empty_sites, "sites", "a list of sites"),
]


@pytest.mark.parametrize(
    ("breaks", "field", "reason"), CASES, ids=[c[0].__name__.strip("_") for c in CASES]
)
def test_conflicting_sites_are_one_line_naming_the_field(
    tmp_path, models, demo, breaks, field, reason
):
    data = network(demo)
    breaks(data)
    path = write(tmp_path, data)
    with pytest.raises(DescriptorError) as caught:
        load_site(path, models)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: {field}: "), message
    assert reason in message


def test_site_run_with_a_conflicting_site_file_says_one_line_and_starts_nothing(tmp_path, demo):
    data = network(demo)
    _same_broker_address(data)
    path = write(tmp_path, data)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub_config.cli",
            "site",
            "run",
            "--site",
            str(path),
            "--name",
            "uni",
            "--state-dir",
            str(tmp_path / "state"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().count("\n") == 0
    assert "sites.1.broker.port" in done.stderr
    assert not (tmp_path / "state").exists()


def test_bridge_carries_only_the_partners_kits(tmp_path, models, demo):
    data = network(demo)
    (tmp_path / "bridge-password").write_text("s3cret\n")
    kits = parse_kits(data, "x", models)
    plan = bridge_plan(parse_sites(data, "x", kits), "uni", tmp_path)
    lines = plan.config_lines()
    assert "address lab.example:8883" in lines
    assert "remote_password s3cret" in lines
    assert "notifications true" in lines
    assert f"notification_topic {bridge_state_topic('uni')}" in lines
    assert f"bridge_cafile {tmp_path / 'centre-ca.crt'}" in lines
    topics = [line for line in lines if line.startswith("topic ")]
    assert f"topic {P.kit_filter('parking-1')} out 1" in topics
    assert all("parking-1" in t for t in topics)  # no other kit crosses this bridge
    assert {t.split()[1] for t in topics if t.endswith(" in 1")} == set(
        P.command_subscriptions("parking-1")
    )


def test_bridge_account_may_not_publish_commands_even_to_its_own_kits():
    acls = bridge_acls("uni", ["parking-1"])
    denied = {a["topic"] for a in acls if not a["allow"]}
    assert denied == set(P.command_subscriptions("parking-1"))
    assert all(a["priority"] > 0 for a in acls if not a["allow"])  # checked before the allows
    readable = {a["topic"] for a in acls if a["acltype"] == "publishClientReceive"}
    assert readable == set(P.command_subscriptions("parking-1"))


@pytest.mark.parametrize("password", ["", "two words", None])
def test_a_missing_or_malformed_bridge_password_is_one_line(tmp_path, models, demo, password):
    data = network(demo)
    if password is not None:
        (tmp_path / "bridge-password").write_text(password)
    kits = parse_kits(data, "x", models)
    with pytest.raises(ValueError, match=r"^bridge\.password_file: [^\n]+$"):
        bridge_plan(parse_sites(data, "x", kits), "uni", tmp_path)
