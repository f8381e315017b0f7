"""A real PostgreSQL server for the tests: Debian's binaries, a throwaway cluster on loopback.

The cluster belongs to the `postgres` account (initdb refuses root) and lives in a folder of
the test session; each test that asks for `postgres_url` gets an empty database of its own.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from site_config.runtime import free_port

ACCOUNT = "postgres"  # made by Debian's postgresql package


def postgres_bin() -> Path | None:
    """The newest installed server's binaries (/usr/lib/postgresql/<major>/bin)."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(p.split("/")[4])
    )
    return Path(found[-1]).parent if found else None


def as_postgres() -> dict:
    """Popen arguments that run a command as the `postgres` account when we are root."""
    if os.geteuid() != 0:
        return {}
    account = pwd.getpwnam(ACCOUNT)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


class PostgresServer:
    """`with PostgresServer() as server: url = server.new_database()`."""

    def __init__(self) -> None:
        binaries = postgres_bin()
        if binaries is None:
            raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
        self.bin = binaries
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="smartlab-pg-"))
        self.data = self.folder / "data"

    def run(self, *command: str) -> None:
        subprocess.run(
            [str(self.bin / command[0]), *command[1:]],
            check=True,
            capture_output=True,
            cwd=self.folder,
            **as_postgres(),
        )

    def __enter__(self) -> PostgresServer:
        if os.geteuid() == 0:
            shutil.chown(self.folder, ACCOUNT, ACCOUNT)
        self.folder.chmod(0o755)  # the socket's folder: reachable by every test account
        self.run("initdb", "-D", str(self.data), "-U", ACCOUNT, "-A", "trust", "-E", "UTF8")
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run("pg_ctl", "-D", str(self.data), "-o", options, "-l", "server.log", "-w", "start")
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://{ACCOUNT}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        """An empty database of its own; its SQLAlchemy URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:12]}"
        self.run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", ACCOUNT, name)
        return self.url(name)
