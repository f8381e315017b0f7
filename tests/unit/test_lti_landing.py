"""An LTI launch lands on the page it names only when that is a page of this hub."""

from __future__ import annotations

import pytest

from hub_config.lti.handlers import hub_page

HOST, BASE, LTI = "hub.example.edu", "/", "/hub/lti"


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("https://hub.example.edu/hub/home", "/hub/home"),
        ("/user/anna/lab?reset", "/user/anna/lab?reset"),
        ("https://hub.example.edu/services/status/", "/services/status/"),
    ],
)
def test_pages_of_this_hub_are_landed_on(target: str, expected: str) -> None:
    assert hub_page(target, HOST, BASE, LTI) == expected


@pytest.mark.parametrize(
    "target",
    [
        "/\\evil.example",  # browsers read /\ as //
        "/\\/evil.example",
        "https://hub.example.edu//evil.example/",
        "//evil.example/hub/home",
        "https://evil.example/hub/home",
        "javascript:alert(1)//hub/home",
        "/hub/home\\..\\..\\evil",
        "/hub/home\r\nLocation: https://evil.example",
        "/hub/lti/launch",  # the LTI pages themselves: no loop through the login
        "/hub/lti",
        "relative/page",
    ],
)
def test_anything_else_lands_on_the_default(target: str) -> None:
    assert hub_page(target, HOST, BASE, LTI) is None
