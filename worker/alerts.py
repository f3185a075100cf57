"""Alerts before answers expire, or when the scheduler stalls: a JSON POST to
ALERT_WEBHOOK_URL, rate-limited.

Three kinds:
- `at_risk`: ids not archived whose deadline is within AT_RISK_HOURS: active, or
  in `error`/`invalid_payload` where `mentionsync retry` can still save them. Sent while
  there are any, at most once per ALERT_INTERVAL_SECONDS.
- `lost_to_expiry`: ids recorded `expired` since the last alert of this kind
  (only new losses alert; the count is remembered). Also at most once per interval.
- `scheduler_stalled`: no dispatch sweep ran for SCHEDULER_STALL_SECONDS: beat
  died or hung (critical), or it ticks but no worker runs its sweeps (warning).
  At most once per interval while it lasts; when sweeps run again, one
  `scheduler_recovered` is sent and the slot is freed, so the next stall alerts
  at once.

Beat runs the check (`mentionsync.housekeeping`); the stall is also checked by a
watchdog in every worker's main process (worker/beat.py), since a dead beat
schedules no housekeeping. The rate limit lives in the `alert_state` table and a
slot is taken with one conditional UPDATE, so two beats, several watchdogs, or a
beat and a manual run, never both send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, or_, update
from sqlalchemy.orm import Session

from models import AlertState, TrackedState, WebhookDelivery, utcnow
from worker import tracking_reads as reads
from worker.config import Settings
from worker.heartbeat import read_state, stall_after, stall_reason
from worker.store import dialect_insert

log = logging.getLogger("mentionsync.alerts")

SAMPLE = 20
Sender = Callable[[str, dict[str, Any]], None]
# Where a check reads and writes (one transaction per call): the runtime's
# database (`db.session`), or the watchdog's own engine.
Scope = Callable[[], AbstractContextManager[Session]]

STALLED = "scheduler_stalled"
RECOVERED = "scheduler_recovered"
ID_KINDS = frozenset({"at_risk", "lost_to_expiry"})
ALL_KINDS = ID_KINDS | {STALLED}


def post_json(url: str, payload: dict[str, Any]) -> None:
    """Send one alert; raises on a transport error or a non-2xx answer."""
    with httpx.Client(timeout=httpx.Timeout(10.0), follow_redirects=False) as client:
        response = client.post(url, json=payload)
        response.raise_for_status()


def _candidates(session: Session, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """Alerts that would be sent if their rate limit allowed, with their value."""
    found = []
    horizon = reads.at_risk_horizon(settings, now)
    risky = reads.count_at_risk(session, horizon)
    if risky:
        found.append(
            {
                "kind": "at_risk",
                "severity": "warning",
                "value": risky,
                "text": f"mentionsync: {risky} ids are not archived and reach their deadline "
                f"within {settings.at_risk_hours:g} h",
                "ids": reads.sample_at_risk(session, horizon, limit=SAMPLE),
            }
        )
    expired = TrackedState.EXPIRED
    lost = reads.count_in_state(session, expired)
    state = session.get(AlertState, "lost_to_expiry")
    known = state.last_value if state is not None else 0
    if lost < known and state is not None:
        # `retry` put expired ids back: forget them, so a second loss alerts again.
        state.last_value = lost
        state.updated_at = now
    if lost > known:
        found.append(
            {
                "kind": "lost_to_expiry",
                "severity": "critical",
                "value": lost,
                "new": lost - known,
                "text": f"mentionsync: {lost - known} more ids were lost: the vendor's retention "
                f"passed before they were archived ({lost} in all)",
                "ids": reads.sample_latest_final(session, expired, limit=SAMPLE),
            }
        )
    return found


def _scheduler_candidate(
    session: Session, settings: Settings, now: datetime, since: datetime | None
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the stall alert to send if its slot is free, the recovery notice to send now)."""
    state = read_state(session.connection())
    reason = stall_reason(state, settings, since=since)
    age = state.dispatch_age(since)
    last = state.age(state.last_dispatch_at)
    if reason is None:
        if last is None or last > stall_after(settings):
            # Not a stall for this caller yet (it just began watching), but no
            # recovery either: leave the slot to whoever alerted.
            return None, None
        # Sweeps run: free the slot so that the next stall alerts at once. One
        # conditional UPDATE, so one process only sends the recovery notice.
        cleared = session.execute(
            update(AlertState)
            .where(AlertState.kind == STALLED, AlertState.last_sent_at.is_not(None))
            .values(last_sent_at=None, updated_at=now)
            .returning(AlertState.last_value)
            .execution_options(synchronize_session=False)
        ).first()
        if cleared is None:
            return None, None
        return None, {
            "kind": RECOVERED,
            "severity": "info",
            "value": int(last),
            "count": 0,
            "text": f"mentionsync: dispatch sweeps run again (the last one {last:.0f} s ago) "
            f"after a stall of at least {cleared.last_value} s",
            "ids": [],
        }
    # The last sweep's real age when there was one (`since` may count less).
    age = last if last is not None else (age or 0.0)
    tick = state.age(state.last_tick_at)
    return {
        "kind": STALLED,
        # A beat that ticks while its sweeps wait is busy workers more often than
        # a broken deployment; no beat ticking is always one.
        "severity": "warning" if tick is not None and tick <= stall_after(settings) else "critical",
        "value": int(age),
        "count": 0,
        "age_seconds": round(age, 1),
        "stall_seconds": stall_after(settings),
        "last_dispatch_at": _iso(state.last_dispatch_at),
        "last_tick_at": _iso(state.last_tick_at),
        "text": f"mentionsync: the scheduler is stalled, ids are not being polled: {reason}",
        "ids": [],
    }, None


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _take_slot(session: Session, kind: str, value: int, now: datetime, interval: float) -> bool:
    """Record that `kind` is sent now, unless it was sent within `interval` seconds."""
    session.execute(
        dialect_insert(session, AlertState.__table__)
        .values(kind=kind, last_sent_at=None, last_value=0, updated_at=now)
        .on_conflict_do_nothing()
    )
    taken = session.execute(
        update(AlertState)
        .where(
            AlertState.kind == kind,
            or_(
                AlertState.last_sent_at.is_(None),
                AlertState.last_sent_at <= now - timedelta(seconds=interval),
            ),
        )
        .values(last_sent_at=now, last_value=value, updated_at=now)
        .returning(AlertState.kind)
        .execution_options(synchronize_session=False)
    ).first()
    return taken is not None


