"""The journeys' fixtures: one platform for all of them, started as `./smartlab up` starts
it, and Debian's Chromium; `journey(lang)` opens the hub's root URL as a person would."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import sync_playwright

from tests.journeys.journey import DESKTOP, Journey, slug
from tests.stack import ARTIFACTS_ROOT, Up, launch_chromium, running


@pytest.fixture(scope="package")
def platform(state_root: Path) -> Iterator[Up]:
    # Homes of their own: the journeys meet the students as new people, not with what the
    # end-to-end tests left in a shared home (a fetched assignment, an own `dashboards`).
    with running(Up(state_root / "journeys-state", state_root / "journeys-home")) as up:
        yield up


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        yield chromium
        chromium.close()


@pytest.fixture
def journey(
    platform: Up, browser: Any, request: pytest.FixtureRequest
) -> Iterator[Callable[..., Journey]]:
    """journey(lang, viewport=DESKTOP) -> a Journey at the hub's root URL; its screenshots in
    <artifacts>/journeys/<test>/<lang>/."""
    started: list[Journey] = []
    test = slug(request.node.originalname, 60)

    def start(lang: str, viewport: dict[str, int] | None = None) -> Journey:
        shots = ARTIFACTS_ROOT / "journeys" / test / lang
        print(f"\njourney screenshots: {shots}")
        walk = Journey(browser, platform.hub_url + "/", lang, shots, dict(viewport or DESKTOP))
        started.append(walk)
        return walk.start()

    yield start
    for walk in started:
        walk.close()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Say where the journeys' screenshots and axe-core reports are (kept as test artifacts)."""
    shots = ARTIFACTS_ROOT / "journeys"
    if shots.exists():
        terminalreporter.write_line(f"journey screenshots and axe-core reports: {shots}")
