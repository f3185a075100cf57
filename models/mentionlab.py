"""MentionLab runs (`GET /api/v1/job-executions/{id}`), normalized for analysis."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Double, ForeignKey, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, JSONDocument, UUIDText


def _execution_fk() -> ForeignKey:
    return ForeignKey("job_executions.job_execution_id", ondelete="CASCADE")


class JobExecution(Base):
    __tablename__ = "job_executions"

    job_execution_id: Mapped[str] = mapped_column(UUIDText, primary_key=True)
    project_id: Mapped[str] = mapped_column(String(256))
    ai_response_id: Mapped[str | None] = mapped_column(UUIDText)
    job_id: Mapped[str | None] = mapped_column(UUIDText)
    query_id: Mapped[str | None] = mapped_column(UUIDText)
    initiated_at: Mapped[datetime | None]
    created_at: Mapped[datetime | None]
    model: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(32))
    execution_number: Mapped[int | None] = mapped_column(Integer)
    has_sources: Mapped[bool | None] = mapped_column(Boolean)
    has_shopping: Mapped[bool | None] = mapped_column(Boolean)
    country: Mapped[str | None] = mapped_column(Text)
    language: Mapped[str | None] = mapped_column(Text)
    raw_payload: Mapped[dict[str, Any]] = mapped_column(JSONDocument)
    # The body exactly as received, kept only when raw_payload could not be it
    # (U+0000 removed, which Postgres cannot store); `reprocess` rebuilds from it.
    raw_body: Mapped[bytes | None] = mapped_column(LargeBinary)
    fetched_at: Mapped[datetime]


class JobExecutionSource(Base):
    __tablename__ = "job_execution_sources"

    job_execution_id: Mapped[str] = mapped_column(UUIDText, _execution_fk(), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    domain: Mapped[str | None] = mapped_column(Text)
    url: Mapped[str | None] = mapped_column(Text)


class JobExecutionEntity(Base):
    __tablename__ = "job_execution_entities"

    job_execution_id: Mapped[str] = mapped_column(UUIDText, _execution_fk(), primary_key=True)
    position: Mapped[int] = mapped_column(Integer, primary_key=True)
    display_key: Mapped[str | None] = mapped_column(Text)
    display_name: Mapped[str | None] = mapped_column(Text)
    is_primary: Mapped[bool | None] = mapped_column(Boolean)
    sentiment_score: Mapped[float | None] = mapped_column(Double)
