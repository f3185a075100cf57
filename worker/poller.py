"""Claim due ids, fetch them, store what came back: the heart of the worker.

Celery tasks (worker/tasks.py) and `mentionsync sync` both run these functions;
only the transport of the claimed batches differs.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from models import Vendor, utcnow
from worker.accounts import account_gate, current_account, passes_by_itself, update_account
from worker.common import short_error
from worker.config import Settings
from worker.db import session_scope
from worker.metrics import observe_polled_batch
from worker.outcome import Action, Outcome, TrackedView
from worker.resources import Runtime
from worker.scheduling import in_flight_capacity, plan, released_until
from worker.store import store_quarantined, upsert_answers
from worker.tracking import (
    Claim,
    claim_due,
    db_now,
    in_flight,
    load_claim,
    lock_leased,
    record_losses,
    release,
    write_states,
)
from worker.vendors.base import Target

# Re-exported: the Celery tasks and `mentionsync sync` drive the loop through here.
__all__ = [
    "BatchReport",
    "Claim",
    "claim_batches",
    "claim_due",
    "fetch_all",
    "in_flight",
    "lease_capacity",
    "load_claim",
    "passes_by_itself",
    "process_claim",
    "record_losses",
    "release_claim",
    "sweep",
    "write_outcomes",
]

log = logging.getLogger("mentionsync.poller")
_rng = random.Random()


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


def lease_capacity(runtime: Runtime, vendor: Vendor) -> int:
    """How many ids of `vendor` may be in flight, by this process's view of its key."""
    return in_flight_capacity(runtime.settings, runtime.clients[vendor].limiter.budget)


def claim_batches(
    session: Session,
    runtime: Runtime,
    *,
    now: datetime | None = None,
    max_ids: int | None = None,
) -> tuple[list[Claim], dict[Vendor, str]]:
    """Claim what may be dispatched now, in batches; also say which vendors wait, and why.

    `now` is the database's clock unless a caller (a test) sets it."""
    settings = runtime.settings
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
        room = lease_capacity(runtime, vendor) - in_flight(session, vendor, now)
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


@dataclass(slots=True)
class Sweep:
    """What one sweep claimed, handed over, and which vendors wait, and why."""

    claims: list[Claim]
    waiting: dict[Vendor, str]
    sent: int = 0  # ids handed to `send`


def sweep(
    runtime: Runtime,
    send: Callable[[Claim], object],
    *,
    max_ids: int | None = None,
) -> Sweep:
    """The one claim-and-dispatch step of both loops: claim due ids (committed
    first, on the database's clock), then hand each batch to `send`: Celery's
    dispatch enqueues it, `mentionsync sync` processes it in place.

    If `send` fails (a broker down, a database gone, Ctrl-C), the batches not
    handed over yet, and the one that failed, are given back at once, due again
    shortly, instead of waiting for their lease to run out; then it re-raises.
    """
    settings = runtime.settings
    with session_scope() as session:
        claims, waiting = claim_batches(session, runtime, max_ids=max_ids)
    result = Sweep(claims, waiting)
    for i, claim in enumerate(claims):
        try:
            send(claim)
        except BaseException:
            for rest in claims[i:]:
                try:
                    release_claim(rest, settings, delay=settings.retry_base_seconds)
                except Exception:  # the lease runs out on its own
                    log.debug("could not give back a claim", exc_info=True)
            raise
        result.sent += len(claim.ids)
    return result


# --- Processing -------------------------------------------------------------


def process_claim(runtime: Runtime, claim: Claim) -> BatchReport:
    """Fetch one claimed batch and store the outcome in one transaction."""
    started = time.monotonic()
    settings = runtime.settings
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
    outcomes = fetch_all(runtime, claim.vendor, views, send_within=seconds_left)
    report.rows_written = write_outcomes(settings, claim, views, outcomes)
    report.processed = len(views)
    report.actions.update(o.action.value for o in outcomes)
    observe_polled_batch(views, outcomes, now=utcnow())
    return _finish(report, started)


