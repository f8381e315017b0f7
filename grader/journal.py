"""What a grading run has done so far, so that an interrupted run carries on where it stopped.

One JSON line per event in `<course>/.smartlab/grade-<assignment>.journal`: a submission is
`started`, then `graded`, `failed` or `skipped`. A submission whose last event is `started` was
cut off (Ctrl-C, a crash, a reboot): its autograded folder may be half written, so the next run
grades it again. Appending lines keeps every write small and atomic enough: a torn last line is
ignored on reading.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any


class Journal:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.last: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            for line in self.path.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash
                if isinstance(event, dict) and isinstance(event.get("student"), str):
                    self.last[event["student"]] = event
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        self._file = open(self.path, "a")  # noqa: SIM115 - kept open for the whole run

    def state(self, student: str) -> str | None:
        event = self.last.get(student)
        return event.get("state") if event else None

    def event(self, student: str) -> dict[str, Any] | None:
        return self.last.get(student)

    def record(self, student: str, state: str, **info: Any) -> None:
        event = {"student": student, "state": state, "at": time.time(), **info}
        self.last[student] = event
        self._file.write(json.dumps(event) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()
