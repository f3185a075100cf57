"""The analytics views' shapes, for queries and exports.

Declared on their own MetaData, not the models', so Alembic's autogenerate
never tries to create or drop them: the migration owns their SQL.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, Column, Double, Integer, MetaData, Table, Text

from models.base import UTCDateTime

view_metadata = MetaData()


def _dimension_columns() -> list[Column[object]]:
    # The answer's labels (migration 0010); they end every view.
    return [
        Column("topic", Text),
        Column("prompt", Text),
        Column("country", Text),
        Column("persona", Text),
    ]


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
    Column("raw_brand", Text),
    Column("brand_id", BigInteger),
    Column("own", Boolean),
    Column("brand_group", Text),
    *_dimension_columns(),
)

citation_facts = Table(
    "citation_facts",
    view_metadata,
    *_answer_columns(),
    Column("url", Text),
    Column("domain", Text),
    Column("title", Text),
    Column("domain_category", Text),
    Column("domain_brand", Text),
    *_dimension_columns(),
)

answer_facts = Table(
    "answer_facts",
    view_metadata,
    *_answer_columns(),
    Column("brands", Integer),
    Column("citations", Integer),
    *_dimension_columns(),
)

# One row per answer and label: topic, prompt, tag (one row per tag), country,
# persona and free keys; for MentionLab the run's own labels, else its query's,
# else its job's.
label_facts = Table(
    "label_facts",
    view_metadata,
    Column("vendor", Text),
    Column("answer_id", Text),
    Column("key", Text),
    Column("value", Text),
)

# The shipped default domain categories, overridden by domain_categories.
domain_category_map = Table(
    "domain_category_map",
    view_metadata,
    Column("domain", Text),
    Column("category", Text),
    Column("source", Text),
)

VIEWS: dict[str, Table] = {
    t.name: t
    for t in (mention_facts, citation_facts, answer_facts, label_facts, domain_category_map)
}
