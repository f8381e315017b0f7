"""The lab service's schema as `create_all` made it before migrations (every later change is
a revision of its own).

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
        "events",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("kind", sa.String(length=40), nullable=False),
        sa.Column("kit_id", sa.String(length=64), nullable=True),
        sa.Column("user", sa.String(length=128), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_events_ts"), ["ts"], unique=False)

    op.create_table(
        "kits",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("pool_state", sa.String(length=20), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("registered_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "queue_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("institution", sa.String(length=64), nullable=False),
        sa.Column("kit_id", sa.String(length=64), nullable=True),
        sa.Column("model", sa.String(length=64), nullable=True),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("courses", sa.JSON(), nullable=False),
        sa.Column("enqueued_at", sa.Float(), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("left_at", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("queue_entries", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_queue_entries_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_queue_entries_user"), ["user"], unique=False)

    op.create_table(
        "telemetry",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kit_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("values", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("telemetry", schema=None) as batch_op:
        batch_op.create_index("telemetry_by_kit_time", ["kit_id", "ts"], unique=False)

    op.create_table(
        "bookings",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kit_id", sa.String(length=64), nullable=False),
        sa.Column("course", sa.String(length=64), nullable=False),
        sa.Column("group", sa.String(length=64), nullable=True),
        sa.Column("booked_by", sa.String(length=128), nullable=False),
        sa.Column("institution", sa.String(length=64), nullable=False),
        sa.Column("starts_at", sa.Float(), nullable=False),
        sa.Column("ends_at", sa.Float(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("cancelled", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["kit_id"],
            ["kits.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("bookings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_bookings_kit_id"), ["kit_id"], unique=False)

    op.create_table(
        "sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kit_id", sa.String(length=64), nullable=False),
        sa.Column("user", sa.String(length=128), nullable=False),
        sa.Column("institution", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("queue_entry_id", sa.Integer(), nullable=True),
        sa.Column("booking_id", sa.Integer(), nullable=True),
        sa.Column("requested_at", sa.Float(), nullable=False),
        sa.Column("granted_at", sa.Float(), nullable=False),
        sa.Column("ends_at", sa.Float(), nullable=False),
        sa.Column("last_heartbeat", sa.Float(), nullable=False),
        sa.Column("ending_at", sa.Float(), nullable=True),
        sa.Column("safe_at", sa.Float(), nullable=True),
        sa.Column("released_at", sa.Float(), nullable=True),
        sa.Column("end_reason", sa.String(length=40), nullable=True),
        sa.Column("safe_command_id", sa.String(length=64), nullable=True),
        sa.ForeignKeyConstraint(
            ["booking_id"],
            ["bookings.id"],
        ),
        sa.ForeignKeyConstraint(
            ["kit_id"],
            ["kits.id"],
        ),
        sa.ForeignKeyConstraint(
            ["queue_entry_id"],
            ["queue_entries.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_sessions_granted_at"), ["granted_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_institution"), ["institution"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_kit_id"), ["kit_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_state"), ["state"], unique=False)
        batch_op.create_index(batch_op.f("ix_sessions_user"), ["user"], unique=False)
        batch_op.create_index(
            "one_live_session_per_kit",
            ["kit_id"],
            unique=True,
            sqlite_where=sa.text("state IN ('granted', 'active', 'ending', 'safe')"),
            postgresql_where=sa.text("state IN ('granted', 'active', 'ending', 'safe')"),
        )

    op.create_table(
        "commands",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("session_id", sa.Integer(), nullable=True),
        sa.Column("kit_id", sa.String(length=64), nullable=False),
        sa.Column("requester", sa.String(length=128), nullable=False),
        sa.Column("command_id", sa.String(length=64), nullable=False),
        sa.Column("target", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("value", sa.JSON(), nullable=True),
        sa.Column("reason", sa.String(length=40), nullable=True),
        sa.Column("ts", sa.Float(), nullable=False),
        sa.Column("duplicates", sa.Integer(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["session_id"],
            ["sessions.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.create_index("commands_by_kit_command", ["kit_id", "command_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_commands_kit_id"), ["kit_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_commands_session_id"), ["session_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_commands_ts"), ["ts"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("commands", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_commands_ts"))
        batch_op.drop_index(batch_op.f("ix_commands_session_id"))
        batch_op.drop_index(batch_op.f("ix_commands_kit_id"))
        batch_op.drop_index("commands_by_kit_command")

    op.drop_table("commands")
    with op.batch_alter_table("sessions", schema=None) as batch_op:
        batch_op.drop_index(
            "one_live_session_per_kit",
            sqlite_where=sa.text("state IN ('granted', 'active', 'ending', 'safe')"),
            postgresql_where=sa.text("state IN ('granted', 'active', 'ending', 'safe')"),
        )
        batch_op.drop_index(batch_op.f("ix_sessions_user"))
        batch_op.drop_index(batch_op.f("ix_sessions_state"))
        batch_op.drop_index(batch_op.f("ix_sessions_kit_id"))
        batch_op.drop_index(batch_op.f("ix_sessions_institution"))
        batch_op.drop_index(batch_op.f("ix_sessions_granted_at"))

    op.drop_table("sessions")
    with op.batch_alter_table("bookings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_bookings_kit_id"))

    op.drop_table("bookings")
    with op.batch_alter_table("telemetry", schema=None) as batch_op:
        batch_op.drop_index("telemetry_by_kit_time")

    op.drop_table("telemetry")
    with op.batch_alter_table("queue_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_queue_entries_user"))
        batch_op.drop_index(batch_op.f("ix_queue_entries_state"))

    op.drop_table("queue_entries")
    op.drop_table("kits")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_ts"))

    op.drop_table("events")
