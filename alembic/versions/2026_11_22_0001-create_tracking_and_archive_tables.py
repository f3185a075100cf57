"""Create the tracking queue and both vendors' archive tables.

Revision ID: 0001
Revises:
Create Date: 2026-11-22 11:27:11.728764
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Types are spelled out here rather than imported from models/, so this migration
# keeps meaning the same thing when the models change.
TIMESTAMPTZ = sa.DateTime(timezone=True)
JSON_DOCUMENT = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
UUID_TEXT = sa.Uuid(as_uuid=False).with_variant(sa.String(length=36), "sqlite")
BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
VENDOR_CHECK = "vendor IN ('mentionsapi', 'mentionlab')"
STATE_CHECK = (
    "state IN ('tracked', 'polling', 'archived', 'failed', 'expired', 'not_found',"
    " 'invalid', 'error', 'invalid_payload')"
)
ACTIVE = sa.text("state IN ('tracked', 'polling')")


def upgrade() -> None:
    op.create_table(
        "asks",
        sa.Column("ask_id", sa.String(length=256), nullable=False),
        sa.Column("request_id", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("cached", sa.Boolean(), nullable=True),
        sa.Column("cache_tier", sa.Text(), nullable=True),
        sa.Column("billable_units", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("cost_cents", sa.Numeric(precision=18, scale=6), nullable=True),
        sa.Column(
            "cost_breakdown",
            JSON_DOCUMENT,
            nullable=True,
        ),
        sa.Column("error_code", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column(
            "raw_payload",
            JSON_DOCUMENT,
            nullable=False,
        ),
        sa.Column("fetched_at", TIMESTAMPTZ, nullable=False),
        sa.PrimaryKeyConstraint("ask_id", name=op.f("asks_pkey")),
    )
    op.create_table(
        "job_executions",
        sa.Column(
            "job_execution_id",
            UUID_TEXT,
            nullable=False,
        ),
        sa.Column("project_id", sa.String(length=256), nullable=False),
        sa.Column(
            "ai_response_id",
            UUID_TEXT,
            nullable=True,
        ),
        sa.Column(
            "job_id",
            UUID_TEXT,
            nullable=True,
        ),
        sa.Column(
            "query_id",
            UUID_TEXT,
            nullable=True,
        ),
        sa.Column("initiated_at", TIMESTAMPTZ, nullable=True),
        sa.Column("created_at", TIMESTAMPTZ, nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column("execution_number", sa.Integer(), nullable=True),
        sa.Column("has_sources", sa.Boolean(), nullable=True),
        sa.Column("has_shopping", sa.Boolean(), nullable=True),
        sa.Column("country", sa.Text(), nullable=True),
        sa.Column("language", sa.Text(), nullable=True),
        sa.Column(
            "raw_payload",
            JSON_DOCUMENT,
            nullable=False,
        ),
        sa.Column("fetched_at", TIMESTAMPTZ, nullable=False),
        sa.PrimaryKeyConstraint("job_execution_id", name=op.f("job_executions_pkey")),
    )
    op.create_table(
        "tracked_ids",
        sa.Column(
            "id",
            BIG_ID,
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "vendor",
            sa.String(length=32),
            nullable=False,
        ),
        sa.Column("project_id", sa.String(length=256), server_default="", nullable=False),
        sa.Column("external_id", sa.String(length=256), nullable=False),
        sa.Column(
            "state",
            sa.String(length=32),
            server_default="tracked",
            nullable=False,
        ),
        sa.Column("registered_at", TIMESTAMPTZ, nullable=False),
        sa.Column("remote_created_at", TIMESTAMPTZ, nullable=True),
        sa.Column("deadline_at", TIMESTAMPTZ, nullable=False),
        sa.Column("next_poll_at", TIMESTAMPTZ, nullable=False),
        sa.Column("lease_token", sa.String(length=32), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("consecutive_errors", sa.Integer(), server_default="0", nullable=False),
        sa.Column("not_found_streak", sa.Integer(), server_default="0", nullable=False),
        sa.Column("last_http_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("last_polled_at", TIMESTAMPTZ, nullable=True),
        sa.Column("final_at", TIMESTAMPTZ, nullable=True),
        sa.Column("archived_at", TIMESTAMPTZ, nullable=True),
        sa.Column("expect_webhook", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("tracked_ids_pkey")),
        sa.CheckConstraint(VENDOR_CHECK, name=op.f("tracked_ids_vendor_check")),
        sa.CheckConstraint(STATE_CHECK, name=op.f("tracked_ids_tracked_state_check")),
        sa.UniqueConstraint(
            "vendor",
            "project_id",
            "external_id",
            name=op.f("tracked_ids_vendor_project_id_external_id_key"),
        ),
    )
    op.create_index(
        "ix_tracked_ids_due",
        "tracked_ids",
        ["deadline_at", "next_poll_at"],
        unique=False,
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )
    op.create_index("ix_tracked_ids_vendor_state", "tracked_ids", ["vendor", "state"], unique=False)
    op.create_table(
        "vendor_accounts",
        sa.Column(
            "vendor",
            sa.String(length=32),
            nullable=False,
        ),
        sa.Column("key_fingerprint", sa.String(length=16), nullable=False),
        sa.Column("auth_failed_at", TIMESTAMPTZ, nullable=True),
        sa.Column("auth_error", sa.Text(), nullable=True),
        sa.Column("auth_recheck_at", TIMESTAMPTZ, nullable=True),
        sa.Column("paused_until", TIMESTAMPTZ, nullable=True),
        sa.Column("updated_at", TIMESTAMPTZ, nullable=False),
        sa.PrimaryKeyConstraint("vendor", "key_fingerprint", name=op.f("vendor_accounts_pkey")),
        sa.CheckConstraint(VENDOR_CHECK, name=op.f("vendor_accounts_vendor_check")),
    )
    op.create_table(
        "ask_brand_mentions",
        sa.Column("ask_id", sa.String(length=256), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("brand", sa.Text(), nullable=True),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("rank", sa.Integer(), nullable=True),
        sa.Column("sentiment", sa.Text(), nullable=True),
        sa.Column("context", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["ask_id"],
            ["asks.ask_id"],
            name=op.f("ask_brand_mentions_ask_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("ask_id", "position", name=op.f("ask_brand_mentions_pkey")),
    )
    op.create_table(
        "ask_citations",
        sa.Column("ask_id", sa.String(length=256), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("domain", sa.Text(), nullable=True),
        sa.Column("title", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["ask_id"], ["asks.ask_id"], name=op.f("ask_citations_ask_id_fkey"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("ask_id", "position", name=op.f("ask_citations_pkey")),
    )
    op.create_table(
        "ask_provider_responses",
        sa.Column("ask_id", sa.String(length=256), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("content", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=True),
        sa.Column("output_tokens", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["ask_id"],
            ["asks.ask_id"],
            name=op.f("ask_provider_responses_ask_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("ask_id", "position", name=op.f("ask_provider_responses_pkey")),
    )
    op.create_table(
        "job_execution_entities",
        sa.Column(
            "job_execution_id",
            UUID_TEXT,
            nullable=False,
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("display_key", sa.Text(), nullable=True),
        sa.Column("display_name", sa.Text(), nullable=True),
        sa.Column("is_primary", sa.Boolean(), nullable=True),
        sa.Column("sentiment_score", sa.Double(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_execution_id"],
            ["job_executions.job_execution_id"],
            name=op.f("job_execution_entities_job_execution_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "job_execution_id", "position", name=op.f("job_execution_entities_pkey")
        ),
    )
    op.create_table(
        "job_execution_sources",
        sa.Column(
            "job_execution_id",
            UUID_TEXT,
            nullable=False,
        ),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("domain", sa.Text(), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["job_execution_id"],
            ["job_executions.job_execution_id"],
            name=op.f("job_execution_sources_job_execution_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(
            "job_execution_id", "position", name=op.f("job_execution_sources_pkey")
        ),
    )
    op.create_table(
        "quarantined_payloads",
        sa.Column(
            "id",
            BIG_ID,
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tracked_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "vendor",
            sa.String(length=32),
            nullable=False,
        ),
        sa.Column("external_id", sa.String(length=256), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.Column("body_truncated", sa.Boolean(), nullable=False),
        sa.Column("received_at", TIMESTAMPTZ, nullable=False),
        sa.ForeignKeyConstraint(
            ["tracked_id"],
            ["tracked_ids.id"],
            name=op.f("quarantined_payloads_tracked_id_fkey"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("quarantined_payloads_pkey")),
        sa.CheckConstraint(VENDOR_CHECK, name=op.f("quarantined_payloads_vendor_check")),
    )
    op.create_index(
        op.f("ix_quarantined_payloads_tracked_id"),
        "quarantined_payloads",
        ["tracked_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_quarantined_payloads_tracked_id"), table_name="quarantined_payloads")
    op.drop_table("quarantined_payloads")
    op.drop_table("job_execution_sources")
    op.drop_table("job_execution_entities")
    op.drop_table("ask_provider_responses")
    op.drop_table("ask_citations")
    op.drop_table("ask_brand_mentions")
    op.drop_table("vendor_accounts")
    op.drop_index("ix_tracked_ids_vendor_state", table_name="tracked_ids")
    op.drop_index(
        "ix_tracked_ids_due",
        table_name="tracked_ids",
        postgresql_where=ACTIVE,
        sqlite_where=ACTIVE,
    )
    op.drop_table("tracked_ids")
    op.drop_table("job_executions")
    op.drop_table("asks")
