"""`smartlab broker …` and the kit-side actions of `smartlab kits …` (kit models, twins,
firmware bundles); the command itself is put together in labs/kit_admin.py."""

from __future__ import annotations

import argparse
import json
import signal
import socket
import threading
import time
from pathlib import Path

from hardware_kits.broker import ADMIN, Broker, BrokerError, provision_site, site_accounts
from hardware_kits.credential_store import ADMIN_PASSWORD_ENV, ADMIN_USER_ENV, CredentialStore
from hardware_kits.descriptor import DescriptorError, load_descriptor, load_models, read_yaml
from hardware_kits.dynsec import DynSec, DynSecError
from hardware_kits.fleet import Fleet
from hardware_kits.mqtt import ConnectError
from site_config.kits import load_kits, parse_kits
from site_config.paths import DEMO_SITE, default_site, default_state_dir
from site_config.platform_accounts import BOARD_ACCOUNT, SERVICE_ACCOUNT
from site_config.runtime import broker_socket_path


def add_broker_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=default_state_dir(),
        help="where the platform keeps its state (default: $SMARTLAB_STATE_DIR or ./var)",
    )
    parser.add_argument("--mqtt-port", type=int, default=1883, help="broker port (default 1883)")
    tls = parser.add_argument_group("mqtts (TLS) for clients on other machines")
    tls.add_argument(
        "--mqtt-tls-port",
        type=int,
        default=None,
        help="also listen for mqtts on this port, on every interface (e.g. 8883); the "
        "certificate is generated with its own CA in the state folder unless --tls-cert is given",
    )
    tls.add_argument(
        "--tls-name",
        action="append",
        default=None,
        help="host name or address the generated certificate is valid for (repeatable; "
        "default: this machine's names and loopback); the first is what URLs name",
    )
    tls.add_argument("--tls-cert", type=Path, help="the site's server certificate (PEM)")
    tls.add_argument("--tls-key", type=Path, help="its private key (PEM)")
    tls.add_argument("--tls-ca", type=Path, help="the CA that signed it, if not a public one")


def broker_for(args: argparse.Namespace) -> Broker:
    broker = Broker(
        args.state_dir / "broker",
        port=args.mqtt_port,
        socket_path=broker_socket_path(args.state_dir),
    )
    tls_port = getattr(args, "mqtt_tls_port", None)
    if tls_port is not None:
        broker.tls_port = tls_port
        broker.tls_names = args.tls_name or broker.tls_names
        broker.tls_cert, broker.tls_key, broker.tls_ca = args.tls_cert, args.tls_key, args.tls_ca
    return broker


def wait_for_interrupt() -> None:
    """Block until Ctrl-C or SIGTERM (SIGINT explicitly: a background job starts ignoring it)."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()


# ---------------------------------------------------------------- kits


def cmd_models(_args: argparse.Namespace) -> int:
    for name, desc in load_models().items():
        sensors = ", ".join(desc["sensors"])
        actuators = ", ".join(f"{k} (safe {v['safe']!r})" for k, v in desc["actuators"].items())
        print(f"{name}: {desc['name']}\n  sensors: {sensors}\n  actuators: {actuators}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    models = load_models()
    for path in args.files:
        data = read_yaml(path)
        if isinstance(data, dict) and "kits" in data:
            parse_kits(data, str(path), models)
        else:
            load_descriptor(path)
        print(f"{path}: valid")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Run the site's twins against a broker started by `smartlab broker run`."""
    models = load_models()
    entries = load_kits(args.site, models)
    broker = broker_for(args)
    if not broker.secrets_path.exists():
        raise DescriptorError(
            f"{broker.state_dir}: no broker state; start it first with `smartlab broker run`"
        )
    creds = broker.provision_kits([e.id for e in entries])
    addresses = {kit: broker.address(c.username) for kit, c in creds.items()}
    with Fleet(entries, models, addresses):
        print(f"{len(entries)} kits running on {broker.host}:{broker.port}; Ctrl-C stops them")
        wait_for_interrupt()
    return 0


def cmd_firmware(args: argparse.Namespace) -> int:
    from hardware_kits.firmware_bundle import build_bundle

    models = load_models()
    entry = next((e for e in load_kits(args.site, models) if e.id == args.kit), None)
    if entry is None:
        raise DescriptorError(f"{args.site}: kits: no kit with id {args.kit!r}")
    broker = broker_for(args)
    creds = broker.credentials(f"kit-{entry.id}")
    port, ca = args.mqtt_port, None
    if broker.tls_port is not None:  # the board speaks mqtts and verifies the broker
        port, ca = broker.tls_port, broker.tls_files().ca
        if ca is None:
            raise DescriptorError("a board verifies the broker with a CA file: give --tls-ca")
    out = build_bundle(
        args.out,
        entry.id,
        models[entry.model],
        args.broker_host,
        port,
        creds.username,
        creds.password,
        args.wifi_ssid,
        args.wifi_password,
        ca=ca,
    )
    print(f"firmware bundle for {entry.id} in {out}; copy it with: mpremote cp -r {out}/. :")
    return 0


