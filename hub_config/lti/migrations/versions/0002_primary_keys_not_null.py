"""Single-column primary keys NOT NULL: SQLite let the plain-SQL store's `state TEXT PRIMARY KEY`
and `username TEXT PRIMARY KEY` hold NULL (PostgreSQL never did). On SQLite the tables are
copied with their rows.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

KEYS = (("login_states", "state"), ("users", "username"))


def upgrade() -> None:
    for table, column in KEYS:
        with op.batch_alter_table(table) as batch:
            batch.alter_column(column, existing_type=sa.Text(), nullable=False)


def downgrade() -> None:
    pass  # NULL keys were never wanted
