"""MentionsAPI answers (`GET /v1/ask/{id}`), normalized for analysis."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Integer, LargeBinary, Numeric, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, JSONDocument


def _ask_fk() -> ForeignKey:
    return ForeignKey("asks.ask_id", ondelete="CASCADE")


class Ask(Base):
    __tablename__ = "asks"

    ask_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    request_id: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))
    cached: Mapped[bool | None] = mapped_column(Boolean)
    cache_tier: Mapped[str | None] = mapped_column(Text)
    billable_units: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    # Cents may come fractional on some plans; Numeric keeps them exact.
    cost_cents: Mapped[Decimal | None] = mapped_column(Numeric(18, 6))
    cost_breakdown: Mapped[dict[str, Any] | None] = mapped_column(JSONDocument)
    error_code: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    raw_payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    # The body exactly as received, kept only when raw_payload could not be it
    # (U+0000 removed, which Postgres cannot store); `reprocess` rebuilds from it.
    raw_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    fetched_at: Mapped[datetime]


class AskProviderResponse(Base):
    __tablename__ = "ask_provider_responses"

    ask_id: Mapped[str] = mapped_column(String(256), _ask_fk(), primary_key=True)
    # Index in the payload's providers[]; keeps rows stable across re-archives.
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    provider: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    content: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    input_tokens: Mapped[int | None] = mapped_column(Integer)
    output_tokens: Mapped[int | None] = mapped_column(Integer)


class AskCitation(Base):
    __tablename__ = "ask_citations"

    ask_id: Mapped[str] = mapped_column(String(256), _ask_fk(), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    # NULL for the top-level citations list; otherwise the provider (and model)
    # whose answer cited it.
    provider: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)
    domain: Mapped[str | None] = mapped_column(Text)
    title: Mapped[str | None] = mapped_column(Text)


class AskBrandMention(Base):
    __tablename__ = "ask_brand_mentions"

    ask_id: Mapped[str] = mapped_column(String(256), _ask_fk(), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    brand: Mapped[str | None] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(Text)
    rank: Mapped[int | None] = mapped_column(Integer)
    sentiment: Mapped[str | None] = mapped_column(Text)
    context: Mapped[str | None] = mapped_column(Text)
