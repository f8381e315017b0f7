"""Mosquitto bridges from a partner site's broker to the centre's.

The partner's broker opens one MQTT v5 connection (TLS, verified against the centre's CA) to the
centre's mqtts listener as the account `bridge-<site>` and carries:

- out: everything its own kits publish (`homie/5/<kit>/#`: state, description, telemetry,
  status, acknowledgements), so the centre's services and notebooks see the kits;
- in: the kits' command topics only, so the centre's holders and the lab service reach them.

Neither broker widens anyone's rights: at the centre the bridge account may publish only under
its kits' trees and never a command (`.../set`), and may read only its kits' command topics; at
the partner the bridge is the only way in from the centre (no centre account exists there).
With `notifications true` the bridge publishes `1` (retained) to `smartlab/bridges/<site>/state`
at the centre when it connects and leaves `0` there as its last will: the lab service takes a
partner's kits for offline while that topic is not `1`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from hardware_kits import protocol as P
from hardware_kits.dynsec import allow, deny
from site_config.platform_accounts import BRIDGE_PREFIX
from site_config.sites import Sites

BRIDGE_STATE_PREFIX = "smartlab/bridges/"
BRIDGE_STATE_FILTER = BRIDGE_STATE_PREFIX + "+/state"
BRIDGE_UP = "1"


def bridge_state_topic(site_id: str) -> str:
    return f"{BRIDGE_STATE_PREFIX}{site_id}/state"


def site_of_state_topic(topic: str) -> str | None:
    """The site a bridge-state topic speaks for, or None for any other topic."""
    if topic.startswith(BRIDGE_STATE_PREFIX) and topic.endswith("/state"):
        site = topic[len(BRIDGE_STATE_PREFIX) : -len("/state")]
        return site if site and "/" not in site else None
    return None


def bridge_account(site_id: str) -> str:
    """The partner's MQTT account at the centre."""
    return BRIDGE_PREFIX + site_id


def bridge_role(site_id: str) -> str:
    # Role names that span kits contain "_", which kit ids cannot (hardware_kits.broker).
    return "bridge_" + site_id


def bridge_acls(site_id: str, kit_ids: list[str]) -> list[dict]:
    """At the centre: publish the partner kits' own topics but no command, read their commands,
    announce the bridge's own state. Denials come first (checked before the allows)."""
    acls = [allow("publishClientSend", bridge_state_topic(site_id))]
    for kit in kit_ids:
        commands = P.command_subscriptions(kit)
        acls += [deny("publishClientSend", topic, 1) for topic in commands]
        acls.append(allow("publishClientSend", P.kit_filter(kit)))
        for topic in commands:
            acls += [allow("subscribeLiteral", topic), allow("publishClientReceive", topic)]
    return acls


@dataclass(frozen=True)
class BridgePlan:
    """Everything a partner broker's `connection` section says."""

    site_id: str
    centre_host: str
    centre_tls_port: int
    kit_ids: tuple[str, ...]
    password: str
    ca_file: Path
    keepalive_seconds: int = 30
    restart_seconds: int = 5

    def config_lines(self) -> list[str]:
        account = bridge_account(self.site_id)
        lines = [
            f"connection to-centre-{self.site_id}",
            f"address {self.centre_host}:{self.centre_tls_port}",
            f"remote_clientid {account}",
            f"remote_username {account}",
            f"remote_password {self.password}",
            f"bridge_cafile {self.ca_file}",
            "bridge_insecure false",
            # v5: commands keep their command-id, deadline and response topic.
            "bridge_protocol_version mqttv50",
            "cleansession false",
            f"keepalive_interval {self.keepalive_seconds}",
            f"restart_timeout {self.restart_seconds}",
            "start_type automatic",
            "notifications true",
            f"notification_topic {bridge_state_topic(self.site_id)}",
        ]
        for kit in self.kit_ids:
            lines.append(f"topic {P.kit_filter(kit)} out 1")
            lines += [f"topic {topic} in 1" for topic in P.command_subscriptions(kit)]
        return lines


def read_bridge_password(path: Path) -> str:
    """The bridge account's password, as the centre gave it (one line, no spaces)."""
    try:
        password = path.read_text().strip()
    except OSError as err:
        raise ValueError(f"bridge.password_file: {err.strerror}: {path}") from None
    if not password or any(c.isspace() for c in password):
        raise ValueError(f"bridge.password_file: {path} must hold one password without spaces")
    return password


def bridge_plan(sites: Sites, site_id: str, base: Path) -> BridgePlan:
    """The bridge of partner `site_id` as the site file describes it (relative paths are taken
    from the site file's folder `base`)."""
    site = sites.site(site_id)
    if site is None or site.bridge is None:
        raise ValueError(f"--name: {site_id!r} is not a partner site of the site file")
    centre = sites.centre.broker
    if centre.tls_port is None:  # parse_sites refuses this already; kept for type checkers
        raise ValueError("sites: the centre has no broker.tls_port for bridges")
    return BridgePlan(
        site_id=site.id,
        centre_host=centre.host,
        centre_tls_port=centre.tls_port,
        kit_ids=tuple(sites.kits_of(site.id)),
        password=read_bridge_password(base / site.bridge.password_file),
        ca_file=base / site.bridge.ca_file,
        keepalive_seconds=site.bridge.keepalive_seconds,
        restart_seconds=site.bridge.restart_seconds,
    )
