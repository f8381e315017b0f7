"""Alembic for the platform's stores: each store package carries its own `migrations/` folder
(env.py calls `run_env`, versions/ holds the revisions); `upgrade_to_head` brings a database to
its newest revision when the store opens it, without an alembic.ini.

A database made before a store had migrations (its tables made by `create_all` or plain SQL, no
`alembic_version` table) holds exactly the first revision's schema: it is stamped with that
revision, then upgraded, and keeps its rows.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable

from alembic import command, context
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, create_engine, inspect, text
from sqlalchemy.engine import Engine


def alembic_config(package: str) -> Config:
    """The Alembic configuration of `package`'s migrations (`<package>/migrations`)."""
    config = Config()
    config.set_main_option("script_location", f"{package}:migrations")
    return config


def head_revision(package: str) -> str:
    return ScriptDirectory.from_config(alembic_config(package)).get_current_head() or ""


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def upgrade_to_head(
    engine: Engine,
    package: str,
    legacy_table: str,
    repair_legacy: Callable[[Connection], None] | None = None,
) -> None:
    """Upgrade the database to `package`'s head revision, in one transaction.

    `legacy_table`: a table every database of the store has; present without a revision, the
    database predates the migrations and is stamped with the first one (after
    `repair_legacy`, which brings older variants up to that first revision)."""
    config = alembic_config(package)
    first = ScriptDirectory.from_config(config).get_base()
    with engine.begin() as connection:
        if connection.dialect.name == "postgresql":
            # Two processes starting at once (failover pairs) upgrade one after the other.
            key = zlib.crc32(f"smartlab-migrations:{package}".encode())
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
        config.attributes["connection"] = connection
        known = MigrationContext.configure(connection).get_current_revision()
        if known is None and inspect(connection).has_table(legacy_table):
            if repair_legacy is not None:
                repair_legacy(connection)
            command.stamp(config, first)
        command.upgrade(config, "head")


def run_env(metadata: MetaData) -> None:
    """The body of a store's migrations/env.py: on the connection `upgrade_to_head` passes,
    or on the URL of `alembic -x url=…` (a developer writing a revision with autogenerate)."""
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection, metadata)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or context.config.get_main_option(
        "sqlalchemy.url"
    )
    if not url:
        raise SystemExit("alembic: give the database as -x url=…")
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            _run(connection, metadata)
    finally:
        engine.dispose()


def _run(connection: Connection, metadata: MetaData) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters by copying
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
