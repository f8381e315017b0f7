"""What the spawn page says while a server waits in line and starts, in the person's language.

JupyterHub's spawn page reads the spawner's `progress()` events ({"progress": 0-100,
"message": text}) from /hub/api/users/<name>/server/progress and shows the latest message under
its progress bar. Here: the person's place in the hub's line of starts (hub_config/spawn_line.py)
with an estimate from recently measured starts, then that their server is starting, then (as
JupyterHub's `progress_ready_hook`) that it is ready. Texts by key, in English and Russian, as
the front door's (labs/home/texts.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from html import escape
from typing import Any

from hub_config import spawn_line
from site_config.languages import DEFAULT

REFRESH_S = 2.0  # estimates count down even when nobody moves in the line

EN: dict[str, str] = {
    "place": "Your place in line: {place}. Servers start {slots} at a time; an estimate "
    "follows as soon as one has started.",
    "place_estimate": "Your place in line: {place}. Your server should be ready {ready}.",
    "starting": "Starting your server…",
    "starting_estimate": "Starting your server: it should be ready {ready}.",
    "ready": "Your server is ready; opening it…",
    "soon": "in a few seconds",
    "seconds": "in about {n} s",
    "minutes": "in about {n} min",
}

RU: dict[str, str] = {
    "place": "Ваше место в очереди: {place}. Серверы запускаются по {slots} одновременно; "
    "оценка времени появится, как только запустится первый.",
    "place_estimate": "Ваше место в очереди: {place}. Сервер будет готов {ready}.",
    "starting": "Запускаем ваш сервер…",
    "starting_estimate": "Запускаем ваш сервер: он будет готов {ready}.",
    "ready": "Сервер готов, открываем его…",
    "soon": "через несколько секунд",
    "seconds": "примерно через {n} с",
    "minutes": "примерно через {n} мин",
}

CATALOGUES: dict[str, dict[str, str]] = {"en": EN, "ru": RU}


def text(lang: str, key: str, **fields: Any) -> str:
    return CATALOGUES.get(lang, CATALOGUES[DEFAULT])[key].format(**fields)


def when(lang: str, seconds: float) -> str:
    """'in about 40 s', rounded so that the message does not flicker every second."""
    if seconds < 10:
        return text(lang, "soon")
    if seconds < 90:
        return text(lang, "seconds", n=int(-(-seconds // 5) * 5))
    return text(lang, "minutes", n=int(-(-seconds // 60)))


def describe(standing: spawn_line.Standing, lang: str) -> str:
    if standing.starting:
        if standing.ready_s is None:
            return text(lang, "starting")
        return text(lang, "starting_estimate", ready=when(lang, standing.ready_s))
    if standing.ready_s is None:
        return text(lang, "place", place=standing.ahead + 1, slots=standing.slots)
    return text(
        lang, "place_estimate", place=standing.ahead + 1, ready=when(lang, standing.ready_s)
    )


async def events(spawner: Any) -> AsyncIterator[dict[str, Any]]:
    """The spawner's progress events until its place in the line is given back (JupyterHub
    stops reading them anyway when the start is over)."""
    line = spawn_line.hub_line(spawner.concurrent_starts)
    first_ahead: int | None = None
    said, seen = "", False
    while True:
        standing = line.standing(spawner)
        if standing is None and seen:
            return
        if standing is not None:
            seen = True
            first_ahead = standing.ahead if first_ahead is None else first_ahead
            message = describe(standing, spawner.language)
            if message != said:
                said = message
                yield {"progress": _percent(standing, first_ahead), "message": message}
        await line.changed(REFRESH_S)


def _percent(standing: spawn_line.Standing, first_ahead: int) -> int:
    """10 on joining the line, up to 40 at its head, 50 while starting; 100 is JupyterHub's."""
    if standing.starting:
        return 50
    return 10 + 30 * (first_ahead - standing.ahead) // max(first_ahead, 1)


def ready_event(spawner: Any, event: dict[str, Any]) -> dict[str, Any]:
    """JupyterHub's `progress_ready_hook`: its 'Server ready at <url>' in the person's words."""
    message = text(getattr(spawner, "language", DEFAULT), "ready")
    url = str(event.get("url", ""))
    return {
        **event,
        "message": message,
        "html_message": f'{escape(message)} <a href="{escape(url)}">{escape(url)}</a>',
    }
