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
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import and_, bindparam, func, literal, or_, select, text, update
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from models import (
    ACTIVE_STATES,
    QuarantinedPayload,
    TrackedId,
    TrackedState,
    Vendor,
    VendorAccount,
    utcnow,
)
from worker.config import Settings
from worker.db import session_scope
from worker.metrics import observe_polled_batch
from worker.policy import Action, Outcome, TrackedView, plan
from worker.resources import get_resources
from worker.store import dialect_insert, upsert_answers
from worker.vendors.base import Target

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


RATE_LIMITED = "rate limited"


def passes_by_itself(reason: str) -> bool:
    """Whether a reason of account_gate ends on its own (a 429's pause) rather
    than waiting for someone to fix a key."""
    return reason.startswith(RATE_LIMITED)


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
        return f"{RATE_LIMITED} by {vendor} until {account.paused_until:%H:%M:%S} UTC"
    if account.auth_failed_at is not None and (
        account.auth_recheck_at is None or account.auth_recheck_at > now
    ):
        return (
            f"{vendor} refused the API key (fingerprint {account.key_fingerprint}): "
            f"{account.auth_error}; polling is paused until the key is fixed"
        )
    return None


def db_now(session: Session) -> datetime:
    """The database's clock: every host's claims and leases agree on it, however
    far their own clocks drift. (SQLite lives on one host: its clock is ours.)"""
    if session.connection().dialect.name == "postgresql":
        value = session.scalar(select(func.now()))
        assert value is not None
        return value.astimezone(UTC)
    return utcnow()


def in_flight(session: Session, vendor: Vendor, now: datetime) -> int:
    stmt = select(func.count()).where(
        TrackedId.state.in_(ACTIVE_STATES),
        TrackedId.vendor == vendor,
        TrackedId.lease_token.is_not(None),
        TrackedId.next_poll_at > now,
    )
    return session.scalar(stmt) or 0


def claim_due(
    session: Session,
    vendor: Vendor,
    limit: int,
    *,
    now: datetime | None = None,
    settings: Settings,
    stalest_first: bool = False,
) -> Claim | None:
    """Lease up to `limit` due ids of one vendor, earliest deadline first.

    `FOR UPDATE SKIP LOCKED` lets any number of schedulers claim at once without
    taking the same id twice (SQLite serializes writers instead). The lease is
    next_poll_at itself: if the batch dies, the id is simply due again later.
    `now` is the database's clock unless a caller (a test) sets it.
    `stalest_first` takes the least recently polled ids instead: a refused key's
    re-check then tries a different id each time, not the same bad one.
    """
    if limit <= 0:
        return None
    if now is None:
        now = db_now(session)
    token = uuid.uuid4().hex
    table = TrackedId.__table__
    order = (
        (table.c.last_polled_at.asc().nulls_first(), table.c.id)
        if stalest_first
        else (table.c.deadline_at,)
    )
    due = (
        select(table.c.id)
        .where(
            table.c.state.in_(ACTIVE_STATES),
            table.c.next_poll_at <= now,
            table.c.vendor == vendor,
        )
        .order_by(*order)
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
    session: Session,
    settings: Settings,
    *,
    now: datetime | None = None,
    max_ids: int | None = None,
) -> tuple[list[Claim], dict[Vendor, str]]:
    """Claim what may be dispatched now, in batches; also say which vendors wait, and why.

    `now` is the database's clock unless a caller (a test) sets it."""
    claims: list[Claim] = []
    waiting: dict[Vendor, str] = {}
    if now is None:
        now = db_now(session)
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
        recheck = account is not None and account.auth_failed_at is not None
        if recheck:
            room = min(room, 1)  # re-check a refused key with a single request
        # One claim statement per vendor and tick, split into batches afterwards:
        # every statement walks the due index from its start, so claiming batch by
        # batch would cost (room / batch size) walks. The batches share the lease
        # token; each is still loaded, written and released by its own ids.
        claim = claim_due(session, vendor, room, now=now, settings=settings, stalest_first=recheck)
        if claim is not None:
            claims.extend(claim.split(settings.batch_size))
    return claims, waiting


# --- Losses -----------------------------------------------------------------

