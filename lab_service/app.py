"""`smartlab lab serve`: the lab service as a traitlets application (like JupyterHub's own).

Configuration comes from a Python file (`-f/--config lab_service_config.py`), e.g.::

    c.LabServiceApp.port = 8181
    c.LabServiceApp.users = {"<token>": {"name": "alice", "institution": "univ-a"}}
    c.SharingPolicy.slot_seconds = 20 * 60

and command-line options override it. On PostgreSQL, several processes may share the database:
each first waits until it leads (leadership.py), so only one decides. Then the app opens the
database, connects to the already running broker as the `lab-service` account (watch every kit,
send safe states only), aligns the broker's command rights with the sessions in the database,
recovers pending handovers, and serves the REST API. One asyncio loop runs the API's operations
and the periodic `tick`, so every KitSharing call happens on that one thread: granting a kit is
one atomic step. The HTTP work itself (parsing, identity, validation, writing answers) runs in
`http_processes` front-end processes that pass each call to that loop (frontend.py).

The kit administration commands (`smartlab kits register|…`) are on the client side
(labs/kit_admin.py): they call this service's REST API.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import gc
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import ClassVar

from tornado.ioloop import PeriodicCallback
from tornado.netutil import bind_sockets
from traitlets import CaselessStrEnum, Dict, Float, Integer, Unicode, default
from traitlets.config import Application, Config
from traitlets.config.loader import PyFileConfigLoader

from hardware_kits.broker import Broker, BrokerError
from hardware_kits.descriptor import load_models
from hardware_kits.mqtt import BrokerAddress, Credentials
from lab_service.api_http import MAX_BODY_BYTES, HttpLimits, Operations, make_app, make_server
from lab_service.api_identity import Identity, TokenIdentity
from lab_service.api_routes import ApiContext
from lab_service.frontend import FrontEnds, preload_front_ends
from lab_service.gateway import MqttKitGateway
from lab_service.history import TelemetryRecorder
from lab_service.jobs import JobBook
from lab_service.leadership import Leadership
from lab_service.policy import SharingPolicy
from lab_service.rights import BrokerRights
from lab_service.service import KitSharing
from lab_service.store import SharingStore, sqlite_url
from site_config.paths import default_state_dir
from site_config.platform_accounts import SERVICE_ACCOUNT

DB_FILE = "lab-service.sqlite"
DEFAULT_CONFIG = "lab_service_config.py"
LISTEN_BACKLOG = 1024


class CannotStart(ValueError):
    """Bad configuration, or a port taken; str() says what and where in one line."""


class LabServiceApp(Application):
    name = "smartlab-lab-service"
    description = "The Smart City Lab service: queue, bookings and sessions of the shared kits."
    classes: ClassVar[list] = [SharingPolicy]
    raise_config_file_errors = True  # a broken config file stops the start, it is not skipped

    config_file = Unicode(DEFAULT_CONFIG, help="The Python config file to load.").tag(config=True)
    state_dir = Unicode(
        help="The platform's state folder (the broker's state is in its "
        "`broker/`); default $SMARTLAB_STATE_DIR or ./var."
    ).tag(config=True)
    db_url = Unicode(
        help="SQLAlchemy URL of the database; default SQLite in the state folder."
    ).tag(config=True)
    mqtt_host = Unicode(
        "127.0.0.1", help="Host of the running broker, also used in the MQTT URLs handed to users."
    ).tag(config=True)
    mqtt_port = Integer(1883, help="Port of the running broker.").tag(config=True)
    mqtt_tls_port = Integer(
        0,
        help="The broker's mqtts port (0: none). When set, the service connects there, verifying "
        "the broker against mqtt_ca, and hands users mqtts URLs.",
    ).tag(config=True)
    mqtt_ca = Unicode(
        "",
        help="CA certificate that verifies the broker's mqtts listener (empty: the system's "
        "trust store); `smartlab up` generates one and publishes it as <state>/mqtt-ca.crt, "
        "which every account reads.",
    ).tag(config=True)
    ip = Unicode("127.0.0.1", help="Address the REST API listens on.").tag(config=True)
    port = Integer(8181, help="Port the REST API listens on.").tag(config=True)
    tick_seconds = Float(0.25, help="How often sessions are advanced and kits granted.").tag(
        config=True
    )
    leader_retry_seconds = Float(
        1.0,
        min=0.05,
        help="A standby (another process leads on the same PostgreSQL database) asks for the "
        "leader's lock this often.",
    ).tag(config=True)
    leader_check_seconds = Float(
        0.25,
        min=0.05,
        help="The leader checks its lock's database connection this often; if it fails, the "
        "process exits at once (another may lead by then).",
    ).tag(config=True)
    startup_wait_seconds = Float(
        3.0,
        help="At start, wait this long at most for the kits of live sessions to be seen "
        "online, so that a restart does not end them as 'kit offline'.",
    ).tag(config=True)
    kits_file = Unicode(
        "",
        help="A site file whose kits are registered at start if they are not yet (the site "
        "file is where a centre lists its kits; `smartlab up` sets it).",
    ).tag(config=True)
    users = Dict(
        help="Token identity: {token: {name, institution, courses, instructor_of, "
        "lab_admin, priority}}. For standalone use and tests."
    ).tag(config=True)
    identity = CaselessStrEnum(
        ("token", "hub"),
        "token",
        help="Who callers are: 'token' (the `users` map) or 'hub' (JupyterHub says, from its "
        "tokens and OAuth cookies; see HubIdentity and $JUPYTERHUB_API_TOKEN).",
    ).tag(config=True)
    base_url = Unicode(
        help="URL prefix the API is also served under, e.g. /services/lab/ "
        "behind JupyterHub's proxy; default $JUPYTERHUB_SERVICE_PREFIX or "
        "/ (the API is always at /api/ too)."
    ).tag(config=True)
    http_processes = Integer(
        2,
        min=0,
        help="HTTP front-end processes (frontend.py): they parse, authenticate and validate "
        "requests, this process alone decides. 0: this process serves HTTP itself.",
    ).tag(config=True)

    max_body_bytes = Integer(
        MAX_BODY_BYTES,
        min=1024,
        help="Largest request body taken; a larger Content-Length gets 413 with the error JSON "
        "before the body is read (and a chunked body 411).",
    ).tag(config=True)
    header_timeout_seconds = Float(
        10.0,
        min=0.1,
        help="A connection that has not sent a whole request head within this time, an idle "
        "keep-alive connection included, is closed.",
    ).tag(config=True)
    body_timeout_seconds = Float(
        10.0,
        min=0.1,
        help="A request whose body has not arrived whole within this time (e.g. a Content-Length "
        "longer than what is sent) is dropped and its connection closed.",
    ).tag(config=True)
    frame_record_fps = Float(
        1.0,
        min=0.0,
        help="Camera frames recorded per kit and second (of the `full` stream, 10/s live); "
        "0 records none.",
    ).tag(config=True)
    frame_retention_days = Float(
        7.0, min=0.0, help="How long recorded camera frames are kept (0: forever)."
    ).tag(config=True)

    aliases: ClassVar[dict] = {
        "f": "LabServiceApp.config_file",
        "config": "LabServiceApp.config_file",
        "state-dir": "LabServiceApp.state_dir",
        "db-url": "LabServiceApp.db_url",
        "mqtt-host": "LabServiceApp.mqtt_host",
        "mqtt-port": "LabServiceApp.mqtt_port",
        "mqtt-tls-port": "LabServiceApp.mqtt_tls_port",
        "mqtt-ca": "LabServiceApp.mqtt_ca",
        "ip": "LabServiceApp.ip",
        "port": "LabServiceApp.port",
        "identity": "LabServiceApp.identity",
        "http-processes": "LabServiceApp.http_processes",
        "log-level": "Application.log_level",
    }

    @default("state_dir")
    def _state_dir_default(self) -> str:
        return str(default_state_dir())

    @default("db_url")
    def _db_url_default(self) -> str:
        return sqlite_url(str(Path(self.state_dir) / DB_FILE))

    @default("log_level")
    def _log_level_default(self) -> int:
        return logging.INFO

    @default("base_url")
    def _base_url_default(self) -> str:
        return os.environ.get("JUPYTERHUB_SERVICE_PREFIX") or "/"

    def initialize(self, argv: list[str] | None = None) -> None:
        super().initialize(argv)  # the command line
        path = Path(self.config_file).expanduser()
        if path.is_file():
            try:
                # Not load_config_file: it answers a bad value by exiting the process.
                loader = PyFileConfigLoader(
                    path.name, path=str(path.parent.resolve()), log=self.log
                )
                config = loader.load_config()
                config.merge(self.cli_config)  # the command line wins over the file
                self.update_config(config)
            except Exception as err:
                raise CannotStart(
                    f"{path}: {type(err).__name__}: {' '.join(str(err).split())}"
                ) from None
        elif self.config_file != DEFAULT_CONFIG:
            raise CannotStart(f"{path}: no such config file")
        try:
            self.callers = self.make_identity()
        except ValueError as err:
            raise CannotStart(f"{self.config_file}: {err}") from None

    def make_identity(self) -> Identity:
        """Who callers are: JupyterHub (identity 'hub'), or the configured token map."""
        if self.identity == "hub":
            from lab_service.hub_identity import HubIdentity

            return HubIdentity(parent=self, base_url=self.base_url, state_dir=self.state_dir)
        if not self.users:
            self.log.warning(
                "no users configured (c.LabServiceApp.users): every request will be refused"
            )
        return TokenIdentity(self.users)

    # ------------------------------------------------------------ running

    def start(self) -> None:
        for name in ("tornado", "hardware_kits", "labs"):
            # One log, in the app's format and at its level (JupyterHub does the same).
            logger = logging.getLogger(name)
            logger.parent, logger.propagate = self.log, True
        logging.getLogger("tornado.access").setLevel(logging.WARNING)  # refusals and errors
        # The standby waits here: no database schema, broker connection, port or scheduler
        # until it leads, so it cannot decide anything (docs/deploy.md, "Two lab services").
        if self.http_processes:
            preload_front_ends()
        leadership = Leadership(self.db_url, self.leader_retry_seconds, self.leader_check_seconds)
        try:
            leadership.wait(lambda line: print(line, flush=True))
            leadership.watch()
            asyncio.run(self.serve(leadership))
        finally:
            leadership.close()

    async def serve(self, leadership: Leadership) -> None:
        # A former leader cut off from the database (not killed) stops within one check.
        await asyncio.sleep(leadership.takeover_margin())
        if leadership.shared:
            print("leading: this process decides (PostgreSQL advisory lock)", flush=True)
        with contextlib.ExitStack() as closing:
            service, ctx = self.open_backend(closing)
            await self.wait_for_kits_of_live_sessions(service)
            for line in ctx.accounts.reconcile(service.holders()):
                self.log.warning("broker rights corrected: %s", line)
            for line in service.recover():
                self.log.warning("recovered: %s", line)
            ticker = PeriodicCallback(lambda: self.tick(service), self.tick_seconds * 1000)
            ticker.start()
            closing.callback(ticker.stop)
            operations = Operations(ctx)
            try:
                # A class's burst of connections must not overflow the accept queue (tornado's
                # default backlog is 128): a dropped SYN costs its client a one-second retry.
                sockets = bind_sockets(self.port, address=self.ip, backlog=LISTEN_BACKLOG)
            except OSError as err:
                raise CannotStart(
                    f"cannot listen on {self.ip}:{self.port}: {err.strerror or err}"
                ) from None
            for sock in sockets:
                closing.callback(sock.close)
            server, front_ends = None, None
            if self.http_processes:
                front_ends = FrontEnds(
                    self.http_processes,
                    sockets,
                    operations.invoke,
                    functools.partial(identity_from_config, self.config),
                    self.base_url,
                    self.log_level,
                    self.http_limits(),
                )
                front_ends.start()
            else:
                app = make_app(
                    self.callers,
                    operations.invoke,
                    base_url=self.base_url,
                    limits=self.http_limits(),
                )
                server = make_server(app, self.http_limits())
                server.add_sockets(sockets)
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            prefix = f" (and {self.base_url}api/)" if self.base_url.strip("/") else ""
            print(
                f"lab service on http://{self.ip}:{self.port}/api/{prefix} (broker "
                f"{self.mqtt_host}:{self.mqtt_port}, database {self.db_url}, identity "
                f"{self.identity}, {self.http_processes or 'no'} HTTP front-end processes)",
                flush=True,
            )
            # A full collection walked every start-up object (SQLAlchemy, pydantic, tornado):
            # 50-70 ms in the middle of a class's burst of requests. They live as long as the
            # process, so the collector may ignore them.
            gc.freeze()
            await stop.wait()
            self.log.info("stopping")
            ticker.stop()
            if front_ends is not None:
                await front_ends.stop()
            if server is not None:
                server.stop()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(server.close_all_connections(), 5)

    def http_limits(self) -> HttpLimits:
        return HttpLimits(
            max_body_bytes=self.max_body_bytes,
            header_timeout_s=self.header_timeout_seconds,
            body_timeout_s=self.body_timeout_seconds,
        )

    def open_backend(self, closing: contextlib.ExitStack) -> tuple[KitSharing, ApiContext]:
        """Database, broker accounts and connections; `closing` closes them in reverse."""
        broker = Broker(Path(self.state_dir) / "broker", host=self.mqtt_host, port=self.mqtt_port)
        if not broker.secrets_path.exists():
            raise BrokerError(
                f"{broker.state_dir}: no broker state; start the broker first "
                "(`smartlab broker run` or `smartlab up`)"
            )
        # Least privilege: the service watches every kit and sends safe states, nothing else.
        broker.provision_supervisor(SERVICE_ACCOUNT)
        if self.db_url.startswith("sqlite:///"):
            create_private_file(Path(self.db_url.removeprefix("sqlite:///")))
        store = SharingStore(self.db_url)
        closing.callback(store.close)
        rights = BrokerRights(broker.admin, broker.credentials)
        closing.callback(rights.close)
        address = self.mqtt_address(broker.credentials(SERVICE_ACCOUNT))
        gateway = MqttKitGateway(address, partner_kits=self.partner_kits())
        closing.callback(gateway.close)
        policy = SharingPolicy(parent=self)
        recorder = TelemetryRecorder(
            store,
            address.host,
            address.port,
            address.credentials,
            retention_s=policy.telemetry_retention_seconds,
            tls=address.tls_options(),
            frame_record_fps=self.frame_record_fps or None,
            frame_retention_s=self.frame_retention_days * 86_400.0 or None,
        )
        recorder.start()
        closing.callback(recorder.stop)
        service = KitSharing(store, policy, rights, gateway)
        if self.kits_file:
            self.register_site_kits(service)

        def url(creds: Credentials) -> str:
            return self.mqtt_address(creds).url()

        ctx = ApiContext(
            service=service,
            accounts=rights,
            mqtt_url=url,
            provision_kits=broker.provision_kits,
            kit_health=lambda kit_id: {
                **gateway.health(kit_id),
                "dropped_frames": recorder.dropped_frames.get(kit_id, 0),
            },
            models=frozenset(load_models()),
            jobs=JobBook(service, rights),
        )
        return service, ctx

    def mqtt_address(self, creds: Credentials) -> BrokerAddress:
        """Where an account reaches the broker: mqtts (verified) when the broker offers it."""
        if self.mqtt_tls_port:
            return BrokerAddress(
                self.mqtt_host, self.mqtt_tls_port, creds, tls=True, ca=self.mqtt_ca or None
            )
        return BrokerAddress(self.mqtt_host, self.mqtt_port, creds)

    def partner_kits(self) -> dict[str, str]:
        """Kit id -> partner site of the site file's kits that are reached over a bridge."""
        if not self.kits_file:
            return {}
        from site_config.kits import load_kits
        from site_config.sites import load_sites

        return load_sites(self.kits_file, load_kits(Path(self.kits_file))).partner_kits()

    def register_site_kits(self, service: KitSharing) -> None:
        from lab_service.service import Conflict, User
        from site_config.kits import load_kits

        site = User(name="site-file", institution="-", lab_admin=True)
        for entry in load_kits(Path(self.kits_file)):
            with contextlib.suppress(Conflict):  # registered already: the database decides
                service.register_kit(site, entry.id, entry.model, entry.name)

    async def wait_for_kits_of_live_sessions(self, service: KitSharing) -> None:
        """The gateway learns kit states from retained messages just after connecting; a tick
        before that would take every held kit for offline and end its session."""
        kits = set(service.holders())
        deadline = time.monotonic() + self.startup_wait_seconds
        while kits and time.monotonic() < deadline:
            kits = {k for k in kits if not service.gateway.online(k)}
            await asyncio.sleep(0.05)
        for kit in sorted(kits):
            self.log.warning("kit %s of a live session is not online", kit)

    def tick(self, service: KitSharing) -> None:
        try:
            service.tick()
        except Exception:  # log and go on: the next tick retries
            self.log.exception("tick failed")


