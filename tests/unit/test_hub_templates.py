"""Our JupyterHub templates render over JupyterHub's own (as the hub loads them: ours first,
`templates/<name>` the original) and keep what axe-core asked for: white text on a brand colour
readable at 4.5:1 on the login page, and a named progress bar, in both languages, while a
server starts."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from jinja2 import ChoiceLoader, Environment, FileSystemLoader, PrefixLoader
from jupyterhub._data import DATA_FILES_PATH

OURS = Path(__file__).resolve().parents[2] / "hub_config" / "templates"
THEIRS = str(Path(DATA_FILES_PATH) / "templates")


def render(name: str) -> str:
    env = Environment(
        loader=ChoiceLoader(
            [
                PrefixLoader({"templates": FileSystemLoader([THEIRS])}, "/"),
                FileSystemLoader([str(OURS), THEIRS]),
            ]
        ),
        autoescape=True,
    )
    context: dict[str, Any] = {
        "static_url": lambda path, **_kw: f"/hub/static/{path}",
        "base_url": "/hub/",
        "prefix": "/hub/",
        "user": None,
        "xsrf": "x",
        "authenticator_login_url": "/hub/login",
        "authenticator": type("Auth", (), {"request_otp": False})(),
        "progress_url": "/hub/api/users/alice/server/progress",
        "login_url": "/hub/login",
        "logout_url": "/hub/logout",
        "parsed_scopes": set(),
        "services": [],
    }
    return env.get_template(name).render(**context)


def contrast(foreground: str, background: str) -> float:
    def luminance(colour: str) -> float:
        channels = [int(colour.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4)]
        r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
        return 0.2126 * r + 0.7152 * g + 0.0722 * b

    high, low = sorted((luminance(foreground), luminance(background)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def test_login_header_and_button_are_readable_white_on_brand_colour() -> None:
    page = render("login.html")
    header = re.search(r"\.auth-form-header \{ background: (#[0-9a-f]{6}); \}", page)
    button = re.search(r"--bs-btn-bg: (#[0-9a-f]{6});", page)
    hover = re.search(r"--bs-btn-hover-bg: (#[0-9a-f]{6});", page)
    assert header and button and hover, "login.html's colours are not in the page"
    for colour in (header[1], button[1], hover[1]):
        assert contrast("#ffffff", colour) >= 4.5, colour
    error = re.search(r"\.login_error \{ color: (#[0-9a-f]{6}); \}", page)
    assert error and contrast(error[1], "#ffffff") >= 4.5


def test_spawn_pending_names_its_progress_bar_in_both_languages() -> None:
    page = render("spawn_pending.html")
    assert 'id="progress-bar"' in page  # JupyterHub's page, extended
    label = re.search(
        r'<span id="smartlab-progress-name" class="visually-hidden">(.*?)</span>\s', page
    )
    assert label, "no name for the progress bar"
    assert "Your server is starting" in label[1] and "Ваш сервер запускается" in label[1]
    assert 'setAttribute("aria-labelledby", "smartlab-progress-name")' in page
    assert "Ваш сервер запускается." in page  # the page's message in Russian too


def test_spawn_pending_reads_out_the_line_and_labels_its_controls_in_both_languages() -> None:
    page = render("spawn_pending.html")
    assert 'message.setAttribute("aria-live", "polite")' in page
    for english, russian in (("Event log", "Журнал событий"), ("Stop Server", "Остановить сервер")):
        assert re.search(
            rf'innerHTML = \'<span lang="en" data-smartlab-lang="en">{english}</span>'
            rf'<span lang="ru" data-smartlab-lang="ru" hidden>{russian}</span>\';',
            page,
        ), english
