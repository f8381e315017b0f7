"""Every dashboard page, in real Chromium, shows no untranslated interface text: opened in one
language and switched to the other with the page's own switch, a Russian page has no Latin word
but the allowed proper names, an English page no Cyrillic.

Every notebook of labs/dashboards/ is visited: a new page needs only an entry in `VISITS` (or it
is opened with `DEFAULT_VISIT`), so pages added later are covered too.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from labs.board import DASHBOARDS
from labs.client import CommandRejected
from tests.browser.conftest import COURSE, KITS, LAMP, LAMP2, USERS, screenshot
from tests.browser.words import untranslated, visible_text
from tests.conftest import wait_until

pytestmark = pytest.mark.broker

# Proper names a page may show in either language: kit ids, people's usernames, course ids.
ALLOWED = {*KITS, *(u["name"] for u in USERS.values()), COURSE}
# A maintenance reason is typed by a lab admin: text of the page's language, not interface text.
REASON = {"en": "bulb replacement", "ru": "замена лампы"}


@dataclass(frozen=True)
class Visit:
    who: str  # whose Voilà server serves the page
    ready: str  # a selector that is on screen once the page is filled in
    query: dict[str, str] = field(default_factory=dict)
    public_board: bool = False  # served as the public board (`status` service) serves it


VISITS: dict[str, list[Visit]] = {
    "kit": [Visit("alice", ".smartlab-readings .smartlab-ts[data-ts]", {"kit": k}) for k in KITS],
    "overview": [
        Visit(
            "board",
            f".smartlab-board-row-{LAMP} .smartlab-availability[data-availability]",
            public_board=True,
        )
    ],
    "instructor": [Visit("carol", ".smartlab-course-sessions table")],
    "admin": [Visit("admin", ".smartlab-rejections table")],
}
DEFAULT_VISIT = Visit("admin", ".smartlab-language", {"kit": LAMP})


def visits() -> list[tuple[str, Visit]]:
    pages = sorted(path.stem for path in DASHBOARDS.glob("*.ipynb"))
    assert set(VISITS) <= set(pages), "VISITS names a page that labs/dashboards/ lacks"
    return [(page, visit) for page in pages for visit in VISITS.get(page, [DEFAULT_VISIT])]


def visit_id(item: tuple[str, Visit]) -> str:
    page, visit = item
    return "-".join([page, *visit.query.values()])


@pytest.fixture(scope="module")
def history(platform) -> Iterator[None]:
    """What the pages have to show: an ended session, a booking, a rejected command."""
    alice, bob, carol = (platform.client(u) for u in ("alice", "bob", "carol"))
    entry = alice.join(kit=LAMP2)
    session = entry.get("session") or wait_until(
        lambda: alice.queue_entry(entry["id"]).get("session"), timeout=30
    )
    alice.release(session["id"])
    with bob.session(LAMP2, progress=None) as kit, pytest.raises(CommandRejected):
        kit.set("dimming", 10)  # an interlock: dimming only in manual mode
    start = int(time.time()) + 3600
    booking = carol.book(LAMP, COURSE, start, start + 1800)
    try:
        yield
    finally:
        carol.cancel_booking(booking["id"])


@contextlib.contextmanager
def maintenance(platform, language: str) -> Iterator[None]:
    admin = platform.client("admin")
    admin.set_maintenance(LAMP2, True, REASON[language])
    try:
        yield
    finally:
        admin.set_maintenance(LAMP2, False)


def server(platform, visit: Visit):
    if not visit.public_board:
        return platform.voila(visit.who)
    watcher = platform.broker.provision_user("status-board")  # read-only observer
    return platform.voila(
        "board",
        key="board-words",  # no preheated kernels: each visit negotiates its own language
        extra_env={
            "SMARTLAB_BOARD_PUBLIC": "1",
            "SMARTLAB_MQTT_URL": platform.broker.address(watcher.username).url(),
        },
    )


def assert_in_language(page, language: str, where: str, timeout: float = 15.0) -> None:
    """Wait until the page reads wholly in `language` (a switch re-labels within a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        found = untranslated(visible_text(page), language, ALLOWED)
        if not found or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    screenshot(page, f"words-{where}-{language}")
    assert not found, f"{where} in {language}: " + "; ".join(found)


@pytest.mark.parametrize(("first", "then"), [("en", "ru"), ("ru", "en")])
@pytest.mark.parametrize("item", visits(), ids=visit_id)
def test_every_dashboard_reads_wholly_in_each_language(
    platform, history, open_page, item, first, then
):
    page_name, visit = item
    where = visit_id(item)
    url = server(platform, visit).page(f"{page_name}.ipynb", **visit.query)
    with maintenance(platform, first):
        page = open_page(url, locale={"en": "en-GB", "ru": "ru-RU"}[first])
        page.wait_for_selector(visit.ready, timeout=45_000)
        assert_in_language(page, first, where)
        page.click(f".smartlab-language button:has-text('{then.upper()}')")
    with maintenance(platform, then):  # the admin's reason, typed in the other language
        assert_in_language(page, then, where)
