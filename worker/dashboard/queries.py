"""What the dashboard reads. Every figure comes from the CLI's own functions:
the health page from `collect_status` (`mentionsync status`), the visibility
page from `run_report` (`mentionsync report`). The few queries written here are
for what the CLI does not show: the answers behind a report row, one answer's
evidence, the alerts sent and the recent archive lag. Each is bounded: a page of
rows (LIMIT n + 1, to know whether there is a next page), or a capped sample.
"""

from __future__ import annotations

import dataclasses
import statistics
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import Select, Table, Text, Uuid, cast, func, or_, select
from sqlalchemy.orm import Session

from models import (
    AlertState,
    Ask,
    AskBrandMention,
    AskCitation,
    AskProviderResponse,
    Base,
    JobExecution,
    JobExecutionEntity,
    JobExecutionSource,
    Vendor,
)
from worker.analytics.reports import UNKNOWN, Filters, Report, _conditions, run_report
from worker.analytics.views import answer_facts, citation_facts, mention_facts
from worker.config import Settings
from worker.status import collect_status
from worker.tracking_reads import recent_archive_times
from worker.vendors.base import VendorSpec
from worker.vendors.registry import VENDORS

PAGE_SIZE = 25
MAX_PAGE = 400  # OFFSET grows with the page: deep pages cost a scan, so they stop here
CHOICES = 200  # providers or models offered in a filter's list
LAG_SAMPLE = 1000  # archived ids the lag figures are computed over
LAG_WINDOW = timedelta(hours=24)
CHILD_ROWS = 500  # citations, mentions, entities shown for one answer
CSV_ROWS = 100_000  # rows of a drill-down's download
RAW_SHOWN = 200_000  # characters of a raw payload shown on the page (download for all)


def health(session: Session, settings: Settings, now: datetime) -> dict[str, Any]:
    """`mentionsync status`, plus the alerts sent and the archive lag."""
    report = collect_status(session, settings, now)
    report["alerts"] = recent_alerts(session)
    report["archive_lag"] = archive_lag(session, now)
    return report


def recent_alerts(session: Session) -> list[dict[str, Any]]:
    """Each kind of alert, when it was last sent and the count it reported."""
    rows = session.execute(
        select(AlertState.kind, AlertState.last_sent_at, AlertState.last_value)
        .order_by(AlertState.last_sent_at.desc().nulls_last(), AlertState.kind)
        .limit(20)
    ).all()
    return [{"kind": k, "last_sent_at": at, "value": v} for k, at, v in rows]


def archive_lag(session: Session, now: datetime) -> dict[str, Any]:
    """Registration to archive of the ids archived in the last 24 hours (the
    latest LAG_SAMPLE of them): how long an answer waits before it is safe.

    The metrics' archive-lag histogram measures from when the answer was ready;
    this is measured from when it was registered, so it includes the vendor's
    own processing time.
    """
    rows = recent_archive_times(session, now - LAG_WINDOW, LAG_SAMPLE)
    lags = sorted(max(0.0, (done - start).total_seconds()) for start, done in rows)
    if not lags:
        return {"count": 0, "median_seconds": None, "p95_seconds": None, "max_seconds": None}
    return {
        "count": len(lags),
        "median_seconds": statistics.median(lags),
        "p95_seconds": lags[min(len(lags) - 1, int(len(lags) * 0.95))],
        "max_seconds": lags[-1],
    }


# A brand report on a page holds at most this many brands (the most mentioned
# under the filters); a brand filter shows any other. Rows are then at most
# groups x MAX_BRANDS, whatever the size of the catalog.
MAX_BRANDS = 50
BRAND_KINDS = frozenset({"share-of-voice", "visibility", "position", "sentiment"})


def report(session: Session, kind: str, filters: Filters, by: str | None) -> Report:
    """`mentionsync report KIND` with these filters, the very same call; for a brand
    report without a brand filter, narrowed to the MAX_BRANDS most mentioned brands
    (a share keeps its denominator: every brand's mentions or every answer)."""
    narrowed = _most_mentioned(session, kind, filters)
    result = run_report(session, kind, narrowed or filters, by)
    if narrowed is not None:
        result.notes.append(
            f"The {MAX_BRANDS} most mentioned brands; filter by brand to see any other."
        )
    return result


