"""Eclipse Mosquitto 2, configured, started and provisioned by the project.

The broker refuses anonymous clients and enforces every right through the dynamic-security
plugin: a kit may publish only under its own `homie/5/<kit>/` tree and receive only its own
commands; observers may read every kit; command rights on a kit come from a per-kit role
(`command-<kit>`) that is created ahead of time and granted to whoever may command it.

State (configuration, the dynsec JSON, persistence, log, generated passwords) lives in one
folder; a second start reuses it.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from hardware_kits import protocol as P
from hardware_kits import tls
from hardware_kits.bridge import BRIDGE_STATE_FILTER, BridgePlan, bridge_account, bridge_acls
from hardware_kits.bridge import bridge_role as _bridge_role
from hardware_kits.credential_store import CredentialStore
from hardware_kits.dynsec import DynSec, allow, deny
from hardware_kits.mqtt import BrokerAddress, Credentials
from hardware_kits.tls import TlsFiles, default_names
from site_config.platform_accounts import (
    BOARD_ACCOUNT,
    BROKER_ADMIN,
    CAMERA_PREFIX,
    KIT_PREFIX,
    SERVICE_ACCOUNT,
)
from site_config.runtime import port_is_free

ADMIN = BROKER_ADMIN
# Role names that span kits contain "_", which kit ids cannot: no kit can shadow them.
OBSERVER_ROLE = "observe_all_kits"
MOSQUITTO_USER = "mosquitto"
# The platform's message limit, enforced by Mosquitto for every client (max_packet_size; also
# announced to MQTT v5 clients in CONNACK): a packet larger than this (payload, topic and
# properties) is delivered to no one and its sender is disconnected with reason 149, "packet
# too large". Kits ask for less, their model's max_packet_bytes. The largest messages are camera
# frames (protocol.MAX_FRAME_BYTES of JPEG): the limit leaves room for one of those with its topic
# and properties, and for a somewhat larger one, which then reaches receivers that drop and count
# it (rather than costing its camera the connection). Not message_size_limit: Mosquitto 2.0.11
# refuses such a PUBLISH with PUBACK 149, a code PUBACK may not carry, which paho takes for a
# malformed packet.
MAX_PACKET_BYTES = P.MAX_FRAME_BYTES + 64 * 1024


class BrokerError(RuntimeError):
    """The broker could not be set up or started; str() says why in one line."""


def find_mosquitto() -> tuple[str, str, str]:
    """Paths of mosquitto, mosquitto_ctrl and the dynamic-security plugin."""
    broker = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    ctrl = shutil.which("mosquitto_ctrl") or "/usr/bin/mosquitto_ctrl"
    plugins = glob.glob("/usr/lib/*/mosquitto_dynamic_security.so") + glob.glob(
        "/usr/lib/mosquitto_dynamic_security.so"
    )
    missing = [p for p in (broker, ctrl) if not os.path.exists(p)]
    if missing or not plugins:
        raise BrokerError(
            "Mosquitto 2 with its dynamic-security plugin is not installed "
            "(Debian/Ubuntu: apt-get install mosquitto mosquitto-clients)"
        )
    return broker, ctrl, plugins[0]


def kit_role(kit_id: str) -> str:
    return KIT_PREFIX + kit_id


def command_role(kit_id: str) -> str:
    return f"command-{kit_id}"


def observe_role(kit_id: str) -> str:
    """Read-only access to one kit's tree, for accounts that may watch only some kits."""
    return f"observe-{kit_id}"


def kit_acls(kit_id: str) -> list[dict]:
    """A kit publishes anything under its own tree and subscribes to its own commands only."""
    acls = [allow("publishClientSend", P.kit_filter(kit_id))]
    for topic in P.command_subscriptions(kit_id):
        acls += [allow("subscribeLiteral", topic), allow("publishClientReceive", topic)]
    return acls


def camera_role(kit_id: str) -> str:
    """The role (and account) of a kit's camera companion."""
    return CAMERA_PREFIX + kit_id


def camera_acls(kit_id: str) -> list[dict]:
    """A camera companion publishes its kit's `$camera` and `$camera/#` and nothing else: a
    compromised camera host cannot fake telemetry, acknowledgements or commands. It reads its
    kit's `$telemetry` only, for the seq its frames follow."""
    telemetry = P.telemetry_topic(kit_id)
    return [
        *(allow("publishClientSend", topic) for topic in P.camera_filters(kit_id)),
        allow("subscribeLiteral", telemetry),
        allow("publishClientReceive", telemetry),
    ]


