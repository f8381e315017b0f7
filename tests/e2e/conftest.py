"""The running platform, started once for the end-to-end tests: `smartlab up` on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.hubclient import Browser
from tests.stack import Up, running

DEMO_PASSWORD = "demo-{}"  # the demo site's passwords (site_config/demo-site.yaml)


@pytest.fixture(scope="package")
def platform(state_root: Path, home_root: Path) -> Iterator[Up]:
    with running(Up(state_root / "e2e-state", home_root)) as up:
        yield up


@pytest.fixture(scope="package")
def browsers(platform: Up) -> dict[str, Browser]:
    """One logged-in browser per demo person, made on first use."""

    class Logins(dict):
        def __missing__(self, username: str) -> Browser:
            browser = Browser(platform.hub_url, username)
            browser.login(DEMO_PASSWORD.format(username))
            self[username] = browser
            return browser

    return Logins()
