"""When an id is polled next, and how many may be in flight: every rule that
sets `next_poll_at` lives here.

`plan()` turns an outcome (which action follows a response: worker/policy.py and
each vendor's table) into the tracked id's new state; it is pure, so every row
is tested without a server. The repository (worker/tracking.py) writes what
these functions decide.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from typing import Any

from models import TrackedState, VendorAccount
from worker.config import Settings
from worker.outcome import Action, Outcome, TrackedView
from worker.ratelimit import Budget


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


def lease_until(now: datetime, settings: Settings) -> datetime:
    """A claimed id's lease: due again then if its batch died."""
    return now + timedelta(seconds=settings.lease_seconds)


def in_flight_capacity(settings: Settings, budget: Budget) -> int:
    """Ids in flight at most: MAX_IN_FLIGHT, and no more than the key's rate budget
    can fetch in half a lease, so queued batches never outlive their leases."""
    fetchable = int(budget.effective_rate * settings.lease_seconds * 0.5)
    return min(settings.max_in_flight, max(settings.batch_size, fetchable))


# A batch holds at most this many round trips of one process's places for a key.
BATCH_ROUND_TRIPS = 4


def batch_ids(settings: Settings) -> int:
    """Ids per fetch batch: BATCH_SIZE, but no more than BATCH_ROUND_TRIPS round
    trips of a process's places for a key (FETCH_CONCURRENCY): a few large
    batches cannot be spread evenly over the processes that fetch them."""
    return max(1, min(settings.batch_size, BATCH_ROUND_TRIPS * settings.fetch_concurrency))


def claim_room(settings: Settings, budget: Budget, *, known: bool, held: int) -> int:
    """How many more ids of a key one claim may take, with `held` in flight."""
    if not known:
        # This process has not heard from the key yet: `budget` is the plan's safe
        # default, which other processes' ids in flight may already exceed. One
        # batch at a time (within MAX_IN_FLIGHT) lets it learn the budget from the
        # answers instead of never claiming again.
        return min(settings.batch_size, settings.max_in_flight - held)
    return in_flight_capacity(settings, budget) - held


def released_until(
    now: datetime,
    settings: Settings,
    account: VendorAccount | None,
    delay: float | None = None,
) -> datetime:
    """When ids handed back unfetched are due again: after `delay` (default: a
    tick), and not before the key's pause ends."""
    later = now + timedelta(seconds=settings.poll_tick_seconds if delay is None else delay)
    if account is not None and account.paused_until and account.paused_until > later:
        later = account.paused_until
    return later


def webhook_grace_until(now: datetime, deadline: datetime, settings: Settings) -> datetime:
    """Until when an id expecting a webhook is left unpolled.

    WEBHOOK_GRACE_SECONDS after registration, but never into the at-risk window
    before its deadline: saving one request is not worth risking the answer.
    """
    latest = deadline - timedelta(hours=settings.at_risk_hours)
    return max(now, min(now + timedelta(seconds=settings.webhook_grace_seconds), latest))
