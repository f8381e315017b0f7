"""A person walking the platform in a real browser: opened once at the hub's root URL, then
only clicking what is visible (links and buttons by accessible role and name) and filling
labelled fields. Every step leaves a screenshot, every new page an axe-core report.

Screenshots go to `$SMARTLAB_ARTIFACTS/journeys/<test>/<lang>/NN-<step>.png` (default
`test-artifacts/`, git-ignored, where the browser tests keep theirs too). axe-core is the copy
bundled by the `axe-playwright-python` package (from the lock): nothing is downloaded at test
time.
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Error as PlaywrightError

# Accept-Language as a browser set to that language sends it.
LOCALES = {"ru": ("ru-RU", "ru-RU,ru;q=0.9,en;q=0.5"), "en": ("en-US", "en-US,en;q=0.9")}
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1280, "height": 900}
BLOCKING = ("serious", "critical")  # axe impacts a journey page must not have
# Pages that are wholly another project's: nbgrader's formgrader (a course's service; it builds
# icon-only links in its own scripts, and nbgrader 0.9.6 takes no template, CSS or script from a
# deployment) and JupyterLab's own interface (its toolbar buttons carry ARIA attributes their
# role does not allow). Their findings are recorded and printed with the journey; they are
# those projects' to fix, not a failure of ours.
THIRD_PARTY = re.compile(r"/services/[^/]+/formgrader|/user/[^/]+/lab(/|\?|$)")
# Seconds a page may take to settle after a click (a server spawn takes longer: see `wait`).
SETTLE_S = 5.0
# Pages that keep a connection busy (JupyterLab, Voilà's websockets) never reach network
# idle: give up waiting for it after this long.
IDLE_S = 3.0

Name = str | re.Pattern[str]


def slug(text: str, limit: int = 40) -> str:
    """A file-name piece: letters (Cyrillic too), digits and dashes."""
    return re.sub(r"[^\w]+", "-", text, flags=re.UNICODE).strip("-_")[:limit] or "step"


def label(name: Name) -> str:
    return name.pattern if isinstance(name, re.Pattern) else name


@dataclass
class Violation:
    rule: str
    impact: str
    url: str
    targets: list[str]
    help: str

    def __str__(self) -> str:
        return f"{self.impact} {self.rule} at {self.url}: {', '.join(self.targets)} ({self.help})"


@dataclass
class Journey:
    """One person's walk: `page` is the tab in front (a new tab, once followed, replaces it)."""

    browser: Any
    root_url: str
    lang: str
    shots: Path
    viewport: dict[str, int] = field(default_factory=lambda: dict(DESKTOP))
    record: bool = True  # screenshots and axe-core; off for timing (bench/front_door.py)
    violations: list[Violation] = field(default_factory=list)
    checked: set[str] = field(default_factory=set)
    steps: int = 0
    page: Any = None
    context: Any = None

    def start(self) -> Journey:
        """Open the root URL: the only address this journey ever types."""
        locale, accept = LOCALES[self.lang]
        if self.record:
            self.shots.mkdir(parents=True, exist_ok=True)
            for old in self.shots.glob("*"):
                old.unlink()
        self.context = self.browser.new_context(
            locale=locale, viewport=self.viewport, extra_http_headers={"Accept-Language": accept}
        )
        self.context.set_default_timeout(SETTLE_S * 6000)
        self.page = self.context.new_page()
        self.page.goto(self.root_url)
        self._arrived("root")
        return self

    # ------------------------------------------------------------ what a person does

    def click(self, role: str, name: Name, *, exact: bool = False, wait: float = 0.0) -> None:
        """Click the visible element of `role` ("link", "button", "tab", "menuitem", …) whose
        accessible name is `name` (a substring, or a regex); `wait` seconds more for what
        follows (a server spawn)."""
        self.find(role, name, exact=exact).click()
        self._arrived(f"{role}-{label(name)}", wait)

    def click_text(self, text: Name, *, wait: float = 0.0) -> None:
        """Click visible text that has no role of its own (a tile, a list entry)."""
        self.page.get_by_text(text).locator("visible=true").first.click()
        self._arrived(f"text-{label(text)}", wait)

    def click_on(self, element: Any, what: str, *, wait: float = 0.0) -> None:
        """Click a visible element that has no accessible name of its own (a third party's
        icon link): the caller finds it; prefer `click`."""
        element.click()
        self._arrived(what, wait)

    def fill(self, field_label: Name, value: str) -> None:
        """Type into the field labelled `field_label` (by its label, else its placeholder)."""
        field = self.page.get_by_label(field_label).or_(self.page.get_by_placeholder(field_label))
        field.locator("visible=true").first.fill(value)
        self._arrived(f"fill-{label(field_label)}", check=False)

    def press(self, key: str) -> None:
        self.page.keyboard.press(key)
        self._arrived(f"key-{key}")

    @contextlib.contextmanager
    def new_tab(self, wait: float = 0.0) -> Iterator[None]:
        """The click inside opens a new tab; the journey goes on in it."""
        with self.page.expect_popup() as popup:
            yield
        self.page = popup.value
        self._arrived("new-tab", wait)

    def find(self, role: str, name: Name, *, exact: bool = False) -> Any:
        """The one visible element of `role` named `name` (the first if several are)."""
        return (
            self.page.get_by_role(role, name=name, exact=exact or None)
            .locator("visible=true")
            .first
        )

    def sees(self, text: Name, timeout: float = SETTLE_S * 6) -> Any:
        """Wait until `text` is visible on the page; return its locator."""
        found = self.page.get_by_text(text).locator("visible=true").first
        found.wait_for(state="visible", timeout=timeout * 1000)
        return found

    def snap(self, what: str) -> None:
        """A screenshot now (a state worth keeping that no click led to)."""
        if self.record:
            self._screenshot(what)

    # ------------------------------------------------------------ after every step

    def _arrived(self, what: str, wait: float = 0.0, check: bool = True) -> None:
        if not self.record:
            return
        with contextlib.suppress(Exception):  # a page that keeps loading is still a page
            self.page.wait_for_load_state("load", timeout=(SETTLE_S + wait) * 1000)
        with contextlib.suppress(Exception):
            self.page.wait_for_load_state("networkidle", timeout=(IDLE_S + wait) * 1000)
        self._screenshot(what)
        if check:
            self._check_page()

    def _screenshot(self, what: str) -> Path:
        self.steps += 1
        path = self.shots / f"{self.steps:02d}-{slug(what)}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def _check_page(self) -> None:
        """axe-core on a page not checked yet (by URL without its fragment)."""
        for attempt in range(3):
            url = self.page.url.split("#", 1)[0]
            if url in self.checked:
                return
            try:
                found = run_axe(self.page)
                break
            except PlaywrightError as err:
                # A page still on its way (the spawn page hands over to the server when it
                # is ready) navigates under axe: check the page it arrives at instead.
                navigated = ("context was destroyed", "axe is not defined")  # a new page
                if not any(why in str(err) for why in navigated) or attempt == 2:
                    raise
                with contextlib.suppress(Exception):
                    self.page.wait_for_load_state("load", timeout=SETTLE_S * 1000)
        self.checked.add(url)
        (self.shots / f"{self.steps:02d}-axe.json").write_text(
            json.dumps({"url": url, "violations": found}, indent=1, ensure_ascii=False)
        )
        for v in found:
            if v.get("impact") in BLOCKING:
                targets = [json.dumps(n.get("target")) for n in v.get("nodes", [])][:5]
                violation = Violation(v["id"], v["impact"], url, targets, v.get("help", ""))
                if THIRD_PARTY.search(url):
                    print(f"third-party page, recorded: {violation}")
                else:
                    self.violations.append(violation)

    def finish(self) -> None:
        """End of the walk: no serious or critical accessibility violation on any page."""
        self.close()
        assert not self.violations, (
            f"{len(self.violations)} serious/critical axe-core violations "
            f"(reports next to the screenshots in {self.shots}):\n"
            + "\n".join(map(str, self.violations))
        )

    def close(self) -> None:
        if self.context is not None:
            with contextlib.suppress(Exception):
                self.context.close()
            self.context = None


AXE = Axe()


def run_axe(page: Any) -> list[dict[str, Any]]:
    """axe-core's violations on `page`, its frames included (axe is put into each)."""
    for frame in page.frames:
        with contextlib.suppress(Exception):  # a frame gone meanwhile
            frame.evaluate(AXE.axe_script)
    results = page.evaluate("axe.run(document, {resultTypes: ['violations']})")
    return results.get("violations", [])