def create_private_file(path: Path) -> None:
    """`path` exists; made now, it is 0600 (everyone's sessions and commands are in it), and
    SQLite gives its journal and WAL files the same mode."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600))


def identity_from_config(config: Config) -> Identity:
    """The identity of a front-end process: made from the service's own configuration."""
    return LabServiceApp(config=config).make_identity()


# ---------------------------------------------------------------- smartlab lab …


def cmd_serve(args: argparse.Namespace) -> int:
    argv: list[str] = []
    for option, value in (
        ("--config", args.config),
        ("--state-dir", args.state_dir),
        ("--mqtt-port", args.mqtt_port),
        ("--port", args.port),
        ("--ip", args.ip),
        ("--db-url", args.db_url),
        ("--identity", args.identity),
        ("--http-processes", args.http_processes),
    ):
        if value is not None:
            argv.append(f"{option}={value}")
    app = LabServiceApp()
    app.initialize(argv)
    app.start()
    return 0


def register(commands: argparse._SubParsersAction) -> None:
    lab = commands.add_parser("lab", help="the lab service: queue, bookings, sessions")
    sub = lab.add_subparsers(dest="lab_command", required=True, metavar="ACTION")

    serve = sub.add_parser("serve", help="run the lab service (the broker must be running)")
    serve.add_argument(
        "-f", "--config", type=Path, help=f"config file (default ./{DEFAULT_CONFIG} if present)"
    )
    serve.add_argument(
        "--state-dir", type=Path, help="state folder (default $SMARTLAB_STATE_DIR or ./var)"
    )
    serve.add_argument("--mqtt-port", type=int, help="broker port (default 1883)")
    serve.add_argument("--port", type=int, help="REST API port (default 8181)")
    serve.add_argument("--ip", help="REST API address (default 127.0.0.1)")
    serve.add_argument("--db-url", help="database URL (default SQLite in the state folder)")
    serve.add_argument(
        "--identity",
        choices=("token", "hub"),
        help="who callers are: the configured tokens (default) or JupyterHub",
    )
    serve.add_argument(
        "--http-processes",
        type=int,
        metavar="N",
        help="HTTP front-end processes (default 2; 0: none)",
    )
    serve.set_defaults(run=cmd_serve)


def main() -> None:
    """`python -m lab_service.app [--config FILE] …`: the traitlets way."""
    logging.basicConfig()
    try:
        app = LabServiceApp()
        app.initialize()
        app.start()
    except (CannotStart, BrokerError, ConnectionError) as err:
        print(f"lab service: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
