"""The tests' PostgreSQL server is a real one, and each test's database is its own."""

from __future__ import annotations

import sqlalchemy as sa


def test_each_test_gets_an_empty_database_of_a_real_postgresql_server(postgres, postgres_url):
    engine = sa.create_engine(postgres_url)
    with engine.begin() as db:
        assert db.execute(sa.text("select version()")).scalar().startswith("PostgreSQL")
        db.execute(sa.text("create table kept (x int)"))
    other = sa.create_engine(postgres.new_database())
    with other.connect() as db:
        assert not sa.inspect(db).has_table("kept")
    engine.dispose()
    other.dispose()
