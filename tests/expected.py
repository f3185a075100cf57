"""Independent checks of archived rows against the simulator's ground truth.

Written from the vendor docs, not from worker/normalize, so a normalizer bug
cannot hide behind itself.

One rule is ours, not the vendors': Postgres text and jsonb cannot hold U+0000,
so the worker archives every string (keys too) with that character deleted, and
the oracle expects exactly that (`without_nul`).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import select
from sqlalchemy.orm import Session

from models import (
    Ask,
    AskBrandMention,
    AskCitation,
    AskProviderResponse,
    JobExecution,
    JobExecutionEntity,
    JobExecutionSource,
    TrackedId,
    TrackedState,
    Vendor,
)

STATE_OF_FATE = {
    "succeeded": TrackedState.ARCHIVED,
    "success": TrackedState.ARCHIVED,
    "retried": TrackedState.ARCHIVED,
    "failed": TrackedState.FAILED,
    "expired": TrackedState.EXPIRED,
    "unknown": TrackedState.NOT_FOUND,
    "rejected": TrackedState.INVALID,
}


_http = httpx.Client(timeout=10)  # one pooled client: a new one per call costs ~50 ms


def truth(base_url: str, vendor: Vendor, external_id: str) -> dict[str, Any]:
    response = _http.get(f"{base_url}/_sim/truth/{vendor.value}/{external_id}")
    response.raise_for_status()
    return response.json()


def without_nul(value: Any) -> Any:
    """`value` with U+0000 deleted from every string, dict keys included."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {without_nul(k): without_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [without_nul(v) for v in value]
    return value


def _first_by(items: list[dict[str, Any]], key: Any) -> list[dict[str, Any]]:
    seen: set[Any] = set()
    out = []
    for item in items:
        k = key(item)
        if k in seen:
            continue
        seen.add(k)
        out.append(item)
    return out


DOCUMENTED = {
    "provider": ("provider", "model", "content", "latency_ms", "tokens", "citations"),
    "mention": ("brand", "provider", "rank", "sentiment", "context"),
}


def _exact(item: dict[str, Any], fields: tuple[str, ...] | None = None) -> str:
    """An entry's identity: its documented fields (unknown extras live in raw_payload)."""
    import json

    kept = item if fields is None else {k: item.get(k) for k in fields}
    return json.dumps(kept, sort_keys=True)


def check_ask(session: Session, ask_id: str, body: dict[str, Any]) -> None:
    body = without_nul(body)
    ask = session.get(Ask, ask_id)
    assert ask is not None, ask_id
    usage = body.get("usage") or {}
    status = body.get("status", "succeeded")
    assert ask.status == status
    assert ask.request_id == body.get("request_id")
    assert ask.cached == body.get("cached")
    assert ask.cache_tier == body.get("cache_tier")
    assert ask.billable_units == usage.get("billable_units")
    assert ask.latency_ms == usage.get("latency_ms")
    cost = usage.get("cost_cents")
    assert ask.cost_cents == (None if cost is None else Decimal(str(cost)))
    assert ask.cost_breakdown == usage.get("cost_breakdown")
    assert ask.raw_payload == body
    if status == "failed":
        error = body.get("error") or {}
        assert ask.error_code == (error.get("code") or "provider_error")
        assert ask.error_message == (error.get("message") or "Request failed.")
    else:
        assert ask.error_code is None and ask.error_message is None

    providers = _first_by(body.get("providers") or [], lambda p: _exact(p, DOCUMENTED["provider"]))
    got = session.scalars(
        select(AskProviderResponse)
        .where(AskProviderResponse.ask_id == ask_id)
        .order_by(AskProviderResponse.position)
    ).all()
    assert [
        (p.provider, p.model, p.content, p.latency_ms, p.input_tokens, p.output_tokens) for p in got
    ] == [
        (
            p.get("provider"),
            p.get("model"),
            p.get("content"),
            p.get("latency_ms"),
            (p.get("tokens") or {}).get("input"),
            (p.get("tokens") or {}).get("output"),
        )
        for p in providers
    ]

    expected_citations = []
    lists = [(None, None, body.get("citations") or [])]
    lists += [(p.get("provider"), p.get("model"), p.get("citations") or []) for p in providers]
    for provider, model, items in lists:
        for c in _first_by(items, lambda c: c.get("url") or _exact(c)):
            expected_citations.append(
                (provider, model, c.get("url"), c.get("domain"), c.get("title"))
            )
    got_c = session.scalars(
        select(AskCitation).where(AskCitation.ask_id == ask_id).order_by(AskCitation.position)
    ).all()
    assert [(c.provider, c.model, c.url, c.domain, c.title) for c in got_c] == expected_citations

    mentions = _first_by(
        body.get("brand_mentions") or [], lambda m: _exact(m, DOCUMENTED["mention"])
    )
    got_m = session.scalars(
        select(AskBrandMention)
        .where(AskBrandMention.ask_id == ask_id)
        .order_by(AskBrandMention.position)
    ).all()
    assert [(m.brand, m.provider, m.rank, m.sentiment, m.context) for m in got_m] == [
        (m.get("brand"), m.get("provider"), m.get("rank"), m.get("sentiment"), m.get("context"))
        for m in mentions
    ]


