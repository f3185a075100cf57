"""MentionsAPI `GET /v1/ask/{id}` bodies into `asks` and its child tables."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from worker.normalize.common import (
    Int32,
    Normalized,
    PayloadError,
    VendorModel,
    identity,
    unique_by,
    validate,
)

FINAL_STATUSES = frozenset({"succeeded", "failed"})
PENDING_STATUSES = frozenset({"queued", "processing"})
# Documented default when a failed job recorded no detail.
DEFAULT_ERROR = {"code": "provider_error", "message": "Request failed."}


class Tokens(VendorModel):
    input: Int32 | None = None
    output: Int32 | None = None


class Citation(VendorModel):
    url: str | None = None
    domain: str | None = None
    title: str | None = None


class ProviderResponse(VendorModel):
    provider: str | None = None
    model: str | None = None
    content: str | None = None
    latency_ms: Int32 | None = None
    tokens: Tokens | None = None
    citations: list[Citation] | None = None


class BrandMention(VendorModel):
    brand: str | None = None
    provider: str | None = None
    rank: Int32 | None = None
    sentiment: str | None = None
    context: str | None = None


class Usage(VendorModel):
    billable_units: Int32 | None = None
    latency_ms: Int32 | None = None
    cost_cents: int | float | None = None
    cost_breakdown: dict[str, Any] | None = None


class ErrorDetail(VendorModel):
    code: str | None = None
    message: str | None = None


class AskPayload(VendorModel):
    id: str | None = None
    request_id: str | None = None
    # A 200 without a status is a succeeded answer: the vendor's own samples
    # treat a missing status that way.
    status: Literal["queued", "processing", "succeeded", "failed"] = "succeeded"
    cached: bool | None = None
    cache_tier: str | None = None
    providers: list[ProviderResponse] | None = None
    brand_mentions: list[BrandMention] | None = None
    citations: list[Citation] | None = None
    usage: Usage | None = None
    error: ErrorDetail | None = None


def answer_status(payload: dict[str, Any], http_status: int) -> str:
    """The lifecycle status of a body, defaulting as the docs do."""
    status = payload.get("status")
    if status is None:
        return "processing" if http_status == 202 else "succeeded"
    if not isinstance(status, str):
        raise PayloadError(f"wrong type at status: {type(status).__name__}")
    return status


def normalize_ask(payload: dict[str, Any], *, ask_id: str, fetched_at: datetime) -> Normalized:
    """Rows for a final (succeeded or failed) ask."""
    ask = validate(AskPayload, payload)
    if ask.status not in FINAL_STATUSES:
        raise PayloadError(f"status {ask.status!r} is not final")
    if ask.id is not None and ask.id != ask_id:
        raise PayloadError(f"body is for id {ask.id[:64]!r}, not the requested {ask_id!r}")

    usage = ask.usage or Usage()
    error = None
    if ask.status == "failed":
        error = {
            "code": (ask.error and ask.error.code) or DEFAULT_ERROR["code"],
            "message": (ask.error and ask.error.message) or DEFAULT_ERROR["message"],
        }
    providers = unique_by(ask.providers or [], identity)

    citations: list[dict[str, Any]] = []
    for provider, model, items in [
        (None, None, ask.citations or []),
        *((p.provider, p.model, p.citations or []) for p in providers),
    ]:
        # The same url twice in one list is one citation.
        for c in unique_by(items, lambda c: c.url if c.url is not None else identity(c)):
            citations.append(
                {
                    "ask_id": ask_id,
                    "position": len(citations),
                    "provider": provider,
                    "model": model,
                    "url": c.url,
                    "domain": c.domain,
                    "title": c.title,
                }
            )

    return Normalized(
        table="asks",
        key="ask_id",
        row={
            "ask_id": ask_id,
            "request_id": ask.request_id,
            "status": ask.status,
            "cached": ask.cached,
            "cache_tier": ask.cache_tier,
            "billable_units": usage.billable_units,
            "latency_ms": usage.latency_ms,
            "cost_cents": None if usage.cost_cents is None else Decimal(str(usage.cost_cents)),
            "cost_breakdown": usage.cost_breakdown,
            "error_code": error and error["code"],
            "error_message": error and error["message"],
            "raw_payload": payload,
            "fetched_at": fetched_at,
        },
        children={
            "ask_provider_responses": [
                {
                    "ask_id": ask_id,
                    "position": i,
                    "provider": p.provider,
                    "model": p.model,
                    "content": p.content,
                    "latency_ms": p.latency_ms,
                    "input_tokens": p.tokens and p.tokens.input,
                    "output_tokens": p.tokens and p.tokens.output,
                }
                for i, p in enumerate(providers)
            ],
            "ask_citations": citations,
            "ask_brand_mentions": [
                {
                    "ask_id": ask_id,
                    "position": i,
                    "brand": m.brand,
                    "provider": m.provider,
                    "rank": m.rank,
                    "sentiment": m.sentiment,
                    "context": m.context,
                }
                # An exact repeat carries no information; a brand mentioned twice
                # with a different rank or context is kept twice.
                for i, m in enumerate(unique_by(ask.brand_mentions or [], identity))
            ],
        },
    )
