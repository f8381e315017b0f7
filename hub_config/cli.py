"""`smartlab`: the platform's one console command.

Each package contributes its command groups through the `smartlab.commands` entry points
(pyproject.toml), so this dispatcher knows none of them. An entry point's name is the command it
registers: `smartlab grade …` loads (imports) only the `grade` entry point, since importing every
package (the hub's ORM, the lab service) would cost each command a second of start-up; help and
unknown commands load them all. User errors end in one line on stderr and exit status 2,
without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import EntryPoint, entry_points

COMMAND_ENTRY_POINTS = "smartlab.commands"
# Exceptions that mean bad input: (module, class). Looked up only in modules the command has
# imported: an exception class that was never imported cannot have been raised.
USER_ERROR_CLASSES = (
    ("hardware_kits.descriptor", "DescriptorError"),
    ("hardware_kits.broker", "BrokerError"),
    ("hardware_kits.mqtt", "ConnectError"),
)


def user_errors() -> tuple[type[BaseException], ...]:
    found: list[type[BaseException]] = [FileNotFoundError, ValueError]
    for module, name in USER_ERROR_CLASSES:
        error = getattr(sys.modules.get(module), name, None)
        if isinstance(error, type) and issubclass(error, BaseException):
            found.append(error)
    return tuple(found)


def _command_name(argv: list[str]) -> str | None:
    """The command word of `argv` (the first argument that is not an option), if any."""
    for arg in argv:
        if arg in ("--", "-h", "--help"):  # the top-level help lists every command
            return None
        if not arg.startswith("-"):
            return arg
    return None


def _entry_points(argv: list[str]) -> list[EntryPoint]:
    found = sorted(entry_points(group=COMMAND_ENTRY_POINTS), key=lambda e: e.name)
    wanted = _command_name(argv)
    only = [ep for ep in found if ep.name == wanted]
    return only or found


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The parser, with the command `argv` names only (all of them when it names none)."""
    parser = argparse.ArgumentParser(prog="smartlab", description="Smart City Lab platform.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for ep in _entry_points(sys.argv[1:] if argv is None else argv):
        ep.load()(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(argv).parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return args.run(args) or 0
    except KeyboardInterrupt:
        return 130
    except Exception as err:
        if isinstance(err, user_errors()):
            print(f"smartlab: {err}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
