"""`smartlab kits …`: the kit-side actions (hardware_kits.cli: models, validate, run, firmware)
and the lab admins' actions, which go through the running lab service's REST API with a lab
admin's token from $SMARTLAB_TOKEN (register, retire, maintenance, health)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable
from typing import Any

from hardware_kits.cli import add_kit_actions
from labs import client as lab_client


def _rest(args: argparse.Namespace, call: Callable[[Any], Any]) -> int:
    """Run one REST call with the admin token; user errors end in one line and exit 2."""
    token = os.environ.get("SMARTLAB_TOKEN")
    if not token:
        print(
            "smartlab: set SMARTLAB_TOKEN to a lab admin's token of the lab service",
            file=sys.stderr,
        )
        return 2
    try:
        result = call(lab_client.LabService(args.url, token))
    except lab_client.LabServiceError as err:
        print(f"smartlab: {err}", file=sys.stderr)
        return 2
    print(json.dumps(result, indent=1) if not isinstance(result, str) else result)
    return 0


def _kit_line(kit: dict[str, Any]) -> str:
    online = "online" if kit.get("online") else "offline"
    reason = f" ({kit['reason']})" if kit.get("reason") else ""
    return f"{kit['id']}: {kit['model']}, {kit['pool']}{reason}, {online}"


def add_kit_admin(actions: argparse._SubParsersAction) -> None:
    """`smartlab kits register|retire|maintenance|health`, through the running lab service
    with a lab admin's token from $SMARTLAB_TOKEN."""
    url = argparse.ArgumentParser(add_help=False)
    url.add_argument(
        "--url",
        default=os.environ.get("SMARTLAB_LAB_URL"),
        help="lab service URL (default $SMARTLAB_LAB_URL or http://127.0.0.1:8181)",
    )

    register_kit = actions.add_parser("register", parents=[url], help="add a kit to the pool")
    register_kit.add_argument("kit")
    register_kit.add_argument("--model", required=True)
    register_kit.add_argument("--name", default="")
    register_kit.set_defaults(
        run=lambda a: _rest(a, lambda s: _kit_line(s.register_kit(a.kit, a.model, a.name)))
    )

    retire = actions.add_parser("retire", parents=[url], help="take a kit out for good")
    retire.add_argument("kit")
    retire.set_defaults(run=lambda a: _rest(a, lambda s: _kit_line(s.retire_kit(a.kit))))

    maintenance = actions.add_parser(
        "maintenance", parents=[url], help="take a kit out for maintenance (--off: back)"
    )
    maintenance.add_argument("kit")
    maintenance.add_argument("--off", action="store_true", help="put it back in the pool")
    maintenance.add_argument("--reason", default="")
    maintenance.set_defaults(
        run=lambda a: _rest(a, lambda s: _kit_line(s.set_maintenance(a.kit, not a.off, a.reason)))
    )

    health = actions.add_parser("health", parents=[url], help="a kit's health, or every kit")
    health.add_argument("kit", nargs="?")
    health.set_defaults(
        run=lambda a: _rest(
            a, lambda s: s.kit(a.kit) if a.kit else "\n".join(map(_kit_line, s.kits()))
        )
    )


def register(commands: argparse._SubParsersAction) -> None:
    kits = commands.add_parser("kits", help="kit models, twins, firmware and the pool of kits")
    actions = kits.add_subparsers(dest="kits_command", required=True, metavar="ACTION")
    add_kit_actions(actions)
    add_kit_admin(actions)
