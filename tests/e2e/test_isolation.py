"""As root, a student's code runs under the student's own Unix account: it cannot read another
student's home or submission, nor the course's files, while it can read its own home."""

from __future__ import annotations

import json

import pytest

from hub_config.accounts import can_isolate
from hub_config.course_dirs import course_root
from hub_config.hub import grader_account
from tests.e2e.hubclient import run_in_kernel

pytestmark = [pytest.mark.broker,
              pytest.mark.skipif(not can_isolate(), reason="isolation needs root")]

PROBE = """
import json, os, pwd
seen = {"whoami": pwd.getpwuid(os.getuid()).pw_name}
for label, path in %s.items():
    try:
        seen[label] = sorted(os.listdir(path))[:3] if os.path.isdir(path) else open(path).read(10)
    except PermissionError:
        seen[label] = "denied"
print(json.dumps(seen))
"""


def test_student_code_cannot_read_other_homes_or_submissions(platform, browsers):
    runtime = platform.runtime
    anna, boris = browsers["anna"], browsers["boris"]
    for student in (anna, boris):
        student.start_server()
        student.open(f"/user/{student.username}/lab")
    course = "smart-lighting"
    (runtime.home("boris") / "secret.txt").write_text("boris's notes")  # as root, for the probe
    targets = {
        "own home": str(runtime.home("anna")),
        "other home": str(runtime.home("boris")),
        "other file": str(runtime.home("boris") / "secret.txt"),
        "submissions": str(runtime.exchange / course / "inbound"),
        "grader home": str(runtime.home(grader_account(course))),
        "course source": str(course_root(runtime, course) / "source"),
    }
    (runtime.exchange / course / "inbound").mkdir(parents=True, exist_ok=True)
    seen = json.loads(run_in_kernel(anna, PROBE % json.dumps(targets)))
    assert seen["whoami"] == "anna"
    assert seen["own home"] != "denied"  # the probe can tell the difference
    for label in ("other home", "other file", "submissions", "grader home", "course source"):
        assert seen[label] == "denied", (label, seen[label])
