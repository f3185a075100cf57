"""MentionsAPI webhooks: the `ask.completed` envelope and its idempotency key.

The envelope's `data` is the body `GET /v1/ask/{id}` returns; what it means for
the archive is decided by the same MentionsAPI.interpret_body as a poll's.
Signatures: worker/vendors/mentionsapi/signatures.py.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from worker.common import parse_iso_utc
from worker.normalize import PayloadError, parse_json
from worker.vendors.base import BadDelivery, Envelope

EVENT_TYPE = "ask.completed"
V1_EVENT_ID_HEADER = "mentionsapi-event-id"
HEX_DELIVERY_ID_HEADER = "x-mentionsapi-delivery-id"


def parse_envelope(body: bytes, headers: Mapping[str, str]) -> Envelope | None:
    """The delivery's envelope, None for an event type other than ask.completed.
    The id and the time are as sent: the caller validates them."""
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
    delivery_id = _header_id(headers.get(HEX_DELIVERY_ID_HEADER))
    return Envelope(
        event_id=_event_id(doc, headers, body),
        delivery_id=delivery_id,
        event_type=event_type,
        external_id=raw_id,
        data=data,
        created_at=created_at(doc),
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


def _event_id(doc: dict[str, Any], headers: Mapping[str, str], body: bytes) -> str:
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


def created_at(doc: dict[str, Any]) -> datetime | None:
    """When the event was created: `created_at` (ISO) or `created` (unix seconds).

    None when missing or unreadable; the caller checks its range.
    """
    parsed: datetime | None = None
    value = doc.get("created_at")
    if isinstance(value, str):
        try:
            parsed = parse_iso_utc(value)
        except ValueError:
            return None
    else:
        value = doc.get("created")
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                parsed = datetime.fromtimestamp(value, UTC)
            except (OverflowError, OSError, ValueError):
                return None
    return parsed
