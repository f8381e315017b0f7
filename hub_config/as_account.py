"""The child side of `hub_config.accounts.call_as`: `python -P -m hub_config.as_account
module:function`, started as another account, reads the keyword arguments as JSON on stdin and
writes the result as JSON on stdout; an error is one line on stderr and exit status 1."""

from __future__ import annotations

import importlib
import json
import sys


def main(argv: list[str]) -> int:
    module, name = argv[0].split(":")
    payload = json.loads(sys.stdin.read())
    try:
        result = getattr(importlib.import_module(module), name)(**payload)
    except Exception as err:  # one line for the caller (root), which logs or raises it
        first = (str(err).strip().splitlines() or [""])[0]
        print(f"{type(err).__name__}: {first}", file=sys.stderr)
        return 1
    json.dump(result, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
