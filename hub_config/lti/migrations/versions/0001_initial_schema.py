"""The LTI store's schema as its plain SQL made it before migrations (every later change
is a revision of its own).

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "contexts",
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("context_id", sa.Text(), nullable=False),
        sa.Column("course", sa.Text(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("lineitems", sa.Text(), nullable=True),
        sa.Column("scopes", sa.Text(), server_default="[]", nullable=False),
        sa.Column("updated", sa.Float().with_variant(sa.REAL(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("platform", "context_id"),
    )
    op.create_table(
        "enrolments",
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("context_id", sa.Text(), nullable=False),
        sa.Column("course", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("updated", sa.Float().with_variant(sa.REAL(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("username", "platform", "context_id", "role"),
    )
    op.create_table(
        "lineitems",
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("context_id", sa.Text(), nullable=False),
        sa.Column("assignment", sa.Text(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("platform", "context_id", "assignment"),
    )
    op.create_table(
        "login_states",
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("nonce", sa.Text(), nullable=False),
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("client_id", sa.Text(), nullable=False),
        sa.Column("target_link_uri", sa.Text(), nullable=False),
        sa.Column("expires", sa.Float().with_variant(sa.REAL(), "sqlite"), nullable=False),
        sa.Column("used", sa.Integer(), server_default="0", nullable=False),
        sa.PrimaryKeyConstraint("state"),
    )
    op.create_table(
        "scores",
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("context_id", sa.Text(), nullable=False),
        sa.Column("assignment", sa.Text(), nullable=False),
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("score", sa.Float().with_variant(sa.REAL(), "sqlite"), nullable=False),
        sa.Column("max_score", sa.Float().with_variant(sa.REAL(), "sqlite"), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("updated", sa.Float().with_variant(sa.REAL(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("platform", "context_id", "assignment", "username"),
    )
    op.create_table(
        "used_nonces",
        sa.Column("issuer", sa.Text(), nullable=False),
        sa.Column("nonce", sa.Text(), nullable=False),
        sa.Column("expires", sa.Float().with_variant(sa.REAL(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("issuer", "nonce"),
    )
    op.create_table(
        "users",
        sa.Column("username", sa.Text(), nullable=False),
        sa.Column("platform", sa.Text(), nullable=False),
        sa.Column("sub", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("updated", sa.Float().with_variant(sa.REAL(), "sqlite"), nullable=False),
        sa.PrimaryKeyConstraint("username"),
        sa.UniqueConstraint("platform", "sub"),
    )


def downgrade() -> None:
    op.drop_table("users")
    op.drop_table("used_nonces")
    op.drop_table("scores")
    op.drop_table("login_states")
    op.drop_table("lineitems")
    op.drop_table("enrolments")
    op.drop_table("contexts")
