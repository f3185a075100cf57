"""Archive a verified webhook delivery of any vendor that `sends_webhooks`, like
a poll would.

The delivery's `data` is the body a poll of the id returns, so it goes through
the vendor's own `interpret_body` and the same write (`writing.store_outcomes`)
as a polled answer; how a delivery is signed and read is the vendor's
(`VendorSpec.verify_delivery`, `parse_delivery`). Polling stays the safety net:
whatever a delivery cannot settle (a body we cannot archive, an unfinished
answer) is left for the poller to fetch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from models import TrackedState, WebhookDelivery
from worker.config import Settings
from worker.metrics import observe_archived
from worker.normalize import PayloadError
from worker.outcome import Action, Outcome
from worker.registry import (
    InvalidId,
    InvalidTimestamp,
    register,
    validate_created_at,
    validate_external_id,
)
from worker.store import dialect_insert
from worker.tracking import mark_webhook_archived, take_over
from worker.vendors.base import BadDelivery, Envelope, Target, VendorSpec
from worker.writing import store_outcomes

__all__ = ["BadDelivery", "DeliveryResult", "Envelope", "apply_delivery", "parse_envelope"]

log = logging.getLogger("mentionsync.webhooks")

ANSWER_STORED = (TrackedState.ARCHIVED, TrackedState.FAILED)


@dataclass(slots=True)
class DeliveryResult:
    result: str  # archived, failed, duplicate, already_archived, pending, quarantined
    event_id: str | None = None
    external_id: str | None = None
    registered: bool = False
    detail: str | None = None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "result": self.result,
            "event_id": self.event_id,
            "id": self.external_id,
        }
        if self.registered:
            doc["registered"] = True
        if self.detail:
            doc["detail"] = self.detail
        return doc


def parse_envelope(spec: VendorSpec, body: bytes, headers: Mapping[str, str]) -> Envelope | None:
    """The delivery's envelope with its id and creation time checked as the
    registry checks them; None for an event that carries no answer."""
    envelope = spec.parse_delivery(body, headers)
    if envelope is None:
        return None
    try:
        external_id = validate_external_id(spec.vendor, envelope.external_id)
    except InvalidId as exc:
        raise BadDelivery(f"data.id: {exc}") from None
    return replace(
        envelope, external_id=external_id, created_at=created_in_range(envelope.created_at)
    )


def created_in_range(value: datetime | None) -> datetime | None:
    """A creation time within the registry's range, else None. It sets the
    deadline of an id the delivery registers (the vendor's 30 days run from the
    request, not from our receipt) and feeds the archive-lag metric; a signed
    answer is worth more than a plausible timestamp, so a bad one is ignored
    (the deadline then counts from arrival) rather than the delivery refused."""
    if value is None:
        return None
    try:
        return validate_created_at(value)
    except InvalidTimestamp:
        return None


def apply_delivery(
    session: Session,
    spec: VendorSpec,
    envelope: Envelope,
    body: bytes,
    *,
    scheme: str,
    settings: Settings,
    now: datetime,
) -> DeliveryResult:
    """Record the event and archive its answer, in the caller's transaction."""
    result = DeliveryResult("archived", envelope.event_id, envelope.external_id)
    inserted = session.execute(
        dialect_insert(session, WebhookDelivery.__table__)
        .values(
            vendor=spec.vendor.value,
            event_id=envelope.event_id,
            delivery_id=envelope.delivery_id,
            scheme=scheme,
            external_id=envelope.external_id,
            outcome="processing",
            received_at=now,
        )
        .on_conflict_do_nothing()
        .returning(WebhookDelivery.event_id)
    ).first()
    if inserted is None:
        result.result = "duplicate"
        return result

    registration = register(
        session,
        spec.vendor,
        [("data.id", envelope.external_id)],
        settings=settings,
        expect_webhook=True,
        created_at=envelope.created_at,
        now=now,
    )
    result.registered = registration.added == 1

    # Take the id over, like a claim would: a poll batch holding it now finds
    # its lease gone and leaves the id alone. An id whose answer is stored
    # (archived, or failed with its error) is not touched at all; one polling
    # gave up on (not_found, error, ...) is archived: the delivery is the answer.
    taken = take_over(session, spec.vendor, envelope.external_id, unless=ANSWER_STORED)
    if taken is None:
        result.result = "already_archived"
    else:
        token, view = taken
        outcome = _outcome(spec, envelope, body, now)
        store_outcomes(session, token, [view], [outcome], now=now, settings=settings)
        if outcome.action is Action.ARCHIVE:
            mark_webhook_archived(session, view.id, now=now)
            assert outcome.final_state is not None
            result.result = outcome.final_state.value  # archived or failed
        elif outcome.action is Action.QUARANTINE:
            result.result = "quarantined"
            result.detail = f"{outcome.reason}; the id will be polled"
        else:
            result.result = "pending"
            result.detail = "the answer is not final yet; the id will be polled"
    session.execute(
        update(WebhookDelivery)
        .where(
            WebhookDelivery.vendor == spec.vendor.value,
            WebhookDelivery.event_id == envelope.event_id,
        )
        .values(outcome=result.result)
    )
    return result


def _outcome(spec: VendorSpec, envelope: Envelope, body: bytes, now: datetime) -> Outcome:
    """What the delivered body comes to, read by the same function as a polled one.

    No HTTP status: nothing was fetched, and the id's last_http_status should
    keep describing the last real request.
    """
    target = Target(spec.vendor, envelope.external_id)
    try:
        outcome = spec.interpret_body(target, None, envelope.data, now)
    except PayloadError as exc:
        return Outcome(
            Action.QUARANTINE, None, reason=f"invalid payload (webhook): {exc}", body=body
        )
    return outcome


def observe(
    spec: VendorSpec, result: DeliveryResult, envelope: Envelope | None, now: datetime
) -> None:
    """Metrics of a committed delivery."""
    if envelope is None or result.result not in ("archived", "failed"):
        return
    lag = (now - envelope.created_at).total_seconds() if envelope.created_at else None
    observe_archived(spec.vendor, "webhook", lag)
