"""Claim due ids, fetch them, store what came back: the heart of the worker.

Celery tasks (worker/tasks.py) and `mentionsync sync` both run these functions;
only the transport of the claimed batches differs.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, func, select, text, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from models import (
    ACTIVE_STATES,
    QuarantinedPayload,
    TrackedId,
    Vendor,
    VendorAccount,
    utcnow,
)
from worker.clients import Target
from worker.config import Settings
from worker.db import session_scope
from worker.metrics import observe_polled_batch
from worker.policy import Action, Outcome, TrackedView, plan
from worker.resources import get_resources
from worker.store import dialect_insert, upsert_answers

log = logging.getLogger("mentionsync.poller")
_rng = random.Random()

# Outcomes that prove the key itself works, so an earlier auth failure is over.
_KEY_WORKS = frozenset(
    {Action.ARCHIVE, Action.POLL_LATER, Action.CONFIRM_NOT_FOUND, Action.EXPIRE, Action.REJECT}
)
_VIEW_COLUMNS = (
    TrackedId.id,
    TrackedId.vendor,
    TrackedId.project_id,
    TrackedId.external_id,
    TrackedId.deadline_at,
    TrackedId.attempts,
    TrackedId.consecutive_errors,
    TrackedId.not_found_streak,
    TrackedId.invalid_payload_streak,
    TrackedId.remote_created_at,
    TrackedId.registered_at,
    TrackedId.last_polled_at,
)


@dataclass(frozen=True, slots=True)
class Claim:
    vendor: Vendor
    token: str
    ids: list[int]

    def split(self, size: int) -> list[Claim]:
        """Batches of at most `size` ids, in claim order, under the same lease."""
        return [
            Claim(self.vendor, self.token, self.ids[i : i + size])
            for i in range(0, len(self.ids), size)
        ]


@dataclass(slots=True)
class BatchReport:
    vendor: Vendor
    claimed: int
    processed: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    rows_written: int = 0
    skipped_reason: str | None = None
    seconds: float = 0.0


# --- Claiming ---------------------------------------------------------------


def current_account(session: Session, vendor: Vendor, settings: Settings) -> VendorAccount | None:
    """The pause record of the configured key, if it ever had one."""
    return session.get(VendorAccount, (vendor, settings.key_fingerprint(vendor)))


def account_gate(
    session: Session,
    vendor: Vendor,
    settings: Settings,
    now: datetime,
    account: VendorAccount | None = None,
) -> str | None:
    """Why ids of this vendor must not be fetched now, or None if they may be."""
    if settings.api_key(vendor) is None:
        return f"no API key configured for {vendor} (set {vendor.upper()}_API_KEY)"
    account = account or current_account(session, vendor, settings)
    if account is None:
        return None
    if account.paused_until is not None and account.paused_until > now:
        return f"rate limited by {vendor} until {account.paused_until:%H:%M:%S} UTC"
    if account.auth_failed_at is not None and (
        account.auth_recheck_at is None or account.auth_recheck_at > now
    ):
        return (
            f"{vendor} refused the API key (fingerprint {account.key_fingerprint}): "
            f"{account.auth_error}; polling is paused until the key is fixed"
        )
    return None


def in_flight(session: Session, vendor: Vendor, now: datetime) -> int:
    stmt = select(func.count()).where(
        TrackedId.state.in_(ACTIVE_STATES),
        TrackedId.vendor == vendor,
        TrackedId.lease_token.is_not(None),
        TrackedId.next_poll_at > now,
    )
    return session.scalar(stmt) or 0


def claim_due(
    session: Session, vendor: Vendor, limit: int, *, now: datetime, settings: Settings
) -> Claim | None:
    """Lease up to `limit` due ids of one vendor, earliest deadline first.

    `FOR UPDATE SKIP LOCKED` lets any number of schedulers claim at once without
    taking the same id twice (SQLite serializes writers instead). The lease is
    next_poll_at itself: if the batch dies, the id is simply due again later.
    """
    if limit <= 0:
        return None
    token = uuid.uuid4().hex
    table = TrackedId.__table__
    due = (
        select(table.c.id)
        .where(
            table.c.state.in_(ACTIVE_STATES),
            table.c.next_poll_at <= now,
            table.c.vendor == vendor,
        )
        .order_by(table.c.deadline_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    claim = (
        update(table)
        .where(table.c.id.in_(due.scalar_subquery()))
        .values(lease_token=token, next_poll_at=now + timedelta(seconds=settings.lease_seconds))
        .returning(table.c.id, table.c.deadline_at)
    )
    # RETURNING has no order of its own: restore earliest deadline first, so the
    # first batch split off this claim is the most urgent one. Postgres sorts in
    # the statement (thousands of rows, no timestamps to convert in Python);
    # SQLite cannot put an UPDATE in a CTE, and its claims are small.
    conn = session.connection()
    if conn.dialect.name == "postgresql":
        claimed = claim.cte("claimed")
        ordered = select(claimed.c.id).order_by(claimed.c.deadline_at, claimed.c.id)
        ids = list(conn.execute(ordered).scalars())
    else:
        ids = [r.id for r in sorted(conn.execute(claim).all(), key=lambda r: (r[1], r[0]))]
    return Claim(vendor, token, ids) if ids else None


def lease_capacity(settings: Settings, vendor: Vendor) -> int:
    """Ids in flight at most: MAX_IN_FLIGHT, and no more than the key's rate budget
    can fetch in half a lease, so queued batches never outlive their leases."""
    budget = get_resources().clients[vendor].limiter.budget
    fetchable = int(budget.effective_rate * settings.lease_seconds * 0.5)
    return min(settings.max_in_flight, max(settings.batch_size, fetchable))


def claim_batches(
    session: Session, settings: Settings, *, now: datetime, max_ids: int | None = None
) -> tuple[list[Claim], dict[Vendor, str]]:
    """Claim what may be dispatched now, in batches; also say which vendors wait, and why."""
    claims: list[Claim] = []
    waiting: dict[Vendor, str] = {}
    if session.connection().dialect.name == "postgresql":
        # A lease lost with an unflushed commit (a Postgres crash right after it)
        # only makes its ids due again, so the claim need not wait for the WAL flush.
        session.execute(text("SET LOCAL synchronous_commit = off"))
    for vendor in Vendor:
        account = current_account(session, vendor, settings)
        reason = account_gate(session, vendor, settings, now, account)
        if reason is not None:
            waiting[vendor] = reason
            continue
        room = lease_capacity(settings, vendor) - in_flight(session, vendor, now)
        if max_ids is not None:
            room = min(room, max_ids)
        if account is not None and account.auth_failed_at is not None:
            room = min(room, 1)  # re-check a refused key with a single request
        # One claim statement per vendor and tick, split into batches afterwards:
        # every statement walks the due index from its start, so claiming batch by
        # batch would cost (room / batch size) walks. The batches share the lease
        # token; each is still loaded, written and released by its own ids.
        claim = claim_due(session, vendor, room, now=now, settings=settings)
        if claim is not None:
            claims.extend(claim.split(settings.batch_size))
    return claims, waiting


# --- Processing -------------------------------------------------------------


def load_claim(session: Session, claim: Claim) -> tuple[list[TrackedView], datetime | None]:
    """The claimed ids this batch still owns (a redelivered task may own none),
    and when the earliest of their leases expires."""
    rows = session.execute(
        select(*_VIEW_COLUMNS, TrackedId.next_poll_at).where(
            TrackedId.id.in_(claim.ids),
            TrackedId.lease_token == claim.token,
            TrackedId.state.in_(ACTIVE_STATES),
        )
    ).all()
    lease_expires = min((row[-1] for row in rows), default=None)
    return [TrackedView(*row[:-1]) for row in rows], lease_expires


def process_claim(claim: Claim) -> BatchReport:
    """Fetch one claimed batch and store the outcome in one transaction."""
    started = time.monotonic()
    res = get_resources()
    settings = res.settings
    report = BatchReport(claim.vendor, len(claim.ids))

    with session_scope() as session:
        views, lease_expires = load_claim(session, claim)
        gate = account_gate(session, claim.vendor, settings, utcnow())
    if not views:
        report.skipped_reason = "lease lost or ids already final"
        return _finish(report, started)
    if gate is not None:
        _release(claim, views, settings)
        report.skipped_reason = gate
        return _finish(report, started)

    assert lease_expires is not None
    # Stop waiting for rate-budget slots while a quarter of the lease is left for
    # the requests in flight and the write: past the lease, another sweep would
    # claim (and fetch) the same ids again. A batch that sat in the queue has less.
    seconds_left = (lease_expires - utcnow()).total_seconds() - settings.lease_seconds * 0.25
    outcomes = fetch_all(claim.vendor, views, send_within=seconds_left)
    now = utcnow()
    try:
        report.rows_written = _write_surviving_outages(
            lambda session: apply_outcomes(session, claim, views, outcomes, now=now), settings
        )
    except DBAPIError as exc:
        if is_disconnect(exc):
            raise  # still unreachable: the task retries; the lease keeps the ids safe
        # One bad answer must not sink its batch: store each id on its own, and
        # quarantine the one the database refuses.
        log.warning(
            "batch write failed, retrying one id at a time",
            extra={"vendor": claim.vendor.value, "count": len(views), "error": _short(exc)},
        )
        report.rows_written = _apply_one_by_one(claim, views, outcomes, now)
    report.processed = len(views)
    report.actions.update(o.action.value for o in outcomes)
    observe_polled_batch(views, outcomes, now=now)
    return _finish(report, started)


def is_disconnect(exc: DBAPIError) -> bool:
    return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)


def _write_surviving_outages(write: Callable[[Session], int], settings: Settings) -> int:
    """Run one write transaction, retrying while the database is unreachable.

    The answers are already fetched and only live in memory: waiting out a
    Postgres restart here keeps them, where failing the task would fetch again.
    """
    deadline = time.monotonic() + settings.db_outage_seconds
    delay = 0.5
    while True:
        try:
            with session_scope() as session:
                return write(session)
        except DBAPIError as exc:
            if not is_disconnect(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning(
                "database unreachable, keeping the fetched batch and retrying in %.1fs: %s",
                delay,
                _short(exc),
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def fetch_all(vendor: Vendor, views: Sequence[TrackedView], *, send_within: float) -> list[Outcome]:
    """Fetch every id of a batch concurrently over the process's pooled client;
    requests with no rate-budget slot within `send_within` seconds are not sent."""
    res = get_resources()
    client = res.clients[vendor]
    stop: list[Outcome] = []  # first outcome that makes further requests pointless
    deadline = time.monotonic() + send_within

    def fetch(view: TrackedView) -> Outcome:
        if stop:
            blocked = stop[0]
            return Outcome(
                blocked.action,
                None,
                reason=f"not sent: {blocked.reason}",
                retry_after=blocked.retry_after,
            )
        target = Target(view.vendor, view.external_id, view.project_id)
        outcome = client.fetch(target, utcnow(), max_wait=deadline - time.monotonic())
        if outcome.action is Action.PAUSE_ACCOUNT:
            stop.append(outcome)
        return outcome

    return list(res.pool.map(fetch, views))


def apply_outcomes(
    session: Session,
    claim: Claim,
    views: Sequence[TrackedView],
    outcomes: Sequence[Outcome],
    *,
    now: datetime,
) -> int:
    """Write answers, quarantined bodies, tracking state and account state."""
    settings = get_resources().settings
    written = store_outcomes(session, claim.token, views, outcomes, now=now, settings=settings)
    _update_account(session, claim.vendor, outcomes, now=now, settings=settings)
    return written


def store_outcomes(
    session: Session,
    token: str,
    views: Sequence[TrackedView],
    outcomes: Sequence[Outcome],
    *,
    now: datetime,
    settings: Settings,
) -> int:
    """Write answers, quarantined bodies and the tracked ids' new state, for ids
    still leased to `token`. Shared by polling and the webhook intake."""
    answers = [o.answer for o in outcomes if o.action is Action.ARCHIVE and o.answer]
    written = upsert_answers(session, sorted(answers, key=lambda a: a.key_value))

    quarantined = [
        {
            "tracked_id": v.id,
            "vendor": v.vendor,
            "external_id": v.external_id,
            "http_status": o.http_status,
            "reason": o.reason or "invalid payload",
            "body": o.body or b"",
            "body_truncated": o.body_truncated,
            "received_at": now,
        }
        for v, o in zip(views, outcomes, strict=True)
        if o.action is Action.QUARANTINE
    ]
    if quarantined:
        session.execute(QuarantinedPayload.__table__.insert(), quarantined)

    updates: dict[frozenset[str], list[dict[str, Any]]] = {}
    for view, outcome in zip(views, outcomes, strict=True):
        values = plan(view, outcome, now=now, settings=settings, rng=_rng)
        values["b_id"] = view.id
        updates.setdefault(frozenset(values), []).append(values)
    table = TrackedId.__table__
    for keys, rows in updates.items():
        stmt = (
            update(table)
            .where(and_(table.c.id == bindparam("b_id"), table.c.lease_token == token))
            .values({k: bindparam(k) for k in keys if k != "b_id"})
        )
        session.connection().execute(stmt, rows)
    return written


def _update_account(
    session: Session,
    vendor: Vendor,
    outcomes: Sequence[Outcome],
    *,
    now: datetime,
    settings: Settings,
) -> None:
    fingerprint = settings.key_fingerprint(vendor)
    refused = next(
        (o for o in outcomes if o.action is Action.PAUSE_ACCOUNT and o.http_status), None
    )
    # Only a vendor's 429 pauses claiming; a budget slot further away than the
    # batch could wait just reschedules its ids.
    throttled = [
        o.retry_after or 1.0
        for o in outcomes
        if o.action is Action.THROTTLE and o.http_status is not None
    ]
    works = any(o.action in _KEY_WORKS for o in outcomes)
    if not (refused or throttled or works):
        return
    account = session.get(VendorAccount, (vendor, fingerprint), with_for_update=True)
    if account is None:
        if not (refused or throttled):
            return
        # Concurrent batches may race to create the row; ON CONFLICT keeps one.
        stmt = dialect_insert(session, VendorAccount.__table__).values(
            vendor=vendor, key_fingerprint=fingerprint, updated_at=now
        )
        session.execute(stmt.on_conflict_do_nothing())
        account = session.get(VendorAccount, (vendor, fingerprint), with_for_update=True)
        assert account is not None
    if refused is not None and not works:
        if account.auth_failed_at is None:
            log.error(
                "%s refused the API key (fingerprint %s): %s; pausing polling for this key",
                vendor,
                fingerprint,
                refused.reason,
                extra={"vendor": vendor.value},
            )
            account.auth_failed_at = now
        account.auth_error = refused.reason
        account.auth_recheck_at = now + timedelta(seconds=settings.auth_recheck_seconds)
    elif works and account.auth_failed_at is not None:
        log.info("%s accepts the API key again; polling resumes", vendor)
        account.auth_failed_at = account.auth_error = account.auth_recheck_at = None
    if throttled:
        until = now + timedelta(seconds=max(throttled))
        if account.paused_until is None or account.paused_until < until:
            account.paused_until = until
    account.updated_at = now


def _apply_one_by_one(
    claim: Claim, views: Sequence[TrackedView], outcomes: Sequence[Outcome], now: datetime
) -> int:
    written = 0
    for view, outcome in zip(views, outcomes, strict=True):
        try:
            with session_scope() as session:
                written += apply_outcomes(session, claim, [view], [outcome], now=now)
        except DBAPIError as exc:
            if is_disconnect(exc):
                raise
            reason = f"invalid payload: the database refused the rows: {_short(exc)}"
            log.error(
                "quarantined %s %s: %s",
                view.vendor,
                view.external_id,
                reason,
                extra={"vendor": view.vendor.value},
            )
            bad = Outcome(
                Action.QUARANTINE,
                outcome.http_status,
                reason=reason,
                body=_raw_json(outcome),
            )
            with session_scope() as session:
                apply_outcomes(session, claim, [view], [bad], now=now)
    return written


def _release(claim: Claim, views: Sequence[TrackedView], settings: Settings) -> None:
    """Hand a batch back unfetched: due again when its vendor may be polled."""
    now = utcnow()
    with session_scope() as session:
        account = current_account(session, claim.vendor, settings)
        later = now + timedelta(seconds=settings.poll_tick_seconds)
        if account is not None and account.paused_until and account.paused_until > later:
            later = account.paused_until
        session.execute(
            update(TrackedId)
            .where(TrackedId.id.in_([v.id for v in views]), TrackedId.lease_token == claim.token)
            .values(lease_token=None, next_poll_at=later)
            .execution_options(synchronize_session=False)
        )


def _raw_json(outcome: Outcome) -> bytes:
    if outcome.body is not None:
        return outcome.body
    if outcome.answer is not None:
        return orjson.dumps(outcome.answer.row.get("raw_payload"), default=str)
    return b""


def _short(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", exc)).strip().splitlines()
    return text[0][:300] if text else type(exc).__name__


def _finish(report: BatchReport, started: float) -> BatchReport:
    report.seconds = time.monotonic() - started
    log.info(
        "batch %s: %d claimed, %d fetched, %s, %d rows in %.2fs%s",
        report.vendor,
        report.claimed,
        report.processed,
        dict(report.actions) or "{}",
        report.rows_written,
        report.seconds,
        f" (skipped: {report.skipped_reason})" if report.skipped_reason else "",
        extra={
            "vendor": report.vendor.value,
            "count": report.processed,
            "duration_s": round(report.seconds, 3),
        },
    )
    return report
