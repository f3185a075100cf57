"""Write what a batch fetched: answers, quarantined bodies, tracking and account
state, in one transaction per write, fenced by the lease; and the fallbacks that
keep one bad answer from costing its neighbours.

The fetch pipeline (worker/pipeline.py) writes through here as answers arrive;
the webhook intake writes its delivery through `store_outcomes`.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import orjson
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from models import Vendor
from worker.accounts import current_account, update_account
from worker.common import short_error
from worker.config import Settings
from worker.db import Database
from worker.normalize import Normalized
from worker.outcome import Action, Outcome, TrackedView
from worker.scheduling import plan, released_until
from worker.store import store_quarantined, upsert_answers
from worker.tracking import Claim, db_now, lock_leased, lock_leases, release, write_states

log = logging.getLogger("mentionsync.poller")
_rng = random.Random()
T = TypeVar("T")


def write_outcomes(
    db: Database,
    settings: Settings,
    claim: Claim,
    views: Sequence[TrackedView],
    outcomes: Sequence[Outcome],
) -> int:
    """Store a fetched batch in one transaction; if that fails for anything but
    an unreachable database, store each id on its own so one bad answer only
    costs itself."""
    try:
        return write_surviving_outages(
            db, lambda session: apply_outcomes(session, settings, claim, views, outcomes), settings
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
    return _apply_one_by_one(db, claim, views, outcomes, settings)


def is_disconnect(exc: DBAPIError) -> bool:
    return exc.connection_invalidated or isinstance(exc, OperationalError | InterfaceError)


def write_surviving_outages(
    db: Database,
    write: Callable[[Session], T],
    settings: Settings,
    on_outage: Callable[[], None] | None = None,
) -> T:
    """Run one write transaction, retrying while the database is unreachable.

    The answers are already fetched and only live in memory: waiting out a
    Postgres restart here keeps them, where failing the task would fetch again.
    `on_outage` is called before each wait.
    """
    deadline = time.monotonic() + settings.db_outage_seconds
    delay = 0.5
    while True:
        try:
            with db.session() as session:
                return write(session)
        except DBAPIError as exc:
            if not is_disconnect(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning(
                "database unreachable, keeping the fetched batch and retrying in %.1fs: %s",
                delay,
                short_error(exc),
            )
            if on_outage is not None:
                on_outage()
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


@dataclass(frozen=True, slots=True)
class Part:
    """One claimed batch's share of a write: its ids and their outcomes."""

    claim: Claim
    views: Sequence[TrackedView]
    outcomes: Sequence[Outcome]


def apply_outcomes(
    session: Session,
    settings: Settings,
    claim: Claim,
    views: Sequence[TrackedView],
    outcomes: Sequence[Outcome],
) -> int:
    """`apply_parts` for one batch: the rows it wrote."""
    return apply_parts(session, settings, [Part(claim, views, outcomes)])[0]


def apply_parts(session: Session, settings: Settings, parts: Sequence[Part]) -> list[int]:
    """Write answers, quarantined bodies, tracking state and account state, for
    the ids whose lease their batch still holds, on the database's clock; the
    rows each part wrote.

    The parts of a write share each statement: the writer gathers answers of
    many batches, and a statement per batch and table would cost more than the
    rows themselves.
    """
    now = db_now(session)
    leases = [(v.id, part.claim.token) for part in parts for v in part.views]
    owned = lock_leases(session, leases, live_at=now)
    kept: list[tuple[str, TrackedView, Outcome]] = []
    sizes: list[int] = []
    for part in parts:
        token = part.claim.token
        pairs = [
            (v, o) for v, o in zip(part.views, part.outcomes, strict=True) if (v.id, token) in owned
        ]
        if len(pairs) < len(part.views):
            log.warning(
                "%d of %d %s ids were no longer leased to this batch;"
                " their answers are not written",
                len(part.views) - len(pairs),
                len(part.views),
                part.claim.vendor,
                extra={"vendor": part.claim.vendor.value, "count": len(part.views) - len(pairs)},
            )
        kept += [(token, v, o) for v, o in pairs]
        sizes.append(len(pairs))
    if not kept:
        return [0] * len(parts)
    rows = _store(session, kept, now=now, settings=settings)
    by_vendor: dict[Vendor, list[Outcome]] = {}
    for _, view, outcome in kept:
        by_vendor.setdefault(view.vendor, []).append(outcome)
    for vendor in sorted(by_vendor):  # one order of row locks for every writer
        update_account(session, vendor, by_vendor[vendor], now=now, settings=settings)
    counts, start = [], 0
    for size in sizes:
        counts.append(sum(rows[start : start + size]))
        start += size
    return counts


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
    kept = [(token, v, o) for v, o in zip(views, outcomes, strict=True) if v.id in owned]
    return sum(_store(session, kept, now=now, settings=settings))


