"""Solutions, hidden tests, course folders and root's service state are course staff's and
root's only: a student's kernel (a real hub-spawned one, under the student's Unix account) and
a sandboxed submission try to list or open each of them, on a platform started as root.

The state folder lies outside /tmp (the sandbox replaces /tmp with its own, which would hide
it whatever its modes), and an earlier run's files are planted open (0644) before the start,
which must close them.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from hub_config.accounts import can_isolate
from hub_config.course_dirs import course_root
from hub_config.lti.store import DB_FILE, LtiStore
from hub_config.private_state import close_course_sources, close_state_folder
from site_config.site import load_site
from tests.conftest import REPO
from tests.e2e.hubclient import Browser, run_in_kernel
from tests.grader.conftest import fork_server, run_notebook, text_of, work_root
from tests.security.conftest import LEFTOVERS
from tests.stack import Up

__all__ = ["fork_server", "work_root"]  # fixtures shared with the grader's tests

pytestmark = [
    pytest.mark.broker,
    pytest.mark.skipif(not can_isolate(), reason="closing files to other accounts needs root"),
]

STUDENT, COURSE = "anna", "smart-lighting"

# Lists a folder or reads a file's first byte; says which error stopped it.
PROBE = """
import json, os

def probe(path):
    try:
        os.listdir(path)
        return "LISTED"
    except NotADirectoryError:
        pass
    except OSError as err:
        return type(err).__name__
    try:
        with open(path, "rb") as f:
            f.read(1)
        return "READ"
    except OSError as err:
        return type(err).__name__

from coursework import checks, live, recorded
seen = {"helpers": "imported" if callable(checks.call) else "?"}
seen.update({path: probe(path) for path in %r})
print(json.dumps(seen))
"""


def course_secrets(platform: Up) -> list[Path]:
    """Every course folder, source notebook (solutions, hidden tests) and course config, in the
    checkout and in the grader's course folders of the running platform, and the generator of
    the released data."""
    runtime = platform.runtime
    released_data = REPO / "courses" / "datasets"  # its parameters are answers
    paths: list[Path] = [released_data, released_data / "__init__.py"]
    for course in load_site(runtime.site).courses:
        for root in (REPO / "courses" / course.id, course_root(runtime, course.id)):
            paths += [root, root / "nbgrader_config.py", root / "source"]
            paths += sorted(root.glob("source/*/*.ipynb"))
            paths += [p for p in (root / "gradebook.db",) if p.exists()]
    return paths


def state_secrets(platform: Up) -> list[Path]:
    """Root's service state: the lab service's database and config, the broker's folder and
    its dynamic-security JSON and credentials, the LTI store, the hub's folder, leftovers."""
    state = platform.state
    LtiStore(state / "lti")  # as the hub makes it on the first LTI launch
    return [
        *(state / name for name in LEFTOVERS),
        state / "broker",
        state / "broker" / "dynamic-security.json",
        state / "broker" / "credentials.json",
        state / "lti",
        state / "lti" / DB_FILE,
        state / "hub",
        state / "hub" / "jupyterhub.sqlite",
    ]


def probe_results(output: str) -> dict[str, str]:
    seen = json.loads(output.strip().splitlines()[-1])
    assert seen.pop("helpers") == "imported", seen
    return seen


@pytest.mark.timeout(600)
def test_a_students_kernel_cannot_read_solutions_course_folders_or_state(platform: Up) -> None:
    sources, state = course_secrets(platform), state_secrets(platform)
    targets = [*sources, *state]
    assert all(p.exists() for p in targets), [str(p) for p in targets if not p.exists()]
    assert sum(p.suffix == ".ipynb" for p in sources) >= 4, sources
    own_home = platform.runtime.home(STUDENT)
    anna = Browser(platform.hub_url, STUDENT)
    anna.login(f"demo-{STUDENT}")
    anna.start_server()
    anna.open(f"/user/{STUDENT}/lab")
    seen = probe_results(run_in_kernel(anna, PROBE % [str(own_home), *map(str, targets)]))
    assert seen.pop(str(own_home)) == "LISTED"  # the probe can tell the difference
    opened = {path: result for path, result in seen.items() if result != "PermissionError"}
    assert opened == {}, opened


@pytest.mark.timeout(600)
def test_a_sandboxed_submission_cannot_read_them_and_still_imports_the_helpers(
    platform: Up, fork_server: str, work_root: Path
) -> None:
    sources, state = course_secrets(platform), state_secrets(platform)
    folder = work_root / "reads-submission"
    folder.mkdir(mode=0o711)
    (folder / "data.txt").write_text("support file\n")
    paths = [str(folder), *map(str, sources), *map(str, state)]
    nb, stops = run_notebook(fork_server, [PROBE % paths], folder, timeout=30)
    assert stops == [], stops
    seen = probe_results(text_of(nb.cells[0]))
    # The grader's course folder is hidden (empty mounts), the checkout and the homes are not
    # in the sandbox's sight at all: nothing there exists for it.
    assert seen.pop(str(folder)) == "LISTED"  # hidden: an empty read-only folder
    hidden = {p: r for p, r in seen.items() if p in map(str, sources)}
    assert set(hidden.values()) <= {"PermissionError", "FileNotFoundError"}, hidden
    # The state folder is in sight (outside /tmp, not hidden): its modes alone keep it closed.
    by_mode = {p: r for p, r in seen.items() if p in map(str, state)}
    assert set(by_mode.values()) == {"PermissionError"}, by_mode


def test_closing_follows_no_link(tmp_path: Path) -> None:
    """Links planted where the start closes files (a course folder of the checkout, an entry
    of the state folder) are left alone: what they point to keeps its mode."""
    outside = tmp_path / "outside"
    outside.mkdir(mode=0o755)
    (outside / "nbgrader_config.py").write_text("")
    (outside / "file").write_text("")
    courses, state = tmp_path / "courses", tmp_path / "state"
    for folder in (courses, state):
        folder.mkdir()
    (courses / "real").mkdir(mode=0o755)
    (courses / "real" / "nbgrader_config.py").write_text("")
    (courses / "datasets").mkdir(mode=0o755)
    (courses / "install.py").write_text("")
    (courses / "planted").symlink_to(outside)
    (state / "planted-dir").symlink_to(outside)
    (state / "planted-file").symlink_to(outside / "file")
    (state / "open.sqlite").write_text("")
    (state / "exchange").mkdir(mode=0o755)
    assert close_course_sources(courses) == ["datasets", "real"]
    assert stat.S_IMODE((courses / "install.py").stat().st_mode) == 0o644
    assert close_state_folder(state, [state / "exchange"]) == ["open.sqlite"]
    assert stat.S_IMODE((courses / "real").stat().st_mode) == 0o700
    assert stat.S_IMODE((state / "open.sqlite").stat().st_mode) == 0o600
    assert stat.S_IMODE((state / "exchange").stat().st_mode) == 0o755
    assert stat.S_IMODE(outside.stat().st_mode) == 0o755
    assert stat.S_IMODE((outside / "file").stat().st_mode) == 0o644
