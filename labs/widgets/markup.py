"""The one way the dashboards build HTML: a literal template, every value escaped.

Whatever a page shows comes from someone the viewer need not trust: kit, sensor and actuator
names, units and enum values from a kit's `$description`, actuator values (a holder's display
text), institutions, course names, maintenance reasons, rejection details, error messages and
the page's own query string. A `W.HTML` widget puts its value into the page as markup, on the
viewer's own Jupyter origin, so every such string must reach it as text.

    html("<b class='x' data-kit='{}'>{}</b>", kit_id, name)   # both escaped, quotes too
    join(rows)                                                 # Markup pieces kept, str escaped

Values are escaped by markupsafe (`&`, `<`, `>`, `"` and `'`), so they are safe between tags
and inside quoted attribute values; a value that is already `Markup` (made here) is kept.
Templates are string literals (tests/unit/test_markup.py checks that the dashboards build no
HTML in any other way).
"""

from __future__ import annotations

from collections.abc import Iterable

from markupsafe import Markup, escape

__all__ = ["Markup", "html", "join", "text"]


def html(template: str, /, *args: object, **values: object) -> Markup:
    """`template` (a literal, trusted) filled with `args`/`values`, each escaped unless Markup."""
    return Markup(template).format(*args, **values)


def join(parts: Iterable[object], separator: Markup | str = "") -> Markup:
    """The parts one after another; str parts (and a str separator) are escaped."""
    return escape(separator).join(parts)


def text(value: object) -> Markup:
    """A value as HTML text: what a `W.HTML` shows when it holds no markup of its own."""
    return escape(value)
