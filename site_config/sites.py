"""The `sites:` section of the site file: the centre and the partner universities that host kits
of their own, each with its own Mosquitto broker.

A partner's broker is bridged to the centre's (hardware_kits/bridge.py generates the bridge from
this section), so the centre's services see every kit; each broker still enforces the rights of
the kits it hosts. A kit names its site (`kits[].site`); without one it is the centre's, and a
site file without `sites:` is one centre with every kit, as before. Errors are one line:
`file: field: reason`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hardware_kits.descriptor import HOMIE_ID, DescriptorError, read_yaml
from site_config.kits import KitEntry

CENTRE = "centre"
PARTNER = "partner"
# The id of the implicit centre of a site file without `sites:`.
DEFAULT_CENTRE_ID = "centre"


class SiteBroker(BaseModel):
    """Where a site's Mosquitto listens: plain MQTT for the site's own processes, mqtts for
    other machines (the centre's mqtts port is what partner bridges connect to)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", min_length=1)
    port: int = Field(default=1883, ge=1, le=65535)
    tls_port: int | None = Field(default=None, ge=1, le=65535)


class BridgeSettings(BaseModel):
    """How a partner's broker reaches the centre's. The bridge account's password is a secret:
    it is never in the site file, only in `password_file` (the centre makes the account,
    `smartlab site bridge-account`)."""

    model_config = ConfigDict(extra="forbid")

    ca_file: Path  # the CA that signed the centre's mqtts certificate
    password_file: Path
    keepalive_seconds: int = Field(default=30, ge=5, le=3600)
    # How soon a cut bridge is tried again (Mosquitto's restart_timeout).
    restart_seconds: int = Field(default=5, ge=1, le=3600)


class SiteEntry(BaseModel):
    """One site of the network."""

    model_config = ConfigDict(extra="forbid")

    id: str
    kind: Literal["centre", "partner"]
    name: str = ""
    broker: SiteBroker = SiteBroker()
    bridge: BridgeSettings | None = None

    @field_validator("id")
    @classmethod
    def _plain_id(cls, value: str) -> str:
        if not HOMIE_ID.match(value):
            raise ValueError("must be lowercase letters, digits and single hyphens")
        return value


class Sites(BaseModel):
    """The validated sites of a site file and which kits each hosts."""

    model_config = ConfigDict(frozen=True)

    entries: list[SiteEntry]
    kit_sites: dict[str, str]  # kit id -> site id (every kit)

    @property
    def centre(self) -> SiteEntry:
        return next(s for s in self.entries if s.kind == CENTRE)

    @property
    def partners(self) -> list[SiteEntry]:
        return [s for s in self.entries if s.kind == PARTNER]

    def site(self, site_id: str) -> SiteEntry | None:
        return next((s for s in self.entries if s.id == site_id), None)

    def kits_of(self, site_id: str) -> list[str]:
        return [kit for kit, site in self.kit_sites.items() if site == site_id]

    def partner_kits(self) -> dict[str, str]:
        """kit id -> partner site id, for the kits that are reached over a bridge."""
        centre = self.centre.id
        return {kit: site for kit, site in self.kit_sites.items() if site != centre}


def parse_sites(data: Any, source: str, kits: list[KitEntry]) -> Sites:
    """Validate `sites:` against the kits (parsed by site_config.kits); raise DescriptorError."""
    raw = data.get("sites") if isinstance(data, dict) else None
    if raw is None:
        entries = [SiteEntry(id=DEFAULT_CENTRE_ID, kind=CENTRE)]
    elif not isinstance(raw, list) or not raw:
        raise DescriptorError(f"{source}: sites: a list of sites (one of kind centre)")
    else:
        entries = []
        for i, item in enumerate(raw):
            try:
                entries.append(SiteEntry.model_validate(item))
            except ValidationError as err:
                first = err.errors()[0]
                where = ".".join(str(p) for p in first["loc"])
                raise DescriptorError(f"{source}: sites.{i}.{where}: {first['msg']}") from None
    for field, reason in _site_errors(entries, kits, declared=raw is not None):
        raise DescriptorError(f"{source}: {field}: {reason}")
    centre = next(s.id for s in entries if s.kind == CENTRE)
    return Sites(entries=entries, kit_sites={k.id: k.site or centre for k in kits})


def load_sites(path: Path | str, kits: list[KitEntry]) -> Sites:
    path = Path(path)
    return parse_sites(read_yaml(path), str(path), kits)


def _site_errors(
    entries: list[SiteEntry], kits: list[KitEntry], declared: bool
) -> list[tuple[str, str]]:
    """(field, reason) of every conflict, in file order; the first one is reported."""
    errors: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    addresses: dict[tuple[str, int], int] = {}
    for i, site in enumerate(entries):
        if site.id in seen:
            errors.append((f"sites.{i}.id", f"{site.id!r} is used twice"))
        seen.setdefault(site.id, i)
        ports = [("port", site.broker.port), ("tls_port", site.broker.tls_port)]
        if site.broker.port == site.broker.tls_port:
            errors.append((f"sites.{i}.broker.tls_port", "is the same port as broker.port"))
        for field, port in ports:
            if port is None:
                continue
            other = addresses.setdefault((site.broker.host, port), i)
            if other != i:
                errors.append(
                    (
                        f"sites.{i}.broker.{field}",
                        f"{site.broker.host}:{port} is also the broker of "
                        f"{entries[other].id!r}: every site has its own broker",
                    )
                )
        if site.kind == PARTNER and site.bridge is None:
            errors.append((f"sites.{i}.bridge", "a partner site needs bridge settings"))
        if site.kind == CENTRE and site.bridge is not None:
            errors.append((f"sites.{i}.bridge", "only partner sites are bridged (to the centre)"))
    centres = [i for i, s in enumerate(entries) if s.kind == CENTRE]
    if len(centres) != 1:
        where = f"sites.{centres[1]}.kind" if centres else "sites"
        errors.append((where, "a site file has exactly one site of kind centre"))
    elif any(s.kind == PARTNER for s in entries) and entries[centres[0]].broker.tls_port is None:
        errors.append(
            (f"sites.{centres[0]}.broker.tls_port", "partner sites bridge to the centre's mqtts")
        )
    for i, kit in enumerate(kits):
        if kit.site and kit.site not in seen:
            hint = "" if declared else " (the file declares no sites:)"
            errors.append((f"kits.{i}.site", f"no site {kit.site!r}{hint}"))
    return errors