def _most_mentioned(session: Session, kind: str, filters: Filters) -> Filters | None:
    if kind not in BRAND_KINDS or filters.brands or filters.own_vs_competitors:
        return None
    view = mention_facts
    top = list(
        session.scalars(
            select(view.c.brand)
            .where(*_conditions(view, filters, brand=False))
            .group_by(view.c.brand)
            .order_by(func.count().desc(), view.c.brand)
            .limit(MAX_BRANDS + 1)
        )
    )
    if len(top) <= MAX_BRANDS:
        return None
    return dataclasses.replace(filters, brands=tuple(top[:MAX_BRANDS]))


def choices(session: Session) -> dict[str, list[str]]:
    """Values offered by the filters' lists: vendors, and the providers and models
    answers carry (the most common first, at most CHOICES each)."""
    out: dict[str, list[str]] = {"vendors": [v.value for v in Vendor]}
    for name, column in (("providers", answer_facts.c.provider), ("models", answer_facts.c.model)):
        out[name] = list(
            session.scalars(
                select(column)
                .where(column.is_not(None))
                .group_by(column)
                .order_by(func.count().desc(), column)
                .limit(CHOICES)
            )
        )
    return out


@dataclass
class Page:
    rows: list[dict[str, Any]]
    page: int
    has_next: bool
    size: int = PAGE_SIZE

    @property
    def first_row(self) -> int:
        return (self.page - 1) * self.size + 1


def clamp_page(value: str | None) -> int:
    try:
        page = int(value or 1)
    except ValueError:
        return 1
    return min(max(page, 1), MAX_PAGE)


def _answer_columns(view: Table) -> list[Any]:
    c = view.c
    return [c.vendor, c.answer_key, c.answer_id, c.project_id, c.provider, c.model, c.answered_at]


def behind(brand: str | None, domain: str | None, filters: Filters) -> Select[Any]:
    """The rows behind a brand's figures (the mentions `visibility` counts for it,
    one per answer) or a domain's (the citations `citations` counts for it), with
    their answers, newest first."""
    if brand is not None:
        m = mention_facts
        return (
            select(*_answer_columns(m), m.c.rank, m.c.sentiment_label, m.c.sentiment_score)
            .where(m.c.brand == brand, *_conditions(m, filters, brand=True))
            .order_by(m.c.answered_at.desc(), m.c.answer_key)
        )
    assert domain is not None
    c = citation_facts
    conditions = _conditions(c, filters, brand=False)
    if filters.brands:
        # As the report: the citations of answers that mention one of the brands.
        conditions.append(
            c.c.answer_key.in_(
                select(mention_facts.c.answer_key).where(mention_facts.c.brand.in_(filters.brands))
            )
        )
    # The report labels a citation without a domain UNKNOWN.
    matches = (
        or_(c.c.domain == domain, c.c.domain.is_(None))
        if domain == UNKNOWN
        else (c.c.domain == domain)
    )
    return (
        select(*_answer_columns(c), c.c.url, c.c.title)
        .where(matches, *conditions)
        .order_by(c.c.answered_at.desc(), c.c.answer_key, c.c.url)
    )


def page_of(session: Session, stmt: Select[Any], page: int) -> Page:
    found = [
        dict(r._mapping)
        for r in session.execute(stmt.limit(PAGE_SIZE + 1).offset((page - 1) * PAGE_SIZE))
    ]
    return Page(found[:PAGE_SIZE], page, len(found) > PAGE_SIZE)


def rows_of(session: Session, stmt: Select[Any]) -> tuple[list[str], list[Any], bool]:
    """Columns and rows of `stmt` for a download: at most CSV_ROWS, and whether
    more were left out."""
    result = session.execute(stmt.limit(CSV_ROWS + 1))
    columns = list(result.keys())
    rows = list(result.fetchall())
    return [str(c) for c in columns], rows[:CSV_ROWS], len(rows) > CSV_ROWS


@dataclass
class Evidence:
    """One archived answer, as the vendor served it and as it was normalized."""

    vendor: str
    answer_id: str
    found: bool
    fields: dict[str, Any] = field(default_factory=dict)
    responses: list[dict[str, Any]] = field(default_factory=list)
    citations: list[dict[str, Any]] = field(default_factory=list)
    mentions: list[dict[str, Any]] = field(default_factory=list)
    raw: str | None = None
    raw_truncated: bool = False


