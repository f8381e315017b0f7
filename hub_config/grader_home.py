"""What `smartlab up` writes in a grader account's home, run as that account
(`hub_config.accounts.call_as`, a fresh interpreter: this module imports little on purpose)."""

from __future__ import annotations

from pathlib import Path

from courses.install import write_missing


def write_course_folder(home: str, root: str, config: str, files: dict[str, list]) -> int:
    """The account's nbgrader config, its course folder and the course files it does not have
    yet (an instructor's edited copy wins). Returns how many files were copied."""
    config_dir = Path(home) / ".jupyter"
    config_dir.mkdir(exist_ok=True)
    config_file = config_dir / "nbgrader_config.py"
    if not config_file.is_file() or config_file.read_text() != config:
        config_file.write_text(config)
    Path(root).mkdir(exist_ok=True)
    return write_missing(files, Path(root))


def due_dates(root: str) -> dict[str, str]:
    """{assignment: due date (ISO 8601)} from the course's gradebook, where instructors set
    them in the formgrader; {} when there is no gradebook yet. Read-only."""
    import sqlite3

    path = Path(root) / "gradebook.db"
    if not path.is_file():
        return {}
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT name, duedate FROM assignment WHERE duedate IS NOT NULL")
            return {str(name): str(due) for name, due in rows}
    except sqlite3.Error:
        return {}
