"""Claim due ids and hand them on: the loop shared by Celery's dispatch and
`mentionsync sync`. Fetching and writing are the fetch pipeline's
(worker/pipeline.py, worker/writing.py).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import text
from sqlalchemy.orm import Session

from models import Vendor
from worker.accounts import account_gate, current_account, passes_by_itself
from worker.outcome import Outcome, TrackedView
from worker.pipeline import BatchReport
from worker.resources import Runtime
from worker.scheduling import batch_ids, claim_room
from worker.tracking import Claim, claim_due, db_now, in_flight, load_claim, record_losses
from worker.writing import is_disconnect, release_claim, write_outcomes

# Re-exported: the Celery tasks and `mentionsync sync` drive the loop through here.
__all__ = [
    "BatchReport",
    "Claim",
    "claim_batches",
    "claim_due",
    "fetch_all",
    "grouped",
    "in_flight",
    "is_disconnect",
    "load_claim",
    "passes_by_itself",
    "process_claim",
    "record_losses",
    "release_claim",
    "sweep",
    "write_outcomes",
]

log = logging.getLogger("mentionsync.poller")


# --- Claiming ---------------------------------------------------------------


def claim_batches(
    session: Session,
    runtime: Runtime,
    *,
    now: datetime | None = None,
    max_ids: int | Mapping[Vendor, int] | None = None,
) -> tuple[list[Claim], dict[Vendor, str]]:
    """Claim what may be dispatched now, in batches; also say which vendors wait, and why.

    `now` is the database's clock unless a caller (a test) sets it; `max_ids`
    caps the ids claimed per vendor (one cap for all, or one each)."""
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
        cap = max_ids if max_ids is None or isinstance(max_ids, int) else max_ids.get(vendor, 0)
        if cap is not None and cap <= 0:
            continue  # no room for it here: not even its gate and count are read
        account = current_account(session, vendor, settings)
        reason = account_gate(session, vendor, settings, now, account)
        if reason is not None:
            waiting[vendor] = reason
            continue
        limiter = runtime.clients[vendor].limiter
        room = claim_room(
            settings, limiter.budget, known=limiter.known, held=in_flight(session, vendor, now)
        )
        if cap is not None:
            room = min(room, cap)
        recheck = account is not None and account.auth_failed_at is not None
        if recheck:
            room = min(room, 1)  # re-check a refused key with a single request
        # One claim statement per vendor and tick, split into batches afterwards:
        # every statement walks the due index from its start, so claiming batch by
        # batch would cost (room / batch size) walks. The batches share the lease
        # token; each is still loaded, written and released by its own ids.
        claim = claim_due(session, vendor, room, now=now, settings=settings, stalest_first=recheck)
        if claim is not None:
            claims.extend(claim.split(batch_ids(settings)))
    return claims, waiting


def grouped(claims: Sequence[Claim], shift: float = 0.0) -> list[list[Claim]]:
    """The batches of one sweep as messages, each with at most one batch of each
    vendor, every vendor's batches spread evenly over the messages (in claim
    order: earliest deadline first).

    A worker process takes its next message only when it needs more of some key
    (Pipeline.wait_for_room), and cannot choose the vendor of that message; with a
    share of every vendor in each, whichever process needs work gets some of each.
    `shift` (in [0, 1)) moves a vendor with fewer batches along its stride: the
    process sweeping is busy while the first message goes out, so a vendor
    always in that message would always go to the other processes.
    """
    by_vendor: dict[Vendor, list[Claim]] = {}
    for claim in claims:
        by_vendor.setdefault(claim.vendor, []).append(claim)
    count = max((len(batches) for batches in by_vendor.values()), default=0)
    messages: list[list[Claim]] = [[] for _ in range(count)]
    for batches in by_vendor.values():
        for k, claim in enumerate(batches):
            messages[int((k + shift) * count / len(batches))].append(claim)
    return messages


@dataclass(slots=True)
class Sweep:
    """What one sweep claimed, handed over, and which vendors wait, and why."""

    claims: list[Claim]
    waiting: dict[Vendor, str]
    sent: int = 0  # ids handed to `send`


def sweep(
    runtime: Runtime,
    send: Callable[[list[Claim]], object],
    *,
    max_ids: int | Mapping[Vendor, int] | None = None,
) -> Sweep:
    """The one claim-and-dispatch step of both loops: claim due ids (committed
    first, on the database's clock), then hand them to `send` a message at a time
    (at most one batch of each vendor: `grouped`): Celery's dispatch enqueues it,
    `mentionsync sync` processes it in place.

    If `send` fails (a broker down, a database gone, Ctrl-C), the batches not
    handed over yet, and those of the message that failed, are given back at once,
    due again shortly, instead of waiting for their lease to run out; then it
    re-raises.
    """
    settings = runtime.settings
    with runtime.db.session() as session:
        claims, waiting = claim_batches(session, runtime, max_ids=max_ids)
    result = Sweep(claims, waiting)
    messages = grouped(claims, shift=random.random())
    for i, message in enumerate(messages):
        try:
            send(message)
        except BaseException:
            for rest in (claim for later in messages[i:] for claim in later):
                try:
                    release_claim(runtime.db, rest, settings, delay=settings.retry_base_seconds)
                except Exception:  # the lease runs out on its own
                    log.debug("could not give back a claim", exc_info=True)
            raise
        result.sent += sum(len(claim.ids) for claim in message)
    return result


# --- Processing -------------------------------------------------------------


def process_claim(runtime: Runtime, claim: Claim) -> BatchReport:
    """Fetch one claimed batch and write its outcomes; return when it is done."""
    return runtime.pipeline.process(claim)


def fetch_all(
    runtime: Runtime, vendor: Vendor, views: Sequence[TrackedView], *, send_within: float
) -> list[Outcome]:
    """Fetch ids without writing them; requests with no rate-budget slot within
    `send_within` seconds are not sent. Never raises: whatever goes wrong with
    one id becomes that id's outcome."""
    return runtime.pipeline.fetch(vendor, views, send_within)
