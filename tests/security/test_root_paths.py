"""Root never follows what another account controls (issue 20, item 1).

Links planted at every path root touches in a grader's tree — by `smartlab up` (a second start
over the grader's home and course folder), by an LTI launch (the student's gradebook record) and
by `smartlab grade` (the course folder) — point at a root-owned file outside the tree; the file's
content, owner and mode stay as they were and the refusal is one clear line."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from courses import install
from hardware_kits.descriptor import load_models
from hub_config import course_dirs
from hub_config.accounts import AccountError
from hub_config.course_dirs import course_root, prepare_courses
from hub_config.lti import gradebook
from site_config.paths import DEMO_SITE
from site_config.runtime import Runtime
from site_config.site import load_site
from tests.grader.conftest import REPO, tool_env
from tests.grader.test_formgrader import _grader_account

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="root's own paths need root")

# A copy of the smallest shipped course under a name of its own: its grader account is this
# test's, never one that a platform started by another test is using.
SHIPPED, COURSE = "traffic-signals", "rootpaths-signals"
SECRET = "root's file: nobody else's to change\n"


@pytest.fixture
def target() -> Iterator[Path]:
    """A root-owned file outside every tree another account controls."""
    folder = Path(tempfile.mkdtemp(prefix="smartlab-root-target-", dir="/var/lib"))
    path = folder / "precious"
    path.write_text(SECRET)
    path.chmod(0o644)
    yield path
    shutil.rmtree(folder, ignore_errors=True)


def unchanged(path: Path) -> bool:
    info = path.stat()
    return (path.read_text(), info.st_uid, info.st_gid, info.st_mode & 0o7777) == (
        SECRET,
        0,
        0,
        0o644,
    )


def plant(link: Path, to: Path, owner: pwd.struct_passwd) -> None:
    """What the grader account could do: replace `link` with a symbolic link of its own."""
    if link.is_dir() and not link.is_symlink():
        shutil.rmtree(link)
    elif link.exists() or link.is_symlink():
        link.unlink()
    link.symlink_to(to)
    os.lchown(link, owner.pw_uid, owner.pw_gid)


@pytest.fixture
def shipped(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The courses folder the start copies from, with the copy of the shipped course."""
    folder = Path(tempfile.mkdtemp(prefix="smartlab-rootpaths-courses-"))
    shutil.copytree(install.COURSES_DIR / SHIPPED, folder / COURSE)
    config = folder / COURSE / install.CONFIG_FILE
    config.write_text(config.read_text().replace(SHIPPED, COURSE))
    monkeypatch.setattr(install, "COURSES_DIR", folder)
    monkeypatch.setattr(course_dirs, "COURSES_DIR", folder)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_a_second_start_follows_no_link_in_the_grader_home(
    state_root: Path, home_root: Path, target: Path, shipped: Path
) -> None:
    site = load_site(DEMO_SITE, load_models())
    course = next(c for c in site.courses if c.id == SHIPPED).model_copy(update={"id": COURSE})
    site = site.model_copy(update={"courses": [course]})
    runtime = Runtime(
        site=str(DEMO_SITE),
        state_dir=str(state_root / "rootpaths-state"),
        isolate=True,
        home_root=str(home_root),
    )
    Path(runtime.state_dir).mkdir(mode=0o711, exist_ok=True)
    first = prepare_courses(site, runtime)
    assert first[COURSE].startswith("released"), first
    root = course_root(runtime, COURSE)
    grader = pwd.getpwuid(root.stat().st_uid)
    assert grader.pw_name == f"grader-{COURSE}" and root.parent.stat().st_uid == grader.pw_uid
    # Every kind of path the start writes: the config file, a course file it copies when
    # missing, a folder it copies into, and the folder of the config.
    config = root.parent / ".jupyter" / "nbgrader_config.py"
    notebook = next((root / "source").rglob("*.ipynb"))
    plant(config, target, grader)
    plant(notebook, target, grader)
    plant(root / "source" / "02-actuated-control", target.parent, grader)
    second = prepare_courses(site, runtime)
    assert unchanged(target)
    assert not (target.parent / "02-actuated-control").exists()
    assert sorted(p.name for p in target.parent.iterdir()) == ["precious"]
    assert second[COURSE].startswith(f"not released: as grader-{COURSE}: PermissionError"), second
    # The folder of the config as a link: refused the same way, nothing written beside target.
    plant(root.parent / ".jupyter", target.parent, grader)
    third = prepare_courses(site, runtime)
    assert unchanged(target) and sorted(p.name for p in target.parent.iterdir()) == ["precious"]
    assert "PermissionError" in third[COURSE], third


@pytest.fixture
def course_folder() -> Iterator[tuple[str, Path, pwd.struct_passwd]]:
    """A course folder laid out as the hub's, owned by a grader account."""
    account = _grader_account()
    base = Path(tempfile.mkdtemp(prefix="smartlab-lti-courses-", dir="/var/lib"))
    base.chmod(0o711)
    folder = base / "grader-demo" / "demo"
    folder.mkdir(parents=True)
    for path in (folder.parent, folder):
        os.chown(path, account.pw_uid, account.pw_gid)
    yield str(base) + "/grader-{course}/{course}", folder, account
    shutil.rmtree(base, ignore_errors=True)


def record(template: str, student: str) -> bool:
    return gradebook.ensure_student(
        template,
        "demo",
        student,
        first_name="Anna",
        last_name="K",
        email=None,
        lms_user_id="7",
    )


def test_an_lti_launch_writes_the_gradebook_as_the_course_owner(
    course_folder: tuple[str, Path, pwd.struct_passwd], target: Path
) -> None:
    template, folder, account = course_folder
    assert record(template, "anna")
    book = folder / gradebook.GRADEBOOK
    assert book.stat().st_uid == account.pw_uid  # made by the owner: nothing to chown
    # A link at gradebook.db: written as the owner, who may not write the target: refused.
    plant(book, target, account)
    with pytest.raises(AccountError, match=f"as {account.pw_name}: OperationalError: .*sqlite3"):
        record(template, "boris")
    assert unchanged(target)
    # The course folder itself a link (to a folder of root's): refused before anything is made.
    shutil.rmtree(folder)
    plant(folder, target.parent, account)
    with pytest.raises(AccountError, match="is a symbolic link: refusing to follow it as root"):
        record(template, "clara")
    assert unchanged(target) and sorted(p.name for p in target.parent.iterdir()) == ["precious"]


def test_grading_as_root_follows_no_link_at_the_course_folder(
    course_folder: tuple[str, Path, pwd.struct_passwd], target: Path
) -> None:
    _template, folder, account = course_folder
    shutil.rmtree(folder)
    plant(folder, target.parent, account)
    (target.parent / "nbgrader_config.py").write_text("c = get_config()  # noqa: F821\n")
    done = subprocess.run(
        [sys.executable, "-m", "hub_config.cli", "grade", "demo", "ps1", "--course-dir", folder],
        cwd=REPO,
        env=tool_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert (
        done.stderr.strip()
        .splitlines()[-1]
        .endswith(
            f"{folder} is a symbolic link; as root give the course folder itself (--course-dir)"
        )
    ), done.stderr
    assert unchanged(target)
    assert sorted(p.name for p in target.parent.iterdir()) == ["nbgrader_config.py", "precious"]
