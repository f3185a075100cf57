"""Celery tasks. Each is idempotent: a second delivery finds nothing left to do."""

from __future__ import annotations

import logging
import time

from celery import Task
from celery.exceptions import SoftTimeLimitExceeded
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError

from models import Vendor
from worker.app import app
from worker.db import session_scope
from worker.poller import (
    Claim,
    is_disconnect,
    process_claim,
    record_losses,
    release_claim,
    sweep,
)
from worker.resources import process_runtime, release_free_memory
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

    def send(claim: Claim) -> None:
        fetch_batch.apply_async(args=[claim.vendor.value, claim.token, claim.ids], retry=False)
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
        record_sweep(scheduler)
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


def record_sweep(scheduler: str) -> None:
    """Record that a sweep of `scheduler` ran; never fails the sweep, which is done."""
    from worker.heartbeat import record_dispatch

    try:
        with session_scope() as session:
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
def fetch_batch(self: Task, vendor: str, token: str, ids: list[int]) -> int:
    """Fetch and store one claimed batch. Only ids still leased to `token` are touched."""
    claim = Claim(Vendor(vendor), token, ids)
    runtime = process_runtime()
    try:
        report = process_claim(runtime, claim)
        release_free_memory()
    except SoftTimeLimitExceeded:
        settings = runtime.settings
        log.error(
            "batch of %d %s ids ran past its time limit (%g s); giving back the ids it"
            " has not written",
            len(ids),
            vendor,
            settings.lease_seconds,
            extra={"vendor": vendor, "count": len(ids)},
        )
        release_claim(claim, settings)
        return 0
    except DBAPIError as exc:
        if not is_disconnect(exc):
            raise
        # Postgres restarting: the pool reconnects (pre-ping); try again shortly.
        # If this keeps failing, the lease expires and the ids are re-claimed.
        log.warning(
            "database unavailable, retrying batch: %s",
            exc.orig or exc,
            extra={"vendor": vendor, "count": len(ids)},
        )
        raise self.retry(exc=exc, countdown=5) from exc
    return report.processed


@app.task(name=HOUSEKEEPING_TASK, acks_late=True, ignore_result=True)
def housekeeping() -> int:
    """Record ids lost past their deadline, send the alerts that are due, and
    forget webhook events past retention and beats gone for a day."""
    from worker.alerts import check_alerts, prune_deliveries
    from worker.heartbeat import forget_gone

    settings = process_runtime().settings
    # Before the alerts, so that ids lost since the last run are counted in them.
    with session_scope() as session:
        record_losses(session, settings)
    sent = check_alerts(settings)
    pruned = prune_deliveries(settings)
    if pruned:
        log.info("forgot %d webhook events past retention", pruned, extra={"count": pruned})
    with session_scope() as session:
        forget_gone(session.connection())
    return len(sent)
