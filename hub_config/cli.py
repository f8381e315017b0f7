"""`smartlab`: the platform's one console command.

Each package contributes its command groups through the `smartlab.commands` entry points
(pyproject.toml), so this dispatcher knows none of them. User errors end in one line on stderr
and exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import logging
import sys
from importlib.metadata import entry_points

from hardware_kits.broker import BrokerError
from hardware_kits.descriptor import DescriptorError
from hardware_kits.mqtt import ConnectError

COMMAND_ENTRY_POINTS = "smartlab.commands"
USER_ERRORS = (DescriptorError, BrokerError, ConnectError, FileNotFoundError, ValueError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smartlab", description="Smart City Lab platform.")
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for ep in sorted(entry_points(group=COMMAND_ENTRY_POINTS), key=lambda e: e.name):
        ep.load()(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.run(args) or 0
    except USER_ERRORS as err:
        print(f"smartlab: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
