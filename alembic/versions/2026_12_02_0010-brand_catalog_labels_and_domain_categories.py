"""The brand catalog, answer labels and domain categories, read by the views.

Tables (models/catalog.py):
- catalog_brands, catalog_aliases, catalog_domains: canonical brands, the
  spellings that resolve to them, and their web domains;
- brand_names: every raw brand name archived, with its folded form (case and
  accents removed, which neither database can do in SQL); backfilled here;
- domain_categories: an analyst's categories, over the default list below;
- answer_labels: topic, prompt, tags, country, persona and free labels, keyed
  by the vendor's id (an ask, a job execution, a MentionLab query or job).

Views: label_facts (one row per answer and label, the most specific MentionLab
scope winning) and domain_category_map (the shipped default list, overridden by
domain_categories) are new. The three facts views are recreated:
- mention_facts: `brand` is the catalog's canonical name when an alias matches,
  the raw name otherwise, and spellings of one brand in one answer are one
  mention; new columns raw_brand, brand_id, own, brand_group;
- citation_facts: every URL once per answer, and a top-level MentionsAPI
  citation that no provider cites is counted (it used to be dropped whenever
  the providers had lists of their own); new domain_category and domain_brand;
- answer_facts: counts through the two new views;
- all three end with the answer's topic, prompt, country and persona.

The catalog is joined when a view is read: a catalog or label change shows in
the next query, with no re-sync and no reprocess. The downgrade restores
0007's views; the SQL they share is 0006's own, loaded from that revision.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 06:00:00
"""

import importlib.util
import unicodedata
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
VENDOR_CHECK = "vendor IN ('mentionsapi', 'mentionlab')"
FACTS = ("answer_facts", "citation_facts", "mention_facts")  # dependents first
NEW_VIEWS = ("domain_category_map", "label_facts")
TABLES = (
    "answer_labels",
    "brand_names",
    "domain_categories",
    "catalog_domains",
    "catalog_aliases",
    "catalog_brands",
)

# The shipped default categories. A domain matches itself and its subdomains
# one level down (en.wikipedia.org is wikipedia.org's); domain_categories
# overrides any of them.
DEFAULT_CATEGORIES: dict[str, tuple[str, ...]] = {
    "ugc": (
        "reddit.com",
        "quora.com",
        "youtube.com",
        "stackoverflow.com",
        "stackexchange.com",
        "news.ycombinator.com",
        "medium.com",
        "dev.to",
        "github.com",
        "x.com",
        "twitter.com",
        "linkedin.com",
        "facebook.com",
        "instagram.com",
        "tiktok.com",
        "producthunt.com",
        "substack.com",
    ),
    "reference": (
        "wikipedia.org",
        "wikidata.org",
        "britannica.com",
        "investopedia.com",
        "w3schools.com",
        "developer.mozilla.org",
    ),
    "review": (
        "g2.com",
        "capterra.com",
        "trustradius.com",
        "trustpilot.com",
        "getapp.com",
        "softwareadvice.com",
        "gartner.com",
    ),
    "editorial": (
        "techcrunch.com",
        "forbes.com",
        "nytimes.com",
        "theverge.com",
        "wired.com",
        "bbc.com",
        "bbc.co.uk",
        "reuters.com",
        "bloomberg.com",
        "cnbc.com",
        "wsj.com",
        "theguardian.com",
        "businessinsider.com",
        "zdnet.com",
    ),
}


def _fold(name: str) -> str:
    # worker/normalize/names.py `fold` as of this revision, spelled out so the
    # backfill keeps meaning what it meant.
    decomposed = unicodedata.normalize("NFKD", name)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(bare.casefold().split())


def _revision(filename: str, name: str) -> ModuleType:
    path = Path(__file__).with_name(filename)
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _r0006() -> ModuleType:
    return _revision("2026_11_23_0006-create_analytics_views.py", "mentionsync_revision_0006")


def _r0007() -> ModuleType:
    return _revision(
        "2026_11_28_0007-count_blank_entity_names_under_their_key.py", "mentionsync_revision_0007"
    )


