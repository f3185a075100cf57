"""Celery tasks. Each is idempotent: a second delivery finds nothing left to do."""

from __future__ import annotations

import contextlib
import logging
import time
from typing import Any

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError

from models import Vendor
from worker.app import app
from worker.common import short_error
from worker.db import Database
from worker.pipeline import PipelineClosed
from worker.poller import (
    Claim,
    is_disconnect,
    record_losses,
    release_claim,
    sweep,
)
from worker.resources import process_runtime
from worker.schedule import DISPATCH_TASK, FETCH_TASK, HOUSEKEEPING_TASK

log = logging.getLogger("mentionsync.tasks")


@app.task(name=DISPATCH_TASK, acks_late=True, ignore_result=True)
def dispatch_due(scheduler: str | None = None) -> int:
    """Claim due ids (committed first), then hand them to workers in batches.

    If sending fails, nothing is lost: the claimed ids not sent are given back
    and a later sweep sends them. `scheduler`: the beat that
    sent this sweep (`host:pid`), whose heartbeat row records that it ran.
    """
    started = time.monotonic()
    runtime = process_runtime()
    by_vendor: dict[Vendor, list[int]] = {}

    def send(claims: list[Claim]) -> None:
        first, *more = claims
        fetch_batch.apply_async(
            args=_message(first),
            kwargs={"more": [_message(claim) for claim in more]} if more else None,
            retry=False,
        )
        for claim in claims:
            counts = by_vendor.setdefault(claim.vendor, [0, 0])
            counts[0] += len(claim.ids)
            counts[1] += 1

    sent = 0
    try:
        result = sweep(runtime, send)
        sent = result.sent
        waiting = result.waiting
    except BrokerError as exc:
        # The batches not sent were given back: a later sweep sends them.
        log.error("broker unavailable, claimed ids given back for a later sweep: %s", exc)
        waiting = {}
    for vendor, reason in waiting.items():
        log.debug("not polling %s: %s", vendor, reason, extra={"vendor": vendor.value})
    if scheduler is not None:
        record_sweep(runtime.db, scheduler)
    # One line per vendor and sweep, never one per id.
    for vendor, (ids, batches) in by_vendor.items():
        log.info(
            "dispatched %d %s ids in %d batches",
            ids,
            vendor,
            batches,
            extra={
                "vendor": vendor.value,
                "count": ids,
                "batches": batches,
                "duration_s": round(time.monotonic() - started, 3),
            },
        )
    return sent


def record_sweep(db: Database, scheduler: str) -> None:
    """Record that a sweep of `scheduler` ran; never fails the sweep, which is done."""
    from worker.heartbeat import record_dispatch

    try:
        with db.session() as session:
            record_dispatch(session.connection(), scheduler)
    except DBAPIError as exc:
        log.warning("could not record the dispatch sweep: %s", exc.orig or exc)


@app.task(
    name=FETCH_TASK,
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=5,
)
def fetch_batch(
    self: Task, vendor: str, token: str, ids: list[int], more: list[Any] | None = None
) -> int:
    """Hand one claimed batch, and `more` of the same sweep (other vendors'
    batches, as [vendor, token, ids]), to this process's fetch pipeline, which
    fetches and writes them while the process takes its next message. Only ids
    still leased to their token are touched; if the process dies, their lease runs
    out and a later sweep claims them again."""
    runtime = process_runtime()
    claims = [Claim(Vendor(vendor), token, ids), *_claims(more or [])]
    taken = 0
    for i, claim in enumerate(claims):
        try:
            taken += len(runtime.pipeline.submit(claim).views)
        except (PipelineClosed, SoftTimeLimitExceeded) as exc:
            if isinstance(exc, SoftTimeLimitExceeded):
                log.error(
                    "a batch of %d %s ids could not be taken in within its time limit;"
                    " giving it back",
                    len(claim.ids),
                    claim.vendor,
                    extra={"vendor": claim.vendor.value, "count": len(claim.ids)},
                )
            for rest in claims[i:]:  # this process is stopping, or out of time
                release_claim(runtime.db, rest, runtime.settings)
            return taken
        except DBAPIError as exc:
            if not is_disconnect(exc):
                raise
            # Postgres restarting: the pool reconnects (pre-ping); the batches not
            # taken in yet are tried again shortly. If this keeps failing, their
            # lease expires and the ids are re-claimed.
            log.warning(
                "database unavailable, retrying batch: %s",
                exc.orig or exc,
                extra={"vendor": claim.vendor.value, "count": len(claim.ids)},
            )
            first, *later = claims[i:]
            raise self.retry(
                args=_message(first),
                kwargs={"more": [_message(c) for c in later]},
                exc=exc,
                countdown=5,
            ) from exc
    # Taken in: this process takes its next message only once it needs more, so
    # that batches go to the processes with places free. (The batches are the
    # pipeline's now: a time limit here must not give their ids back.)
    with contextlib.suppress(SoftTimeLimitExceeded):
        runtime.pipeline.wait_for_room()
    return taken


def _message(claim: Claim) -> list[Any]:
    return [claim.vendor.value, claim.token, claim.ids]


def _claims(entries: list[Any]) -> list[Claim]:
    """The claims of a message's `more`; an entry that is not one is logged and left
    to its lease (it runs out, and a later sweep claims the ids again)."""
    claims = []
    for entry in entries:
        try:
            vendor, token, ids = entry
            if not (isinstance(token, str) and all(isinstance(i, int) for i in ids)):
                raise ValueError("not a token and a list of ids")
            claims.append(Claim(Vendor(vendor), token, list(ids)))
        except (TypeError, ValueError) as exc:
            log.error("ignoring a malformed batch in a fetch message: %s", short_error(exc))
    return claims


@app.task(name=HOUSEKEEPING_TASK, acks_late=True, ignore_result=True)
def housekeeping() -> int:
    """Record ids lost past their deadline, send the alerts that are due, and
    forget webhook events past retention and beats gone for a day."""
    from worker.alerts import check_alerts, prune_deliveries
    from worker.heartbeat import forget_gone

    runtime = process_runtime()
    settings, db = runtime.settings, runtime.db
    # Before the alerts, so that ids lost since the last run are counted in them.
    with db.session() as session:
        record_losses(session, settings)
    sent = check_alerts(db.session, settings)
    pruned = prune_deliveries(db.session, settings)
    if pruned:
        log.info("forgot %d webhook events past retention", pruned, extra={"count": pruned})
    with db.session() as session:
        forget_gone(session.connection())
    return len(sent)
