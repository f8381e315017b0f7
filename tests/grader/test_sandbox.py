"""The sandbox of one kernel: account, network, files, limits, fresh state (no nbgrader)."""

from __future__ import annotations

import ast
import os
import socket
import time
from pathlib import Path

import pytest

from grader.execute import NOT_RUN_ENAME, NOTE_KEY, STOPPED_ENAME
from grader.sandbox import KERNEL_PACKAGES, processes_of, source_checkout
from site_config.platform_accounts import SANDBOX_PREFIX

from .conftest import SECRET_ENV, root_only, run_notebook, text_of

pytestmark = root_only


def wait_no_sandbox_processes(uid: int, timeout: float = 10.0) -> list[int]:
    """Processes left to the pool account `uid` of a finished kernel (only that one: other
    tests' graders may still be winding down their own pool accounts)."""
    deadline = time.monotonic() + timeout
    while True:
        left = processes_of(uid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.1)


@pytest.fixture
def folder(work_root: Path, request: pytest.FixtureRequest) -> Path:
    path = work_root / "sandbox" / request.node.name
    path.mkdir(parents=True)
    path.chmod(0o711)
    (path / "data.txt").write_text("support file\n")
    (path / "answers.ipynb").write_text("{}")  # notebooks are never copied in
    return path


def test_kernel_is_a_pool_account_with_a_clean_environment(fork_server: str, folder: Path) -> None:
    nb, stops = run_notebook(
        fork_server,
        [
            "import os, pwd\nprint(pwd.getpwuid(os.getuid()).pw_name, os.getgroups(), os.getcwd())",
            "print(sorted(os.listdir('.')))",
            f"print(os.environ.get({SECRET_ENV!r}, 'no secret'), os.environ['HOME'])",
        ],
        folder,
    )
    who = text_of(nb.cells[0])
    assert who.startswith(SANDBOX_PREFIX) and "[] /tmp/work" in who, who
    assert text_of(nb.cells[1]).strip() == "['data.txt']"
    assert text_of(nb.cells[2]).strip() == "no secret /tmp/home"
    assert stops == []


def test_no_network_even_to_the_graders_loopback(fork_server: str, folder: Path) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    nb, _ = run_notebook(
        fork_server,
        [
            "import socket\n"
            f"for host in ('127.0.0.1', '1.1.1.1', 'pypi.org'):\n"
            f"    try:\n"
            f"        socket.create_connection((host, {port} if host == '127.0.0.1' else 443),"
            f" timeout=3).sendall(b'LEAK')\n"
            f"        print(host, 'CONNECTED')\n"
            f"    except OSError as err:\n"
            f"        print(host, 'blocked', type(err).__name__)",
        ],
        folder,
    )
    out = text_of(nb.cells[0])
    assert "CONNECTED" not in out and out.count("blocked") == 3, out
    with pytest.raises(BlockingIOError):  # nobody ever knocked
        listener.accept()
    listener.close()


def test_grader_files_hidden_and_filesystem_read_only(
    fork_server: str, folder: Path, work_root: Path
) -> None:
    (folder / "gradebook.db").write_text("secret grades")
    private = work_root / "private"
    private.mkdir(mode=0o700)
    (private / "hidden.txt").write_text("secret")
    nb, _ = run_notebook(
        fork_server,
        [
            f"import os\nprint(os.path.exists({str(folder / 'gradebook.db')!r}), "
            f"os.listdir({str(folder)!r}))",
            f"try:\n    open({str(private / 'hidden.txt')!r}).read()\n    print('READ')\n"
            f"except OSError as err:\n    print('blocked', type(err).__name__)",
            "for path in ('/etc/evil', '/var/lib/evil', '/work-evil', '/run/lock/evil',"
            " '/dev/mqueue/evil', '/var/lock/evil'):\n"
            "    try:\n        open(path, 'w').write('x')\n        print('WROTE', path)\n"
            "    except OSError as err:\n        print('blocked', type(err).__name__)",
            "open('mine.txt', 'w').write('ok'); open('/tmp/t.txt', 'w').write('ok'); print('ok')",
            "try:\n    open('big', 'wb').write(b'0' * (5 << 20))\n    print('WROTE big')\n"
            "except OSError as err:\n    print('blocked', err.errno)",
        ],
        folder,
        file_size="1M",
    )
    assert text_of(nb.cells[0]).strip() == "False []"
    assert text_of(nb.cells[1]).strip() == "blocked PermissionError"
    assert "WROTE" not in text_of(nb.cells[2]), text_of(nb.cells[2])
    assert text_of(nb.cells[2]).count("blocked") == 6
    assert text_of(nb.cells[3]).strip() == "ok"
    assert text_of(nb.cells[4]).strip() == "blocked 27"  # EFBIG: RLIMIT_FSIZE
    assert (folder / "gradebook.db").read_text() == "secret grades"


