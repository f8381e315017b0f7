"""`smartlab site …`: a partner site's broker and kits on their own, bridged to the centre.

`site run` is what a partner university runs (the centre runs `smartlab up`); `site
bridge-account` is run at the centre and writes the password a partner's bridge logs in with.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hardware_kits.bridge import bridge_plan
from hardware_kits.broker import Broker
from hardware_kits.cli import wait_for_interrupt
from hardware_kits.descriptor import DescriptorError, load_models
from hardware_kits.fleet import Fleet
from hardware_kits.tls import default_names
from site_config.kits import load_kits
from site_config.paths import default_state_dir
from site_config.sites import load_sites


def partner_broker(site_file: Path, name: str, state_dir: Path) -> tuple[Broker, list]:
    """The partner's broker (not started) with its bridge, and the site's kit entries."""
    models = load_models()
    kits = load_kits(site_file, models)
    sites = load_sites(site_file, kits)
    plan = bridge_plan(sites, name, site_file.parent)
    site = sites.site(name)
    broker = Broker(
        state_dir / "broker",
        port=site.broker.port,
        tls_port=site.broker.tls_port,
        tls_names=list(dict.fromkeys([site.broker.host, *default_names()])),
        bridge=plan,
    )
    return broker, [k for k in kits if k.id in plan.kit_ids]


def cmd_site_run(args: argparse.Namespace) -> int:
    broker, entries = partner_broker(args.site, args.name, args.state_dir)
    with broker:
        creds = broker.provision_kits([e.id for e in entries])
        addresses = {kit: broker.address(c.username) for kit, c in creds.items()}
        with Fleet(entries, load_models(), addresses):
            print(
                f"site {args.name}: broker on {broker.host}:{broker.port}, {len(entries)} kits, "
                f"bridged to {broker.bridge.centre_host}:{broker.bridge.centre_tls_port}; "
                "Ctrl-C stops them",
                flush=True,
            )
            wait_for_interrupt()
    return 0


def cmd_bridge_account(args: argparse.Namespace) -> int:
    """At the centre: make (or refresh the rights of) a partner's bridge account."""
    kits = load_kits(args.site, load_models())
    sites = load_sites(args.site, kits)
    site = sites.site(args.name)
    if site is None or site.kind != "partner":
        raise DescriptorError(f"--name: {args.name!r} is not a partner site of {args.site}")
    broker = Broker(args.state_dir / "broker", port=sites.centre.broker.port)
    if not broker.secrets_path.exists():
        raise DescriptorError(f"{broker.state_dir}: no broker state; start the centre first")
    creds = broker.provision_bridge(site.id, sites.kits_of(site.id))
    args.out.touch(mode=0o600, exist_ok=True)
    args.out.write_text(creds.password + "\n")
    print(f"{creds.username}: password written to {args.out} (give it to {site.id}'s admin)")
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    site = commands.add_parser("site", help="a partner site's broker and kits")
    sub = site.add_subparsers(dest="site_command", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="run a partner site's broker and kits, bridged to the centre")
    account = sub.add_parser(
        "bridge-account", help="at the centre: make a partner's bridge account"
    )
    account.add_argument("--out", type=Path, required=True, help="file the password goes to")
    for parser in (run, account):
        parser.add_argument("--site", type=Path, required=True, help="the site file")
        parser.add_argument("--name", required=True, help="the partner site's id")
        parser.add_argument(
            "--state-dir",
            type=Path,
            default=default_state_dir(),
            help="where this site keeps its state (default: $SMARTLAB_STATE_DIR or ./var)",
        )
    run.set_defaults(run=cmd_site_run)
    account.set_defaults(run=cmd_bridge_account)
