"""Hidden tests stay hidden: out of feedback, sources and outputs alike.

nbgrader's `ClearHiddenTests` removes the hidden regions from the cells' *source* (nbgrader
#917: without it in `GenerateFeedback.preprocessors` they show in feedback). The *outputs* still
show them: a failing hidden assert prints its line in the traceback, and student code that ran
before can capture later cells' code (an IPython input transformer sees every cell) and print it
in a cell of its own. `HideHiddenTests` therefore also removes every output line that repeats a
line of a hidden region (or a region delimiter), everywhere in the notebook, and marks where it
did. An assertion's message stays: its author chose what it tells the student.

`hidden_lines` and `leaks` let a release (or any notebook) be checked for hidden test code.
"""

from __future__ import annotations

import re
from typing import Any

from nbconvert.exporters.exporter import ResourcesDict
from nbformat import NotebookNode
from nbgrader.preprocessors import ClearHiddenTests

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
TRACEBACK_PREFIX = re.compile(r"^\s*(?:-+>\s*)?\d*\s")  # IPython's "----> 12 " / "     11 "
MIN_LINE = 8  # shorter lines ("pass", "else:") carry nothing worth hiding and match everywhere
REDACTED = "[hidden test code removed]"


def hidden_lines(
    nb: NotebookNode, begin: str = "BEGIN HIDDEN TESTS", end: str = "END HIDDEN TESTS"
) -> set[str]:
    """The stripped lines inside hidden test regions of `nb` (long enough to mean something)."""
    found: set[str] = set()
    for cell in nb.cells:
        inside = False
        for line in cell.source.split("\n"):
            if begin in line:
                inside = True
            elif end in line:
                inside = False
            elif inside and len(line.strip()) >= MIN_LINE:
                found.add(line.strip())
    return found


def _mentions(text: str, lines: set[str]) -> bool:
    plain = ANSI.sub("", text)
    return any(line in plain for line in lines)


def leaks(nb: NotebookNode, lines: set[str]) -> list[str]:
    """Where `nb` shows any of `lines` (hidden test code): 'cell 3 source', 'cell 5 output'."""
    places = []
    for number, cell in enumerate(nb.cells, 1):
        if _mentions(cell.source, lines) or "HIDDEN TESTS" in cell.source:
            places.append(f"cell {number} source")
        for output in cell.get("outputs", []):
            if _mentions(_output_text(output), lines):
                places.append(f"cell {number} output")
                break
    return places


def _output_text(output: NotebookNode) -> str:
    parts = [output.get("text", ""), output.get("evalue", ""), *output.get("traceback", [])]
    for value in output.get("data", {}).values():
        parts.append(
            value if isinstance(value, str) else "".join(value) if isinstance(value, list) else ""
        )
    return "\n".join(str(p) for p in parts)


class HideHiddenTests(ClearHiddenTests):
    """ClearHiddenTests for feedback, plus the hidden lines removed from every output."""

    def preprocess(
        self, nb: NotebookNode, resources: ResourcesDict
    ) -> tuple[NotebookNode, ResourcesDict]:
        self._lines = hidden_lines(nb, self.begin_test_delimeter, self.end_test_delimeter)
        return super().preprocess(nb, resources)

    def preprocess_cell(
        self, cell: NotebookNode, resources: ResourcesDict, cell_index: int
    ) -> tuple[NotebookNode, ResourcesDict]:
        cell, resources = super().preprocess_cell(cell, resources, cell_index)
        if cell.cell_type == "code":
            cell.outputs = [self._redact(o) for o in cell.get("outputs", [])]
        return cell, resources

    def _redact(self, output: NotebookNode) -> NotebookNode:
        markers = {self.begin_test_delimeter, self.end_test_delimeter}
        kind = output.get("output_type")
        if kind == "stream":
            output.text = self._clean_text(output.text)
        elif kind == "error":
            output.evalue = self._clean_text(output.evalue)
            output.traceback = [
                self._clean_text(entry, traceback=True) for entry in output.traceback
            ]
        elif kind in ("display_data", "execute_result"):
            for mime, value in list(output.get("data", {}).items()):
                if isinstance(value, str) and _mentions(value, self._lines | markers):
                    output.data[mime] = (
                        self._clean_text(value) if mime.startswith("text/") else REDACTED
                    )
        return output

    def _clean_text(self, text: Any, traceback: bool = False) -> Any:
        markers = {self.begin_test_delimeter, self.end_test_delimeter}
        if not isinstance(text, str) or not _mentions(text, self._lines | markers):
            return text
        kept, removed = [], False
        for line in text.split("\n"):
            plain = ANSI.sub("", line)
            code = TRACEBACK_PREFIX.sub("", plain, count=1).strip() if traceback else plain
            if any(hidden in code or hidden in plain for hidden in self._lines | markers):
                if not removed:
                    kept.append(REDACTED)
                removed = True
                continue
            removed = False
            kept.append(line)
        return "\n".join(kept)
