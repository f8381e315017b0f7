"""The code is `ruff check` clean (the rules in pyproject.toml) and formatted by `ruff format`."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RUFF = Path(sys.executable).parent / "ruff"


def ruff(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(RUFF), *args, "--no-cache", "."], cwd=ROOT, capture_output=True, text=True, timeout=120
    )


def test_ruff_check_is_clean() -> None:
    done = ruff("check", "--output-format", "concise")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]


def test_the_code_is_formatted() -> None:
    done = ruff("format", "--check")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-1000:]
