"""How a person's JupyterLab is set up: Jupyter config folders chosen by role and language.

The spawner puts them first on the server's $JUPYTER_CONFIG_PATH (before the platform's own
folder, hub_config/jupyter/, which the course formgraders use too). Each folder holds plain
Jupyter config that JupyterLab and jupyter_server merge key by key:

- `servers/`: every person's server. No announcements ("news") prompt; none of nbgrader's
  formgrader tools (its Nbgrader menu, the Formgrader and Course List panels and their server
  extensions): the formgrader lives in its course's hub service (/services/<course>/formgrader),
  not in a person's server, where it could only show an empty or refused frame.
- `student/`: people who grade no course also lose nbgrader's "Create Assignment" sidebar.
- `ru/`: JupyterLab's interface language, Russian (the language pack's `ru_RU`), as a default
  the person may still change in JupyterLab's Settings -> Language.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from site_config.languages import COOKIE, negotiate, supported

PROFILES = Path(__file__).resolve().parent / "jupyter"
GRADING_GROUP_PREFIX = "formgrade-"  # instructors and graders of a course (hub_config.hub)


def config_folders(groups: Iterable[str], language: str) -> list[Path]:
    """The folders to put before the platform's own on $JUPYTER_CONFIG_PATH, first wins."""
    folders = []
    if not any(g.startswith(GRADING_GROUP_PREFIX) for g in groups):
        folders.append(PROFILES / "student")
    if (PROFILES / language).is_dir():
        folders.append(PROFILES / language)
    folders.append(PROFILES / "servers")
    return folders


def language_of(handler: Any, owner: str, usual: str = "") -> str:
    """The language of the request with which `owner` started their server (Accept-Language
    and the language switch's cookie, site_config.languages). A server started by the hub
    itself or by someone else (a hub admin's browser, the class warm-up: not the owner's)
    gets `usual`, the language of the owner's last own start, else English."""
    who = getattr(handler, "current_user", None)
    owners = getattr(who, "kind", "user") == "user" and getattr(who, "name", None) == owner
    if handler is None or not owners:
        return supported(usual) or negotiate(None)
    return negotiate(
        handler.request.headers.get("Accept-Language"), None, handler.get_cookie(COOKIE)
    )
