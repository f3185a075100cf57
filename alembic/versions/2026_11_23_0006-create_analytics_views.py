"""Create the analytics views: mention_facts, citation_facts and answer_facts.

One shape across both vendors, so reports (and analysts' own SQL) never need to
know which vendor an answer came from. The choices behind each column are in
docs/analytics.md; the SQL is spelled out here, not imported, so this revision
keeps meaning the same thing when the code changes. A later revision that
changes a view drops and recreates it with the new SQL.

The unit of analysis is one answer of one AI provider: a MentionLab job
execution, or one provider's part of a MentionsAPI ask (an ask sends one prompt
to several providers). `answer_key` names that unit in all three views.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 14:00:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

VIEWS = ("mention_facts", "citation_facts", "answer_facts")

# MentionsAPI bodies carry no timestamp: the --created-at given at registration,
# else the registration time, else (an ask stored without registering it) the
# fetch time. Only succeeded asks are answers; failed ones have nothing to count.
_MA_CTES = """
ma_answer AS (
    SELECT a.ask_id,
           COALESCE(t.remote_created_at, t.registered_at, a.fetched_at) AS answered_at
    FROM asks AS a
    LEFT JOIN tracked_ids AS t
      ON t.vendor = 'mentionsapi' AND t.project_id = '' AND t.external_id = a.ask_id
    WHERE a.status = 'succeeded'
),
-- A mention or citation that names no provider belongs to the ask's only
-- provider, when it has exactly one.
ma_sole_provider AS (
    SELECT ask_id, MIN(provider) AS provider
    FROM ask_provider_responses
    GROUP BY ask_id
    HAVING COUNT(DISTINCT provider) = 1 AND COUNT(provider) = COUNT(*)
),
-- Brand mentions name the provider but not the model; an ask that lists one
-- provider twice with different models leaves the model unknown.
ma_model AS (
    SELECT ask_id, provider,
           CASE WHEN COUNT(DISTINCT model) = 1 AND COUNT(model) = COUNT(*)
                THEN MIN(model) END AS model
    FROM ask_provider_responses
    GROUP BY ask_id, provider
)"""

# MentionLab runs carry only a model name; the provider is inferred from it.
_ML_PROVIDER = """CASE
        WHEN LOWER(j.model) LIKE 'gpt%' OR LOWER(j.model) LIKE 'chatgpt%'
          OR LOWER(j.model) LIKE 'o1%' OR LOWER(j.model) LIKE 'o3%'
          OR LOWER(j.model) LIKE 'o4%' THEN 'openai'
        WHEN LOWER(j.model) LIKE 'claude%' THEN 'anthropic'
        WHEN LOWER(j.model) LIKE 'gemini%' OR LOWER(j.model) LIKE 'google%' THEN 'google'
        WHEN LOWER(j.model) LIKE 'perplexity%' OR LOWER(j.model) LIKE 'sonar%' THEN 'perplexity'
        WHEN LOWER(j.model) LIKE 'copilot%' THEN 'microsoft'
        WHEN LOWER(j.model) LIKE 'grok%' THEN 'xai'
        WHEN LOWER(j.model) LIKE 'llama%' THEN 'meta'
        WHEN LOWER(j.model) LIKE 'mistral%' THEN 'mistral'
        WHEN LOWER(j.model) LIKE 'deepseek%' THEN 'deepseek'
    END"""

_ML_ANSWERED_AT = "COALESCE(j.initiated_at, j.created_at, j.fetched_at)"
_MA_KEY = "'mentionsapi/' || COALESCE({p}.provider, '') || '/' || {p}.ask_id"
_ML_KEY = "'mentionlab/' || CAST(j.job_execution_id AS TEXT)"

# The seven answer columns every view starts with, for a MentionLab run `j`...
_ML_ANSWER = f"""'mentionlab',
       {_ML_KEY},
       CAST(j.job_execution_id AS TEXT),
       j.project_id,
       {_ML_PROVIDER},
       j.model,
       {_ML_ANSWERED_AT}"""


def _ma_answer(p: str) -> str:
    """... and for the MentionsAPI rows `p` (ask_id, provider), with their joins."""
    return f"""'mentionsapi' AS vendor,
       {_MA_KEY.format(p=p)} AS answer_key,
       CAST({p}.ask_id AS TEXT) AS answer_id,
       CAST(NULL AS TEXT) AS project_id,
       {p}.provider AS provider,
       md.model AS model,
       a.answered_at AS answered_at"""


def _ma_answer_joins(p: str) -> str:
    return f"""JOIN ma_answer AS a ON a.ask_id = {p}.ask_id
