"""The interface language of every page people read: Russian or English.

One rule everywhere (front door, hub pages, dashboards, the board, the lab service's messages):
an explicit `?lang=` wins, then the switch a person last used (the `smartlab-lang` cookie, path
`/`, so every page of the origin shares it), then the browser's `Accept-Language`, then English.
"""

from __future__ import annotations

LANGUAGES = ("en", "ru")
DEFAULT = "en"
COOKIE = "smartlab-lang"  # set by every page's language switch; read by every page
COOKIE_MAX_AGE = 365 * 24 * 3600


def supported(value: str | None) -> str | None:
    """`value`'s language if it is one of ours ("ru-RU" -> "ru"), else None."""
    lang = (value or "").strip().lower()[:2]
    return lang if lang in LANGUAGES else None


def negotiate(
    accept_language: str | None, requested: str | None = None, cookie: str | None = None
) -> str:
    """The interface language: `requested` (from ?lang=) if supported, else the `cookie`'s
    (the last switch), else the best supported entry of an Accept-Language header by its q
    weights, else English."""
    for chosen in (requested, cookie):
        if supported(chosen):
            return supported(chosen)  # type: ignore[return-value]
    ranked: list[tuple[float, int, str]] = []
    for position, part in enumerate((accept_language or "").split(",")):
        tag, _, params = part.strip().partition(";")
        q = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        lang = supported(tag)
        if lang and q > 0:
            ranked.append((q, -position, lang))  # equal weights: the earlier entry wins
    return max(ranked)[2] if ranked else DEFAULT
