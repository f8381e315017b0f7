"""Where this installation runs: folders and ports, chosen by `smartlab up` for the hub's config.

The site file says *who* and *what* (people, courses, kits); the runtime says *where* (state
folder, homes, exchange, ports). `smartlab up` writes it as JSON into the state folder and points
$SMARTLAB_RUNTIME at it, so jupyterhub_config.py and every service read one description.
"""

from __future__ import annotations

import json
import os
import random
import socket
from dataclasses import asdict, dataclass, field
from pathlib import Path

RUNTIME_ENV = "SMARTLAB_RUNTIME"
BROKER_SOCKET_ENV = "SMARTLAB_BROKER_SOCKET"  # the job runner's way to the broker's socket


def broker_socket_path(state_dir: Path | str) -> Path:
    """The broker's Unix-socket listener: how sandboxed controllers reach it (they have no
    network). Outside the broker's own (closed) folder, so other accounts can connect; the
    broker still asks every client for its credentials."""
    return Path(state_dir) / "mqtt" / "broker.sock"


def port_is_free(host: str, port: int) -> bool:
    with socket.socket() as sock:
        # As Mosquitto binds: connections left in TIME_WAIT by a crash do not block a restart.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def ephemeral_ports() -> range:
    """The ports the kernel hands out to `bind(0)` and to outgoing connections."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return range(int(low), int(high) + 1)
    except (OSError, ValueError):
        return range(32768, 61000)  # Linux's default


def free_port(host: str = "127.0.0.1") -> int:
    """A port free now and kept out of the kernel's own picks.

    A port from `bind(0)` lies in the ephemeral range, which the kernel keeps handing out to
    kernels' sockets and outgoing connections: one of those could take it in the seconds before
    the service it was chosen for binds it. Below that range only a program that names a port
    takes it."""
    below = range(20000, ephemeral_ports().start)
    for _ in range(100) if len(below) > 1000 else ():
        port = random.choice(below)
        if port_is_free(host, port):
            return port
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class Runtime:
    site: str
    state_dir: str
    hub_ip: str = "127.0.0.1"
    hub_port: int = 8000  # the public URL (the proxy)
    hub_api_port: int = 8081  # the hub itself, behind the proxy
    proxy_api_port: int = 8001
    mqtt_port: int = 1883
    lab_port: int = 8181
    status_port: int = 8282
    home_port: int = 8383  # the front door (hub service `home`)
    formgrader_ports: dict[str, int] = field(default_factory=dict)
    # Each user's server under their own Unix account; only possible as root.
    isolate: bool = False
    home_root: str = "/home"
    # The lab service's database: a SQLAlchemy URL (PostgreSQL), empty for its SQLite file.
    lab_db_url: str = ""

    @property
    def hub_url(self) -> str:
        return f"http://{self.hub_ip}:{self.hub_port}"

    @property
    def hub_dir(self) -> Path:
        return Path(self.state_dir) / "hub"

    @property
    def exchange(self) -> Path:
        return Path(self.state_dir) / "exchange"

    @property
    def sandbox_socket(self) -> Path:
        """The root fork server that gives the formgraders sandboxed kernels."""
        return Path(self.state_dir) / "sandbox" / "sandbox.sock"

    @property
    def broker_socket(self) -> Path:
        return broker_socket_path(self.state_dir)

    @property
    def lab_url(self) -> str:
        return f"http://127.0.0.1:{self.lab_port}"

    def home(self, username: str) -> Path:
        return Path(self.home_root) / username

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(asdict(self), indent=1))

    @classmethod
    def load(cls, path: Path | str) -> Runtime:
        return cls(**json.loads(Path(path).read_text()))

    @classmethod
    def from_env(cls, site: str, state_dir: str) -> Runtime:
        """$SMARTLAB_RUNTIME if set (a running `smartlab up`), else the defaults."""
        path = os.environ.get(RUNTIME_ENV)
        return cls.load(path) if path else cls(site=site, state_dir=state_dir)


def pick_internal_ports(course_ids: list[str], taken: set[int]) -> dict[str, object]:
    """Free ports for what only the platform itself talks to (no user types these)."""
    chosen: set[int] = set(taken)

    def one() -> int:
        while True:
            port = free_port()
            if port not in chosen:
                chosen.add(port)
                return port

    return {
        "hub_api_port": one(),
        "proxy_api_port": one(),
        "status_port": one(),
        "home_port": one(),
        "formgrader_ports": {course: one() for course in course_ids},
    }


def taken_ports(ports: dict[str, int], host: str = "127.0.0.1") -> list[str]:
    """The named public ports that something else already listens on."""
    return [f"{name} port {port}" for name, port in ports.items() if not port_is_free(host, port)]