def test_the_checkout_shows_only_what_the_kernel_runs_from(fork_server: str, folder: Path) -> None:
    """Wherever the repository lies (under /tmp too, which the sandbox replaces), a kernel
    imports the course helpers and sees nothing else of the checkout: no history, tests,
    state, site file, nor any shipped course's sources."""
    checkout = source_checkout()
    assert checkout is not None  # the suite runs from the repository
    course = next(Path(checkout, "courses").glob("*/source/*/*.ipynb"))
    nb, stops = run_notebook(
        fork_server,
        [
            "from coursework.recorded import air_incidents\n"
            "print('helpers', callable(air_incidents))",
            f"import os\nprint(sorted(os.listdir({checkout!r})))",
            "for path in "
            + repr(
                [
                    str(course),
                    str(Path(checkout, ".git")),
                    str(Path(checkout, "tests")),
                    str(Path(checkout, "README.md")),
                ]
            )
            + ":\n    print(os.path.exists(path))",
        ],
        folder,
    )
    assert text_of(nb.cells[0]).strip() == "helpers True", text_of(nb.cells[0])
    visible = set(ast.literal_eval(text_of(nb.cells[1])))
    assert visible <= {*KERNEL_PACKAGES, ".venv"} and {"coursework", "grader"} <= visible, visible
    assert "courses" not in visible, visible
    assert text_of(nb.cells[2]).split() == ["False"] * 4
    assert stops == []


def test_cannot_signal_the_grader_or_its_parent(fork_server: str, folder: Path) -> None:
    nb, _ = run_notebook(
        fork_server,
        [
            "import os, signal\n"
            f"for pid in (os.getppid(), {os.getpid()}, {os.getppid()}, 1):\n"
            "    try:\n        os.kill(pid, signal.SIGKILL)\n        print('KILLED', pid)\n"
            "    except OSError as err:\n        print('refused', type(err).__name__)",
            "os.kill(-1, signal.SIGKILL); print('still here')",
        ],
        folder,
    )
    out = text_of(nb.cells[0])
    assert "KILLED" not in out and out.count("refused PermissionError") == 4, out
    assert text_of(nb.cells[1]).strip() == "still here"


def test_each_kernel_starts_fresh(fork_server: str, folder: Path) -> None:
    poison = [
        "import numpy, random, sys\nnumpy.POISON = 1\nsys.modules['json'].POISON = 1\n"
        "open('/tmp/left-behind', 'w').write('x')\nx_global = 1\n"
        "print(random.random(), numpy.random.random())"
    ]
    check = [
        "import numpy, json, os, random\n"
        "print(hasattr(numpy, 'POISON'), hasattr(json, 'POISON'), "
        "os.path.exists('/tmp/left-behind'), 'x_global' in globals())\n"
        "print(random.random(), numpy.random.random())"
    ]
    first, _ = run_notebook(fork_server, poison, folder)
    second, _ = run_notebook(fork_server, check, folder)
    lines = text_of(second.cells[0]).splitlines()
    assert lines[0] == "False False False False"
    assert lines[1] != text_of(first.cells[0]).strip()  # reseeded: no shared random state


def test_cpu_limit_stops_the_notebook_and_says_so(fork_server: str, folder: Path) -> None:
    nb, stops = run_notebook(
        fork_server,
        [
            "x = 1",
            "while True:\n    x += 1",
            "print('after')",
            "# a comment only",
        ],
        folder,
        timeout=60,
        cpu_seconds=2,
    )
    assert nb.cells[0].metadata.get(NOTE_KEY), "a note cell at the top"
    assert "CPU time" in nb.cells[0].source
    stopped, after = nb.cells[2], nb.cells[3]
    assert stopped.outputs[-1].ename == STOPPED_ENAME
    assert after.outputs[0].ename == NOT_RUN_ENAME
    assert [s["cell"] for s in stops] == [2] and "CPU" in stops[0]["reason"]


