"""Compress the archive's large values with lz4 where the server has it.

Every answer's raw payload (about 12 KB for a MentionsAPI ask) and the
providers' answer texts are stored out of line, compressed. Postgres's default
for that, pglz, took about twice the server's CPU of lz4 for the same bodies at
about the same size (docs/benchmarks.md), and the server's CPU is part of what
limits how many answers a machine archives per second. Values already stored
keep their compression; new ones use lz4.

Servers without lz4 (built without it, or older than Postgres 14) and SQLite
are left as they are.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 12:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns whose values are large enough to be compressed.
COLUMNS = (
    ("asks", "raw_payload"),
    ("asks", "raw_body"),
    ("ask_provider_responses", "content"),
    ("job_executions", "raw_payload"),
    ("job_executions", "raw_body"),
    ("quarantined_payloads", "body"),
)


def _has_lz4() -> bool:
    bind = op.get_bind()
    if bind.dialect.name != "postgresql":
        return False
    query = sa.text(
        "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
    )
    return bool(bind.execute(query).scalar())


def _set(compression: str) -> None:
    for table, column in COLUMNS:
        # Names from the list above, never from input.
        op.execute(f"ALTER TABLE {table} ALTER COLUMN {column} SET COMPRESSION {compression}")


def upgrade() -> None:
    if _has_lz4():
        _set("lz4")


def downgrade() -> None:
    if _has_lz4():
        _set("DEFAULT")
