"""Webhook intake and alerts: the webhook grace period, deliveries seen, alerts sent.

- tracked_ids.webhook_grace_until: an id registered with expect_webhook is not
  polled before this (its next_poll_at starts there).
- tracked_ids.webhook_archived_at: set when a signed delivery archived the id, so
  ids that polling had to recover (a missed webhook) can be counted, through a
  small partial index.
- webhook_deliveries: one row per event id, which makes redeliveries no-ops.
- alert_state: when each kind of alert was last sent, shared by every process.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 14:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPTZ = sa.DateTime(timezone=True)
RECOVERED = sa.text("expect_webhook AND archived_at IS NOT NULL AND webhook_archived_at IS NULL")


def upgrade() -> None:
    with op.batch_alter_table("tracked_ids") as batch:
        batch.add_column(sa.Column("webhook_grace_until", TIMESTAMPTZ, nullable=True))
        batch.add_column(sa.Column("webhook_archived_at", TIMESTAMPTZ, nullable=True))
    op.create_index(
        "ix_tracked_ids_recovered_by_poll",
        "tracked_ids",
        ["vendor"],
        unique=False,
        postgresql_where=RECOVERED,
        sqlite_where=RECOVERED,
    )
    op.create_table(
        "webhook_deliveries",
        sa.Column("vendor", sa.String(length=32), nullable=False),
        sa.Column("event_id", sa.String(length=256), nullable=False),
        sa.Column("delivery_id", sa.String(length=256), nullable=True),
        sa.Column("scheme", sa.String(length=16), nullable=False),
        sa.Column("external_id", sa.String(length=256), nullable=True),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("received_at", TIMESTAMPTZ, nullable=False),
        sa.PrimaryKeyConstraint("vendor", "event_id", name=op.f("webhook_deliveries_pkey")),
    )
    op.create_index(
        "ix_webhook_deliveries_received_at", "webhook_deliveries", ["received_at"], unique=False
    )
    op.create_table(
        "alert_state",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("last_sent_at", TIMESTAMPTZ, nullable=True),
        sa.Column("last_value", sa.Integer(), server_default="0", nullable=False),
        sa.Column("updated_at", TIMESTAMPTZ, nullable=False),
        sa.PrimaryKeyConstraint("kind", name=op.f("alert_state_pkey")),
    )


def downgrade() -> None:
    op.drop_table("alert_state")
    op.drop_index("ix_webhook_deliveries_received_at", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index(
        "ix_tracked_ids_recovered_by_poll",
        table_name="tracked_ids",
        postgresql_where=RECOVERED,
        sqlite_where=RECOVERED,
    )
    with op.batch_alter_table("tracked_ids") as batch:
        batch.drop_column("webhook_archived_at")
        batch.drop_column("webhook_grace_until")