def _rows(
    session: Session, columns: Sequence[Any], *where: Any, order: Any
) -> list[dict[str, Any]]:
    stmt = select(*columns).where(*where).order_by(order).limit(CHILD_ROWS)
    return [dict(r._mapping) for r in session.execute(stmt)]


def _spec(vendor: str, answer_id: str) -> VendorSpec | None:
    """The vendor whose archive may hold `answer_id`; None for an unknown vendor,
    or text that cannot be a key of its archive (a uuid column on Postgres:
    other text is no answer, not an error)."""
    spec = next((s for v, s in VENDORS.items() if v.value == vendor), None)
    if spec is None:
        return None
    if isinstance(spec.archive_key.type, Uuid) and not _is_uuid(answer_id):
        return None
    return spec


def raw_payload(session: Session, vendor: str, answer_id: str) -> str | None:
    """The stored payload as the database's own JSON text: never parsed and
    encoded again, so integers of any width and deep nesting stay exact."""
    spec = _spec(vendor, answer_id)
    if spec is None:
        return None
    table = spec.archive_table.__table__
    stmt = select(cast(table.c.raw_payload, Text)).where(spec.archive_key == answer_id)
    return session.scalar(stmt)


def _is_uuid(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _pretty(document: str) -> str:
    try:
        return orjson.dumps(orjson.loads(document), option=orjson.OPT_INDENT_2).decode()
    except (orjson.JSONDecodeError, orjson.JSONEncodeError):
        return document  # wider than 64-bit integers or deeper than orjson: as stored


def evidence(session: Session, vendor: str, answer_id: str) -> Evidence:
    spec = _spec(vendor, answer_id)
    if spec is None:
        return Evidence(vendor, answer_id, found=False)
    found = _EVIDENCE[spec.archive_table](session, vendor, answer_id)
    raw = raw_payload(session, vendor, answer_id) if found.found else None
    if raw is not None:
        found.raw_truncated = len(raw) > RAW_SHOWN
        found.raw = _pretty(raw) if not found.raw_truncated else raw[:RAW_SHOWN]
    return found


# Each archive's own columns and children, as the analytics views read them.


def _ask(session: Session, vendor: str, ask_id: str) -> Evidence:
    ask = session.execute(
        select(
            Ask.status,
            Ask.request_id,
            Ask.cached,
            Ask.error_code,
            Ask.error_message,
            Ask.fetched_at,
        ).where(Ask.ask_id == ask_id)
    ).first()
    result = Evidence(vendor, ask_id, found=ask is not None)
    if ask is None:
        return result
    result.fields = dict(ask._mapping)
    p, c, m = AskProviderResponse, AskCitation, AskBrandMention
    result.responses = _rows(
        session,
        (p.position, p.provider, p.model, p.content),
        p.ask_id == ask_id,
        order=p.position,
    )
    result.citations = _rows(
        session,
        (c.position, c.provider, c.url, c.domain, c.title),
        c.ask_id == ask_id,
        order=c.position,
    )
    result.mentions = _rows(
        session,
        (m.position, m.brand, m.provider, m.rank, m.sentiment, m.context),
        m.ask_id == ask_id,
        order=m.position,
    )
    return result


def _execution(session: Session, vendor: str, execution_id: str) -> Evidence:
    j = JobExecution
    run = session.execute(
        select(
            j.project_id,
            j.status,
            j.model,
            j.query_id,
            j.job_id,
            j.ai_response_id,
            j.initiated_at,
            j.country,
            j.language,
            j.fetched_at,
        ).where(j.job_execution_id == execution_id)
    ).first()
    result = Evidence(vendor, execution_id, found=run is not None)
    if run is None:
        return result
    result.fields = dict(run._mapping)
    s, e = JobExecutionSource, JobExecutionEntity
    result.citations = _rows(
        session,
        (s.position, s.url, s.domain),
        s.job_execution_id == execution_id,
        order=s.position,
    )
    result.mentions = _rows(
        session,
        (e.position, e.display_name, e.display_key, e.is_primary, e.sentiment_score),
        e.job_execution_id == execution_id,
        order=e.position,
    )
    return result


_EVIDENCE: dict[type[Base], Callable[[Session, str, str], Evidence]] = {
    Ask: _ask,
    JobExecution: _execution,
}
