"""`smartlab up`: start the platform on this machine with the demo site, until Ctrl-C.

Today it brings up the broker and every kit twin of the site file, creates the demo MQTT
accounts and shows the kits' live values; the hub, the lab service and the courses join here as
they land. A second run reuses the state folder (accounts, broker persistence).
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from hardware_kits.cli import DEFAULT_SITE, add_broker_options, broker_for
from hardware_kits.descriptor import load_models
from hardware_kits.fleet import Fleet, load_kits
from labs.client import Lab, connect

DEMO_OBSERVER = "demo-observer"
DEMO_OPERATOR = "demo-operator"  # may command every kit: a demo convenience, not for production


def format_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.1f}"
    if isinstance(value, list):
        return "".join("■" if v else "□" for v in value) if all(
            isinstance(v, bool) for v in value) else f"[{len(value)}]"
    return str(value)


def kit_line(lab: Lab, kit_id: str) -> str:
    kit = lab.kit(kit_id, timeout=0)
    values = "  ".join(f"{k}={format_value(v)}" for k, v in kit.latest.items())
    return f"{kit_id:<14} {kit.state or '?':<7} {values}"


def show_live_values(lab: Lab, kit_ids: list[str], stop: threading.Event) -> None:
    """Redraw a live table once a second on a terminal; a line every 10 s elsewhere (logs)."""
    interactive = sys.stdout.isatty()
    while not stop.wait(1.0 if interactive else 10.0):
        lines = [kit_line(lab, kit_id) for kit_id in kit_ids if kit_id in lab.kits()]
        stamp = time.strftime("%H:%M:%S")
        if interactive:
            sys.stdout.write("\x1b[s\x1b[J" + f"live values at {stamp}\n" + "\n".join(lines)
                             + "\x1b[u")
            sys.stdout.flush()
        else:
            print(f"live values at {stamp}\n  " + "\n  ".join(lines), flush=True)


def cmd_up(args: argparse.Namespace) -> int:
    models = load_models()
    entries = load_kits(args.site, models)  # validate everything before starting anything
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with broker_for(args) as broker:
        creds = broker.provision_kits([e.id for e in entries])
        observer = broker.provision_user(DEMO_OBSERVER)
        operator = broker.provision_user(DEMO_OPERATOR, [e.id for e in entries])
        addresses = {kit: broker.address(c.username) for kit, c in creds.items()}
        with Fleet(entries, models, addresses), \
                connect(broker.address(observer.username).url(),
                        client_id=f"smartlab-up-{int(time.time())}") as lab:
            lab.wait_for_kits([e.id for e in entries], timeout=15)
            print(f"Smart City Lab is up: broker on {broker.host}:{broker.port}, "
                  f"{len(entries)} kits from {args.site}")
            print(f"  watch:   {broker.address(observer.username).url()}")
            print(f"  command: {broker.address(operator.username).url()}")
            print("  Python:  from labs.client import connect; lab = connect('<url>')")
            print("Ctrl-C stops everything.\n", flush=True)
            with contextlib.suppress(KeyboardInterrupt):
                show_live_values(lab, [e.id for e in entries], stop)
    print("\nstopped.")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    up = commands.add_parser("up", help="start the platform with demo content")
    up.add_argument("--site", type=Path, default=DEFAULT_SITE, help="site file (default: demo)")
    add_broker_options(up)
    up.set_defaults(run=cmd_up)