# Not archived, and no poll is going to archive them any more once the vendor
# has deleted the answer. Active ids get a grace period past their deadline (a
# poll may still be on its way, and the vendor's clock is not ours); the others
# are lost at the deadline.
_LOSABLE_STATES = (
    TrackedState.TRACKED,
    TrackedState.POLLING,
    TrackedState.ERROR,
    TrackedState.INVALID_PAYLOAD,
)


def record_losses(session: Session, settings: Settings, *, now: datetime | None = None) -> int:
    """Record as `expired` (lost) every id whose deadline passed before its
    answer was archived, whatever state it was left in; returns how many."""
    now = now or db_now(session)
    grace = now - timedelta(seconds=settings.loss_grace_seconds)
    lost = 0
    for state in _LOSABLE_STATES:
        cutoff = grace if state in ACTIVE_STATES else now
        result = session.execute(
            update(TrackedId)
            .where(
                TrackedId.state == state,
                TrackedId.deadline_at < cutoff,
                # Named, so the active ids are found through ix_tracked_ids_due.
                TrackedId.vendor.in_(tuple(Vendor)),
                # A batch still holding the id decides for itself.
                or_(TrackedId.lease_token.is_(None), TrackedId.next_poll_at <= now),
            )
            .values(
                state=TrackedState.EXPIRED,
                final_at=now,
                next_poll_at=now,
                lease_token=None,
                last_error=func.substr(
                    literal(f"lost: the deadline passed while {state.value}")
                    + func.coalesce(literal(": ") + TrackedId.last_error, literal("")),
                    1,
                    2000,
                ),
            )
            .execution_options(synchronize_session=False)
        )
        lost += result.rowcount or 0
    if lost:
        log.warning(
            "%d ids passed their deadline unarchived and are recorded as lost (expired)",
            lost,
            extra={"count": lost},
        )
    return lost


# --- Processing -------------------------------------------------------------


def load_claim(
    session: Session, claim: Claim
) -> tuple[list[TrackedView], datetime | None, datetime]:
    """The claimed ids this batch still owns (a redelivered task may own none),
    when the earliest of their leases expires, and the database's time now."""
    now = db_now(session)
    rows = session.execute(
        select(*_VIEW_COLUMNS, TrackedId.next_poll_at).where(
            TrackedId.id.in_(claim.ids),
            TrackedId.lease_token == claim.token,
            TrackedId.state.in_(ACTIVE_STATES),
            TrackedId.next_poll_at > now,
        )
    ).all()
    lease_expires = min((row[-1] for row in rows), default=None)
    return [TrackedView(*row[:-1]) for row in rows], lease_expires, now


def process_claim(claim: Claim) -> BatchReport:
    """Fetch one claimed batch and store the outcome in one transaction."""
    started = time.monotonic()
    res = get_resources()
    settings = res.settings
    report = BatchReport(claim.vendor, len(claim.ids))

    with session_scope() as session:
        views, lease_expires, now = load_claim(session, claim)
        gate = account_gate(session, claim.vendor, settings, now)
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
    # Both times are the database's, so a host's own clock does not matter.
    seconds_left = (lease_expires - now).total_seconds() - settings.lease_seconds * 0.25
    outcomes = fetch_all(claim.vendor, views, send_within=seconds_left)
    report.rows_written = write_outcomes(claim, views, outcomes, settings)
    report.processed = len(views)
    report.actions.update(o.action.value for o in outcomes)
    observe_polled_batch(views, outcomes, now=utcnow())
    return _finish(report, started)


