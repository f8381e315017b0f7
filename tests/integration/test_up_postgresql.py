"""`smartlab up` with the hub's, the lab service's and the LTI store's databases on a real
PostgreSQL server: nothing of theirs lands in SQLite files of the state folder."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from labs.client import LabService
from site_config.paths import HUB_DB_URL_ENV, LTI_DB_URL_ENV
from tests.postgres import PostgresServer
from tests.stack import Up, lab_token, running

pytestmark = pytest.mark.broker


def rows(url: str, query: str, **args: object) -> list[tuple]:
    engine = create_engine(url)
    try:
        with engine.connect() as db:
            return [tuple(r) for r in db.execute(text(query), args)]
    finally:
        engine.dispose()


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as db:
            return set(inspect(db).get_table_names())
    finally:
        engine.dispose()


def test_up_keeps_the_hub_and_the_lab_service_in_postgresql(
    state_root: Path, home_root: Path, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
):
    hub_db, lab_db, lti_db = (postgres.new_database(p) for p in ("hub", "lab", "lti"))
    monkeypatch.setenv(HUB_DB_URL_ENV, hub_db)
    monkeypatch.setenv(LTI_DB_URL_ENV, lti_db)
    state = state_root / "up-postgresql"
    with running(Up(state, home_root, "--lab-db-url", lab_db)) as up:
        token = lab_token(up, "anna")  # anna logs in to the hub
        entry = LabService(up.lab_url, token).join(kit="parking-1")

        assert {"users", "api_tokens", "alembic_version"} <= tables(hub_db)
        (logged_in,) = rows(hub_db, "SELECT last_activity FROM users WHERE name = 'anna'")
        assert logged_in[0] is not None
        assert {"kits", "queue_entries", "sessions", "alembic_version"} <= tables(lab_db)
        assert rows(
            lab_db, 'SELECT "user", kit_id FROM queue_entries WHERE id = :id', id=entry["id"]
        ) == [("anna", "parking-1")]
        kits = {k for (k,) in rows(lab_db, "SELECT id FROM kits")}
        assert "parking-1" in kits  # the site's kits, registered by the service at start
    assert not (state / "hub" / "jupyterhub.sqlite").exists()
    assert not (state / "lab-service.sqlite").exists()
    assert not (state / "lti" / "lti.sqlite").exists()
