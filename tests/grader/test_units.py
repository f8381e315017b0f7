"""Small parts of the grader, without kernels: sizes, the journal, the progress bar, failure
reasons, hidden-test redaction, synthetic answers."""

from __future__ import annotations

import io
import json
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook, new_output

from grader.autograde import _exception_line
from grader.feedback import REDACTED, HideHiddenTests, hidden_lines, leaks
from grader.journal import Journal
from grader.progress import Progress
from grader.settings import parse_size
from grader.synthetic import answer


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("512M", 512 << 20),
        ("2G", 2 << 30),
        ("1.5GiB", int(1.5 * (1 << 30))),
        ("64k", 65536),
        (1000, 1000),
        ("77", 77),
    ],
)
def test_sizes(text: str | int, size: int) -> None:
    assert parse_size(text) == size


def test_bad_size_is_refused() -> None:
    with pytest.raises(ValueError, match="not a size: 'lots'"):
        parse_size("lots")


def test_journal_keeps_the_last_state_and_survives_a_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "state" / "grade-a.journal"
    journal = Journal(path)
    journal.record("anna", "started")
    journal.record("anna", "graded", seconds=1.5)
    journal.record("boris", "started")
    journal.close()
    with open(path, "a") as f:
        f.write('{"student": "carl", "sta')  # the grader died while writing
    again = Journal(path)
    assert again.state("anna") == "graded" and again.state("boris") == "started"
    assert again.state("carl") is None
    again.close()


def test_progress_line_has_rate_time_left_and_failures() -> None:
    out = io.StringIO()
    progress = Progress(4, label="grading ps1", stream=out, every=0)
    progress.start()
    progress.advance()
    progress.advance(failed=True)
    line = out.getvalue().strip().splitlines()[-1]
    assert line.startswith("grading ps1 [##############..............] 2/4  ")
    assert "/s" in line and "left" in line and line.endswith("1 failed")


def test_failure_reason_is_the_last_exception_of_a_chain() -> None:
    text = (
        'Traceback (most recent call last):\n  File "x", line 1\n    json.loads(s)\n'
        "json.decoder.JSONDecodeError: Expecting value\n\nDuring handling of the above "
        "exception, another exception occurred:\n\nTraceback (most recent call last):\n"
        '  File "y", line 2\n    raise NotJSONError\n'
        "nbformat.reader.NotJSONError: Notebook does not appear to be JSON: '{'\nmore\n"
    )
    assert _exception_line(text) == "NotJSONError: Notebook does not appear to be JSON: '{'"


def _graded_cell() -> nbformat.NotebookNode:
    cell = new_code_cell(
        "assert f(1) == 1\n### BEGIN HIDDEN TESTS\nassert f(10) == 100, 'big'\n### END HIDDEN TESTS"
    )
    cell.metadata.nbgrader = {
        "grade": True,
        "grade_id": "t",
        "points": 1,
        "solution": False,
        "locked": True,
        "schema_version": 3,
        "task": False,
    }
    cell.outputs = [
        new_output(
            "error",
            ename="AssertionError",
            evalue="big",
            traceback=[
                "\x1b[31m---------------------------------------------------------------\x1b[0m",
                "Cell In[2], line 3\n      1 assert f(1) == 1\n      2 ### BEGIN HIDDEN TESTS\n"
                "\x1b[0;32m----> 3\x1b[0m assert f(10) == 100, 'big'\n      4 ### END HIDDEN TESTS",
                "\x1b[31mAssertionError\x1b[0m: big",
            ],
        )
    ]
    return cell


def test_feedback_hides_hidden_code_in_sources_and_outputs() -> None:
    spy = new_code_cell("print(captured)")
    spy.outputs = [
        new_output("stream", name="stdout", text="seen: assert f(10) == 100, 'big'\nnothing else\n")
    ]
    nb = new_notebook(cells=[_graded_cell(), spy])
    lines = hidden_lines(nb)
    assert lines == {"assert f(10) == 100, 'big'"}
    assert leaks(nb, lines) == ["cell 1 source", "cell 1 output", "cell 2 output"]
    cleaned, _ = HideHiddenTests().preprocess(nb, {})
    assert leaks(cleaned, lines) == []
    tb = "\n".join(cleaned.cells[0].outputs[0].traceback)
    assert "assert f(1) == 1" in tb and "HIDDEN TESTS" not in tb and REDACTED in tb
    assert cleaned.cells[0].outputs[0].evalue == "big"  # the author's message stays
    assert cleaned.cells[1].outputs[0].text == f"{REDACTED}\nnothing else\n"
    assert "HIDDEN" not in json.dumps(cleaned)