def _store(
    session: Session,
    items: Sequence[tuple[str, TrackedView, Outcome]],
    *,
    now: datetime,
    settings: Settings,
) -> list[int]:
    """Write (lease token, id, outcome) items; the rows each one wrote."""
    planned: list[tuple[str, TrackedView, Outcome, dict[str, Any]]] = []
    for token, view, outcome in items:
        try:
            values = plan(view, outcome, now=now, settings=settings, rng=_rng)
        except Exception as exc:  # a value no rule foresaw: this id retries, the rest go on
            reason = internal_error("cannot plan the next poll of", view, exc)
            outcome = Outcome(Action.RETRY, outcome.http_status, reason=f"internal error: {reason}")
            values = plan(view, outcome, now=now, settings=settings, rng=_rng)
        planned.append((token, view, outcome, values))

    answers = [_archived(o) for _, _, o, _ in planned]
    # Sorted, so that two writers upserting the same answers lock them in one order.
    upsert_answers(session, sorted((a for a in answers if a), key=lambda a: (a.table, a.key_value)))

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
        for _, v, o, _ in planned
        if o.action is Action.QUARANTINE
    ]
    store_quarantined(session, quarantined)
    write_states(session, [(view.id, token, values) for token, view, _, values in planned])
    return [a.rows if a else 0 for a in answers]


def _archived(outcome: Outcome) -> Normalized | None:
    return outcome.answer if outcome.action is Action.ARCHIVE else None


def _apply_one_by_one(
    db: Database,
    claim: Claim,
    views: Sequence[TrackedView],
    outcomes: Sequence[Outcome],
    settings: Settings,
) -> int:
    written = 0
    for view, outcome in zip(views, outcomes, strict=True):
        try:
            with db.session() as session:
                written += apply_outcomes(session, settings, claim, [view], [outcome])
            continue
        except DBAPIError as exc:
            if is_disconnect(exc):
                raise
            reason = f"invalid payload: the database refused the rows: {short_error(exc)}"
        except Exception as exc:
            reason = (
                f"invalid payload: cannot be stored: {internal_error('cannot store', view, exc)}"
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
            with db.session() as session:
                apply_outcomes(session, settings, claim, [view], [bad])
        except DBAPIError as exc:
            if is_disconnect(exc):
                raise
            _give_back(
                db, claim, view, f"{reason}; quarantine failed too: {short_error(exc)}", settings
            )
        except Exception as exc:
            _give_back(
                db, claim, view, f"{reason}; quarantine failed too: {short_error(exc)}", settings
            )
    return written


def _give_back(
    db: Database, claim: Claim, view: TrackedView, reason: str, settings: Settings
) -> None:
    """Last resort when not even the quarantine row can be written: the id
    counts an error and is polled again later, so it ends in `error` at worst."""
    log.error(
        "could not store %s %s at all: %s",
        view.vendor,
        view.external_id,
        reason,
        extra={"vendor": view.vendor.value},
    )
    with db.session() as session:
        now = db_now(session)
        if not lock_leased(session, claim.token, [view.id], live_at=now):
            return
        _store(
            session,
            [(claim.token, view, Outcome(Action.RETRY, None, reason=reason))],
            now=now,
            settings=settings,
        )


def release_claim(
    db: Database, claim: Claim, settings: Settings, *, delay: float | None = None
) -> None:
    """Give the ids of a claim back, due again after `delay` seconds (default: a
    tick, or when the vendor's pause ends): for a batch that cannot go on now."""
    with db.session() as session:
        now = db_now(session)
        account = current_account(session, claim.vendor, settings)
        due_at = released_until(now, settings, account, delay)
        release(session, claim.token, claim.ids, due_at=due_at)


def internal_error(what: str, view: TrackedView, exc: Exception) -> str:
    """Log an exception no rule foresaw, with its traceback, against one id; the
    reason to record for that id."""
    log.exception(
        "%s %s %s", what, view.vendor, view.external_id, extra={"vendor": view.vendor.value}
    )
    return f"{type(exc).__name__}: {short_error(exc)}"


def _raw_json(outcome: Outcome) -> bytes:
    """The body to quarantine for an answer the database refused: as received
    (raw_body when its text had to be changed, else the text itself)."""
    if outcome.body is not None:
        return outcome.body
    if outcome.answer is not None:
        exact = outcome.answer.row.get("raw_body")
        if isinstance(exact, bytes):
            return exact
        raw = outcome.answer.row.get("raw_payload")
        if isinstance(raw, str):
            return raw.encode()
        try:
            return orjson.dumps(raw, default=str)
        except TypeError:  # nested deeper than orjson writes
            return b""
    return b""
