"""The retry policy table and the state plan, without a server."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from itertools import accumulate

import pytest

from models import TrackedState, Vendor
from worker.config import Settings
from worker.outcome import Action, Outcome, TrackedView
from worker.policy import POLICIES, rule_for
from worker.scheduling import plan

NOW = datetime(2026, 11, 22, 12, tzinfo=UTC)
SETTINGS = Settings(
    max_attempts=3,
    not_found_confirmations=3,
    invalid_payload_attempts=3,
    poll_interval_seconds=20,
    poll_max_interval_seconds=300,
    retry_base_seconds=2,
    retry_max_seconds=600,
    not_found_recheck_seconds=60,
)


def view(**kw: object) -> TrackedView:
    base: dict[str, object] = {
        "id": 1,
        "vendor": Vendor.MENTIONSAPI,
        "project_id": "",
        "external_id": "ask_1",
        "deadline_at": NOW + timedelta(days=20),
        "attempts": 0,
        "consecutive_errors": 0,
        "not_found_streak": 0,
        "invalid_payload_streak": 0,
        "remote_created_at": None,
    }
    base.update(kw)
    return TrackedView(**base)  # type: ignore[arg-type]


def apply(outcome: Outcome, **kw: object) -> dict:  # type: ignore[type-arg]
    return plan(view(**kw), outcome, now=NOW, settings=SETTINGS, rng=random.Random(1))


@pytest.mark.parametrize(
    ("status", "action"),
    [
        (200, Action.INSPECT),
        (202, Action.INSPECT),
        (400, Action.REJECT),
        (401, Action.PAUSE_ACCOUNT),
        (403, Action.PAUSE_ACCOUNT),
        (404, Action.CONFIRM_NOT_FOUND),
        (410, Action.EXPIRE),
        (422, Action.REJECT),
        (429, Action.THROTTLE),
        (500, Action.RETRY),
        (503, Action.RETRY),
        (418, Action.RETRY),
        (None, Action.RETRY),
    ],
)
def test_mentionsapi_table(status: int | None, action: Action) -> None:
    assert rule_for(Vendor.MENTIONSAPI, status).action is action


def test_mentionlab_has_no_202_but_the_same_errors() -> None:
    assert rule_for(Vendor.MENTIONLAB, 202).action is Action.RETRY
    assert rule_for(Vendor.MENTIONLAB, 503).action is Action.RETRY
    assert set(POLICIES[Vendor.MENTIONLAB]) - {202} <= set(POLICIES[Vendor.MENTIONSAPI])


def test_pending_backs_off_and_never_burns_error_budget() -> None:
    delays = []
    for attempts in range(8):
        u = apply(Outcome(Action.POLL_LATER, 202), attempts=attempts, consecutive_errors=2)
        assert u["state"] is TrackedState.POLLING and u["consecutive_errors"] == 0
        delays.append((u["next_poll_at"] - NOW).total_seconds())
    assert 16 <= delays[0] <= 24  # poll_interval +/- 20 %
    assert 240 <= delays[-1] <= 360  # capped at poll_max_interval +/- 20 %
    # About eight polls fit in the 15 minutes a job usually takes.
    assert 6 <= sum(1 for t in accumulate(delays) if t <= 900) <= 9


def test_retry_backs_off_then_gives_up_with_the_last_error() -> None:
    u = apply(Outcome(Action.RETRY, 500, reason="HTTP 500 internal_error"), consecutive_errors=0)
    assert (u["consecutive_errors"], u["attempts"]) == (1, 1)
    assert u["next_poll_at"] > NOW and "state" in u and u["state"] is TrackedState.POLLING
    u = apply(Outcome(Action.RETRY, 503, retry_after=120), consecutive_errors=1)
    assert (u["next_poll_at"] - NOW).total_seconds() >= 120  # Retry-After honoured
    u = apply(Outcome(Action.RETRY, 500, reason="HTTP 500"), consecutive_errors=2)
    assert u["state"] is TrackedState.ERROR
    assert u["last_error"] == "gave up after 3 attempts: HTTP 500"


def test_throttle_burns_no_attempt_and_waits_retry_after() -> None:
    u = apply(Outcome(Action.THROTTLE, 429, retry_after=30), attempts=4, consecutive_errors=1)
    assert (u["attempts"], "consecutive_errors" in u, "state" in u) == (4, False, False)
    assert u["next_poll_at"] >= NOW + timedelta(seconds=30)


def test_refused_key_burns_no_attempt_and_leaves_the_pause_to_the_account() -> None:
    u = apply(Outcome(Action.PAUSE_ACCOUNT, 401), attempts=4, consecutive_errors=1)
    assert (u["attempts"], "consecutive_errors" in u, "state" in u) == (4, False, False)
    assert u["next_poll_at"] == NOW


def test_not_found_needs_confirmations() -> None:
    u = apply(Outcome(Action.CONFIRM_NOT_FOUND, 404))
    assert (u["state"], u["not_found_streak"]) == (TrackedState.POLLING, 1)
    u = apply(Outcome(Action.CONFIRM_NOT_FOUND, 404), not_found_streak=2)
    assert u["state"] is TrackedState.NOT_FOUND and u["final_at"] == NOW


def test_not_found_past_the_deadline_is_expiry() -> None:
    u = apply(Outcome(Action.CONFIRM_NOT_FOUND, 404), deadline_at=NOW - timedelta(seconds=1))
    assert u["state"] is TrackedState.EXPIRED


@pytest.mark.parametrize(
    ("action", "state"),
    [
        (Action.EXPIRE, TrackedState.EXPIRED),
        (Action.REJECT, TrackedState.INVALID),
    ],
)
def test_final_outcomes(action: Action, state: TrackedState) -> None:
    u = apply(Outcome(action, 410))
    assert (u["state"], u["final_at"], u["lease_token"]) == (state, NOW, None)


def test_unarchivable_body_is_fetched_again_before_invalid_payload() -> None:
    # SETTINGS.invalid_payload_attempts is 3: two re-fetches, then give up.
    # Transient errors in between have their own counter and do not add up.
    u = apply(Outcome(Action.QUARANTINE, 200), consecutive_errors=2)
    assert (u["state"], u["invalid_payload_streak"], "final_at" in u) == (
        TrackedState.POLLING,
        1,
        False,
    )
    assert "consecutive_errors" not in u and u["next_poll_at"] > NOW
    u = apply(Outcome(Action.QUARANTINE, 200), invalid_payload_streak=2)
    assert (u["state"], u["final_at"]) == (TrackedState.INVALID_PAYLOAD, NOW)
    # A good body ends the streak.
    assert (
        apply(Outcome(Action.POLL_LATER, 202), invalid_payload_streak=2)["invalid_payload_streak"]
        == 0
    )


def test_archive_records_the_vendor_creation_time() -> None:
    created = NOW - timedelta(days=2)
    u = apply(
        Outcome(Action.ARCHIVE, 200, final_state=TrackedState.ARCHIVED, remote_created_at=created)
    )
    assert u["state"] is TrackedState.ARCHIVED and u["archived_at"] == NOW
    assert u["deadline_at"] == created + timedelta(days=30)
