"""The environment is exactly the lock, and the lock satisfies pyproject.toml."""

from __future__ import annotations

import importlib.metadata
import re
import sysconfig
import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
LOCK = ROOT / "requirements.lock"
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._\-\[\],]*)==([^\s;\\]+)\s*(?:;\s*([^\\]+?))?\s*\\?$")
# What an installer brings along rather than the project asking for it.
INSTALLER_OWN = {"pip"}


def locked_versions() -> dict[str, str]:
    """name -> version of every lock entry that applies to this interpreter and platform."""
    pins: dict[str, str] = {}
    for line in LOCK.read_text().splitlines():
        match = PIN.match(line)
        if match:
            name, version, marker = match.groups()
            if marker is None or Marker(marker).evaluate():
                pins[canonicalize_name(name.split("[")[0])] = version
    return pins


def installed_versions() -> dict[str, str]:
    """What the environment holds: its site-packages only (not sys.path, where setuptools
    puts its own vendored copies once imported)."""
    folders = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    return {
        canonicalize_name(d.metadata["Name"]): d.version
        for d in importlib.metadata.distributions(path=folders)
    }


def test_the_lock_pins_every_entry_with_hashes() -> None:
    entries = re.split(r"\n(?=[A-Za-z0-9])", LOCK.read_text().split("\n", 2)[2].strip())
    assert len(entries) > 100
    for entry in entries:
        assert PIN.match(entry.splitlines()[0]), entry.splitlines()[0]
        assert "--hash=sha256:" in entry, f"no hash for {entry.splitlines()[0]}"


def test_the_environment_is_exactly_the_lock() -> None:
    locked, installed = locked_versions(), installed_versions()
    project = canonicalize_name(
        tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["name"]
    )
    wrong = {
        name: (version, installed.get(name))
        for name, version in locked.items()
        if installed.get(name) != version
    }
    extra = set(installed) - set(locked) - INSTALLER_OWN - {project}
    assert not wrong, f"installed versions differ from the lock (lock, installed): {wrong}"
    assert not extra, f"installed but not in the lock: {sorted(extra)}"


def test_the_lock_satisfies_every_requirement_of_pyproject() -> None:
    """A requirement changed in pyproject.toml without `./smartlab lock` fails here."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        wanted += extra
    locked = locked_versions()
    for text in wanted:
        requirement = Requirement(text)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{text}: not in {LOCK.name}; run ./smartlab lock"
        assert requirement.specifier.contains(locked[name], prereleases=True), (
            f"{text}: the lock has {locked[name]}; run ./smartlab lock"
        )