def test_wall_limit_stops_a_kernel_that_ignores_interrupts(fork_server: str, folder: Path) -> None:
    started = time.monotonic()
    nb, stops = run_notebook(
        fork_server,
        [
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\ntime.sleep(600)",
            "print('after')",
        ],
        folder,
        timeout=60,
        wall_seconds=3.0,
    )
    assert time.monotonic() - started < 30
    assert "time limit" in stops[0]["reason"]
    assert nb.cells[2].outputs[0].ename == NOT_RUN_ENAME


def test_output_limit(fork_server: str, folder: Path) -> None:
    nb, stops = run_notebook(
        fork_server,
        [
            "print('start')",
            "while True:\n    print('x' * 10000)",
            "print('after')",
        ],
        folder,
        timeout=60,
        output="256K",
    )
    size = sum(len(text_of(c)) for c in nb.cells)
    assert size < 600_000, size
    assert "output" in stops[0]["reason"]
    assert text_of(nb.cells[1]).strip() == "start"


def test_memory_bomb_is_a_memory_error(fork_server: str, folder: Path) -> None:
    nb, stops = run_notebook(
        fork_server,
        [
            "blocks = []\nwhile True:\n    blocks.append(bytearray(50 << 20))",
            "del blocks\nprint('alive')",
        ],
        folder,
        memory="1G",
    )
    assert "MemoryError" in text_of(nb.cells[0])
    assert text_of(nb.cells[1]).strip() == "alive"
    assert stops == []


def test_fork_bomb_is_contained_and_cleaned_up(fork_server: str, folder: Path) -> None:
    nb, _ = run_notebook(
        fork_server,
        [
            "import os, time\nchildren = 0\ntry:\n    while True:\n        if os.fork() == 0:\n"
            "            time.sleep(600)\n            os._exit(0)\n        children += 1\n"
            "except OSError as err:\n    print('refused after', children, type(err).__name__)",
            "print(os.getuid())",
        ],
        folder,
        processes=40,
    )
    out = text_of(nb.cells[0])
    assert "refused after" in out and "BlockingIOError" in out, out
    assert int(out.split()[2]) < 40
    assert wait_no_sandbox_processes(int(text_of(nb.cells[1]))) == []


def test_daemons_do_not_outlive_their_notebook(fork_server: str, folder: Path) -> None:
    nb, _ = run_notebook(
        fork_server,
        [
            "import os, time\nr, w = os.pipe()\nif os.fork() == 0:\n    os.setsid()\n"
            "    if os.fork() == 0:\n        os.write(w, str(os.getpid()).encode())\n"
            "        time.sleep(600)\n    os._exit(0)\ndaemon = int(os.read(r, 20))",
            "os.kill(daemon, 0)\nprint('daemon alive', daemon)",
            "print(os.getuid())",
        ],
        folder,
    )
    assert text_of(nb.cells[1]).startswith("daemon alive")
    assert wait_no_sandbox_processes(int(text_of(nb.cells[2]))) == []


def test_a_kernel_that_cannot_start_says_why(fork_server: str, folder: Path) -> None:
    from grader.kernels import SandboxError

    with pytest.raises(SandboxError, match=r"the sandboxed kernel did not start: \S"):
        run_notebook(fork_server, ["print('never')"], folder, memory="64M")


def test_a_fork_server_started_early_and_never_configured_just_exits(tmp_path: Path) -> None:
    """`smartlab grade` starts the fork server before it reads its configuration; a run that
    ends first (a bad course folder) or needs no private server must not leave it behind."""
    from grader.app import GradeError, grade
    from grader.kernels import PrivateForkServer

    server = PrivateForkServer()
    with pytest.raises(GradeError, match="no such course folder"):
        grade("nope", "ps1", course_dir=str(tmp_path / "missing"), fork_server=server)
    assert server.process.wait(10) == 0
    with pytest.raises(Exception, match="never configured"):
        server.wait_ready()