def write_outcomes(
    claim: Claim, views: Sequence[TrackedView], outcomes: Sequence[Outcome], settings: Settings
) -> int:
    """Store a fetched batch in one transaction; if that fails for anything but
    an unreachable database, store each id on its own so one bad answer only
    costs itself."""
    try:
        return _write_surviving_outages(
            lambda session: apply_outcomes(session, claim, views, outcomes), settings
        )
    except DBAPIError as exc:
        if is_disconnect(exc):
            raise  # still unreachable: the task retries; the lease keeps the ids safe
        error = _short(exc)
    except Exception as exc:
        log.exception(
            "unexpected error writing a %s batch",
            claim.vendor,
            extra={"vendor": claim.vendor.value},
        )
        error = f"{type(exc).__name__}: {_short(exc)}"
    log.warning(
        "batch write failed, retrying one id at a time",
        extra={"vendor": claim.vendor.value, "count": len(views), "error": error},
    )
    return _apply_one_by_one(claim, views, outcomes, settings)


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
    requests with no rate-budget slot within `send_within` seconds are not sent.
    Never raises: whatever goes wrong with one id becomes that id's outcome."""
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
                sent=False,
            )
        try:
            target = Target(view.vendor, view.external_id, view.project_id)
            outcome = client.fetch(target, utcnow(), max_wait=deadline - time.monotonic())
        except Exception as exc:
            log.exception(
                "unexpected error fetching %s %s",
                view.vendor,
                view.external_id,
                extra={"vendor": view.vendor.value},
            )
            outcome = Outcome(
                Action.RETRY, None, reason=f"internal error: {type(exc).__name__}: {_short(exc)}"
            )
        if outcome.action is Action.PAUSE_ACCOUNT:
            stop.append(outcome)
        return outcome

    return list(res.pool.map(fetch, views))


def lock_leased(
    session: Session, token: str, ids: Sequence[int], *, live_at: datetime | None = None
) -> set[int]:
    """Which of `ids` are still leased to `token`, locked until the transaction
    ends; with `live_at`, only leases that have not expired by then.

    Every write of a batch goes through this fence: a batch whose lease expired
    or was taken over (a newer claim, a webhook delivery) writes nothing.
    """
    if not ids:
        return set()
    stmt = select(TrackedId.id).where(TrackedId.id.in_(ids), TrackedId.lease_token == token)
    if live_at is not None:
        stmt = stmt.where(TrackedId.next_poll_at > live_at)
    return set(session.scalars(stmt.with_for_update()))


