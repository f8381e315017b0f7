"""Recorded camera frames: each kit's picture at a reduced rate, for replays and notebooks.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "camera_frames",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kit_id", sa.String(length=64), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("stream", sa.String(length=16), nullable=False),
        sa.Column("jpeg", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("camera_frames", schema=None) as batch_op:
        batch_op.create_index("camera_frames_by_kit_time", ["kit_id", "ts"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("camera_frames", schema=None) as batch_op:
        batch_op.drop_index("camera_frames_by_kit_time")
    op.drop_table("camera_frames")
