"""Faster nbgrader internals for the grading workers; results unchanged.

Profiling one worker showed nbgrader spending more CPU on its own bookkeeping than on running
the notebooks, in three places; each fix keeps nbgrader's code and answers as they are:

- nbgrader opens a new `Gradebook` (a new SQLAlchemy engine) a dozen times per submission, and
  an engine's compiled-statement cache dies with it, so every query was compiled again: one
  engine per database URL per process instead, whose connection pool `Gradebook.close()` keeps
  (it ends the session, as before);
- each of those Gradebooks also checks every table exists (`create_all`) and looks up the
  course: once per engine;
- `CheckCellMetadata` validates each cell's metadata with `jsonschema.validate`, which checks
  the schema itself on every call and is slow even then: valid metadata (nearly all) is
  recognised by the schema compiled with fastjsonschema (nbformat's validator), and invalid
  metadata raises jsonschema's very error (`best_match`), as before.

`skip_slow_optional_imports()` is for the grading command before it imports nbgrader: jsonschema
imports `rfc3987_syntax` when it is installed (an optional extra of jsonschema some Jupyter
package pulls in) to check the "iri" string formats, and that module builds a grammar on import:
about 1 s of every run's start, for formats no notebook schema uses.

`install()` is for processes that will not fork afterwards (the workers), since engines and
their connections must not cross a fork.
"""

from __future__ import annotations

import json
import sys
import types
from typing import Any

_installed = False


def skip_slow_optional_imports() -> None:
    if "jsonschema" not in sys.modules:  # once imported, it has decided
        sys.modules.setdefault("rfc3987_syntax", None)  # None: `import` raises ImportError


def install() -> None:
    global _installed
    if _installed:
        return
    _share_engines()
    _validators()
    _installed = True


def _share_engines() -> None:
    import nbgrader.api

    original = nbgrader.api.create_engine
    engines: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}

    def shared(url: Any, **kwargs: Any) -> Any:
        key = (str(url), tuple(sorted(kwargs.items())))
        if key not in engines:
            engines[key] = original(url, **kwargs)
        return engines[key]

    nbgrader.api.create_engine = shared
    close = nbgrader.api.Gradebook.close

    def close_session(self: Any) -> None:
        if self.engine in engines.values():
            self.db.remove()  # the shared engine and its pooled connections stay
        else:
            close(self)

    nbgrader.api.Gradebook.close = close_session
    metadata = nbgrader.api.Base.metadata
    create_all = metadata.create_all
    done: set[int] = set()

    def create_all_once(bind: Any = None, **kwargs: Any) -> None:
        if bind is None or id(bind) not in done:
            create_all(bind=bind, **kwargs)
            if bind is not None:
                done.add(id(bind))

    metadata.create_all = create_all_once

    # Each Gradebook also looks up, or adds, its course. On a shared engine the answer stands for
    # the rest of the run; `check_course` has no other caller than `__init__`.
    check_course = nbgrader.api.Gradebook.check_course
    courses: set[tuple[int, str]] = set()

    def check_course_once(self: Any, course_id: str = "default_course", **kwargs: Any) -> Any:
        key = (id(self.engine), course_id)
        if kwargs or key not in courses or self.engine not in engines.values():
            course = check_course(self, course_id=course_id, **kwargs)
            courses.add(key)
            return course
        return None  # known to exist: __init__ ignores the answer

    nbgrader.api.Gradebook.check_course = check_course_once


def _validators() -> None:
    import jsonschema
    import nbgrader.nbgraderformat.common as common

    cache: dict[str, tuple[Any, Any]] = {}

    def validate(instance: Any, schema: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        if args or kwargs:
            return jsonschema.validate(instance, schema, *args, **kwargs)
        key = json.dumps(schema, sort_keys=True)
        if key not in cache:
            cls = jsonschema.validators.validator_for(schema)
            cls.check_schema(schema)
            cache[key] = (_compiled(schema), cls(schema))
        fast, validator = cache[key]
        if fast is not None:
            try:
                fast(instance)
                return None  # valid: the common case, decided by compiled code
            except Exception:  # fastjsonschema.JsonSchemaException: jsonschema says why
                pass
        error = jsonschema.exceptions.best_match(validator.iter_errors(instance))
        if error is not None:
            raise error
        return None

    shim = types.SimpleNamespace(
        **{name: getattr(jsonschema, name) for name in dir(jsonschema) if not name.startswith("__")}
    )
    shim.validate = validate
    common.jsonschema = shim


def _compiled(schema: dict[str, Any]) -> Any:
    """The schema compiled by fastjsonschema (nbformat's validator), or None without it."""
    try:
        import fastjsonschema

        return fastjsonschema.compile(schema)
    except Exception:  # not installed, or a schema it cannot compile: jsonschema alone
        return None
