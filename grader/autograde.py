"""nbgrader's own autograde, one submission at a time, on sandboxed warm kernels.

Scores, the autograded notebooks and the gradebook rows come from nbgrader's `Autograde`
converter and preprocessors unchanged; only its `Execute` step is replaced with
`SandboxedExecute` (grader/execute.py). `use_sandbox(c)` does that in any nbgrader config, so
`nbgrader autograde` and the formgrader's "autograde" button get the same sandbox and speed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from nbgrader.converters import Autograde, NbGraderException
from nbgrader.coursedir import CourseDirectory
from traitlets.config import Config, LoggingConfigurable

from grader.execute import STOPS, installed_preprocessors
from grader.feedback import HideHiddenTests


def use_sandbox(c: Config) -> Config:
    """Make nbgrader's autograde run student code in the sandbox, and keep hidden tests out of
    the feedback. For a course's nbgrader_config.py:

        from grader.autograde import use_sandbox
        use_sandbox(c)
    """
    current = c.Autograde.get("autograde_preprocessors")
    if not isinstance(current, list):
        current = list(Autograde.class_traits()["autograde_preprocessors"].default())
    c.Autograde.autograde_preprocessors = installed_preprocessors(current)
    feedback = c.GenerateFeedback.get("preprocessors")
    if not isinstance(feedback, list):
        from nbgrader.converters import GenerateFeedback

        feedback = list(GenerateFeedback.class_traits()["preprocessors"].default())
    if HideHiddenTests not in feedback:
        # Before nbgrader's own ClearHiddenTests, if any: it needs the regions still there.
        feedback = [HideHiddenTests, *feedback]
    c.GenerateFeedback.preprocessors = feedback
    return c


@dataclass
class Outcome:
    """What happened to one submission."""

    student: str
    status: str  # graded | failed | skipped
    message: str = ""
    warnings: list[str] = field(default_factory=list)
    stops: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    details: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class _Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _one_line(records: list[logging.LogRecord]) -> tuple[str, str]:
    """The reason nbgrader gave for a failure, in one line, and the full text."""
    texts = [r.getMessage() for r in records if r.levelno >= logging.ERROR]
    details = "\n".join(texts)
    for text in texts:
        if "Traceback (most recent call last)" in text:
            return _exception_line(text), details
    for text in texts:
        if not text.startswith("There was an error processing") and "Please see" not in text:
            return text.strip().splitlines()[0], details
    return (texts[0].splitlines()[0] if texts else "nbgrader failed"), details


def _exception_line(traceback_text: str) -> str:
    """The `Name: message` line of the last exception of a (chained) traceback; its first line
    only, when the message spans several."""
    last = traceback_text.rsplit("Traceback (most recent call last):", 1)[-1]
    lines = [line for line in last.splitlines() if line.strip()]
    for line in lines:
        if not line[0].isspace():
            return _plain(line)
    return _plain(lines[-1]) if lines else "nbgrader failed"


def _plain(line: str) -> str:
    """'nbformat.reader.NotJSONError: Notebook does not...' -> 'NotJSONError: Notebook ...'."""
    name, _, rest = line.partition(": ")
    return f"{name.rsplit('.', 1)[-1]}: {rest}"[:200] if rest else line[:200]


class SubmissionGrader(LoggingConfigurable):
    """Runs nbgrader's Autograde for one student of one assignment."""

    def __init__(self, coursedir: CourseDirectory, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.coursedir = coursedir

    def grade(self, assignment: str, student: str) -> Outcome:
        started = time.monotonic()
        self.coursedir.assignment_id = assignment
        self.coursedir.student_id = student
        converter = Autograde(coursedir=self.coursedir, parent=self.parent)
        converter.force = True  # the batch decided this one needs grading
        capture = _Capture()
        logger = converter.log
        logger.addHandler(capture)
        del STOPS[:]
        status, message, details = "graded", "", ""
        try:
            converter.start()
        except NbGraderException:
            status = "failed"
            message, details = _one_line(capture.records)
        except Exception as err:  # nbgrader let it through: still only this submission
            status, message = "failed", f"{type(err).__name__}: {err}"
        finally:
            logger.removeHandler(capture)
        warnings = sorted(
            {
                r.getMessage().splitlines()[0]
                for r in capture.records
                if r.levelno == logging.WARNING
            }
        )
        return Outcome(
            student=student,
            status=status,
            message=message,
            warnings=[w for w in warnings if not _noise(w)],
            stops=list(STOPS),
            seconds=round(time.monotonic() - started, 3),
            details=details,
        )


def _noise(warning: str) -> bool:
    # nbgrader warns for every test cell whose hidden tests the release left out: expected.
    return warning.startswith(
        (
            "Attribute 'checksum' for cell",
            "Removing existing assignment",
            "Removing existing notebook",
        )
    )
