"""Count unarchivable bodies in a row, apart from transient errors.

A truncated body or a proxy's HTML page is re-fetched a few times before the id
is given up as invalid_payload; 500s and timeouts in between must not count
towards that limit (they have their own, consecutive_errors).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 09:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tracked_ids") as batch:
        batch.add_column(
            sa.Column("invalid_payload_streak", sa.Integer(), server_default="0", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("tracked_ids") as batch:
        batch.drop_column("invalid_payload_streak")
