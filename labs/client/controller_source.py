"""A controller written in a notebook, as the text an experiment job carries.

`inspect.getsource` finds a function's cell through its code object (IPython puts every cell in
`linecache`), but not a class defined in `__main__` before Python 3.13: it looks for the class in
the module's file, which a notebook does not have. A class is found instead through its methods'
code objects: their cell holds the `class` statement above them.
"""

from __future__ import annotations

import ast
import inspect
import linecache
import textwrap
from typing import Any


class ControllerSourceError(ValueError):
    """The object's source cannot be found, or is not a controller."""


def controller_source(obj: Any) -> tuple[str, str]:
    """(source, entry) of a controller: a function `(readings, t, **inputs)` or a class with a
    `step(readings, t)` method, defined in a notebook cell or a module."""
    if inspect.isclass(obj):
        if not callable(getattr(obj, "step", None)):
            raise ControllerSourceError(f"class {obj.__name__} has no step(readings, t) method")
        source = _class_source(obj)
    elif inspect.isfunction(obj):
        try:
            source = inspect.getsource(obj)
        except (OSError, TypeError) as err:
            raise ControllerSourceError(f"no source for {obj.__name__}: {err}") from None
    else:
        raise ControllerSourceError(
            f"a controller is a function or a class with a step method, not {type(obj).__name__}"
        )
    source = textwrap.dedent(source)
    entry = obj.__name__
    if obj.__name__ == "<lambda>":
        raise ControllerSourceError("a lambda has no name to run: define a function with def")
    _check_defines(source, entry)
    return source, entry


def _class_source(cls: type) -> str:
    try:
        return inspect.getsource(cls)
    except (OSError, TypeError):
        pass  # a class of __main__ (a notebook): found through its methods below
    for code in _method_codes(cls):
        lines = linecache.getlines(code.co_filename)
        if not lines:
            continue
        # The nearest `class <Name>` at or above the method's first line, at a lesser indent.
        for start in range(code.co_firstlineno - 1, -1, -1):
            stripped = lines[start].lstrip()
            if (
                stripped.startswith(f"class {cls.__name__}")
                and stripped[len(f"class {cls.__name__}")] in "(:"
            ):
                return "".join(inspect.getblock(lines[start:]))
    raise ControllerSourceError(
        f"no source for class {cls.__name__}: define it in a notebook cell or a module"
    )


def _method_codes(cls: type) -> list[Any]:
    codes = []
    for value in vars(cls).values():
        func = getattr(value, "__func__", value)  # staticmethod / classmethod
        code = getattr(func, "__code__", None)
        if code is not None:
            codes.append(code)
    return codes


def _check_defines(source: str, entry: str) -> None:
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ControllerSourceError(f"the controller's source does not parse: {err}") from None
    names = {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
    }
    if entry not in names:
        raise ControllerSourceError(f"the source found does not define {entry}")
