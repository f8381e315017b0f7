"""The journey harness itself, on two static pages: clicks by role and name, a screenshot per
step, axe-core on each new page, and a failure that names rule, element and page."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from site_config.runtime import free_port
from tests.journeys.journey import Journey

GOOD = """<!doctype html><html lang="en"><head><title>Start</title></head><body><main>
<h1>Start</h1><a href="bad.html">Next page</a></main></body></html>"""
# An image without a text alternative: axe-core's `image-alt`, impact critical.
BAD = """<!doctype html><html lang="en"><head><title>Bad</title></head><body><main>
<h1>Bad</h1><img src="x.png" id="nameless"></main></body></html>"""


@pytest.fixture
def site(tmp_path: Path) -> Iterator[str]:
    (tmp_path / "index.html").write_text(GOOD)
    (tmp_path / "bad.html").write_text(BAD)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


def test_a_journey_keeps_screenshots_and_fails_on_a_serious_violation(browser, site, tmp_path):
    shots = tmp_path / "shots"
    j = Journey(browser, site, "ru", shots).start()
    assert j.page.evaluate("navigator.language") == "ru-RU"
    j.click("link", "Next page")
    assert j.page.url.endswith("/bad.html")
    with pytest.raises(AssertionError) as failed:
        j.finish()
    message = str(failed.value)
    assert "critical image-alt" in message
    assert "#nameless" in message
    assert f"{site}bad.html" in message
    assert f"at {site}:" not in message  # the first page has none
    assert sorted(p.name for p in shots.glob("*.png")) == ["01-root.png", "02-link-Next-page.png"]
    assert "image-alt" in (shots / "02-axe.json").read_text()