LABEL_FACTS = """
CREATE VIEW label_facts AS
WITH ml_label AS (
    SELECT CAST(j.job_execution_id AS TEXT) AS answer_id, l.key, l.value, 1 AS depth
    FROM job_executions AS j
    JOIN answer_labels AS l
      ON l.vendor = 'mentionlab' AND l.project_id = j.project_id AND l.scope = 'execution'
     AND l.external_id = CAST(j.job_execution_id AS TEXT)
    UNION ALL
    SELECT CAST(j.job_execution_id AS TEXT), l.key, l.value, 2
    FROM job_executions AS j
    JOIN answer_labels AS l
      ON l.vendor = 'mentionlab' AND l.project_id = j.project_id AND l.scope = 'query'
     AND l.external_id = CAST(j.query_id AS TEXT)
    UNION ALL
    SELECT CAST(j.job_execution_id AS TEXT), l.key, l.value, 3
    FROM job_executions AS j
    JOIN answer_labels AS l
      ON l.vendor = 'mentionlab' AND l.project_id = j.project_id AND l.scope = 'job'
     AND l.external_id = CAST(j.job_id AS TEXT)
),
-- Per run and key, the labels of the most specific scope: the run's own, else
-- its query's, else its job's.
ml_depth AS (
    SELECT answer_id, key, MIN(depth) AS depth FROM ml_label GROUP BY answer_id, key
)
SELECT 'mentionsapi' AS vendor, l.external_id AS answer_id, l.key AS key, l.value AS value
FROM answer_labels AS l
WHERE l.vendor = 'mentionsapi' AND l.scope = 'ask'
UNION ALL
SELECT 'mentionlab', m.answer_id, m.key, m.value
FROM ml_label AS m
JOIN ml_depth AS d ON d.answer_id = m.answer_id AND d.key = m.key AND d.depth = m.depth
"""


def domain_category_map() -> str:
    defaults = "\n    UNION ALL ".join(
        f"SELECT '{domain}' AS domain, '{category}' AS category"
        for category, domains in DEFAULT_CATEGORIES.items()
        for domain in domains
    )
    return f"""
CREATE VIEW domain_category_map AS
WITH shipped AS (
    {defaults}
)
SELECT domain, category, 'custom' AS source FROM domain_categories
UNION ALL
SELECT s.domain, s.category, 'default'
FROM shipped AS s
WHERE NOT EXISTS (SELECT 1 FROM domain_categories AS c WHERE c.domain = s.domain)
"""  # noqa: S608 (this module's constants only)


# Per answer, the labels that are columns of every view.
_ANSWER_DIMS = """
answer_dims AS (
    SELECT vendor, answer_id,
           MAX(CASE WHEN key = 'topic' THEN value END) AS topic,
           MAX(CASE WHEN key = 'prompt' THEN value END) AS prompt,
           MAX(CASE WHEN key = 'country' THEN value END) AS country,
           MAX(CASE WHEN key = 'persona' THEN value END) AS persona
    FROM label_facts
    WHERE key IN ('topic', 'prompt', 'country', 'persona')
    GROUP BY vendor, answer_id
)"""
_ANSWER_COLUMNS = (
    "f.vendor, f.answer_key, f.answer_id, f.project_id, f.provider, f.model, f.answered_at"
)
# A MentionLab run's own country counts when no label gives one.
_DIM_COLUMNS = "d.topic, d.prompt, COALESCE(d.country, f.run_country) AS country, d.persona"
_DIM_JOIN = "LEFT JOIN answer_dims AS d ON d.vendor = f.vendor AND d.answer_id = f.answer_id"

# The catalog brand a raw name resolves to: an exact alias, else one of the
# same folded spelling (through brand_names); for MentionLab a displayKey alias
# first. The unique (kind, value) makes each join find one alias at most.
_ALIAS_JOINS = """LEFT JOIN catalog_aliases AS ax ON ax.kind = 'exact' AND ax.value = {raw}
    LEFT JOIN brand_names AS n ON n.name = {raw}
    LEFT JOIN catalog_aliases AS an ON an.kind = 'name' AND an.value = n.fold_key"""
_ML_RAW = "COALESCE(NULLIF(e.display_name, ''), NULLIF(e.display_key, ''))"


