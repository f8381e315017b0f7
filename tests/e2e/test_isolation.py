"""As root, a student's code runs under the student's own Unix account: it cannot read another
student's home or submission, nor the course's files, while it can read its own home."""

from __future__ import annotations

import json

import pytest

from hub_config.accounts import can_isolate
from hub_config.course_dirs import course_root
from hub_config.hub import grader_account
from site_config.cgroups import CGROUP_ROOT, GROUP
from site_config.site import load_site
from tests.e2e.hubclient import run_in_kernel

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(not can_isolate(), reason="isolation needs root"),
]

PROBE = """
import json, os, pwd
seen = {"whoami": pwd.getpwuid(os.getuid()).pw_name,
        "cgroups": open("/proc/self/cgroup").read()}
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


def test_student_code_runs_inside_the_users_memory_and_cpu_limits(platform, browsers):
    """The site's `servers:` limits hold for the kernel too (cgroups, site_config/cgroups.py)."""
    if not any(
        p.exists()
        for p in (CGROUP_ROOT / "cgroup.controllers", CGROUP_ROOT / "memory" / "cgroup.procs")
    ):
        pytest.skip("no cgroup memory controller on this machine")
    anna = browsers["anna"]
    anna.start_server()
    anna.open("/user/anna/lab")
    seen = json.loads(run_in_kernel(anna, PROBE % "{}"))
    site = load_site(platform.runtime.site)
    assert f"{GROUP}/anna" in seen["cgroups"], seen["cgroups"]
    v1 = CGROUP_ROOT / "memory" / GROUP / "anna" / "memory.limit_in_bytes"
    limit = v1 if v1.exists() else CGROUP_ROOT / GROUP / "anna" / "memory.max"
    assert limit.read_text().strip() == str(parse_bytes(site.servers.mem_limit))


def parse_bytes(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(float(text[:-1]) * units[text[-1]]) if text[-1] in units else int(text)
