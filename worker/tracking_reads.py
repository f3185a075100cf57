"""What operators read of tracked_ids: counts, ages and a few sample ids, for
`mentionsync status`, the alerts, the exporter's gauges and the dashboard.

The other half of the tracking repository: worker/tracking.py holds every write
and the poll path's own reads; nothing else issues SQL against tracked_ids.
Read-only, so any session will do (the caller's transaction).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, func, select, text
from sqlalchemy.orm import Session

from models import ACTIVE_STATES, SAVABLE_STATES, TrackedId, TrackedState, Vendor
from models.tracking import RECOVERED_PREDICATE
from worker.config import Settings

SAMPLE = 10

# Matches the partial index ix_tracked_ids_recovered_by_poll.
_RECOVERED = text(RECOVERED_PREDICATE)
_ACTIVE = TrackedId.state.in_(ACTIVE_STATES)


def at_risk_horizon(settings: Settings, now: datetime) -> datetime:
    """An id not archived whose deadline comes before this is at risk."""
    return now + timedelta(hours=settings.at_risk_hours)


def _at_risk(horizon: datetime) -> tuple[ColumnElement[bool], ...]:
    # The active ids, and those in `error` or `invalid_payload` that
    # `mentionsync retry` would bring back: they can still be saved.
    return (TrackedId.state.in_(SAVABLE_STATES), TrackedId.deadline_at <= horizon)


def _waiting(now: datetime) -> ColumnElement[bool]:
    return and_(
        TrackedId.state == TrackedState.TRACKED,
        TrackedId.webhook_grace_until.is_not(None),
        TrackedId.webhook_grace_until > now,
    )


def _sample(session: Session, *where: Any, order: Any, limit: int) -> list[dict[str, Any]]:
    """A few tracked ids matching `where`, as `status` and the alerts show them."""
    rows = session.execute(
        select(
            TrackedId.vendor,
            TrackedId.project_id,
            TrackedId.external_id,
            TrackedId.state,
            TrackedId.registered_at,
            TrackedId.deadline_at,
            TrackedId.last_http_status,
            TrackedId.last_error,
        )
        .where(*where)
        .order_by(order)
        .limit(limit)
    ).all()
    return [
        {
            "vendor": r.vendor.value,
            "project_id": r.project_id or None,
            "external_id": r.external_id,
            "state": r.state.value,
            "registered_at": r.registered_at.isoformat(),
            "deadline_at": r.deadline_at.isoformat(),
            "last_http_status": r.last_http_status,
            "last_error": r.last_error,
        }
        for r in rows
    ]


# --- counts -----------------------------------------------------------------------


def counts_by_state(session: Session) -> dict[tuple[Vendor, TrackedState], int]:
    """How many ids each vendor has in each state (the states it has none in are absent)."""
    stmt = select(TrackedId.vendor, TrackedId.state, func.count()).group_by(
        TrackedId.vendor, TrackedId.state
    )
    return {(vendor, state): n for vendor, state, n in session.execute(stmt)}


def count_active(session: Session) -> int:
    """Ids not yet in a final state."""
    return session.scalar(select(func.count()).where(_ACTIVE)) or 0


def count_in_state(session: Session, state: TrackedState) -> int:
    return session.scalar(select(func.count()).where(TrackedId.state == state)) or 0


def count_at_risk(session: Session, horizon: datetime) -> int:
    return session.scalar(select(func.count()).where(*_at_risk(horizon))) or 0


def count_waiting_for_webhook(session: Session, now: datetime) -> int:
    """Ids registered to expect a webhook, still inside their grace period."""
    return session.scalar(select(func.count()).where(_waiting(now))) or 0


def count_archived_by_webhook(session: Session) -> int:
    stmt = select(func.count()).where(TrackedId.webhook_archived_at.is_not(None))
    return session.scalar(stmt) or 0


def count_recovered_by_poll(session: Session) -> int:
    """Ids that expected a webhook and were archived by a poll instead."""
    return session.scalar(select(func.count()).select_from(TrackedId).where(_RECOVERED)) or 0


# --- per vendor, for the gauges -----------------------------------------------------


def _per_vendor(session: Session, value: Any, *where: Any) -> dict[Vendor, Any]:
    stmt = select(TrackedId.vendor, value).where(*where).group_by(TrackedId.vendor)
    return {vendor: x for vendor, x in session.execute(stmt) if x is not None}


def oldest_active_registration(session: Session) -> dict[Vendor, datetime]:
    return _per_vendor(session, func.min(TrackedId.registered_at), _ACTIVE)


def nearest_active_deadline(session: Session) -> dict[Vendor, datetime]:
    return _per_vendor(session, func.min(TrackedId.deadline_at), _ACTIVE)


def at_risk_by_vendor(session: Session, horizon: datetime) -> dict[Vendor, int]:
    return _per_vendor(session, func.count(), *_at_risk(horizon))


def waiting_for_webhook_by_vendor(session: Session, now: datetime) -> dict[Vendor, int]:
    return _per_vendor(session, func.count(), _waiting(now))


def recovered_by_poll_by_vendor(session: Session) -> dict[Vendor, int]:
    return _per_vendor(session, func.count(), _RECOVERED)


# --- samples ---------------------------------------------------------------------


def sample_oldest_active(session: Session, limit: int = SAMPLE) -> list[dict[str, Any]]:
    return _sample(session, _ACTIVE, order=TrackedId.registered_at, limit=limit)


def sample_nearest_deadline(session: Session, limit: int = SAMPLE) -> list[dict[str, Any]]:
    return _sample(session, _ACTIVE, order=TrackedId.deadline_at, limit=limit)


def sample_at_risk(
    session: Session, horizon: datetime, limit: int = SAMPLE
) -> list[dict[str, Any]]:
    return _sample(session, *_at_risk(horizon), order=TrackedId.deadline_at, limit=limit)


def sample_latest_final(
    session: Session, state: TrackedState, limit: int = SAMPLE
) -> list[dict[str, Any]]:
    """The ids that most recently ended in `state`."""
    return _sample(session, TrackedId.state == state, order=TrackedId.final_at.desc(), limit=limit)


def sample_recovered_by_poll(session: Session, limit: int = SAMPLE) -> list[dict[str, Any]]:
    return _sample(session, _RECOVERED, order=TrackedId.archived_at.desc(), limit=limit)


# --- the dashboard and the project view -----------------------------------------------


def refused_project_counts(
    session: Session, vendors: Sequence[Vendor]
) -> list[tuple[Vendor, str, TrackedState, int, str | None]]:
    """(vendor, project, state, ids, one reason) of the ids of `vendors` last
    answered 403, ordered by vendor and project."""
    rows = session.execute(
        select(
            TrackedId.vendor,
            TrackedId.project_id,
            TrackedId.state,
            func.count(),
            func.max(TrackedId.last_error),
        )
        .where(TrackedId.vendor.in_(vendors), TrackedId.last_http_status == 403)
        .group_by(TrackedId.vendor, TrackedId.project_id, TrackedId.state)
        .order_by(TrackedId.vendor, TrackedId.project_id)
    ).all()
    return [(r[0], r[1], r[2], r[3], r[4]) for r in rows]


def recent_archive_times(
    session: Session, since: datetime, limit: int
) -> list[tuple[datetime, datetime]]:
    """(registered_at, archived_at) of the latest ids archived since `since`."""
    rows = session.execute(
        select(TrackedId.registered_at, TrackedId.archived_at)
        .where(TrackedId.state == TrackedState.ARCHIVED, TrackedId.archived_at >= since)
        .order_by(TrackedId.archived_at.desc())
        .limit(limit)
    ).all()
    return [(start, done) for start, done in rows if start is not None and done is not None]
