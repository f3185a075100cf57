"""Alerts before answers expire: a JSON POST to ALERT_WEBHOOK_URL, rate-limited.

Two kinds:
- `at_risk`: ids not archived whose deadline is within AT_RISK_HOURS: active, or
  in `error`/`invalid_payload` where `mentionsync retry` can still save them. Sent while
  there are any, at most once per ALERT_INTERVAL_SECONDS.
- `lost_to_expiry`: ids recorded `expired` since the last alert of this kind
  (only new losses alert; the count is remembered). Also at most once per interval.

Beat runs the check (`mentionsync.housekeeping`). The rate limit lives in the
`alert_state` table and a slot is taken with one conditional UPDATE, so two beats,
or a beat and a manual run, never both send.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import delete, func, or_, select, update
from sqlalchemy.orm import Session

from models import AlertState, TrackedId, TrackedState, WebhookDelivery, utcnow
from worker.config import Settings
from worker.db import session_scope
from worker.status import at_risk, sample_ids
from worker.store import dialect_insert

log = logging.getLogger("mentionsync.alerts")

SAMPLE = 20
Sender = Callable[[str, dict[str, Any]], None]


def post_json(url: str, payload: dict[str, Any]) -> None:
    """Send one alert; raises on a transport error or a non-2xx answer."""
    with httpx.Client(timeout=httpx.Timeout(10.0), follow_redirects=False) as client:
        response = client.post(url, json=payload)
        response.raise_for_status()


def _candidates(session: Session, settings: Settings, now: datetime) -> list[dict[str, Any]]:
    """Alerts that would be sent if their rate limit allowed, with their value."""
    found = []
    risky_ids = at_risk(settings, now)
    risky = session.scalar(select(func.count()).where(*risky_ids)) or 0
    if risky:
        found.append(
            {
                "kind": "at_risk",
                "severity": "warning",
                "value": risky,
                "text": f"mentionsync: {risky} ids are not archived and reach their deadline "
                f"within {settings.at_risk_hours:g} h",
                "ids": sample_ids(session, *risky_ids, order=TrackedId.deadline_at, limit=SAMPLE),
            }
        )
    expired = TrackedState.EXPIRED
    lost = session.scalar(select(func.count()).where(TrackedId.state == expired)) or 0
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
                "ids": sample_ids(
                    session,
                    TrackedId.state == expired,
                    order=TrackedId.final_at.desc(),
                    limit=SAMPLE,
                ),
            }
        )
    return found


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
    settings: Settings, *, now: datetime | None = None, send: Sender = post_json
) -> list[dict[str, Any]]:
    """Send the alerts that are due; return what was sent."""
    if settings.alert_webhook_url is None:
        return []
    url = settings.alert_webhook_url.get_secret_value()
    now = now or utcnow()
    with session_scope() as session:
        due = []
        for alert in _candidates(session, settings, now):
            previous = session.get(AlertState, alert["kind"])
            before = (previous.last_sent_at, previous.last_value) if previous else (None, 0)
            if _take_slot(
                session, alert["kind"], alert["value"], now, settings.alert_interval_seconds
            ):
                due.append((alert, before))
    sent = []
    for alert, (last_sent_at, last_value) in due:
        payload = {
            "source": "mentionsync",
            "generated_at": now.isoformat(),
            **{k: v for k, v in alert.items() if k != "value"},
            "count": alert["value"],
        }
        try:
            send(url, payload)
        except Exception as exc:
            # Give the slot back, so the next check tries again instead of
            # staying silent for a whole interval.
            with session_scope() as session:
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
            "alert sent: %s", alert["text"], extra={"count": alert["value"], "kind": alert["kind"]}
        )
        sent.append(payload)
    return sent


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


def prune_deliveries(settings: Settings, *, now: datetime | None = None) -> int:
    """Forget webhook events older than the retention window: the vendor cannot
    redeliver an answer it has deleted, so their ids are not needed to deduplicate."""
    cutoff = (now or utcnow()) - settings.retention
    with session_scope() as session:
        result = session.execute(
            delete(WebhookDelivery).where(WebhookDelivery.received_at < cutoff)
        )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def _describe(exc: Exception) -> str:
    # Never the URL: a chat webhook's URL is its credential.
    if isinstance(exc, httpx.HTTPStatusError):
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__
