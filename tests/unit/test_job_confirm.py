"""`smartlab jobs confirm|report`: which cell's grade is the twin score, and what is a gap."""

from __future__ import annotations

import nbformat

from hub_config.job_confirm import ReportRow, format_report, gap, twin_score_cell
from tests.conftest import REPO

LIGHTING = REPO / "courses/smart-lighting/source/02-adaptive-dimming/adaptive_dimming.ipynb"


def test_the_twin_score_is_the_graded_twin_score_cell_the_controller_cell() -> None:
    nb = nbformat.read(str(LIGHTING), as_version=4)
    assert twin_score_cell(nb, "hil") == "hil_tests"
    assert twin_score_cell(nb, "no-such-cell") is None


def test_a_gap_is_more_than_a_fifth_of_the_twin_score_and_a_failed_kit_run_counts_zero() -> None:
    assert not gap(1.0, 0.8) and gap(1.0, 0.79) and gap(1.0, None)
    assert not gap(0.0, 0.0) and gap(0.0, 0.3)  # doing nothing on the twin, something on the kit
    assert not gap(None, 0.5)  # no twin score: nothing to compare


def test_the_report_shows_both_scores_per_student_and_flags_the_gap() -> None:
    text = format_report(
        [
            ReportRow("ann", 1.0, 0.95, "completed", False),
            ReportRow("bob", 1.0, None, "crashed", True),
        ]
    )
    header, ann, bob = text.splitlines()
    assert header.split() == ["student", "twin", "kit", "gap", "kit", "run"]
    assert ann.split() == ["ann", "1.000", "0.950", "completed"]
    assert bob.split() == ["bob", "1.000", "-", "GAP", "crashed"]
