"""Site passwords: new hashes are Argon2id, bcrypt and the older PBKDF2 hashes still log in, and
`smartlab up` on an address other machines reach refuses the demo site's public passwords."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path
from typing import Any

import bcrypt
import pytest
import yaml

from hardware_kits.descriptor import DescriptorError
from site_config.paths import DEMO_SITE
from site_config.site import (
    demo_password_accounts,
    hash_password,
    load_site,
    parse_site,
    pbkdf2_hash,
    refuse_public_demo_passwords,
    verify_password,
)

PUBLIC_HOSTS = ["0.0.0.0", "192.0.2.7", "::", "2001:db8::1", "lab.example.org"]
LOOPBACK_HOSTS = ["127.0.0.1", "127.0.1.1", "::1", "[::1]", "localhost"]


@pytest.fixture(scope="module")
def demo_data() -> dict[str, Any]:
    return yaml.safe_load(DEMO_SITE.read_text(encoding="utf-8"))


def with_hashes(data: dict[str, Any], hashes: dict[str, str]) -> dict[str, Any]:
    changed = copy.deepcopy(data)
    for person in changed["people"]:
        person["password_hash"] = hashes.get(person["username"], person["password_hash"])
    return changed


def test_new_hashes_are_salted_argon2id():
    hashed = hash_password("s3cret")
    assert hashed.startswith("$argon2id$")
    assert verify_password("s3cret", hashed) and not verify_password("s3cret!", hashed)
    assert hash_password("s3cret") != hashed


def test_pbkdf2_and_bcrypt_hashes_still_log_in():
    legacy = pbkdf2_hash("s3cret", rounds=1000)
    assert verify_password("s3cret", legacy) and not verify_password("x", legacy)
    crypt = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    assert verify_password("s3cret", crypt) and not verify_password("x", crypt)


def test_the_site_file_takes_each_kind_and_refuses_plain_or_broken_ones(demo_data):
    kinds = [
        hash_password("a"),
        pbkdf2_hash("a", 1000),
        bcrypt.hashpw(b"a", bcrypt.gensalt(rounds=4)).decode(),
    ]
    for hashed in kinds:
        site = parse_site(with_hashes(demo_data, {"anna": hashed}), "site.yaml")
        assert verify_password("a", site.person("anna").password_hash)
    for bad in ["demo-anna", "$argon2id$v=19$garbage", "$pbkdf2-sha256$10$x$y"]:
        with pytest.raises(DescriptorError) as refused:
            parse_site(with_hashes(demo_data, {"anna": bad}), "site.yaml")
        assert "\n" not in str(refused.value) and "password_hash" in str(refused.value)


def test_smartlab_hash_password_prints_an_argon2_hash():
    done = subprocess.run(
        [sys.executable, "-m", "hub_config.cli", "hash-password", "--stdin"],
        input="correct horse\n",
        capture_output=True,
        text=True,
        check=True,
    )
    hashed = done.stdout.strip()
    assert hashed.startswith("$argon2id$") and verify_password("correct horse", hashed)


def test_demo_passwords_are_found_whatever_their_hash(demo_data):
    site = load_site(DEMO_SITE)
    assert demo_password_accounts(site) == [p.username for p in site.people]
    renewed = {p.username: pbkdf2_hash(f"new-{p.username}", 1000) for p in site.people}
    renewed["irina"] = hash_password("demo-irina")  # rehashed, still the public password
    changed = parse_site(with_hashes(demo_data, renewed), "site.yaml")
    assert demo_password_accounts(changed) == ["irina"]


@pytest.mark.parametrize("host", PUBLIC_HOSTS)
def test_a_public_address_refuses_demo_passwords(host):
    site = load_site(DEMO_SITE)
    with pytest.raises(ValueError) as refused:
        refuse_public_demo_passwords(site, host)
    line = str(refused.value)
    assert "\n" not in line and "smartlab hash-password" in line
    assert all(p.username in line for p in site.people)


@pytest.mark.parametrize("host", LOOPBACK_HOSTS)
def test_loopback_keeps_the_demo_passwords(host):
    refuse_public_demo_passwords(load_site(DEMO_SITE), host)


def test_a_public_address_without_demo_passwords_starts(demo_data):
    renewed = {p["username"]: pbkdf2_hash("long random", 1000) for p in demo_data["people"]}
    refuse_public_demo_passwords(parse_site(with_hashes(demo_data, renewed), "s.yaml"), "0.0.0.0")


def test_smartlab_up_on_a_public_address_stops_before_starting_anything(tmp_path: Path):
    state = tmp_path / "state"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "hub_config.cli",
            "up",
            "--hub-ip",
            "0.0.0.0",
            "--state-dir",
            str(state),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "refusing to serve on 0.0.0.0" in lines[0], lines
    assert "anna" in lines[0] and "hugo" in lines[0]
    assert not state.exists()  # no state folder, broker, accounts or hub
