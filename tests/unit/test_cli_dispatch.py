"""`smartlab` loads only the entry point its command names; these tests hold that to the
entry points' contract (each registers the one command it is named after)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib.metadata import entry_points

from hub_config import cli


def test_each_entry_point_registers_the_command_it_is_named_after():
    for ep in entry_points(group=cli.COMMAND_ENTRY_POINTS):
        parser = argparse.ArgumentParser()
        commands = parser.add_subparsers(dest="command")
        ep.load()(commands)
        assert sorted(commands.choices) == [ep.name], ep.value


def test_a_command_loads_only_its_own_package():
    probe = (
        "import sys; from hub_config import cli; cli.build_parser(['grades', 'export']); "
        "print(sorted(m for m in ('jupyterhub.orm', 'lab_service.app', "
        "'hub_config.launcher', 'grader.cli') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "['grader.cli']"


def test_help_and_unknown_commands_list_every_command():
    names = {ep.name for ep in entry_points(group=cli.COMMAND_ENTRY_POINTS)}
    for argv in ([], ["--help"], ["no-such-command"]):
        parser = cli.build_parser(argv)
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        assert set(sub.choices) == names


def test_user_error_is_one_line_without_traceback(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "hub_config.cli", "kits", "validate", str(missing)],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