LEFT JOIN ma_model AS md ON md.ask_id = {p}.ask_id AND md.provider = {p}.provider"""


# Labels and scores on one 0-100 scale: MentionsAPI labels map to 0/50/100;
# MentionLab scores get the label of their third of the scale.
_MA_SCORE = """CASE LOWER(m.sentiment)
            WHEN 'positive' THEN 100.0 WHEN 'neutral' THEN 50.0 WHEN 'negative' THEN 0.0
        END"""
_ML_LABEL = """CASE
        WHEN e.score IS NULL THEN NULL
        WHEN e.score * 3 < 100 THEN 'negative'
        WHEN e.score * 3 > 200 THEN 'positive'
        ELSE 'neutral'
    END"""

# Each MentionsAPI brand mention with the provider it belongs to.
_MA_MENTION = f"""
ma_mention AS (
    SELECT m.ask_id, COALESCE(m.provider, s.provider) AS provider, m.brand, m.rank,
           LOWER(m.sentiment) AS label,
           {_MA_SCORE} AS score
    FROM ask_brand_mentions AS m
    LEFT JOIN ma_sole_provider AS s ON s.ask_id = m.ask_id
    WHERE m.brand IS NOT NULL AND m.brand <> ''
)"""  # noqa: S608 (this module's constants only)

# The top-level citations list is the union of the providers' lists: it counts
# only for an ask whose providers carry none of their own.
_MA_CITATION = """
ma_citation AS (
    SELECT c.ask_id, COALESCE(c.provider, s.provider) AS provider, c.url, c.domain, c.title
    FROM ask_citations AS c
    LEFT JOIN ma_sole_provider AS s ON s.ask_id = c.ask_id
    WHERE c.provider IS NOT NULL
       OR NOT EXISTS (
           SELECT 1 FROM ask_citations AS o WHERE o.ask_id = c.ask_id AND o.provider IS NOT NULL
       )
)"""

MENTION_FACTS = f"""
CREATE VIEW mention_facts AS
WITH {_MA_CTES},{_MA_MENTION},
-- A brand listed several times in one answer is one mention: its best rank,
-- the mean of its scores, and 'mixed' when its labels disagree.
ma_brand AS (
    SELECT ask_id, provider, brand,
           MIN(rank) + 1 AS rank,
           COUNT(*) AS occurrences,
           CASE WHEN COUNT(DISTINCT label) > 1 THEN 'mixed' ELSE MIN(label) END AS label,
           AVG(score) AS score
    FROM ma_mention
    GROUP BY ask_id, provider, brand
),
ml_brand AS (
    SELECT job_execution_id,
           COALESCE(display_name, display_key) AS brand,
           MAX(CAST(is_primary AS INTEGER)) AS is_primary,
           COUNT(*) AS occurrences,
           AVG(sentiment_score) AS score
    FROM job_execution_entities
    WHERE COALESCE(display_name, display_key) IS NOT NULL
    GROUP BY job_execution_id, COALESCE(display_name, display_key)
)
SELECT {_ma_answer("b")},
       b.brand AS brand,
       CAST(NULL AS BOOLEAN) AS is_primary,
       b.rank AS rank,
       b.occurrences AS occurrences,
       b.label AS sentiment_label,
       CAST(b.score AS DOUBLE PRECISION) AS sentiment_score
FROM ma_brand AS b
{_ma_answer_joins("b")}
UNION ALL
SELECT {_ML_ANSWER},
       e.brand,
       CAST(e.is_primary AS BOOLEAN),
       CAST(NULL AS INTEGER),
       e.occurrences,
       {_ML_LABEL},
       CAST(e.score AS DOUBLE PRECISION)
