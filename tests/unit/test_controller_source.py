"""A controller defined in a notebook travels as its source: functions and classes defined in
real IPython cells (InteractiveShell), and in modules."""

from __future__ import annotations

import pytest
from IPython.core.interactiveshell import InteractiveShell

from labs.client.controller_source import ControllerSourceError, controller_source
from labs.client.jobs import controller_payload


@pytest.fixture(scope="module")
def shell():
    shell = InteractiveShell.instance()
    yield shell
    InteractiveShell.clear_instance()


def run_cell(shell: InteractiveShell, code: str) -> None:
    result = shell.run_cell(code, store_history=True)
    result.raise_error()


def rebuilt(source: str, entry: str) -> object:
    namespace: dict = {}
    exec(compile(source, "<controller>", "exec"), namespace)
    return namespace[entry]


def test_a_function_from_a_notebook_cell_comes_back_whole_and_runs(shell):
    run_cell(shell, "x = 1\n\ndef follow(readings, t, gain=1.0):\n    return {'lamp': gain * t}\n")
    source, entry = controller_source(shell.user_ns["follow"])
    assert entry == "follow" and source.startswith("def follow(")
    assert "x = 1" not in source  # only the controller, not the rest of the cell
    assert rebuilt(source, entry)({}, 2.0, gain=3.0) == {"lamp": 6.0}


def test_a_class_from_a_notebook_cell_is_found_through_its_methods(shell):
    run_cell(
        shell,
        "import math\n"
        "class Blinker:\n"
        "    '''On and off.'''\n"
        "    def __init__(self, period=2.0):\n"
        "        self.period = period\n"
        "\n"
        "    def step(self, readings, t):\n"
        "        return {'lamp': 1.0 if math.floor(t / self.period) % 2 == 0 else 0.0}\n"
        "\n"
        "blink = Blinker()\n",
    )
    cls = shell.user_ns["Blinker"]
    assert cls.__module__ == "__main__"
    source, entry = controller_source(cls)
    assert entry == "Blinker" and source.startswith("class Blinker:")
    assert "blink = Blinker()" not in source and "def step" in source
    made = rebuilt("import math\n" + source, entry)(period=1.0)
    assert made.step({}, 0.5) == {"lamp": 1.0} and made.step({}, 1.5) == {"lamp": 0.0}


def test_a_class_redefined_in_a_later_cell_gives_the_newest_source(shell):
    run_cell(shell, "class Hold:\n    def step(self, readings, t):\n        return {'lamp': 0.1}\n")
    run_cell(shell, "class Hold:\n    def step(self, readings, t):\n        return {'lamp': 0.9}\n")
    source, _ = controller_source(shell.user_ns["Hold"])
    assert "0.9" in source and "0.1" not in source


def test_a_module_function_and_payload_shapes():
    source, entry = controller_source(rebuilt)
    assert entry == "rebuilt" and "def rebuilt" in source
    assert controller_payload(("def f(r, t): pass\n", "f")) == {
        "source": "def f(r, t): pass\n",
        "entry": "f",
    }


def test_things_that_are_not_controllers_are_refused_with_a_reason(shell):
    run_cell(shell, "class NoStep:\n    def go(self):\n        pass\n")
    with pytest.raises(ControllerSourceError, match="no step"):
        controller_source(shell.user_ns["NoStep"])
    with pytest.raises(ControllerSourceError, match="lambda"):
        controller_source(lambda readings, t: None)
    with pytest.raises(ControllerSourceError, match="not int"):
        controller_source(3)