def command_acls(kit_id: str) -> list[dict]:
    return [allow("publishClientSend", topic) for topic in P.command_subscriptions(kit_id)]


def _no_acks(kit_filter: str) -> list[dict]:
    """Acknowledgements are their requester's alone: watching a kit does not show them.

    Listed first (dynsec takes the first matching ACL of the first matching role); a requester's
    own `acks_<user>` role, granted at a higher priority, lets its own through (Mosquitto
    2.0.11's dynsec has no %u substitution in ACL topics, so the role is made per account)."""
    acks = kit_filter.removesuffix("#") + "$ack/#"
    return [deny("subscribePattern", acks, 1), deny("publishClientReceive", acks, 1)]


def observe_acls(kit_id: str) -> list[dict]:
    """Subscribe to and receive everything under one kit's tree (telemetry, state), no acks."""
    return [
        *_no_acks(P.kit_filter(kit_id)),
        allow("subscribePattern", P.kit_filter(kit_id)),
        allow("publishClientReceive", P.kit_filter(kit_id)),
    ]


OBSERVER_ACLS = [
    *_no_acks(P.all_kits("#")),
    allow("subscribePattern", P.HOMIE_PREFIX + "/#"),
    allow("publishClientReceive", P.HOMIE_PREFIX + "/#"),
]
# Roles that lift the observers' ack denial come before them in a client's role list.
ACK_ROLE_PRIORITY = 10
# The lab service may put any kit into its safe state (handover, fault) or at rest (nobody holds
# it), reads every acknowledgement (for the command records) and may clear retained commands: it
# publishes an empty retained message to a `/set` topic where a holder left one (kits never take
# a retained command; see protocol.py).
SUPERVISOR_ROLE = "supervise_kits"
SUPERVISOR_ACLS = [
    allow("publishClientSend", P.all_kits(P.SAFE_STATE_PROPERTY + "/set")),
    allow("publishClientSend", P.all_kits(P.AT_REST_PROPERTY + "/set")),
    allow("publishClientSend", P.all_kits(P.ACTUATORS_NODE + "/+/set")),
    allow("subscribePattern", P.all_kits("$ack/#")),
    allow("publishClientReceive", P.all_kits("$ack/#")),
    # Whether each partner site's bridge is up (hardware_kits/bridge.py): its kits fail closed.
    allow("subscribePattern", BRIDGE_STATE_FILTER),
    allow("publishClientReceive", BRIDGE_STATE_FILTER),
]


def ack_role(username: str) -> str:
    """The role that lets one MQTT account read the acknowledgements sent to it."""
    return "acks_" + username


def ack_acls(username: str) -> list[dict]:
    """`homie/5/<any kit>/$ack/<username>/#`: the response topics of this account only."""
    if not username or any(c in username for c in "+#/\0"):
        raise BrokerError(f"{username!r} cannot be an MQTT account name (no + # / or NUL)")
    mine = P.all_kits("$ack/" + username + "/#")
    return [allow("subscribePattern", mine), allow("publishClientReceive", mine)]


def priorities(*roles: str) -> dict[str, int]:
    """Client-role priorities: ack-granting roles before the observers' denial."""
    return {r: ACK_ROLE_PRIORITY for r in roles if r.startswith("acks_") or r == SUPERVISOR_ROLE}