def test_synthetic_answers_keep_the_indentation() -> None:
    source = "def f(n):\n    ### BEGIN SOLUTION\n    return n * n\n    ### END SOLUTION\n\nx = 1"
    assert answer(source, "correct") == "def f(n):\n    return n * n\n\nx = 1"
    assert answer(source, "wrong") == "def f(n):\n    return None\n\nx = 1"
    assert "    raise NotImplementedError()" in answer(source, "blank")
    assert answer(source, "slow", 0.5).startswith(
        "def f(n):\n    import time as _time\n    _time.sleep(0.5)\n    return n * n"
    )
    with pytest.raises(ValueError, match="unknown variant"):
        answer(source, "sideways")


def _work(task: str) -> dict:
    import os

    if task == "crash":
        os._exit(3)  # a library crash takes the whole worker down
    if task == "raise":
        raise RuntimeError("boom")
    return {"status": "graded", "pid": os.getpid()}


def test_a_dead_worker_costs_only_its_submission() -> None:
    from grader.pool import WorkerPool

    results: dict[str, dict] = {}
    WorkerPool(2, _work).run(
        ["a", "crash", "b", "raise", "c", "d"],
        lambda task, result: results.__setitem__(task, result),
    )
    assert results["crash"] == {
        "status": "failed",
        "message": "the grading process died (exit code 3)",
    }
    assert (
        results["raise"]["status"] == "failed"
        and results["raise"]["message"] == "RuntimeError: boom"
    )
    assert all(results[t]["status"] == "graded" for t in "abcd")


def test_faster_metadata_validation_gives_nbgraders_answers() -> None:
    """speedups: valid metadata passes, invalid raises jsonschema's very error."""
    import jsonschema
    import nbgrader.nbgraderformat.common as common
    from nbgrader.nbgraderformat.v3 import MetadataValidatorV3

    from grader import speedups

    schema = MetadataValidatorV3().schema
    good = {
        "grade": True,
        "solution": False,
        "locked": True,
        "schema_version": 3,
        "task": False,
        "grade_id": "x",
        "points": 2,
    }
    bad = {**good, "points": "many"}
    with pytest.raises(jsonschema.ValidationError) as original:
        jsonschema.validate(bad, schema)
    speedups.install()
    common.jsonschema.validate(good, schema)
    with pytest.raises(jsonschema.ValidationError) as fast:
        common.jsonschema.validate(bad, schema)
    assert fast.value.message == original.value.message == "'many' is not of type 'number'"


def test_kernel_command_line_shortcut_configures_as_traitlets_would() -> None:
    from ipykernel.kernelapp import IPKernelApp

    from grader.kernel_child import parse_connection_file_only

    parsed, shortcut = IPKernelApp(), IPKernelApp()
    parsed.parse_command_line(["-f", "/run/x/kernel.json"])
    parse_connection_file_only(shortcut, "/run/x/kernel.json")
    assert shortcut.cli_config == parsed.cli_config
    assert shortcut.config == parsed.config
    assert (shortcut.argv, shortcut.extra_args) == (parsed.argv, parsed.extra_args)
    assert shortcut.connection_file == parsed.connection_file == "/run/x/kernel.json"


def test_shared_gradebook_engines_still_add_each_new_course_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """speedups: the course is looked up once per engine, and a new course is still added."""
    import os
    import sys

    import nbgrader.api as api

    from grader import speedups

    # A new gradebook runs `alembic` from PATH (nbgrader's way): this environment's.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    speedups.install()
    url = f"sqlite:///{tmp_path / 'gradebook.db'}"
    for course in ("c1", "c1", "c2", "c1", "c2"):
        with api.Gradebook(url, course) as gb:
            assert gb.course_id == course
    with api.Gradebook(url, "c1") as gb:
        assert sorted(c.id for c in gb.db.query(api.Course).all()) == ["c1", "c2"]
