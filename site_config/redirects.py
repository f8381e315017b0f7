"""Where the platform may send a browser after a login: a path of this site, nothing else.

A browser reads `//host`, `/\\host` and `\\\\host` as another site, and a target that is
percent-decoded once more on the way (`/%5Chost`) can become one, so a redirect target is
taken only as a plain path under the expected prefix, without backslashes or control
characters in either its raw or its decoded form.
"""

from __future__ import annotations

from urllib.parse import unquote, urlsplit


def _unsafe(text: str) -> bool:
    return any(c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in text)


def local_path(target: str, base_url: str = "/") -> str | None:
    """`target` if it is a path (and query) of this site under `base_url`, else None."""
    if not isinstance(target, str) or not target.startswith("/"):
        return None
    decoded = unquote(target)
    if _unsafe(target) or _unsafe(decoded) or decoded.startswith("//"):
        return None
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not parts.path.startswith(base_url):
        return None
    return target