def check_execution(session: Session, run_id: str, project_id: str, body: dict[str, Any]) -> None:
    from datetime import datetime

    body = without_nul(body)
    run = session.get(JobExecution, run_id)
    assert run is not None, run_id

    def ts(value: str | None) -> datetime | None:
        return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))

    assert run.project_id == project_id
    assert run.ai_response_id == body.get("aiResponseId")
    assert run.job_id == body.get("jobId")
    assert run.query_id == body.get("queryId")
    assert run.initiated_at == ts(body.get("initiatedAt"))
    assert run.created_at == ts(body.get("createdAt"))
    assert run.model == body.get("model")
    assert run.status == body["status"]
    assert run.execution_number == body.get("executionNumber")
    assert run.has_sources == body.get("hasSources")
    assert run.has_shopping == body.get("hasShopping")
    assert run.country == body.get("country")
    assert run.language == body.get("language")
    assert run.raw_payload == body

    sources = _first_by(body.get("sources") or [], lambda s: s.get("url") or _exact(s))
    got_s = session.scalars(
        select(JobExecutionSource)
        .where(JobExecutionSource.job_execution_id == run_id)
        .order_by(JobExecutionSource.position)
    ).all()
    assert [(s.domain, s.url) for s in got_s] == [(s.get("domain"), s.get("url")) for s in sources]

    entities = _first_by(body.get("entities") or [], lambda e: e.get("displayKey") or _exact(e))
    got_e = session.scalars(
        select(JobExecutionEntity)
        .where(JobExecutionEntity.job_execution_id == run_id)
        .order_by(JobExecutionEntity.position)
    ).all()
    assert [(e.display_key, e.display_name, e.is_primary, e.sentiment_score) for e in got_e] == [
        (e.get("displayKey"), e.get("displayName"), e.get("isPrimary"), e.get("sentimentScore"))
        for e in entities
    ]


def check_everything(session: Session, base_url: str) -> dict[str, int]:
    """Every tracked id is in the state its fate implies, with exactly its rows."""
    states: dict[str, int] = {}
    archived_asks: set[str] = set()
    archived_runs: set[str] = set()
    for tracked in session.scalars(select(TrackedId)).all():
        t = truth(base_url, tracked.vendor, tracked.external_id)
        expected_state = STATE_OF_FATE[t["fate"]]
        assert tracked.state == expected_state, (tracked.external_id, t["fate"], tracked.last_error)
        states[tracked.state.value] = states.get(tracked.state.value, 0) + 1
        if expected_state in (TrackedState.ARCHIVED, TrackedState.FAILED):
            assert tracked.archived_at is not None
            if tracked.vendor is Vendor.MENTIONSAPI:
                check_ask(session, tracked.external_id, t["body"])
                archived_asks.add(tracked.external_id)
            else:
                check_execution(session, tracked.external_id, tracked.project_id, t["body"])
                archived_runs.add(tracked.external_id)
    # Nothing archived that should not be.
    assert set(session.scalars(select(Ask.ask_id))) == archived_asks
    assert set(session.scalars(select(JobExecution.job_execution_id))) == archived_runs
    return states