@dataclass
class Broker:
    """One Mosquitto process and its state folder."""

    state_dir: Path
    host: str = "127.0.0.1"
    port: int = 1883
    # The mqtts listener (None: none). The plain one stays on `host` (loopback by default) for
    # the platform's own processes; the TLS one is what other machines use.
    tls_port: int | None = None
    tls_host: str = ""  # "": every interface
    tls_names: list[str] = field(default_factory=default_names)  # the generated cert's names
    tls_cert: Path | None = None  # a site's certificate and key instead of the generated ones
    tls_key: Path | None = None
    tls_ca: Path | None = None  # the CA that signed the site's certificate (None: a public one)
    bridge: BridgePlan | None = None  # a partner site's broker: its bridge to the centre's
    # A Unix-socket listener besides the TCP one (None: none), with the same plugin and rights:
    # the only way a sandboxed controller (no network namespace access) reaches the broker.
    socket_path: Path | None = None
    process: subprocess.Popen | None = field(default=None, repr=False)

    @property
    def conf_path(self) -> Path:
        return self.state_dir / "mosquitto.conf"

    @property
    def dynsec_path(self) -> Path:
        return self.state_dir / "dynamic-security.json"

    @property
    def secrets_path(self) -> Path:
        return self.state_dir / "credentials.json"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "mosquitto.log"

    # ---------------------------------------------------------------- credentials store

    def credentials(self, username: str) -> Credentials:
        """The stored credentials of an MQTT account, generated on first use (file mode 0600)."""
        return CredentialStore(self.secrets_path).credentials(username)

    def address(self, username: str) -> BrokerAddress:
        return BrokerAddress(self.host, self.port, self.credentials(username))

    @property
    def tls_dir(self) -> Path:
        return self.state_dir / "tls"

    def tls_files(self) -> TlsFiles:
        """The listener's certificate and key (generated on first use) and the CA clients use."""
        try:
            return tls.ensure(
                self.tls_dir, self.tls_names, self.tls_cert, self.tls_key, self.tls_ca
            )
        except (OSError, ValueError) as err:
            raise BrokerError(f"TLS for the broker: {err}") from None

    def tls_address(self, username: str, host: str | None = None) -> BrokerAddress:
        """The account's `mqtts` address (`host`: the name the certificate carries)."""
        if self.tls_port is None:
            raise BrokerError("the broker has no mqtts listener (start it with a TLS port)")
        ca = self.tls_files().ca
        return BrokerAddress(
            host or self.tls_names[0],
            self.tls_port,
            self.credentials(username),
            tls=True,
            ca=str(ca) if ca else None,
        )

    # ---------------------------------------------------------------- process

    def _write_config(self, plugin: str) -> None:
        lines = [
            "# Generated by smartlab; edits are overwritten on the next start.",
            "per_listener_settings false",
            f"listener {self.port} {self.host}",
            "allow_anonymous false",
            f"plugin {plugin}",
            f"plugin_opt_config_file {self.dynsec_path}",
            "set_tcp_nodelay true",
            "persistence true",
            f"persistence_location {self.state_dir}/",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "log_timestamp_format %Y-%m-%dT%H:%M:%S",
            "max_queued_messages 10000",
            f"max_packet_size {MAX_PACKET_BYTES}",
        ]
        if self.socket_path is not None:
            lines.append(f"listener 0 {self.socket_path}")
        if self.tls_port is not None:
            files = self.tls_files()
            lines += [
                f"listener {self.tls_port} {self.tls_host}".rstrip(),
                f"certfile {files.cert}",
                f"keyfile {files.key}",
                "tls_version tlsv1.2",
            ]
        if os.geteuid() == 0:
            # Mosquitto drops root privileges; its files must belong to the account it drops to.
            lines.append(f"user {MOSQUITTO_USER}")
        if self.bridge is not None:
            lines += self._bridge_lines(self.bridge)
        self.conf_path.write_text("\n".join(lines) + "\n")
        # The bridge's password is in the configuration: the broker's and its starter's only.
        self.conf_path.chmod(0o600)

    def _bridge_lines(self, plan: BridgePlan) -> list[str]:
        """The partner's `connection` section, reading a copy of the centre's CA in the state
        folder (Mosquitto reads it after dropping root privileges)."""
        ca = self.state_dir / "bridge-ca.crt"
        try:
            shutil.copyfile(plan.ca_file, ca)
        except OSError as err:
            raise BrokerError(f"bridge.ca_file: {err.strerror}: {plan.ca_file}") from None
        ca.chmod(0o644)
        return BridgePlan(**{**plan.__dict__, "ca_file": ca}).config_lines()

    def _chown_for_broker(self) -> None:
        if os.geteuid() != 0:
            return
        try:
            account = pwd.getpwnam(MOSQUITTO_USER)
        except KeyError:
            raise BrokerError(
                f"the {MOSQUITTO_USER!r} account is missing; reinstall the mosquitto package"
            ) from None
        for path in [self.state_dir, *self.state_dir.iterdir()]:
            if path != self.secrets_path:
                os.chown(path, account.pw_uid, account.pw_gid, follow_symlinks=False)
        if self.tls_port is not None:  # mosquitto reads its key after dropping privileges
            os.chown(self.tls_files().key, account.pw_uid, account.pw_gid, follow_symlinks=False)
        if self.socket_path is not None:
            os.chown(self.socket_path.parent, account.pw_uid, account.pw_gid)

    def _prepare_socket_folder(self) -> None:
        """The socket's folder: traversable by every account (sandboxed controllers connect as
        pool accounts), no stale socket of an earlier run."""
        assert self.socket_path is not None
        folder = self.socket_path.parent
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        if len(str(self.socket_path).encode()) > 107:
            raise BrokerError(f"the broker's socket path is too long for Unix: {self.socket_path}")
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()

    def start(self, timeout: float = 10.0) -> Broker:
        """Write the configuration, initialise dynsec on first run, start and provision basics."""
        broker_bin, ctrl, plugin = find_mosquitto()
        if not port_is_free(self.host, self.port):
            raise BrokerError(
                f"port {self.port} on {self.host} is already in use; stop what "
                "holds it or choose another port"
            )
        if self.tls_port is not None and not port_is_free(
            self.tls_host or "0.0.0.0", self.tls_port
        ):
            raise BrokerError(f"the mqtts port {self.tls_port} is already in use")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # Every account's password hash and rights (dynamic-security.json), the service
        # credentials: the broker's and its starter's only, whatever the umask.
        self.state_dir.chmod(0o700)
        admin = self.credentials(ADMIN)
        if not self.dynsec_path.exists():
            subprocess.run(
                [ctrl, "dynsec", "init", str(self.dynsec_path), admin.username, admin.password],
                check=True,
                capture_output=True,
            )
        if self.socket_path is not None:
            self._prepare_socket_folder()
        self._write_config(plugin)
        self._chown_for_broker()
        self.process = subprocess.Popen(
            [broker_bin, "-c", str(self.conf_path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        self._wait_until_listening(timeout)
        with self.admin() as dynsec:
            provision_basics(dynsec)
        return self

    def _wait_until_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                err = self.process.stderr.read().decode(errors="replace").strip()
                tail = err.splitlines()[-1] if err else self._log_tail()
                raise BrokerError(f"mosquitto exited at start: {tail}")
            with socket.socket() as sock:
                if sock.connect_ex((self.host, self.port)) == 0 and self._socket_ready():
                    return
            time.sleep(0.05)
        self.stop()
        raise BrokerError(f"mosquitto did not listen on {self.host}:{self.port} within {timeout} s")

    def _socket_ready(self) -> bool:
        """The Unix socket exists; made connectable by every account (connecting proves
        nothing: the broker asks for credentials as on TCP)."""
        if self.socket_path is None:
            return True
        if not self.socket_path.is_socket():
            return False
        self.socket_path.chmod(0o666)
        return True

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text().strip().splitlines()[-1]
        except (OSError, IndexError):
            return "no log"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """SIGKILL, as a crash would: for recovery tests."""
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None

    def __enter__(self) -> Broker:
        return self.start() if self.process is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---------------------------------------------------------------- provisioning

    def admin(self) -> DynSec:
        return DynSec(self.host, self.port, self.credentials(ADMIN))

    def provision_kits(self, kit_ids: list[str]) -> dict[str, Credentials]:
        """Roles and a client per kit, plus each kit's (ungranted) command and observe roles."""
        with self.admin() as dynsec:
            return ensure_kit_accounts(dynsec, kit_ids, self.credentials)

    def provision_camera(self, kit_id: str) -> Credentials:
        """The account of a kit's camera companion (a process beside a real board)."""
        creds = self.credentials(camera_role(kit_id))
        with self.admin() as dynsec:
            dynsec.create_role(camera_role(kit_id), camera_acls(kit_id))
            dynsec.ensure_client(creds, [camera_role(kit_id)])
        return creds

    def provision_user(self, username: str, command_kits: list[str] = ()) -> Credentials:
        """An account that observes every kit, may command the kits listed and reads the
        acknowledgements of its own commands (no one else's)."""
        creds = self.credentials(username)
        with self.admin() as dynsec:
            ensure_observer(dynsec, creds, command_kits)
        return creds

    def provision_bridge(self, site_id: str, kit_ids: list[str]) -> Credentials:
        """At the centre: the account a partner's bridge logs in with, allowed to carry only
        its own kits' topics (hardware_kits.bridge.bridge_acls), and its kits' command and
        observe roles."""
        creds = self.credentials(bridge_account(site_id))
        with self.admin() as dynsec:
            # The partner's kits are commanded and watched here as any kit (the lab service
            # grants these roles); their own accounts exist at the partner's broker only.
            for kit_id in kit_ids:
                dynsec.create_role(command_role(kit_id), command_acls(kit_id))
                dynsec.create_role(observe_role(kit_id), observe_acls(kit_id))
            dynsec.create_role(_bridge_role(site_id), bridge_acls(site_id, kit_ids))
            dynsec.ensure_client(creds, [_bridge_role(site_id)])
        return creds

    def provision_supervisor(self, username: str) -> Credentials:
        """The lab service's account: watches every kit and reads every acknowledgement, may
        only command safe states and clear retained commands."""
        creds = self.credentials(username)
        with self.admin() as dynsec:
            ensure_supervisor(dynsec, creds)
        return creds


# ---------------------------------------------------------------- provisioning, on a DynSec
# The one place that says what the platform's accounts and roles are: `Broker` (one machine)
# and `smartlab broker provision` (a broker started elsewhere, e.g. in Kubernetes) both use it.


def provision_basics(dynsec: DynSec) -> None:
    """What a broker needs right after `dynsec init`: nothing is allowed unless a role says so,
    and the roles every watcher and the lab service are given."""
    dynsec.set_default_acl_access(
        publishClientSend=False,
        publishClientReceive=True,
        subscribe=False,
        unsubscribe=True,
    )
    dynsec.create_role(OBSERVER_ROLE, OBSERVER_ACLS)
    dynsec.create_role(SUPERVISOR_ROLE, SUPERVISOR_ACLS)


def ensure_kit_accounts(
    dynsec: DynSec,
    kit_ids: list[str],
    credentials: Callable[[str], Credentials],
    keep_working_password: bool = False,
) -> dict[str, Credentials]:
    """Each kit's own role and client, and its (ungranted) command and observe roles."""
    creds = {}
    for kit_id in kit_ids:
        dynsec.create_role(kit_role(kit_id), kit_acls(kit_id))
        dynsec.create_role(command_role(kit_id), command_acls(kit_id))
        dynsec.create_role(observe_role(kit_id), observe_acls(kit_id))
        creds[kit_id] = credentials(kit_role(kit_id))
        dynsec.ensure_client(
            creds[kit_id], [kit_role(kit_id)], keep_working_password=keep_working_password
        )
    return creds


def ensure_observer(
    dynsec: DynSec,
    creds: Credentials,
    command_kits: list[str] = (),
    keep_working_password: bool = False,
) -> None:
    """An account that watches every kit (and commands `command_kits`), its own acks only."""
    roles = [ack_role(creds.username), OBSERVER_ROLE, *map(command_role, command_kits)]
    dynsec.create_role(ack_role(creds.username), ack_acls(creds.username))
    dynsec.ensure_client(creds, roles, priorities(*roles), keep_working_password)


def ensure_supervisor(
    dynsec: DynSec, creds: Credentials, keep_working_password: bool = False
) -> None:
    """The lab service's account (see `SUPERVISOR_ACLS`)."""
    roles = [SUPERVISOR_ROLE, OBSERVER_ROLE]
    dynsec.ensure_client(creds, roles, priorities(*roles), keep_working_password)


def site_accounts(kit_ids: list[str]) -> list[str]:
    """The broker accounts a site's platform needs besides the admin: the lab service's, the
    public board's and each kit's."""
    return [SERVICE_ACCOUNT, BOARD_ACCOUNT, *map(kit_role, kit_ids)]


def provision_site(
    dynsec: DynSec, kit_ids: list[str], credentials: Callable[[str], Credentials]
) -> None:
    """On a broker just through `dynsec init`, or already provisioned: what `Broker.start`,
    `smartlab up` and the lab service's start make, with the passwords `credentials` gives.
    Idempotent, and a second run disconnects no one whose password is already right."""
    provision_basics(dynsec)
    ensure_kit_accounts(dynsec, kit_ids, credentials, keep_working_password=True)
    ensure_supervisor(dynsec, credentials(SERVICE_ACCOUNT), keep_working_password=True)
    ensure_observer(dynsec, credentials(BOARD_ACCOUNT), keep_working_password=True)