FROM ml_brand AS e
JOIN job_executions AS j ON j.job_execution_id = e.job_execution_id
WHERE j.status = 'success'
"""  # noqa: S608 (this module's constants only)


def _host_from_url(dialect: str, url: str) -> str:
    """The text after the first '://' up to the next '/', written per dialect."""
    if dialect == "postgresql":
        return (
            f"CASE WHEN STRPOS({url}, '://') > 0"
            f" THEN SPLIT_PART(SUBSTR({url}, STRPOS({url}, '://') + 3), '/', 1) END"
        )
    rest = f"SUBSTR({url}, INSTR({url}, '://') + 3)"
    return (
        f"CASE WHEN INSTR({url}, '://') > 0"
        f" THEN SUBSTR({rest}, 1, INSTR({rest} || '/', '/') - 1) END"
    )


def _domain(dialect: str, domain: str, url: str) -> str:
    # The vendor's domain field, else the URL's host; lowercase, without 'www.'.
    host = f"LOWER(COALESCE(NULLIF({domain}, ''), NULLIF({_host_from_url(dialect, url)}, '')))"
    return f"CASE WHEN {host} LIKE 'www.%' THEN SUBSTR({host}, 5) ELSE {host} END"


def citation_facts(dialect: str) -> str:
    return f"""
CREATE VIEW citation_facts AS
WITH {_MA_CTES},{_MA_CITATION}
SELECT {_ma_answer("mc")},
       mc.url AS url,
       {_domain(dialect, "mc.domain", "mc.url")} AS domain,
       mc.title AS title
FROM ma_citation AS mc
{_ma_answer_joins("mc")}
UNION ALL
SELECT {_ML_ANSWER},
       s.url,
       {_domain(dialect, "s.domain", "s.url")},
       CAST(NULL AS TEXT)
FROM job_execution_sources AS s
JOIN job_executions AS j ON j.job_execution_id = s.job_execution_id
WHERE j.status = 'success'
"""  # noqa: S608 (this module's constants only)


# Every answer, including those that mention no brand and cite nothing: the
# denominator of visibility. A MentionsAPI answer exists for each provider that
# answered, and for each (ask, provider) a mention or citation was attributed to
# without that provider having answered, so every row of the other two views
# has its answer here. The units come from the archive tables, not from the
# other two views: a report that counts answers then reads no mention or
# citation (Postgres drops the unused LEFT JOINs below).
ANSWER_FACTS = f"""
CREATE VIEW answer_facts AS
WITH {_MA_CTES},{_MA_MENTION},{_MA_CITATION},
ma_unit AS (
    SELECT ask_id, provider FROM ask_provider_responses
    UNION
    SELECT ask_id, provider FROM ma_mention AS m
    WHERE NOT EXISTS (
        SELECT 1 FROM ask_provider_responses AS p
        WHERE p.ask_id = m.ask_id AND p.provider = m.provider
    )
    UNION
    SELECT ask_id, provider FROM ma_citation AS c
    WHERE NOT EXISTS (
        SELECT 1 FROM ask_provider_responses AS p
        WHERE p.ask_id = c.ask_id AND p.provider = c.provider
    )
),
ma_any_unit AS (
    SELECT ask_id, provider FROM ma_unit
    UNION ALL
    SELECT a.ask_id, CAST(NULL AS TEXT)
    FROM ma_answer AS a
    WHERE NOT EXISTS (SELECT 1 FROM ma_unit AS u WHERE u.ask_id = a.ask_id)
),
answer AS (
    SELECT {_ma_answer("u")}
    FROM ma_any_unit AS u
    {_ma_answer_joins("u")}
    UNION ALL
    SELECT {_ML_ANSWER}
    FROM job_executions AS j
    WHERE j.status = 'success'
)
SELECT answer.vendor, answer.answer_key, answer.answer_id, answer.project_id,
       answer.provider, answer.model, answer.answered_at,
       COALESCE(m.brands, 0) AS brands,
       COALESCE(c.citations, 0) AS citations
FROM answer
LEFT JOIN (
    SELECT answer_key, COUNT(*) AS brands FROM mention_facts GROUP BY answer_key
) AS m ON m.answer_key = answer.answer_key
LEFT JOIN (
    SELECT answer_key, COUNT(*) AS citations FROM citation_facts GROUP BY answer_key
) AS c ON c.answer_key = answer.answer_key
"""  # noqa: S608 (this module's constants only)


def upgrade() -> None:
    dialect = op.get_bind().dialect.name
    op.execute(MENTION_FACTS)
    op.execute(citation_facts(dialect))
    op.execute(ANSWER_FACTS)


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