def apply_outcomes(
    session: Session,
    claim: Claim,
    views: Sequence[TrackedView],
    outcomes: Sequence[Outcome],
) -> int:
    """Write answers, quarantined bodies, tracking state and account state, for
    the ids whose lease this batch still holds, on the database's clock."""
    settings = get_resources().settings
    now = db_now(session)
    owned = lock_leased(session, claim.token, [v.id for v in views], live_at=now)
    pairs = [(v, o) for v, o in zip(views, outcomes, strict=True) if v.id in owned]
    if len(pairs) < len(views):
        log.warning(
            "%d of %d %s ids were no longer leased to this batch; their answers are not written",
            len(views) - len(pairs),
            len(views),
            claim.vendor,
            extra={"vendor": claim.vendor.value, "count": len(views) - len(pairs)},
        )
    if not pairs:
        return 0
    written = _store(session, claim.token, pairs, now=now, settings=settings)
    _update_account(session, claim.vendor, [o for _, o in pairs], now=now, settings=settings)
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
    still leased to `token` (locked first). Used by the webhook intake, which
    takes its id over in the same transaction."""
    owned = lock_leased(session, token, [v.id for v in views])
    pairs = [(v, o) for v, o in zip(views, outcomes, strict=True) if v.id in owned]
    return _store(session, token, pairs, now=now, settings=settings)


def _store(
    session: Session,
    token: str,
    pairs: Sequence[tuple[TrackedView, Outcome]],
    *,
    now: datetime,
    settings: Settings,
) -> int:
    planned: list[tuple[TrackedView, Outcome, dict[str, Any]]] = []
    for view, outcome in pairs:
        try:
            values = plan(view, outcome, now=now, settings=settings, rng=_rng)
        except Exception as exc:  # a value no rule foresaw: this id retries, the rest go on
            log.exception(
                "cannot plan the next poll of %s %s",
                view.vendor,
                view.external_id,
                extra={"vendor": view.vendor.value},
            )
            outcome = Outcome(
                Action.RETRY,
                outcome.http_status,
                reason=f"internal error: {type(exc).__name__}: {_short(exc)}",
            )
            values = plan(view, outcome, now=now, settings=settings, rng=_rng)
        planned.append((view, outcome, values))

    answers = [o.answer for _, o, _ in planned if o.action is Action.ARCHIVE and o.answer]
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
        for v, o, _ in planned
        if o.action is Action.QUARANTINE
    ]
    if quarantined:
        session.execute(QuarantinedPayload.__table__.insert(), quarantined)

    updates: dict[frozenset[str], list[dict[str, Any]]] = {}
    for view, _, values in planned:
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
    refused = next((o for o in outcomes if o.action is Action.PAUSE_ACCOUNT and o.sent), None)
    # Only a vendor's 429 pauses claiming; a budget slot further away than the
    # batch could wait just reschedules its ids.
    throttled = [
        o.retry_after or 1.0
        for o in outcomes
        if o.action is Action.THROTTLE and o.http_status is not None
    ]
    works = any(o.action in _KEY_WORKS and o.http_status is not None for o in outcomes)
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
        # Clamped again here: a pause is only as long as MAX_RETRY_AFTER_SECONDS.
        pause = min(max(throttled), settings.max_retry_after_seconds)
        until = now + timedelta(seconds=pause)
        if account.paused_until is None or account.paused_until < until:
            account.paused_until = until
    account.updated_at = now


def _apply_one_by_one(
    claim: Claim, views: Sequence[TrackedView], outcomes: Sequence[Outcome], settings: Settings
) -> int:
    written = 0
    for view, outcome in zip(views, outcomes, strict=True):
        try:
            with session_scope() as session:
                written += apply_outcomes(session, claim, [view], [outcome])
            continue
        except DBAPIError as exc:
            if is_disconnect(exc):
                raise
            reason = f"invalid payload: the database refused the rows: {_short(exc)}"
        except Exception as exc:
            log.exception(
                "cannot store %s %s",
                view.vendor,
                view.external_id,
                extra={"vendor": view.vendor.value},
            )
            reason = f"invalid payload: cannot be stored: {type(exc).__name__}: {_short(exc)}"
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
        try:
            with session_scope() as session:
                apply_outcomes(session, claim, [view], [bad])
        except DBAPIError as exc:
            if is_disconnect(exc):
                raise
            _give_back(claim, view, f"{reason}; quarantine failed too: {_short(exc)}", settings)
        except Exception as exc:
            _give_back(claim, view, f"{reason}; quarantine failed too: {_short(exc)}", settings)
    return written


def _give_back(claim: Claim, view: TrackedView, reason: str, settings: Settings) -> None:
    """Last resort when not even the quarantine row can be written: the id
    counts an error and is polled again later, so it ends in `error` at worst."""
    log.error(
        "could not store %s %s at all: %s",
        view.vendor,
        view.external_id,
        reason,
        extra={"vendor": view.vendor.value},
    )
    with session_scope() as session:
        now = db_now(session)
        if not lock_leased(session, claim.token, [view.id], live_at=now):
            return
        _store(
            session,
            claim.token,
            [(view, Outcome(Action.RETRY, None, reason=reason))],
            now=now,
            settings=settings,
        )


def _release(claim: Claim, views: Sequence[TrackedView], settings: Settings) -> None:
    """Hand a batch back unfetched: due again when its vendor may be polled."""
    release_claim(Claim(claim.vendor, claim.token, [v.id for v in views]), settings)


def release_claim(claim: Claim, settings: Settings, *, delay: float | None = None) -> None:
    """Give the ids of a claim back, due again after `delay` seconds (default: a
    tick, or when the vendor's pause ends): for a batch that cannot go on now."""
    with session_scope() as session:
        now = db_now(session)
        account = current_account(session, claim.vendor, settings)
        later = now + timedelta(seconds=settings.poll_tick_seconds if delay is None else delay)
        if account is not None and account.paused_until and account.paused_until > later:
            later = account.paused_until
        session.execute(
            update(TrackedId)
            .where(TrackedId.id.in_(claim.ids), TrackedId.lease_token == claim.token)
            .values(lease_token=None, next_poll_at=later)
            .execution_options(synchronize_session=False)
        )


def _raw_json(outcome: Outcome) -> bytes:
    if outcome.body is not None:
        return outcome.body
    if outcome.answer is not None:
        raw = outcome.answer.row.get("raw_payload")
        if isinstance(raw, str):
            return raw.encode()
        try:
            return orjson.dumps(raw, default=str)
        except TypeError:  # nested deeper than orjson writes
            return b""
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
