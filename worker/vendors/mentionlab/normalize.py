"""MentionLab `GET /api/v1/job-executions/{id}` bodies into `job_executions` and children."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from worker.normalize.common import (
    Int32,
    Normalized,
    PayloadError,
    VendorModel,
    identity,
    parse_timestamp,
    parse_uuid,
    unique_by,
    validate,
)

FINAL_STATUSES = frozenset({"success", "failed"})
PENDING_STATUSES = frozenset({"pending", "retrying"})


class Source(VendorModel):
    domain: str | None = None
    url: str | None = None


class Entity(VendorModel):
    # Field names are the vendor's own camelCase.
    displayKey: str | None = None
    displayName: str | None = None
    isPrimary: bool | None = None
    sentimentScore: float | None = None


class ExecutionPayload(VendorModel):
    jobExecutionId: str | None = None
    aiResponseId: str | None = None
    jobId: str | None = None
    queryId: str | None = None
    initiatedAt: str | None = None
    createdAt: str | None = None
    model: str | None = None
    status: Literal["pending", "retrying", "success", "failed"]
    executionNumber: Int32 | None = None
    hasSources: bool | None = None
    hasShopping: bool | None = None
    sources: list[Source] | None = None
    entities: list[Entity] | None = None
    country: str | None = None
    language: str | None = None


def execution_status(payload: dict[str, Any]) -> str:
    status = payload.get("status")
    if not isinstance(status, str):
        raise PayloadError("status is missing or not a string")
    return status


def created_at(payload: dict[str, Any]) -> datetime | None:
    """The run's creation time, when a (possibly unfinished) body carries one."""
    value = payload.get("createdAt")
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value, "createdAt")
    except PayloadError:
        return None


def normalize_execution(
    payload: dict[str, Any], *, job_execution_id: str, project_id: str, fetched_at: datetime
) -> Normalized:
    """Rows for a final (success or failed) job execution."""
    run = validate(ExecutionPayload, payload)
    if run.status not in FINAL_STATUSES:
        raise PayloadError(f"status {run.status!r} is not final")
    if run.jobExecutionId is not None:
        body_id = parse_uuid(run.jobExecutionId, "jobExecutionId")
        if body_id != job_execution_id:
            raise PayloadError(
                f"body is for id {body_id!r}, not the requested {job_execution_id!r}"
            )

    sources = unique_by(run.sources or [], lambda s: s.url if s.url is not None else identity(s))
    # The vendor dedups entities canonically; a repeated displayKey is the same entity.
    entities = unique_by(
        run.entities or [], lambda e: e.displayKey if e.displayKey is not None else identity(e)
    )
    for e in entities:
        if e.sentimentScore is not None and not 0 <= e.sentimentScore <= 100:
            raise PayloadError(f"sentimentScore {e.sentimentScore} is outside 0..100")

    return Normalized(
        table="job_executions",
        key="job_execution_id",
        row={
            "job_execution_id": job_execution_id,
            "project_id": project_id,
            "ai_response_id": parse_uuid(run.aiResponseId, "aiResponseId"),
            "job_id": parse_uuid(run.jobId, "jobId"),
            "query_id": parse_uuid(run.queryId, "queryId"),
            "initiated_at": parse_timestamp(run.initiatedAt, "initiatedAt"),
            "created_at": parse_timestamp(run.createdAt, "createdAt"),
            "model": run.model,
            "status": run.status,
            "execution_number": run.executionNumber,
            "has_sources": run.hasSources,
            "has_shopping": run.hasShopping,
            "country": run.country,
            "language": run.language,
            "raw_payload": payload,
            "fetched_at": fetched_at,
        },
        children={
            "job_execution_sources": [
                {
                    "job_execution_id": job_execution_id,
                    "position": i,
                    "domain": s.domain,
                    "url": s.url,
                }
                for i, s in enumerate(sources)
            ],
            "job_execution_entities": [
                {
                    "job_execution_id": job_execution_id,
                    "position": i,
                    "display_key": e.displayKey,
                    "display_name": e.displayName,
                    "is_primary": e.isPrimary,
                    "sentiment_score": e.sentimentScore,
                }
                for i, e in enumerate(entities)
            ],
        },
    )