def mention_facts(old: ModuleType) -> str:
    return f"""
CREATE VIEW mention_facts AS
WITH {old._MA_CTES},{old._MA_MENTION},
ma_resolved AS (
    SELECT m.ask_id, m.provider, m.brand AS raw_brand, m.rank, m.label, m.score,
           COALESCE(ax.brand_id, an.brand_id) AS brand_id
    FROM ma_mention AS m
    {_ALIAS_JOINS.format(raw="m.brand")}
),
-- Spellings of one brand in one answer are one mention of it: its best rank,
-- the mean of its scores, and 'mixed' when its labels disagree.
ma_brand AS (
    SELECT r.ask_id, r.provider, COALESCE(cb.name, r.raw_brand) AS brand,
           MIN(r.raw_brand) AS raw_brand, cb.id AS brand_id, cb.own AS own,
           cb.group_name AS group_name,
           MIN(r.rank) + 1 AS rank,
           COUNT(*) AS occurrences,
           CASE WHEN COUNT(DISTINCT r.label) > 1 THEN 'mixed' ELSE MIN(r.label) END AS label,
           AVG(r.score) AS score
    FROM ma_resolved AS r
    LEFT JOIN catalog_brands AS cb ON cb.id = r.brand_id
    GROUP BY r.ask_id, r.provider, COALESCE(cb.name, r.raw_brand), cb.id, cb.own, cb.group_name
),
ml_resolved AS (
    SELECT e.job_execution_id, {_ML_RAW} AS raw_brand, e.is_primary, e.sentiment_score,
           COALESCE(ak.brand_id, ax.brand_id, an.brand_id) AS brand_id
    FROM job_execution_entities AS e
    LEFT JOIN catalog_aliases AS ak ON ak.kind = 'display_key' AND ak.value = e.display_key
    {_ALIAS_JOINS.format(raw=_ML_RAW)}
    WHERE {_ML_RAW} IS NOT NULL
),
ml_brand AS (
    SELECT r.job_execution_id, COALESCE(cb.name, r.raw_brand) AS brand,
           MIN(r.raw_brand) AS raw_brand, cb.id AS brand_id, cb.own AS own,
           cb.group_name AS group_name,
           MAX(CAST(r.is_primary AS INTEGER)) AS is_primary,
           COUNT(*) AS occurrences,
           AVG(r.sentiment_score) AS score
    FROM ml_resolved AS r
    LEFT JOIN catalog_brands AS cb ON cb.id = r.brand_id
    GROUP BY r.job_execution_id, COALESCE(cb.name, r.raw_brand), cb.id, cb.own, cb.group_name
),
facts AS (
    SELECT {old._ma_answer("b")},
           b.brand AS brand,
           CAST(NULL AS BOOLEAN) AS is_primary,
           b.rank AS rank,
           b.occurrences AS occurrences,
           b.label AS sentiment_label,
           CAST(b.score AS DOUBLE PRECISION) AS sentiment_score,
           b.raw_brand AS raw_brand,
           b.brand_id AS brand_id,
           b.own AS own,
           b.group_name AS brand_group,
           CAST(NULL AS TEXT) AS run_country
    FROM ma_brand AS b
    {old._ma_answer_joins("b")}
    UNION ALL
    SELECT {old._ML_ANSWER},
           e.brand,
           CAST(e.is_primary AS BOOLEAN),
           CAST(NULL AS INTEGER),
           e.occurrences,
           {old._ML_LABEL},
           CAST(e.score AS DOUBLE PRECISION),
           e.raw_brand,
           e.brand_id,
           e.own,
           e.group_name,
           j.country
    FROM ml_brand AS e
    JOIN job_executions AS j ON j.job_execution_id = e.job_execution_id
    WHERE j.status = 'success'
),{_ANSWER_DIMS}
SELECT {_ANSWER_COLUMNS},
       f.brand, f.is_primary, f.rank, f.occurrences, f.sentiment_label, f.sentiment_score,
       f.raw_brand, f.brand_id, f.own, f.brand_group,
       {_DIM_COLUMNS}
FROM facts AS f
{_DIM_JOIN}
"""  # noqa: S608 (this module's constants only)


# Every URL the vendor served, once per answer. A provider's list counts as it
# is. A top-level URL that no provider cites counts too, for the ask's only
# provider or else for the ask with the provider unknown: nothing documents
# that the top-level list is the union of the providers' lists, and it is not
# always. A citation without a URL counts from the top-level list only when the
# providers carry no citations at all (it cannot be told apart from theirs).
# Three branches, each a plain anti-join the planner can hash: the providers'
# own lists; top-level URLs no provider cites (given the sole provider, which
# cannot make a duplicate: no provider cites them); top-level citations without
# a URL, of asks whose providers cite nothing.
_TOP_LEVEL = """
    SELECT c.ask_id, s.provider, c.url, MIN(c.domain) AS domain, MIN(c.title) AS title
    FROM ask_citations AS c
    LEFT JOIN ma_sole_provider AS s ON s.ask_id = c.ask_id
    WHERE c.provider IS NULL AND c.url IS {url} AND NOT EXISTS (
        SELECT 1 FROM ask_citations AS o
        WHERE o.ask_id = c.ask_id AND o.provider IS NOT NULL{same_url}
    )
    GROUP BY c.ask_id, s.provider, c.url{key}"""
