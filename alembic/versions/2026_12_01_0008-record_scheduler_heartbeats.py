"""Record scheduler heartbeats: beats that died or hung are seen, not guessed.

- scheduler_heartbeats: one row per beat process (`host:pid`) with when it
  started, when it last ticked and when a worker last ran a dispatch sweep it
  sent, all from the database's clock. `status`, `doctor`, the metrics, the
  alerts, the workers' watchdog and `mentionsync run` read the ages from it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01 09:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TIMESTAMPTZ = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "scheduler_heartbeats",
        sa.Column("instance", sa.String(length=255), nullable=False),
        sa.Column("started_at", TIMESTAMPTZ, nullable=False),
        sa.Column("last_tick_at", TIMESTAMPTZ, nullable=False),
        sa.Column("last_dispatch_at", TIMESTAMPTZ, nullable=True),
        sa.PrimaryKeyConstraint("instance", name=op.f("scheduler_heartbeats_pkey")),
    )


def downgrade() -> None:
    op.drop_table("scheduler_heartbeats")
