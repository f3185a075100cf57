"""Celery tasks. Each is idempotent: a second delivery finds nothing left to do."""

from __future__ import annotations

import logging
import time

from celery import Task
from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.exc import DBAPIError

from models import Vendor, utcnow
from worker.app import app
from worker.db import session_scope
from worker.poller import Claim, claim_batches, is_disconnect, process_claim
from worker.resources import get_resources, release_free_memory
from worker.schedule import DISPATCH_TASK, HOUSEKEEPING_TASK

log = logging.getLogger("mentionsync.tasks")


@app.task(name=DISPATCH_TASK, acks_late=True, ignore_result=True)
def dispatch_due() -> int:
    """Claim due ids (committed first), then hand them to workers in batches.

    If sending fails, nothing is lost: the claimed ids become due again when
    their lease expires, and a later sweep sends them.
    """
    started = time.monotonic()
    settings = get_resources().settings
    with session_scope() as session:
        claims, waiting = claim_batches(session, settings, now=utcnow())
    for vendor, reason in waiting.items():
        log.debug("not polling %s: %s", vendor, reason, extra={"vendor": vendor.value})
    sent = 0
    by_vendor: dict[Vendor, list[int]] = {}
    for claim in claims:
        try:
            fetch_batch.apply_async(args=[claim.vendor.value, claim.token, claim.ids], retry=False)
            sent += len(claim.ids)
            counts = by_vendor.setdefault(claim.vendor, [0, 0])
            counts[0] += len(claim.ids)
            counts[1] += 1
        except BrokerError as exc:
            log.error(
                "broker unavailable, %d claimed ids will be re-dispatched after their lease: %s",
                sum(len(c.ids) for c in claims) - sent,
                exc,
                extra={"vendor": claim.vendor.value, "count": len(claim.ids)},
            )
            break
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


@app.task(
    name="mentionsync.fetch_batch",
    bind=True,
    acks_late=True,
    ignore_result=True,
    max_retries=5,
)
def fetch_batch(self: Task, vendor: str, token: str, ids: list[int]) -> int:
    """Fetch and store one claimed batch. Only ids still leased to `token` are touched."""
    try:
        report = process_claim(Claim(Vendor(vendor), token, ids))
        release_free_memory()
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
    """Send the alerts that are due and forget webhook events past retention."""
    from worker.alerts import check_alerts, prune_deliveries

    settings = get_resources().settings
    sent = check_alerts(settings)
    pruned = prune_deliveries(settings)
    if pruned:
        log.info("forgot %d webhook events past retention", pruned, extra={"count": pruned})
    return len(sent)
