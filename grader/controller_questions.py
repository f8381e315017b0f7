"""The controller questions of a graded notebook: what the platform runs on a real kit.

A course marks a controller question in its source notebook: the solution cell carries the tag
`controller` and `metadata.smartlab.controller = {"entry", "model", "duration_s"}` (the name
the cell defines, the kit model, the run's length). After autograding, the platform takes each
submission's cell of that grade id and submits its text as an experiment job
(`{"source", "entry"}`), so the kit runs exactly the code the twin graded.

The specs come from the course's own source notebook, never from the submission: a student
can edit their notebook's metadata, not the course's. The submission only supplies the
cell's source, which must parse and define the entry at its top level.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from typing import Any

CONTROLLER_TAG = "controller"
METADATA_KEY = "smartlab"


class ControllerQuestionError(ValueError):
    """A controller question that cannot be run: one line saying what is wrong."""


@dataclass(frozen=True)
class ControllerSpec:
    """A controller question as the course declares it."""

    grade_id: str
    entry: str
    model: str
    duration_s: float


@dataclass(frozen=True)
class ControllerQuestion:
    """One submission's answer to a controller question, ready to submit as a job."""

    grade_id: str
    entry: str
    model: str
    duration_s: float
    source: str

    def job_controller(self) -> dict[str, str]:
        """The job's `controller` field (POST /api/jobs)."""
        return {"source": self.source, "entry": self.entry}


def _cells(nb: Any) -> list[Any]:
    return list(nb["cells"] if isinstance(nb, dict) else nb.cells)


def _grade_id(cell: Any) -> str | None:
    return (cell.get("metadata", {}).get("nbgrader") or {}).get("grade_id")


def _source(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source)


def controller_specs(source_nb: Any) -> list[ControllerSpec]:
    """The controller questions a course's source notebook declares (tagged cells)."""
    specs = []
    for cell in _cells(source_nb):
        metadata = cell.get("metadata", {})
        if CONTROLLER_TAG not in (metadata.get("tags") or []):
            continue
        grade_id = _grade_id(cell)
        declared = (metadata.get(METADATA_KEY) or {}).get("controller") or {}
        try:
            spec = ControllerSpec(
                grade_id=str(grade_id),
                entry=str(declared["entry"]),
                model=str(declared["model"]),
                duration_s=float(declared["duration_s"]),
            )
        except (KeyError, TypeError, ValueError):
            raise ControllerQuestionError(
                f"cell {grade_id!r}: metadata.{METADATA_KEY}.controller needs entry, model "
                "and duration_s"
            ) from None
        if grade_id is None or not spec.entry.isidentifier():
            raise ControllerQuestionError(f"cell {grade_id!r}: no grade id or a bad entry name")
        specs.append(spec)
    return specs


def _defines(source: str, entry: str) -> bool:
    try:
        tree = ast.parse(source)
    except SyntaxError as err:
        raise ControllerQuestionError(
            f"the controller cell does not parse: line {err.lineno}"
        ) from None
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
    return any(isinstance(node, kinds) and node.name == entry for node in tree.body)


def controller_question(submission_nb: Any, spec: ControllerSpec) -> ControllerQuestion:
    """The submission's answer to `spec`: its cell of that grade id, checked to define the
    entry. Raises ControllerQuestionError (one line) when it cannot be run."""
    cell = next((c for c in _cells(submission_nb) if _grade_id(c) == spec.grade_id), None)
    if cell is None:
        raise ControllerQuestionError(f"the submission has no cell {spec.grade_id!r}")
    source = _source(cell)
    if not _defines(source, spec.entry):
        raise ControllerQuestionError(
            f"cell {spec.grade_id!r} does not define {spec.entry} at its top level"
        )
    return ControllerQuestion(spec.grade_id, spec.entry, spec.model, spec.duration_s, source)


def controller_questions(source_nb: Any, submission_nb: Any) -> list[ControllerQuestion]:
    """Every controller question of a course notebook, answered by one submission (a
    question the submission cannot answer raises; see `controller_question`)."""
    return [controller_question(submission_nb, spec) for spec in controller_specs(source_nb)]