def write_outcomes(
    settings: Settings, claim: Claim, views: Sequence[TrackedView], outcomes: Sequence[Outcome]
) -> int:
    """Store a fetched batch in one transaction; if that fails for anything but
    an unreachable database, store each id on its own so one bad answer only
    costs itself."""
    try:
        return _write_surviving_outages(
            lambda session: apply_outcomes(session, settings, claim, views, outcomes), settings
        )
    except DBAPIError as exc:
        if is_disconnect(exc):
            raise  # still unreachable: the task retries; the lease keeps the ids safe
        error = short_error(exc)
    except Exception as exc:
        log.exception(
            "unexpected error writing a %s batch",
            claim.vendor,
            extra={"vendor": claim.vendor.value},
        )
        error = f"{type(exc).__name__}: {short_error(exc)}"
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
                short_error(exc),
            )
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


def fetch_all(
    runtime: Runtime, vendor: Vendor, views: Sequence[TrackedView], *, send_within: float
) -> list[Outcome]:
    """Fetch every id of a batch concurrently over the process's pooled client;
    requests with no rate-budget slot within `send_within` seconds are not sent.
    Never raises: whatever goes wrong with one id becomes that id's outcome."""
    client = runtime.clients[vendor]
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
            reason = _internal_error("unexpected error fetching", view, exc)
            outcome = Outcome(Action.RETRY, None, reason=f"internal error: {reason}")
        if outcome.action is Action.PAUSE_ACCOUNT:
            stop.append(outcome)
        return outcome

    return list(runtime.pool.map(fetch, views))


def apply_outcomes(
    session: Session,
    settings: Settings,
    claim: Claim,
    views: Sequence[TrackedView],
    outcomes: Sequence[Outcome],
) -> int:
    """Write answers, quarantined bodies, tracking state and account state, for
    the ids whose lease this batch still holds, on the database's clock."""
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
    update_account(session, claim.vendor, [o for _, o in pairs], now=now, settings=settings)
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
            reason = _internal_error("cannot plan the next poll of", view, exc)
            outcome = Outcome(Action.RETRY, outcome.http_status, reason=f"internal error: {reason}")
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
    store_quarantined(session, quarantined)
    write_states(session, token, [(view.id, values) for view, _, values in planned])
    return written


def _apply_one_by_one(
    claim: Claim, views: Sequence[TrackedView], outcomes: Sequence[Outcome], settings: Settings
) -> int:
    written = 0
    for view, outcome in zip(views, outcomes, strict=True):
        try:
            with session_scope() as session:
                written += apply_outcomes(session, settings, claim, [view], [outcome])
            continue
        except DBAPIError as exc:
            if is_disconnect(exc):
                raise
            reason = f"invalid payload: the database refused the rows: {short_error(exc)}"
        except Exception as exc:
            reason = (
                f"invalid payload: cannot be stored: {_internal_error('cannot store', view, exc)}"
            )
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
                apply_outcomes(session, settings, claim, [view], [bad])
        except DBAPIError as exc:
            if is_disconnect(exc):
                raise
            _give_back(
                claim, view, f"{reason}; quarantine failed too: {short_error(exc)}", settings
            )
        except Exception as exc:
            _give_back(
                claim, view, f"{reason}; quarantine failed too: {short_error(exc)}", settings
            )
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
        due_at = released_until(now, settings, account, delay)
        release(session, claim.token, claim.ids, due_at=due_at)


def _internal_error(what: str, view: TrackedView, exc: Exception) -> str:
    """Log an exception no rule foresaw, with its traceback, against one id; the
    reason to record for that id."""
    log.exception(
        "%s %s %s", what, view.vendor, view.external_id, extra={"vendor": view.vendor.value}
    )
    return f"{type(exc).__name__}: {short_error(exc)}"


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
