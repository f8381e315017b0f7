"""Synthetic submissions of an nbgrader assignment, for acceptance tests and benchmarks.

From the instructor's source notebooks (solutions between `### BEGIN SOLUTION` and
`### END SOLUTION`) and the released ones (the stubs students start from), make the notebooks a
class would hand in: each answer cell correct, left blank, wrong, failing, slow or looping, with
extra cells here and there, or with extra code appended (hostile submissions). The result is a
`submitted/<student>/<assignment>/` folder per student, as `nbgrader collect` leaves it.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbformat import NotebookNode
from nbformat.v4 import new_code_cell, new_markdown_cell

VARIANTS = ("correct", "blank", "wrong", "error", "slow", "loop")
BEGIN, END = "BEGIN SOLUTION", "END SOLUTION"
_INDENT = re.compile(r"^(\s*)")


@dataclass
class SyntheticPlan:
    """What one synthetic student hands in."""

    student: str
    answers: dict[str, str] = field(default_factory=dict)  # grade_id -> variant (else correct)
    extra_cells: bool = False
    append: dict[str, str] = field(default_factory=dict)  # grade_id -> code added to that answer
    final_cells: dict[str, str] = field(default_factory=dict)  # notebook file -> a last cell
    slow_seconds: float = 0.05
    missing: tuple[str, ...] = ()  # notebooks left out
    timestamp: str = "2026-01-15 10:00:00.000000 UTC"


def _solution_region(source: str) -> tuple[list[str], list[str], list[str], str] | None:
    """(before, solution, after, indent) of the first solution region, or None."""
    lines = source.split("\n")
    begin = next((i for i, line in enumerate(lines) if BEGIN in line), None)
    if begin is None:
        return None
    end = next((i for i in range(begin + 1, len(lines)) if END in lines[i]), len(lines))
    indent = _INDENT.match(lines[begin]).group(1)  # type: ignore[union-attr]
    return lines[:begin], lines[begin + 1 : end], lines[end + 1 :], indent


def answer(source: str, variant: str, slow_seconds: float = 0.05) -> str:
    """The source cell's code with every solution region rewritten as `variant`."""
    out = source
    while (region := _solution_region(out)) is not None:
        before, solution, after, indent = region
        if variant == "correct":
            body = solution
        elif variant == "blank":
            body = [f"{indent}# YOUR CODE HERE", f"{indent}raise NotImplementedError()"]
        elif variant == "wrong":
            body = [f"{indent}return None" if indent else f"{indent}pass"]
        elif variant == "error":
            body = [f"{indent}raise RuntimeError('a bug in the student code')"]
        elif variant == "slow":
            body = [
                f"{indent}import time as _time",
                f"{indent}_time.sleep({slow_seconds})",
                *solution,
            ]
        elif variant == "loop":
            body = [f"{indent}while True:", f"{indent}    pass"]
        else:
            raise ValueError(f"unknown variant {variant!r}; one of {', '.join(VARIANTS)}")
        out = "\n".join([*before, *body, *after])
    return out


def _text_answer(source: str, variant: str) -> str:
    region = _solution_region(source)
    if region is None:
        return source
    before, solution, after, _ = region
    body = solution if variant == "correct" else ["YOUR ANSWER HERE"]
    return "\n".join([*before, *body, *after])


def student_notebook(
    source: NotebookNode, released: NotebookNode, plan: SyntheticPlan
) -> NotebookNode:
    """The released notebook with the answers of `plan` filled in."""
    nb = nbformat.from_dict(released)
    by_id = {c.metadata.get("nbgrader", {}).get("grade_id"): c for c in source.cells}
    rng = random.Random(plan.student)
    cells = []
    for cell in nb.cells:
        meta = cell.metadata.get("nbgrader", {})
        grade_id = meta.get("grade_id")
        if meta.get("solution") and grade_id in by_id:
            variant = plan.answers.get(grade_id, "correct")
            original = by_id[grade_id].source
            if cell.cell_type == "code":
                cell.source = answer(original, variant, plan.slow_seconds)
            else:
                cell.source = _text_answer(original, variant)
            if grade_id in plan.append:
                cell.source = cell.source.rstrip("\n") + "\n\n" + plan.append[grade_id]
        cells.append(cell)
        if plan.extra_cells and meta.get("solution") and rng.random() < 0.5:
            cells.append(new_code_cell("# trying things out\nprint('scratch', 6 * 7)"))
            cells.append(new_markdown_cell("A note to myself."))
    nb.cells = cells
    return nb


def _with_final_cell(nb: NotebookNode, code: str | None) -> NotebookNode:
    if code:
        nb.cells.append(new_code_cell(code))
    return nb


def solution_ids(source: NotebookNode) -> list[str]:
    return [
        c.metadata["nbgrader"]["grade_id"]
        for c in source.cells
        if c.metadata.get("nbgrader", {}).get("solution") and c.cell_type == "code"
    ]


def write_submissions(course: Path, assignment: str, plans: Iterable[SyntheticPlan]) -> list[str]:
    """Write `submitted/<student>/<assignment>/` for each plan; returns the students."""
    course = Path(course)
    source_dir = course / "source" / assignment
    release_dir = course / "release" / assignment
    if not release_dir.is_dir():
        raise FileNotFoundError(
            f"{release_dir}: run `nbgrader generate_assignment {assignment}` first"
        )
    notebooks = sorted(p.name for p in release_dir.glob("*.ipynb"))
    sources = {n: nbformat.read(source_dir / n, as_version=4) for n in notebooks}
    released = {n: nbformat.read(release_dir / n, as_version=4) for n in notebooks}
    students = []
    for plan in plans:
        target = course / "submitted" / plan.student / assignment
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(release_dir, target, ignore=shutil.ignore_patterns("*.ipynb"))
        for name in notebooks:
            if name in plan.missing:
                continue
            nb = student_notebook(sources[name], released[name], plan)
            nbformat.write(_with_final_cell(nb, plan.final_cells.get(name)), target / name)
        (target / "timestamp.txt").write_text(plan.timestamp)
        students.append(plan.student)
    return students


def class_plans(
    course: Path, assignment: str, count: int, seed: int = 1, mix: dict[str, float] | None = None
) -> list[SyntheticPlan]:
    """`count` students with a realistic mix of answers: most correct, some blank, wrong,
    failing or slow (no endless loops unless `mix` asks for them), a third with extra cells."""
    mix = mix or {"correct": 0.55, "blank": 0.1, "wrong": 0.15, "error": 0.1, "slow": 0.1}
    names, weights = list(mix), list(mix.values())
    source_dir = Path(course) / "source" / assignment
    ids = [
        gid
        for nb in sorted(source_dir.glob("*.ipynb"))
        for gid in solution_ids(nbformat.read(nb, as_version=4))
    ]
    rng = random.Random(seed)
    plans = []
    for i in range(count):
        answers = {gid: rng.choices(names, weights)[0] for gid in ids}
        plans.append(
            SyntheticPlan(
                student=f"student{i:04d}", answers=answers, extra_cells=rng.random() < 0.33
            )
        )
    return plans
