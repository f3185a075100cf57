"""What each vendor response leads to: the retry policy, in one place.

`POLICIES` is the table the README reproduces. `plan()` turns an outcome into the
new state of a tracked id; it is pure, so every row of the table is tested
without a server.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from models import TrackedState, Vendor
from worker.config import Settings
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


TRANSPORT_ERROR = "transport"  # connect error, timeout, reset: no HTTP status
OTHER_STATUS = "other"


@dataclass(frozen=True, slots=True)
class Rule:
    action: Action
    why: str


_COMMON: dict[int | str, Rule] = {
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

POLICIES: dict[Vendor, dict[int | str, Rule]] = {
    Vendor.MENTIONSAPI: {
        **_COMMON,
        202: Rule(Action.INSPECT, "queued or processing: poll again later"),
        410: Rule(Action.EXPIRE, "older than the 30-day retention: recorded as lost"),
    },
    Vendor.MENTIONLAB: {
        **_COMMON,
        # MentionLab checks the project (x-project-id) per request: a 403 says this
        # project is refused (mistyped, revoked), not the key, so it stays with
        # that project's ids. A refused key answers 401.
        403: Rule(Action.RETRY, "project refused: its ids back off, then `error`; others go on"),
        # Not documented for MentionLab; if it comes, it means the same.
        410: Rule(Action.EXPIRE, "past retention: recorded as lost"),
    },
}


def rule_for(vendor: Vendor, status: int | None) -> Rule:
    table = POLICIES[vendor]
    if status is None:
        return table[TRANSPORT_ERROR]
    return table.get(status) or table[OTHER_STATUS]


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


def _jitter(seconds: float, rng: random.Random) -> float:
    # +/-20 %: ids registered together drift apart instead of polling in lockstep.
    return seconds * rng.uniform(0.8, 1.2)


def pending_delay(polls: int, settings: Settings, rng: random.Random) -> float:
    """Wait before the next poll of an answer still being worked on.

    Grows by 1.5x from poll_interval_seconds up to poll_max_interval_seconds: a
    job that usually completes within 15 minutes gets about eight polls by then.
    """
    base = settings.poll_interval_seconds * 1.5 ** max(0, polls - 1)
    return _jitter(min(base, settings.poll_max_interval_seconds), rng)


def retry_delay(
    errors: int, retry_after: float | None, settings: Settings, rng: random.Random
) -> float:
    """Exponential backoff with jitter, never shorter than the vendor's Retry-After."""
    base = min(settings.retry_base_seconds * 2 ** max(0, errors - 1), settings.retry_max_seconds)
    return max(retry_after or 0.0, _jitter(base, rng))


def plan(
    tracked: TrackedView,
    outcome: Outcome,
    *,
    now: datetime,
    settings: Settings,
    rng: random.Random,
) -> dict[str, Any]:
    """The tracked id's new column values after an outcome (lease released)."""
    update: dict[str, Any] = {
        "lease_token": None,
        "last_http_status": outcome.http_status,
        "last_polled_at": now,
        "last_error": outcome.reason,
    }
    counts = outcome.action not in (Action.THROTTLE, Action.PAUSE_ACCOUNT)
    attempts = tracked.attempts + 1 if counts else tracked.attempts
    update["attempts"] = attempts
    if outcome.remote_created_at is not None and tracked.remote_created_at is None:
        update["remote_created_at"] = outcome.remote_created_at
        update["deadline_at"] = outcome.remote_created_at + settings.retention

    def final(state: TrackedState) -> dict[str, Any]:
        update.update(state=state, final_at=now, next_poll_at=now)
        return update

    match outcome.action:
        case Action.ARCHIVE:
            assert outcome.final_state is not None
            update.update(
                archived_at=now, consecutive_errors=0, not_found_streak=0, invalid_payload_streak=0
            )
            return final(outcome.final_state)
        case Action.EXPIRE:
            return final(TrackedState.EXPIRED)
        case Action.REJECT:
            return final(TrackedState.INVALID)
        case Action.QUARANTINE:
            # The body is kept either way (quarantined_payloads). A truncated body or
            # a proxy's HTML page is often a glitch, so fetch again a few times
            # before calling the answer itself unarchivable.
            streak = tracked.invalid_payload_streak + 1
            update["invalid_payload_streak"] = streak
            if streak >= settings.invalid_payload_attempts:
                return final(TrackedState.INVALID_PAYLOAD)
            delay = retry_delay(streak, None, settings, rng)
            update.update(state=TrackedState.POLLING, next_poll_at=now + timedelta(seconds=delay))
            return update
        case Action.CONFIRM_NOT_FOUND:
            deadline = update.get("deadline_at", tracked.deadline_at)
            if now >= deadline:
                # Past retention a vendor may answer 404 once the row is pruned.
                return final(TrackedState.EXPIRED)
            streak = tracked.not_found_streak + 1
            update["not_found_streak"] = streak
            if streak >= settings.not_found_confirmations:
                return final(TrackedState.NOT_FOUND)
            delay = _jitter(settings.not_found_recheck_seconds * streak, rng)
            update.update(state=TrackedState.POLLING, next_poll_at=now + timedelta(seconds=delay))
            return update
        case Action.POLL_LATER:
            update.update(
                state=TrackedState.POLLING,
                consecutive_errors=0,
                not_found_streak=0,
                invalid_payload_streak=0,
                last_error=None,
                next_poll_at=now + timedelta(seconds=pending_delay(attempts, settings, rng)),
            )
            return update
        case Action.THROTTLE:
            delay = max(outcome.retry_after or 1.0, 1.0) + rng.uniform(0, 1.0)
            update["next_poll_at"] = now + timedelta(seconds=delay)
            return update
        case Action.PAUSE_ACCOUNT:
            # The pause lives on the account (vendor_accounts), not on the id:
            # the moment the key is fixed, every id is due again.
            update["next_poll_at"] = now
            return update
        case Action.RETRY:
            errors = tracked.consecutive_errors + 1
            update["consecutive_errors"] = errors
            if errors >= settings.max_attempts:
                update["last_error"] = f"gave up after {errors} attempts: {outcome.reason}"
                return final(TrackedState.ERROR)
            delay = retry_delay(errors, outcome.retry_after, settings, rng)
            update.update(state=TrackedState.POLLING, next_poll_at=now + timedelta(seconds=delay))
            return update
        case Action.INSPECT:
            raise ValueError("INSPECT must be resolved by the vendor client before planning")