def check_alerts(
    scope: Scope,
    settings: Settings,
    *,
    now: datetime | None = None,
    send: Sender = post_json,
    kinds: Collection[str] = ALL_KINDS,
    since: datetime | None = None,
) -> list[dict[str, Any]]:
    """Send the alerts of `kinds` that are due; return what was sent.

    `since`: when the caller began watching (database clock), so that a scheduler
    that never dispatched at all counts as stalled once that is long enough ago.
    """
    if settings.alert_webhook_url is None:
        return []
    url = settings.alert_webhook_url.get_secret_value()
    now = now or utcnow()
    notices = []
    with scope() as session:
        candidates = []
        if ID_KINDS & set(kinds):
            candidates = [c for c in _candidates(session, settings, now) if c["kind"] in kinds]
        if STALLED in kinds:
            stalled, recovered = _scheduler_candidate(session, settings, now, since)
            candidates += [stalled] if stalled else []
            notices += [recovered] if recovered else []
        due = []
        for alert in candidates:
            previous = session.get(AlertState, alert["kind"])
            before = (previous.last_sent_at, previous.last_value) if previous else (None, 0)
            if _take_slot(
                session, alert["kind"], alert["value"], now, settings.alert_interval_seconds
            ):
                due.append((alert, before))
    sent = []
    for alert in notices:
        payload = _payload(alert, now)
        try:
            send(url, payload)
        except Exception as exc:
            # A recovery notice is not retried: the next stall alerts anyway.
            log.error("could not send the %s alert: %s", alert["kind"], _describe(exc))
            continue
        log.warning("alert sent: %s", alert["text"], extra={"kind": alert["kind"]})
        sent.append(payload)
    for alert, (last_sent_at, last_value) in due:
        payload = _payload(alert, now)
        try:
            send(url, payload)
        except Exception as exc:
            # Give the slot back, so the next check tries again instead of
            # staying silent for a whole interval.
            with scope() as session:
                session.execute(
                    update(AlertState)
                    .where(AlertState.kind == alert["kind"], AlertState.last_sent_at == now)
                    .values(last_sent_at=last_sent_at, last_value=last_value)
                )
            log.error(
                "could not send the %s alert: %s",
                alert["kind"],
                _describe(exc),
                extra={"count": alert["value"]},
            )
            continue
        log.warning(
            "alert sent: %s",
            alert["text"],
            extra={"count": payload["count"], "kind": alert["kind"]},
        )
        sent.append(payload)
    return sent


def _payload(alert: dict[str, Any], now: datetime) -> dict[str, Any]:
    # Every alert has the same keys (`count`: ids concerned); kinds may add more.
    return {
        "source": "mentionsync",
        "generated_at": now.isoformat(),
        "count": alert["value"],
        **{k: v for k, v in alert.items() if k != "value"},
    }


def send_test_alert(settings: Settings, send: Sender = post_json) -> str | None:
    """Send a test alert now (not rate-limited); the error, if it failed."""
    if settings.alert_webhook_url is None:
        return "ALERT_WEBHOOK_URL is not set"
    payload = {
        "source": "mentionsync",
        "generated_at": utcnow().isoformat(),
        "kind": "test",
        "severity": "info",
        "count": 0,
        "text": "mentionsync: test alert from `mentionsync doctor --test-alert`",
        "ids": [],
    }
    try:
        send(settings.alert_webhook_url.get_secret_value(), payload)
    except Exception as exc:
        return _describe(exc)
    return None


def prune_deliveries(scope: Scope, settings: Settings, *, now: datetime | None = None) -> int:
    """Forget webhook events older than the retention window: the vendor cannot
    redeliver an answer it has deleted, so their ids are not needed to deduplicate."""
    cutoff = (now or utcnow()) - settings.retention
    with scope() as session:
        result = session.execute(
            delete(WebhookDelivery).where(WebhookDelivery.received_at < cutoff)
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]  # a DELETE's CursorResult


def _describe(exc: Exception) -> str:
    # Never the URL: a chat webhook's URL is its credential.
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__
