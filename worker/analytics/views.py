"""The analytics views' shapes, for queries and exports.

Declared on their own MetaData, not the models', so Alembic's autogenerate
never tries to create or drop them: the migration owns their SQL.
"""

from __future__ import annotations

from sqlalchemy import Boolean, Column, Double, Integer, MetaData, Table, Text

from models.base import UTCDateTime

view_metadata = MetaData()


def _answer_columns() -> list[Column[object]]:
    # The answer each row belongs to; the same columns lead every view.
    return [
        Column("vendor", Text),
        Column("answer_key", Text),
        Column("answer_id", Text),
        Column("project_id", Text),
        Column("provider", Text),
        Column("model", Text),
        Column("answered_at", UTCDateTime()),
    ]


mention_facts = Table(
    "mention_facts",
    view_metadata,
    *_answer_columns(),
    Column("brand", Text),
    Column("is_primary", Boolean),
    Column("rank", Integer),
    Column("occurrences", Integer),
    Column("sentiment_label", Text),
    Column("sentiment_score", Double),
)

citation_facts = Table(
    "citation_facts",
    view_metadata,
    *_answer_columns(),
    Column("url", Text),
    Column("domain", Text),
    Column("title", Text),
)

answer_facts = Table(
    "answer_facts",
    view_metadata,
    *_answer_columns(),
    Column("brands", Integer),
    Column("citations", Integer),
)

VIEWS: dict[str, Table] = {t.name: t for t in (mention_facts, citation_facts, answer_facts)}