def add_kit_actions(sub: argparse._SubParsersAction) -> None:
    """The kit-side actions of `smartlab kits` (labs/kit_admin.py adds the pool's)."""
    sub.add_parser("models", help="list the kit models").set_defaults(run=cmd_models)
    validate = sub.add_parser("validate", help="check descriptor or site files")
    validate.add_argument("files", nargs="+", type=Path)
    validate.set_defaults(run=cmd_validate)
    run = sub.add_parser("run", help="run the twins of a site file")
    run.add_argument("--site", type=Path, default=DEMO_SITE)
    add_broker_options(run)
    run.set_defaults(run=cmd_run)
    firmware = sub.add_parser("firmware", help="build a MicroPython bundle for a real board")
    firmware.add_argument("kit", help="kit id from the site file")
    firmware.add_argument("--site", type=Path, default=DEMO_SITE)
    firmware.add_argument("--out", type=Path, required=True)
    firmware.add_argument("--broker-host", required=True, help="broker address the board uses")
    firmware.add_argument("--wifi-ssid")
    firmware.add_argument("--wifi-password")
    add_broker_options(firmware)
    firmware.set_defaults(run=cmd_firmware)


# ---------------------------------------------------------------- broker


def cmd_broker_run(args: argparse.Namespace) -> int:
    with broker_for(args) as broker:
        print(
            f"mosquitto listening on {broker.host}:{broker.port} (state in {broker.state_dir}); "
            "Ctrl-C stops it"
        )
        wait_for_interrupt()
    return 0


def cmd_broker_user(args: argparse.Namespace) -> int:
    broker = broker_for(args)
    creds = broker.provision_user(args.username, args.command or [])
    print(json.dumps({"url": broker.address(creds.username).url()}))
    return 0


def cmd_broker_provision(args: argparse.Namespace) -> int:
    """Provision a running broker as its admin: the same roles and accounts as one machine's."""
    kit_ids = [e.id for e in load_kits(args.site, load_models())]
    store = CredentialStore(args.credentials)
    admin = store.admin(ADMIN)
    # Every password first: a missing one stops the command before anything changes.
    accounts = {name: store.credentials(name) for name in site_accounts(kit_ids)}
    wait_for_listener(args.host, args.port, args.wait)
    try:
        with DynSec(args.host, args.port, admin) as dynsec:
            provision_site(dynsec, kit_ids, accounts.__getitem__)
    except DynSecError as err:
        raise BrokerError(
            f"the broker at {args.host}:{args.port} refused provisioning: {err}"
        ) from None
    print(
        f"broker at {args.host}:{args.port} provisioned: {len(kit_ids)} kits, "
        f"{SERVICE_ACCOUNT}, {BOARD_ACCOUNT}"
    )
    return 0


def cmd_broker_credentials(args: argparse.Namespace) -> int:
    """Give every account the site's broker needs a password in the file (kept if it has one),
    e.g. to make a Kubernetes Secret from it; prints no password."""
    kit_ids = [e.id for e in load_kits(args.site, load_models())]
    store = CredentialStore(args.credentials)
    names = [ADMIN, *site_accounts(kit_ids)]
    for name in names:
        store.credentials(name)
    print(f"{args.credentials}: passwords for {len(names)} accounts ({', '.join(names)})")
    return 0


def wait_for_listener(host: str, port: int, seconds: float) -> None:
    """Until the port takes a TCP connection, or `seconds` have passed (then one line)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            socket.create_connection((host, port), timeout=2).close()
            return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise ConnectError(
                    f"cannot reach the MQTT broker at {host}:{port}: {err}"
                ) from None
        time.sleep(0.5)


def register_broker(commands: argparse._SubParsersAction) -> None:
    broker = commands.add_parser("broker", help="the Mosquitto broker")
    sub = broker.add_subparsers(dest="broker_command", required=True, metavar="ACTION")
    run = sub.add_parser("run", help="start the broker in the foreground")
    add_broker_options(run)
    run.set_defaults(run=cmd_broker_run)
    user = sub.add_parser("user", help="create an MQTT account that observes every kit")
    user.add_argument("username")
    user.add_argument(
        "--command",
        action="append",
        metavar="KIT",
        help="also allow commanding this kit (repeatable)",
    )
    add_broker_options(user)
    user.set_defaults(run=cmd_broker_user)
    provision = sub.add_parser(
        "provision",
        help="as the admin, make a running broker's roles and the site's accounts (idempotent)",
    )
    provision.add_argument("--site", type=Path, default=default_site(), help="the site file")
    provision.add_argument("--host", default="127.0.0.1", help="the broker's address")
    provision.add_argument("--port", type=int, default=1883, help="the broker's port")
    provision.add_argument(
        "--credentials",
        type=Path,
        default=default_state_dir() / "broker" / "credentials.json",
        help="the accounts' passwords (JSON, as in the state folder's broker/credentials.json; "
        "a missing account gets a generated one if the file can be written); the admin comes "
        f"from ${ADMIN_USER_ENV} and ${ADMIN_PASSWORD_ENV} if set, else from this file",
    )
    provision.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for the broker to listen (default: not at all)",
    )
    provision.set_defaults(run=cmd_broker_provision)
    credentials = sub.add_parser(
        "credentials",
        help="write a password for each account of the site into a credentials file "
        "(the file `broker provision` and the lab service read; existing ones kept)",
    )
    credentials.add_argument("--site", type=Path, default=default_site(), help="the site file")
    credentials.add_argument("--credentials", type=Path, required=True, help="the file (JSON)")
    credentials.set_defaults(run=cmd_broker_credentials)
