"""A progress bar for long batches: done/total, rate, time left, failures so far.

On a terminal it redraws one line (at most ten times a second); otherwise (CI logs, a pipe) it
prints a line every `every` seconds and at the end, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def clock(seconds: float) -> str:
    seconds = max(0, round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


class Progress:
    def __init__(
        self,
        total: int,
        label: str = "grading",
        stream: TextIO | None = None,
        width: int = 28,
        every: float = 5.0,
    ) -> None:
        self.total, self.label, self.width, self.every = total, label, width, every
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.done = self.failed = 0
        self.started = time.monotonic()
        self._drawn = 0.0

    def advance(self, failed: bool = False) -> None:
        self.done += 1
        self.failed += int(failed)
        self._draw(final=self.done >= self.total)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        rate = self.done / elapsed
        filled = int(self.width * self.done / self.total) if self.total else self.width
        bar = "#" * filled + "." * (self.width - filled)
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        eta = clock(left) if rate > 0 else "?"
        failed = f", {self.failed} failed" if self.failed else ""
        return (
            f"{self.label} [{bar}] {self.done}/{self.total}  {rate:.2f}/s  "
            f"{clock(elapsed)} elapsed, {eta} left{failed}"
        )

    def _draw(self, final: bool = False) -> None:
        now = time.monotonic()
        if self.tty:
            if final or now - self._drawn >= 0.1:
                self.stream.write("\r" + self.line() + ("\n" if final else ""))
                self.stream.flush()
                self._drawn = now
        elif final or now - self._drawn >= self.every:
            self.stream.write(self.line() + "\n")
            self.stream.flush()
            self._drawn = now

    def start(self) -> None:
        self._drawn = 0.0
        self._draw()

    def close(self) -> None:
        if self.tty and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()
