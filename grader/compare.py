"""Scores per cell from a gradebook, to compare two gradings of the same submissions
(`nbgrader autograde` against `smartlab grade` in the tests and the benchmark)."""

from __future__ import annotations

from typing import Any

from nbgrader.api import Gradebook

CellKey = tuple[str, str, str]  # student, notebook, grade cell id


def cell_scores(db_url: str, assignment: str, course_id: str = "") -> dict[CellKey, Any]:
    """{(student, notebook, grade_id): (auto_score, needs_manual_grade)} of every grade."""
    scores: dict[CellKey, Any] = {}
    with Gradebook(db_url, course_id) as gb:
        for submission in gb.find_assignment(assignment).submissions:
            for nb in submission.notebooks:
                for grade in nb.grades:
                    scores[(submission.student.id, nb.name, grade.name)] = (
                        grade.auto_score,
                        grade.needs_manual_grade,
                    )
    return scores


def differences(expected: dict[CellKey, Any], actual: dict[CellKey, Any]) -> list[str]:
    """One line per cell whose score differs (or that only one side has)."""
    lines = []
    for key in sorted(set(expected) | set(actual)):
        if expected.get(key) != actual.get(key):
            lines.append(
                f"{'/'.join(key)}: nbgrader {expected.get(key)}, smartlab {actual.get(key)}"
            )
    return lines
