"""Store missing JSON documents as SQL NULL, not as the JSON value null.

`asks.cost_breakdown` is absent from many answers. It used to be written as the
JSON value `null`, so `cost_breakdown IS NULL` missed those rows; from now on the
models write SQL NULL, and this turns the rows already archived into the same.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23 16:20:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("UPDATE asks SET cost_breakdown = NULL WHERE cost_breakdown = 'null'::jsonb")
    else:
        op.execute("UPDATE asks SET cost_breakdown = NULL WHERE cost_breakdown = 'null'")


def downgrade() -> None:
    # Both spellings meant "no breakdown"; the older code reads SQL NULL as None too.
    pass
