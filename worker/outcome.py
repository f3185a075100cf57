"""The vocabulary between a vendor and the scheduler: what a response means
(`Action`, by a `Rule`) and what one fetch of one id came to (`Outcome`).

Vendors produce outcomes (worker/vendors), the policy plans the id's next state
from them (worker/policy.py), the tracking repository writes it.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from types import MappingProxyType

from models import TrackedState, Vendor
from worker.normalize import Normalized


class Action(enum.StrEnum):
    INSPECT = "inspect"  # 200/202: the body says whether the answer is final
    ARCHIVE = "archive"  # final body: store it (archived, or failed with its error)
    POLL_LATER = "poll_later"  # still queued/processing/pending/retrying
    RETRY = "retry"  # transient: back off with jitter; burns an attempt
    THROTTLE = "throttle"  # 429: wait Retry-After, pause the key; burns nothing
    PAUSE_ACCOUNT = "pause_account"  # the key is refused: pause it; burns nothing
    CONFIRM_NOT_FOUND = "confirm_not_found"  # 404: not_found after N in a row
    EXPIRE = "expire"  # 410: past retention; a recorded loss
    REJECT = "reject"  # the vendor says the id itself is invalid
    QUARANTINE = "quarantine"  # body cannot be archived: keep it raw; re-fetch, then give up


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action
    why: str


@dataclass(slots=True)
class Outcome:
    """What a fetch of one id came to, before it is applied to the database."""

    action: Action
    http_status: int | None
    reason: str | None = None
    answer: Normalized | None = None
    final_state: TrackedState | None = None  # for ARCHIVE: archived or failed
    retry_after: float | None = None
    remote_created_at: datetime | None = None
    body: bytes | None = None  # for QUARANTINE
    body_truncated: bool = False
    # False when the request was never sent (its batch stopped after a refusal).
    sent: bool = True


TRANSPORT_ERROR = "transport"  # connect error, timeout, reset: no HTTP status
OTHER_STATUS = "other"

# What a status means for every vendor; a vendor's own table overrides rows.
COMMON_RULES: Mapping[int | str, Rule] = MappingProxyType(
    {
        200: Rule(Action.INSPECT, "final or pending, by the body's status"),
        400: Rule(Action.REJECT, "the id is malformed or oversized; never retried"),
        401: Rule(Action.PAUSE_ACCOUNT, "key missing or revoked: pause the key, keep attempts"),
        402: Rule(Action.PAUSE_ACCOUNT, "payment required: pause the key, keep attempts"),
        403: Rule(Action.PAUSE_ACCOUNT, "key lacks access: pause the key, keep attempts"),
        404: Rule(Action.CONFIRM_NOT_FOUND, "a fresh id can lag: not_found after N in a row"),
        409: Rule(Action.REJECT, "conflict: never retried"),
        422: Rule(Action.REJECT, "unprocessable id: never retried"),
        429: Rule(Action.THROTTLE, "wait Retry-After on the whole key; no attempt burned"),
        500: Rule(Action.RETRY, "server error: exponential backoff with jitter"),
        502: Rule(Action.RETRY, "bad gateway: exponential backoff with jitter"),
        503: Rule(Action.RETRY, "unavailable: honour Retry-After, else back off"),
        504: Rule(Action.RETRY, "gateway timeout: exponential backoff with jitter"),
        TRANSPORT_ERROR: Rule(Action.RETRY, "connect error, timeout or reset: back off"),
        OTHER_STATUS: Rule(Action.RETRY, "unexpected status: back off, then `error`"),
    }
)


@dataclass(frozen=True, slots=True)
class TrackedView:
    """The parts of a tracked id that the plan depends on."""

    id: int
    vendor: Vendor
    project_id: str
    external_id: str
    deadline_at: datetime
    attempts: int
    consecutive_errors: int
    not_found_streak: int
    invalid_payload_streak: int
    remote_created_at: datetime | None
    # Only for the archive-lag metric: when the answer could first have been seen final.
    registered_at: datetime | None = None
    last_polled_at: datetime | None = None