_MA_CITATION = f"""
ma_citation AS (
    SELECT c.ask_id, c.provider, c.url, MIN(c.domain) AS domain, MIN(c.title) AS title
    FROM ask_citations AS c
    WHERE c.provider IS NOT NULL
    GROUP BY c.ask_id, c.provider, c.url, CASE WHEN c.url IS NULL THEN c.position END
    UNION ALL{_TOP_LEVEL.format(url="NOT NULL", same_url=" AND o.url = c.url", key="")}
    UNION ALL{_TOP_LEVEL.format(url="NULL", same_url="", key=", c.position")}
)"""  # noqa: S608 (this module's constants only)


def _parent(dialect: str, domain: str) -> str:
    """The domain without its first label ('en.wikipedia.org' -> 'wikipedia.org')."""
    find = "STRPOS" if dialect == "postgresql" else "INSTR"
    return f"SUBSTR({domain}, {find}({domain}, '.') + 1)"


def citation_facts(old: ModuleType, dialect: str) -> str:
    return f"""
CREATE VIEW citation_facts AS
WITH {old._MA_CTES},{_MA_CITATION},
ml_source AS (
    SELECT job_execution_id, url, MIN(domain) AS domain
    FROM job_execution_sources
    GROUP BY job_execution_id, url, CASE WHEN url IS NULL THEN position END
),
cited AS (
    SELECT {old._ma_answer("mc")},
           mc.url AS url,
           {old._domain(dialect, "mc.domain", "mc.url")} AS domain,
           mc.title AS title,
           CAST(NULL AS TEXT) AS run_country
    FROM ma_citation AS mc
    {old._ma_answer_joins("mc")}
    UNION ALL
    SELECT {old._ML_ANSWER},
           s.url,
           {old._domain(dialect, "s.domain", "s.url")},
           CAST(NULL AS TEXT),
           j.country
    FROM ml_source AS s
    JOIN job_executions AS j ON j.job_execution_id = s.job_execution_id
    WHERE j.status = 'success'
),
facts AS (
    SELECT c.*, {_parent(dialect, "c.domain")} AS parent_domain FROM cited AS c
),{_ANSWER_DIMS}
SELECT {_ANSWER_COLUMNS},
       f.url, f.domain, f.title,
       CASE
           WHEN cb.own THEN 'own'
           WHEN cb.id IS NOT NULL THEN 'competitor'
           ELSE COALESCE(m1.category, m2.category, 'other')
       END AS domain_category,
       cb.name AS domain_brand,
       {_DIM_COLUMNS}
FROM facts AS f
LEFT JOIN catalog_domains AS cd1 ON cd1.domain = f.domain
LEFT JOIN catalog_domains AS cd2 ON cd2.domain = f.parent_domain
LEFT JOIN catalog_brands AS cb ON cb.id = COALESCE(cd1.brand_id, cd2.brand_id)
LEFT JOIN domain_category_map AS m1 ON m1.domain = f.domain
LEFT JOIN domain_category_map AS m2 ON m2.domain = f.parent_domain
{_DIM_JOIN}
"""  # noqa: S608 (this module's constants only)


def answer_facts(old: ModuleType) -> str:
    # 0006's answer units (ma_unit, ma_any_unit), reading this revision's citations.
    units = old.ANSWER_FACTS[
        old.ANSWER_FACTS.index("ma_unit AS (") : old.ANSWER_FACTS.index("\nanswer AS (") + 1
    ]
    assert "ma_any_unit AS (" in units, "0006's answer units moved"
    return f"""
CREATE VIEW answer_facts AS
WITH {old._MA_CTES},{old._MA_MENTION},{_MA_CITATION},
{units}facts AS (
    SELECT {old._ma_answer("u")}, CAST(NULL AS TEXT) AS run_country
    FROM ma_any_unit AS u
    {old._ma_answer_joins("u")}
    UNION ALL
    SELECT {old._ML_ANSWER}, j.country
    FROM job_executions AS j
    WHERE j.status = 'success'
),{_ANSWER_DIMS}
SELECT {_ANSWER_COLUMNS},
       COALESCE(m.brands, 0) AS brands,
       COALESCE(c.citations, 0) AS citations,
       {_DIM_COLUMNS}
FROM facts AS f
LEFT JOIN (
    SELECT answer_key, COUNT(*) AS brands FROM mention_facts GROUP BY answer_key
) AS m ON m.answer_key = f.answer_key
LEFT JOIN (
    SELECT answer_key, COUNT(*) AS citations FROM citation_facts GROUP BY answer_key
) AS c ON c.answer_key = f.answer_key
{_DIM_JOIN}
"""  # noqa: S608 (this module's constants only)


