"""Archive a verified MentionsAPI `ask.completed` delivery, like a poll would.

The delivery's `data` is the body `GET /v1/ask/{id}` returns, so it goes through
the same normalizer and the same write (`poller.store_outcomes`) as a polled
answer. Polling stays the safety net: whatever a delivery cannot settle (a body
we cannot archive, an unfinished answer) is left for the poller to fetch.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from models import TrackedId, TrackedState, Vendor, WebhookDelivery
from worker.config import Settings
from worker.metrics import observe_archived
from worker.normalize import PayloadError, parse_json
from worker.normalize.mentionsapi import PENDING_STATUSES, answer_status, normalize_ask
from worker.policy import Action, Outcome, TrackedView

# The same view of a tracked id that a claimed batch loads.
from worker.poller import _VIEW_COLUMNS, store_outcomes
from worker.registry import (
    InvalidId,
    InvalidTimestamp,
    register,
    validate_created_at,
    validate_external_id,
)
from worker.store import dialect_insert

log = logging.getLogger("mentionsync.webhooks")

EVENT_TYPE = "ask.completed"
ANSWER_STORED = (TrackedState.ARCHIVED, TrackedState.FAILED)
V1_EVENT_ID_HEADER = "mentionsapi-event-id"
HEX_DELIVERY_ID_HEADER = "x-mentionsapi-delivery-id"


class BadDelivery(ValueError):
    """Signed, but not an ask.completed envelope we can read: 400."""


@dataclass(frozen=True, slots=True)
class Envelope:
    event_id: str
    delivery_id: str | None
    event_type: str
    external_id: str
    data: dict[str, Any]
    created_at: datetime | None


@dataclass(slots=True)
class DeliveryResult:
    result: str  # archived, failed, duplicate, already_archived, pending, quarantined
    event_id: str | None = None
    external_id: str | None = None
    registered: bool = False
    detail: str | None = None

    def as_json(self) -> dict[str, Any]:
        doc = {"result": self.result, "event_id": self.event_id, "id": self.external_id}
        if self.registered:
            doc["registered"] = True
        if self.detail:
            doc["detail"] = self.detail
        return doc


def parse_envelope(body: bytes, headers: Any) -> Envelope | None:
    """The delivery's envelope, None for an event type other than ask.completed."""
    try:
        doc = parse_json(body)
    except PayloadError as exc:
        raise BadDelivery(f"body is not a JSON object: {exc}") from None
    event_type = doc.get("type")
    if event_type != EVENT_TYPE:
        return None
    data = doc.get("data")
    if not isinstance(data, dict):
        raise BadDelivery("data is missing or not an object")
    raw_id = data.get("id")
    if not isinstance(raw_id, str):
        raise BadDelivery("data.id is missing or not a string")
    try:
        external_id = validate_external_id(Vendor.MENTIONSAPI, raw_id)
    except InvalidId as exc:
        raise BadDelivery(f"data.id: {exc}") from None
    delivery_id = _header_id(headers.get(HEX_DELIVERY_ID_HEADER))
    return Envelope(
        event_id=_event_id(doc, headers, body),
        delivery_id=delivery_id,
        event_type=event_type,
        external_id=external_id,
        data=data,
        created_at=_created(doc),
    )


def _header_id(value: str | None) -> str | None:
    """A delivery or event id header, or None when it is absent or unusable.

    Only printable ASCII is kept: the vendor's ids are, and a header may carry
    any byte (Starlette decodes them as latin-1) that would only be stored as
    mojibake. Without it, the event id falls back to a hash of the signed body.
    """
    if value is None:
        return None
    value = value.strip()
    if not value or not all(" " <= ch <= "~" for ch in value):
        return None
    return value[:256]


def _event_id(doc: dict[str, Any], headers: Any, body: bytes) -> str:
    """The idempotency key: the event id, which stays the same across redeliveries.

    The envelope's `id` comes first because it is covered by the signature;
    then the `MentionsAPI-Event-Id` header; then the body itself, which a
    redelivery repeats byte for byte. Never the delivery id, which may change
    from one attempt to the next.
    """
    value = doc.get("id")
    if isinstance(value, str) and value.strip():
        return value.strip()[:256]
    header = _header_id(headers.get(V1_EVENT_ID_HEADER))
    if header:
        return header
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _created(doc: dict[str, Any]) -> datetime | None:
    """When the event was created: `created_at` (ISO) or `created` (unix seconds).

    None when missing or outside the registry's range for creation times. It
    sets the deadline of an id the delivery registers (the vendor's 30 days run
    from the request, not from our receipt) and feeds the archive-lag metric; a
    signed answer is worth more than a plausible timestamp, so a bad one is
    ignored (the deadline then counts from arrival) rather than the delivery
    refused.
    """
    parsed: datetime | None = None
    value = doc.get("created_at")
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
    else:
        value = doc.get("created")
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                parsed = datetime.fromtimestamp(value, UTC)
            except (OverflowError, OSError, ValueError):
                return None
    if parsed is None:
        return None
    try:
        return validate_created_at(parsed)
    except InvalidTimestamp:
        return None


def apply_delivery(
    session: Session,
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
            vendor=Vendor.MENTIONSAPI.value,
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
        Vendor.MENTIONSAPI,
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
    token = uuid.uuid4().hex
    row = session.execute(
        update(TrackedId)
        .where(
            TrackedId.vendor == Vendor.MENTIONSAPI,
            TrackedId.project_id == "",
            TrackedId.external_id == envelope.external_id,
            TrackedId.state.not_in(ANSWER_STORED),
        )
        .values(lease_token=token)
        .returning(*_VIEW_COLUMNS)
        .execution_options(synchronize_session=False)
    ).first()
    if row is None:
        result.result = "already_archived"
    else:
        view = TrackedView(*row)
        outcome = _outcome(envelope, body, now)
        store_outcomes(session, token, [view], [outcome], now=now, settings=settings)
        if outcome.action is Action.ARCHIVE:
            session.execute(
                update(TrackedId).where(TrackedId.id == view.id).values(webhook_archived_at=now)
            )
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
            WebhookDelivery.vendor == Vendor.MENTIONSAPI.value,
            WebhookDelivery.event_id == envelope.event_id,
        )
        .values(outcome=result.result)
    )
    return result


def _outcome(envelope: Envelope, body: bytes, now: datetime) -> Outcome:
    """What the delivered body comes to, as if a poll had fetched it.

    No HTTP status: nothing was fetched, and the id's last_http_status should
    keep describing the last real request.
    """
    try:
        if answer_status(envelope.data, 200) in PENDING_STATUSES:
            return Outcome(Action.POLL_LATER, None)
        answer = normalize_ask(envelope.data, ask_id=envelope.external_id, fetched_at=now)
    except PayloadError as exc:
        return Outcome(
            Action.QUARANTINE, None, reason=f"invalid payload (webhook): {exc}", body=body
        )
    if answer.row["status"] == "failed":
        reason = f"vendor job failed: {answer.row['error_code']}: {answer.row['error_message']}"
        return Outcome(
            Action.ARCHIVE, None, answer=answer, final_state=TrackedState.FAILED, reason=reason
        )
    return Outcome(Action.ARCHIVE, None, answer=answer, final_state=TrackedState.ARCHIVED)


def observe(result: DeliveryResult, envelope: Envelope | None, now: datetime) -> None:
    """Metrics of a committed delivery."""
    if envelope is None or result.result not in ("archived", "failed"):
        return
    lag = (now - envelope.created_at).total_seconds() if envelope.created_at else None
    observe_archived(Vendor.MENTIONSAPI, "webhook", lag)
