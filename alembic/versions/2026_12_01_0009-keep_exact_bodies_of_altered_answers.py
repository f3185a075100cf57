"""Keep the exact body of an answer whose archived JSON had to differ from it;
find the ids that ran out of attempts when their deadline passes.

Postgres text and jsonb cannot hold U+0000. Such answers used to be quarantined
and never reached the analysis tables; they are now archived with the character
removed, and the body as received is kept in `raw_body` so `reprocess` can
rebuild from it. NULL for every other answer (nearly all), so the column costs
nothing on existing rows.

`ix_tracked_ids_stranded` serves the sweep that records as lost the ids left in
`error` or `invalid_payload` when their deadline passed; partial, so it holds
only those few rows.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01 12:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("asks", "job_executions")
STRANDED_PREDICATE = "state IN ('error', 'invalid_payload')"


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("raw_body", sa.LargeBinary(), nullable=True))
    op.create_index(
        "ix_tracked_ids_stranded",
        "tracked_ids",
        ["deadline_at"],
        postgresql_where=sa.text(STRANDED_PREDICATE),
        sqlite_where=sa.text(STRANDED_PREDICATE),
    )


def downgrade() -> None:
    op.drop_index("ix_tracked_ids_stranded", table_name="tracked_ids")
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("raw_body")