def _create_tables() -> None:
    op.create_table(
        "catalog_brands",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("own", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("group_name", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("catalog_brands_pkey")),
        sa.UniqueConstraint("name", name=op.f("catalog_brands_name_key")),
    )
    op.create_table(
        "catalog_aliases",
        sa.Column("id", BIG_ID, autoincrement=True, nullable=False),
        sa.Column("brand_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("alias", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('name', 'exact', 'display_key')",
            name=op.f("catalog_aliases_alias_kind_check"),
        ),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["catalog_brands.id"],
            name=op.f("catalog_aliases_brand_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("catalog_aliases_pkey")),
        sa.UniqueConstraint("kind", "value", name=op.f("catalog_aliases_kind_value_key")),
    )
    op.create_index("ix_catalog_aliases_brand_id", "catalog_aliases", ["brand_id"])
    op.create_table(
        "catalog_domains",
        sa.Column("domain", sa.Text(), nullable=False),
        sa.Column("brand_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["brand_id"],
            ["catalog_brands.id"],
            name=op.f("catalog_domains_brand_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("domain", name=op.f("catalog_domains_pkey")),
    )
    op.create_index("ix_catalog_domains_brand_id", "catalog_domains", ["brand_id"])
    op.create_table(
        "domain_categories",
        sa.Column("domain", sa.Text(), nullable=False),
        sa.Column("category", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("domain", name=op.f("domain_categories_pkey")),
    )
    op.create_table(
        "brand_names",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("fold_key", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("brand_names_pkey")),
    )
    op.create_index("ix_brand_names_fold_key", "brand_names", ["fold_key"])
    op.create_table(
        "answer_labels",
        sa.Column("vendor", sa.String(length=32), nullable=False),
        sa.Column("project_id", sa.String(length=256), server_default="", nullable=False),
        sa.Column("scope", sa.String(length=32), nullable=False),
        sa.Column("external_id", sa.String(length=256), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.CheckConstraint(VENDOR_CHECK, name=op.f("answer_labels_vendor_check")),
        sa.CheckConstraint(
            "scope IN ('ask', 'execution', 'query', 'job')",
            name=op.f("answer_labels_label_scope_check"),
        ),
        sa.PrimaryKeyConstraint(
            "vendor",
            "project_id",
            "scope",
            "external_id",
            "key",
            "value",
            name=op.f("answer_labels_pkey"),
        ),
    )


def _backfill_brand_names() -> None:
    bind = op.get_bind()
    names = bind.execute(
        sa.text(
            "SELECT brand FROM ask_brand_mentions WHERE brand IS NOT NULL AND brand <> ''"
            " UNION SELECT COALESCE(NULLIF(display_name, ''), NULLIF(display_key, ''))"
            " FROM job_execution_entities"
            " WHERE COALESCE(NULLIF(display_name, ''), NULLIF(display_key, '')) IS NOT NULL"
        )
    ).scalars()
    insert = sa.text("INSERT INTO brand_names (name, fold_key) VALUES (:name, :fold_key)")
    batch: list[dict[str, str]] = []
    for name in names:
        batch.append({"name": name, "fold_key": _fold(name)})
        if len(batch) >= 5000:
            bind.execute(insert, batch)
            batch.clear()
    if batch:
        bind.execute(insert, batch)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    _create_tables()
    _backfill_brand_names()
    for name in FACTS:
        op.execute(f"DROP VIEW {name}")
    old = _r0006()
    op.execute(LABEL_FACTS)
    op.execute(domain_category_map())
    op.execute(mention_facts(old))
    op.execute(citation_facts(old, dialect))
    op.execute(answer_facts(old))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for name in (*FACTS, *NEW_VIEWS):
        op.execute(f"DROP VIEW {name}")
    old, fix = _r0006(), _r0007()
    # 0007's views: 0006's SQL with its MentionLab brand expression.
    op.execute(old.MENTION_FACTS.replace(fix.OLD_BRAND, fix.NEW_BRAND))
    op.execute(old.citation_facts(dialect))
    op.execute(old.ANSWER_FACTS)
    for index, table in (
        ("ix_brand_names_fold_key", "brand_names"),
        ("ix_catalog_domains_brand_id", "catalog_domains"),
        ("ix_catalog_aliases_brand_id", "catalog_aliases"),
    ):
        op.drop_index(index, table_name=table)
    for table in TABLES:
        op.drop_table(table)
