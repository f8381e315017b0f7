"""The live kits from course notebooks: optional, never needed for a grade.

Exploration cells watch the shared kits and, inside a lab-service session, command them. A
notebook must still run top to bottom when no kit is reachable (at home, in CI, a kit in
maintenance) and while nbgrader executes it (grading must not depend on, or disturb, a shared
kit). So these helpers hand back None and print one line in Russian saying why, instead of
raising; the notebook's cells check for None.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

from labs.client import Kit, Lab, LabError, LabService, connect

NO_LAB = "Живой стенд недоступен ({reason}); продолжаем на записанных данных и двойнике."
GRADING = "идёт проверка nbgrader, стенды не используются"


def grading() -> bool:
    """True while nbgrader executes the notebook (autograde or validate)."""
    return bool(os.environ.get("NBGRADER_EXECUTION"))


def _note(reason: object) -> None:
    print(NO_LAB.format(reason=reason))


def live_lab(timeout: float = 5.0) -> Lab | None:
    """Connect to the lab's broker ($SMARTLAB_MQTT_URL) to watch the kits; None if we cannot."""
    if grading():
        _note(GRADING)
        return None
    try:
        return connect(timeout=timeout)
    except LabError as err:
        _note(err)
        return None


def live_kit(lab: Lab | None, kit_id: str, timeout: float = 5.0) -> Kit | None:
    """The kit `kit_id` on a live lab, or None (no lab, or the kit is not on the broker)."""
    if lab is None:
        return None
    try:
        return lab.kit(kit_id, timeout=timeout)
    except LabError as err:
        _note(err)
        return None


@contextlib.contextmanager
def live_session(
    kit_or_model: str, wait_timeout: float = 120.0, **options: Any
) -> Iterator[Kit | None]:
    """Hold a kit through the lab service (queue, session, heartbeats) while the block runs.

    Yields the kit to command, or None when the lab service or the kit cannot be had (no
    $SMARTLAB_TOKEN, the service down, the wait longer than `wait_timeout` s, grading).
    Errors raised inside the block (a command the kit rejects) are the caller's to see."""
    if grading():
        _note(GRADING)
        yield None
        return
    with contextlib.ExitStack() as stack:
        try:
            kit = stack.enter_context(
                LabService().session(kit_or_model, wait_timeout=wait_timeout, **options)
            )
        except LabError as err:
            _note(err)
            kit = None
        yield kit
