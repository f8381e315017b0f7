"""The stores' Alembic migrations, on SQLite and on a real PostgreSQL server: a database made by
the code from before the migrations keeps every row; a fresh one gets exactly the models."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from hub_config.lti.store import METADATA as LTI_METADATA
from hub_config.lti.store import LtiStore
from lab_service.store import Base, SharingStore
from site_config.migrations import current_revision, head_revision

# The LTI store's tables as its plain SQL made them before the migrations (SQLite only).
LTI_LEGACY_SCHEMA = """
CREATE TABLE IF NOT EXISTS login_states (
    state TEXT PRIMARY KEY, nonce TEXT NOT NULL, issuer TEXT NOT NULL, client_id TEXT NOT NULL,
    target_link_uri TEXT NOT NULL, expires REAL NOT NULL, used INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS used_nonces (
    issuer TEXT NOT NULL, nonce TEXT NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (issuer, nonce));
CREATE TABLE IF NOT EXISTS users (
    username TEXT PRIMARY KEY, platform TEXT NOT NULL, sub TEXT NOT NULL, name TEXT,
    email TEXT, updated REAL NOT NULL, UNIQUE (platform, sub));
CREATE TABLE IF NOT EXISTS enrolments (
    username TEXT NOT NULL, platform TEXT NOT NULL, context_id TEXT NOT NULL,
    course TEXT NOT NULL, role TEXT NOT NULL, updated REAL NOT NULL,
    PRIMARY KEY (username, platform, context_id, role));
CREATE TABLE IF NOT EXISTS contexts (
    platform TEXT NOT NULL, context_id TEXT NOT NULL, course TEXT NOT NULL,
    client_id TEXT NOT NULL, title TEXT, lineitems TEXT, scopes TEXT NOT NULL DEFAULT '[]',
    updated REAL NOT NULL, PRIMARY KEY (platform, context_id));
CREATE TABLE IF NOT EXISTS lineitems (
    platform TEXT NOT NULL, context_id TEXT NOT NULL, assignment TEXT NOT NULL,
    url TEXT NOT NULL, PRIMARY KEY (platform, context_id, assignment));
CREATE TABLE IF NOT EXISTS scores (
    platform TEXT NOT NULL, context_id TEXT NOT NULL, assignment TEXT NOT NULL,
    username TEXT NOT NULL, score REAL NOT NULL, max_score REAL NOT NULL,
    status TEXT NOT NULL, attempts INTEGER NOT NULL, last_error TEXT, updated REAL NOT NULL,
    PRIMARY KEY (platform, context_id, assignment, username));
"""

# One row in every table of the lab service, as the service writes them.
LAB_ROWS = {
    "kits": "INSERT INTO kits VALUES ('k1', 'street-lighting', 'Lamp', 'in-pool', '', 1.0)",
    "queue_entries": "INSERT INTO queue_entries VALUES "
    "(1, 'anna', 'uni-a', 'k1', NULL, 0, '[\"iot\"]', 2.0, 'served', NULL)",
    "bookings": "INSERT INTO bookings VALUES "
    "(1, 'k1', 'iot', NULL, 'irina', 'uni-a', 10.0, 20.0, 3.0, false)",
    "sessions": "INSERT INTO sessions VALUES (1, 'k1', 'anna', 'uni-a', 'active', 1, NULL, "
    "2.0, 2.5, 900.0, 3.0, NULL, NULL, NULL, NULL, NULL)",
    "commands": "INSERT INTO commands VALUES "
    "(1, 1, 'k1', 'anna', 'c1', 'dimming', 'applied', '40', NULL, 4.0, 2)",
    "telemetry": "INSERT INTO telemetry VALUES (1, 'k1', 7, 5.0, '{\"lux\": 12.5}')",
    "events": "INSERT INTO events VALUES (1, 6.0, 'needs-attention', 'k1', NULL, 'no ack')",
}


def table_rows(url: str) -> dict[str, list[tuple]]:
    engine = create_engine(url)
    try:
        with engine.connect() as db:
            names = [n for n in inspect(db).get_table_names() if n != "alembic_version"]
            return {
                n: sorted(tuple(r) for r in db.execute(text(f'SELECT * FROM "{n}"'))) for n in names
            }
    finally:
        engine.dispose()


def schema_differences(url: str, metadata: MetaData) -> list:
    engine = create_engine(url)
    try:
        with engine.connect() as db:
            context = MigrationContext.configure(db, opts={"compare_type": True})
            return compare_metadata(context, metadata)
    finally:
        engine.dispose()


def legacy_lab_database(url: str) -> None:
    """The lab service's database as `create_all` made it before the migrations, with rows:
    the tables of that time (later revisions add the others)."""
    engine = create_engine(url)
    try:
        Base.metadata.create_all(engine, tables=[Base.metadata.tables[n] for n in LAB_ROWS])
        with engine.begin() as db:
            for insert in LAB_ROWS.values():
                db.execute(text(insert))
    finally:
        engine.dispose()


def test_a_lab_database_made_before_migrations_keeps_every_row(database_url: str):
    legacy_lab_database(database_url)
    before = table_rows(database_url)
    assert all(len(before[name]) == 1 for name in LAB_ROWS)

    store = SharingStore(database_url)
    store.close()

    assert current_revision(store.engine) == head_revision("lab_service")
    after = table_rows(database_url)
    assert {name: after[name] for name in before} == before
    assert all(after[name] == [] for name in after.keys() - before.keys())  # later revisions'
    assert schema_differences(database_url, Base.metadata) == []


def test_a_fresh_lab_database_gets_exactly_the_models_schema(database_url: str):
    store = SharingStore(database_url)
    store.close()
    assert current_revision(store.engine) == head_revision("lab_service")
    assert schema_differences(database_url, Base.metadata) == []
    SharingStore(database_url).close()  # opening it again changes nothing
    assert schema_differences(database_url, Base.metadata) == []


def test_the_one_live_session_index_is_made_by_the_migration(database_url: str):
    store = SharingStore(database_url)
    store.close()
    engine = create_engine(database_url)
    try:
        with engine.begin() as db:
            for table in ("kits", "queue_entries", "sessions"):
                db.execute(text(LAB_ROWS[table]))
        with pytest.raises(IntegrityError, match=r"(?i)unique"), engine.begin() as db:
            db.execute(text(LAB_ROWS["sessions"].replace("(1,", "(2,")))
    finally:
        engine.dispose()


def test_a_lab_database_from_before_duplicates_were_counted_gets_the_column(tmp_path: Path):
    """An older variant of the unmigrated schema (SQLite files of earlier releases)."""
    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    legacy_lab_database(url)
    with sqlite3.connect(tmp_path / "old.sqlite") as db:
        db.execute("DROP INDEX commands_by_kit_command")
        db.execute("ALTER TABLE commands DROP COLUMN duplicates")
    SharingStore(url).close()
    rows = table_rows(url)
    assert rows["commands"][0][-1] == 0  # the column, counting from nothing
    assert len(rows["sessions"]) == 1
    assert schema_differences(url, Base.metadata) == []


def test_an_lti_file_made_before_migrations_keeps_every_row(tmp_path: Path):
    folder = tmp_path / "lti"
    folder.mkdir()
    with sqlite3.connect(folder / "lti.sqlite") as db:
        db.executescript(LTI_LEGACY_SCHEMA)
        db.execute("INSERT INTO users VALUES ('lti-1', 'moodle', 'sub-1', 'A', NULL, 1.0)")
        db.execute("INSERT INTO used_nonces VALUES ('https://lms', 'n1', 9e9)")
        db.execute(
            "INSERT INTO scores VALUES ('moodle', 'ctx', 'hw1', 'lti-1', 3, 5, 'sent', 1, NULL, 2)"
        )
    url = f"sqlite:///{folder / 'lti.sqlite'}"
    before = table_rows(url)

    store = LtiStore(folder)
    store.close()

    assert current_revision(store.engine) == head_revision("hub_config.lti")
    assert table_rows(url) == before
    assert schema_differences(url, LTI_METADATA) == []
    assert not LtiStore(folder).use_nonce("https://lms", "n1", 0)  # still remembered


def test_a_fresh_lti_database_gets_exactly_the_models_schema(tmp_path: Path, database_url: str):
    store = LtiStore(tmp_path / "lti", database_url)
    store.close()
    assert current_revision(store.engine) == head_revision("hub_config.lti")
    assert schema_differences(database_url, LTI_METADATA) == []
