"""The dashboards build HTML only through labs.widgets.markup: literal templates, escaped values.

The browser test (tests/security/test_hostile_strings.py) pushes hostile strings through each
input; this one keeps new code from building markup another way (an f-string, `+`, `%`,
`str.format`, `html.escape` by hand, `Markup(...)` of data), where one forgotten escape is a
stored script on another user's origin.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from labs.widgets.markup import Markup, html, join, text

ROOT = Path(__file__).resolve().parents[2]
HELPER = ROOT / "labs" / "widgets" / "markup.py"
PAGES = [*sorted((ROOT / "labs" / "widgets").glob("*.py")), ROOT / "labs" / "pages.py"]
TAG = re.compile(r"<\s*/?\s*[A-Za-z]")
HOSTILE = "<img src=x onerror=alert(1)>'\"&"


def docstrings(tree: ast.AST) -> set[int]:
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def templates(tree: ast.AST) -> set[int]:
    """The string literals given to html() as its template (first argument)."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.args:
            found |= {id(node.args[0])} if node.func.id == "html" else set()
    return found


def escapes_by_hand(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(a.name == "html" for a in node.names)
    return isinstance(node, ast.ImportFrom) and node.module in ("html", "markupsafe")


def problems(path: Path, root: Path = ROOT) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    allowed = docstrings(tree) | templates(tree)
    where = path.relative_to(root)
    found = []
    for node in ast.walk(tree):
        line = f"{where}:{getattr(node, 'lineno', '?')}"
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if TAG.search(node.value) and id(node) not in allowed:
                found.append(f"{line}: markup outside an html() template: {node.value[:40]!r}")
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            if node.func.id == "html" and not (
                node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append(f"{line}: html() needs a literal template")
            if node.func.id == "Markup":
                found.append(f"{line}: Markup(...) trusts its argument; use html()")
        elif escapes_by_hand(node):
            found.append(f"{line}: escape through labs.widgets.markup, not by hand")
    return found


@pytest.mark.parametrize("path", [p for p in PAGES if p != HELPER], ids=lambda p: p.name)
def test_pages_build_html_only_through_the_helper(path: Path) -> None:
    assert problems(path) == []


def test_the_check_finds_html_built_by_hand(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import html\n"
        "from markupsafe import Markup\n"
        "a = f'<b>{name}</b>'\n"
        "b = '<i>' + name + '</i>'\n"
        "c = html(template, name)\n"
        "d = Markup(name)\n"
        "e = html('<b>{}</b>', name)\n"
    )
    flagged = {int(f.split(":")[1]) for f in problems(sample, tmp_path)}
    assert flagged == {1, 2, 3, 4, 5, 6}  # line 7 is the one right way


def test_values_are_escaped_in_text_and_attributes() -> None:
    out = html("<b title='{}' data-x=\"{}\">{}</b>", HOSTILE, HOSTILE, HOSTILE)
    assert "<img" not in out and "'\"" not in out
    assert out.count("&lt;img src=x onerror=alert(1)&gt;&#39;&#34;&amp;") == 3
    assert text(HOSTILE) == "&lt;img src=x onerror=alert(1)&gt;&#39;&#34;&amp;"


def test_markup_made_by_the_helper_is_kept_and_text_escaped_once() -> None:
    inner = html("<i>{}</i>", "a<b")
    assert html("<p>{}</p>", inner) == "<p><i>a&lt;b</i></p>"
    assert join([inner, "<x>"], html("<br>")) == "<i>a&lt;b</i><br>&lt;x&gt;"
    assert isinstance(join([]), Markup) and join([]) == ""
    assert html("{:.3f}", 1.23456) == "1.235"
