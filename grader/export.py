"""Gradebook exports: nbgrader's CSV per course and per institution, and totals for an LMS.

The rows are `nbgrader export`'s (CsvExportPlugin: one per student and assignment, score after
the late penalty, 0 for a missing submission), sorted by assignment and student, plus the
student's institution from the site file (`people[].institution`). The totals file has one
row per student and one column per assignment, then the total and the percentage: the shape
Moodle's "Import grades from CSV" and Canvas's gradebook import map onto grade items (match
students on `username` or `email`).

`InstitutionCsvExportPlugin` is also an nbgrader export plugin:
`nbgrader export --exporter=grader.export.InstitutionCsvExportPlugin --to grades.csv`.
"""

from __future__ import annotations

import csv
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nbgrader.api import Gradebook, MissingEntry
from nbgrader.plugins import ExportPlugin
from traitlets import Unicode

NBGRADER_COLUMNS = [
    "assignment",
    "duedate",
    "timestamp",
    "student_id",
    "last_name",
    "first_name",
    "email",
    "raw_score",
    "late_submission_penalty",
    "score",
    "max_score",
]
COLUMNS = [*NBGRADER_COLUMNS, "institution"]
UNKNOWN = "unknown"  # students the site file does not list


@dataclass(frozen=True)
class Row:
    values: dict[str, Any]

    @property
    def institution(self) -> str:
        return str(self.values["institution"])


def institutions(site_path: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """username -> institution id, from the site file ($SMARTLAB_SITE or the demo site)."""
    from site_config.paths import default_site
    from site_config.site import load_site

    path = site_path or default_site()
    site = load_site(Path(path))
    return {p.username: p.institution for p in site.people}


def gradebook_rows(gradebook: Gradebook, where: dict[str, str]) -> list[Row]:
    """nbgrader export's rows, with the institution added."""
    rows = []
    for assignment in gradebook.assignments:
        for student in gradebook.students:
            values: dict[str, Any] = {
                "assignment": assignment.name,
                "duedate": assignment.duedate,
                "student_id": student.id,
                "last_name": student.last_name,
                "first_name": student.first_name,
                "email": student.email,
                "max_score": assignment.max_score,
                "institution": where.get(student.id, UNKNOWN),
            }
            try:
                submission = gradebook.find_submission(assignment.name, student.id)
            except MissingEntry:
                values.update(timestamp="", raw_score=0.0, late_submission_penalty=0.0, score=0.0)
            else:
                penalty = submission.late_submission_penalty
                values.update(
                    timestamp=submission.timestamp,
                    raw_score=submission.score,
                    late_submission_penalty=penalty,
                    score=max(0.0, submission.score - penalty),
                )
            rows.append(Row({k: ("" if v is None else v) for k, v in values.items()}))
    # nbgrader lists students in database order (the order they were graded in, which a
    # parallel run shuffles); sorted files compare and diff across runs.
    return sorted(rows, key=lambda r: (str(r.values["assignment"]), str(r.values["student_id"])))


def write_rows(path: Path, rows: list[Row]) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: _text(row.values[k]) for k in COLUMNS})
    return path


def write_totals(path: Path, rows: list[Row]) -> Path:
    """One row per student: username, names, email, institution, a score per assignment,
    total, max, percent."""
    assignments = sorted({r.values["assignment"] for r in rows})
    maxima = {r.values["assignment"]: float(r.values["max_score"] or 0) for r in rows}
    students: dict[str, dict[str, Any]] = defaultdict(dict)
    for row in rows:
        v = row.values
        entry = students[v["student_id"]]
        entry.update(
            username=v["student_id"],
            first_name=v["first_name"],
            last_name=v["last_name"],
            email=v["email"],
            institution=v["institution"],
        )
        entry[v["assignment"]] = float(v["score"] or 0)
    header = [
        "username",
        "first_name",
        "last_name",
        "email",
        "institution",
        *assignments,
        "total",
        "max_total",
        "percent",
    ]
    max_total = sum(maxima.values())
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        for username in sorted(students):
            entry = students[username]
            total = sum(entry.get(a, 0.0) for a in assignments)
            entry.update(
                total=total,
                max_total=max_total,
                percent=round(100 * total / max_total, 2) if max_total else 0.0,
            )
            writer.writerow({k: _text(entry.get(k, "")) for k in header})
    return path


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}" if value != int(value) else f"{value:.1f}"
    return "" if value is None else str(value)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name) or "_"


def export_course(
    course_dir: Path, course_id: str, out: Path, site_path: str | None = None
) -> list[Path]:
    """Write the course CSV, one CSV per institution and the LMS totals; return the paths."""
    from grader.app import SmartGrade  # the course's own nbgrader config: db_url, course_id

    app = SmartGrade()
    previous = os.getcwd()
    try:
        app.setup(Path(course_dir), course_id)
        db_url, configured = app.coursedir.db_url, app.coursedir.course_id
    finally:
        os.chdir(previous)
        SmartGrade.clear_instance()
    where = institutions(site_path)
    with Gradebook(db_url, configured) as gb:
        rows = gradebook_rows(gb, where)
    out.mkdir(parents=True, exist_ok=True)
    written = [write_rows(out / f"{_safe(course_id)}.csv", rows)]
    for institution in sorted({r.institution for r in rows}):
        mine = [r for r in rows if r.institution == institution]
        written.append(write_rows(out / f"{_safe(course_id)}--{_safe(institution)}.csv", mine))
    written.append(write_totals(out / f"{_safe(course_id)}--totals.csv", rows))
    return written


class InstitutionCsvExportPlugin(ExportPlugin):
    """nbgrader export plugin: nbgrader's CSV with an institution column."""

    site = Unicode("", help="Site file for the institutions (default $SMARTLAB_SITE).").tag(
        config=True
    )

    def export(self, gradebook: Gradebook) -> None:
        rows = gradebook_rows(gradebook, institutions(self.site or None))
        if self.assignment:
            rows = [r for r in rows if r.values["assignment"] in self.assignment]
        if self.student:
            rows = [r for r in rows if r.values["student_id"] in self.student]
        write_rows(Path(self.to or "grades.csv"), rows)
