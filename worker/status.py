"""What `mentionsync status` reports: the truth about every tracked id."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import ColumnElement, and_, func, select, text
from sqlalchemy.orm import Session

from models import (
    ACTIVE_STATES,
    SAVABLE_STATES,
    QuarantinedPayload,
    TrackedId,
    TrackedState,
    Vendor,
)
from models.tracking import RECOVERED_PREDICATE
from worker.accounts import account_gate
from worker.config import Settings
from worker.heartbeat import describe, read_state
from worker.vendors.registry import VENDORS

SAMPLE = 10


def at_risk(settings: Settings, now: datetime) -> tuple[ColumnElement[bool], ...]:
    """Ids not archived whose deadline is within AT_RISK_HOURS, and that can still
    be saved: the active ones, and those in `error` or `invalid_payload` that
    `mentionsync retry` would bring back."""
    return (
        TrackedId.state.in_(SAVABLE_STATES),
        TrackedId.deadline_at <= now + timedelta(hours=settings.at_risk_hours),
    )


def sample_ids(
    session: Session, *where: Any, order: Any, limit: int = SAMPLE
) -> list[dict[str, Any]]:
    """A few tracked ids matching `where`, as shown by `status` and in alerts."""
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


def collect_status(session: Session, settings: Settings, now: datetime) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {
        v.value: {s.value: 0 for s in TrackedState} for v in Vendor
    }
    for vendor, state, n in session.execute(
        select(TrackedId.vendor, TrackedId.state, func.count()).group_by(
            TrackedId.vendor, TrackedId.state
        )
    ):
        counts[vendor.value][state.value] = n
    totals = {s.value: sum(c[s.value] for c in counts.values()) for s in TrackedState}

    active = TrackedId.state.in_(ACTIVE_STATES)
    risky = at_risk(settings, now)
    at_risk_count = session.scalar(select(func.count()).where(*risky)) or 0

    accounts = {}
    for vendor in Vendor:
        reason = account_gate(session, vendor, settings, now)
        accounts[vendor.value] = {
            "configured": settings.api_key(vendor) is not None,
            "key_fingerprint": settings.key_fingerprint(vendor),
            "base_url": settings.base_url(vendor),
            "paused": reason,
        }

    oldest = sample_ids(session, active, order=TrackedId.registered_at, limit=1)
    nearest = sample_ids(session, active, order=TrackedId.deadline_at, limit=1)
    return {
        "now": now.isoformat(),
        "counts": counts,
        "totals": totals,
        "total": sum(totals.values()),
        "pending": sum(totals[s.value] for s in ACTIVE_STATES),
        "oldest_pending": oldest[0] if oldest else None,
        "nearest_deadline": nearest[0] if nearest else None,
        "at_risk": {
            "hours": settings.at_risk_hours,
            "count": at_risk_count,
            "ids": sample_ids(session, *risky, order=TrackedId.deadline_at),
        },
        "lost_to_expiry": {
            "count": totals[TrackedState.EXPIRED.value],
            "ids": sample_ids(
                session, TrackedId.state == TrackedState.EXPIRED, order=TrackedId.final_at.desc()
            ),
        },
        "errors": {
            "count": totals[TrackedState.ERROR.value],
            "ids": sample_ids(
                session, TrackedId.state == TrackedState.ERROR, order=TrackedId.final_at.desc()
            ),
        },
        "quarantined": session.scalar(select(func.count()).select_from(QuarantinedPayload)) or 0,
        "accounts": accounts,
        "refused_projects": refused_projects(session),
        "webhooks": _webhooks(session, settings, now),
        # Ages by the database's clock: see worker/heartbeat.py.
        "scheduler": describe(read_state(session.connection()), settings),
    }


def refused_projects(session: Session) -> list[dict[str, Any]]:
    """Projects whose ids were last answered 403 (mistyped or revoked), for the
    vendors whose requests name a project: per project, its ids by state and one
    reason. The key keeps working for every other project; these ids use up
    their attempts and end in `error`."""
    vendors = [v for v, spec in VENDORS.items() if spec.needs_project]
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
    projects: dict[tuple[str, str], dict[str, Any]] = {}
    for vendor, project, state, n, reason in rows:
        entry = projects.setdefault(
            (vendor.value, project),
            {"vendor": vendor.value, "project_id": project, "ids": 0, "states": {}},
        )
        entry["ids"] += n
        entry["states"][state.value] = n
        entry.setdefault("reason", reason)
    return list(projects.values())


def _webhooks(session: Session, settings: Settings, now: datetime) -> dict[str, Any]:
    waiting = session.scalar(select(func.count()).where(_waiting(now))) or 0
    by_webhook = (
        session.scalar(select(func.count()).where(TrackedId.webhook_archived_at.is_not(None))) or 0
    )
    recovered = session.scalar(select(func.count()).select_from(TrackedId).where(_RECOVERED)) or 0
    return {
        "grace_seconds": settings.webhook_grace_seconds,
        "waiting": waiting,
        "archived_by_webhook": by_webhook,
        "recovered_by_poll": recovered,
        "recovered_ids": sample_ids(session, _RECOVERED, order=TrackedId.archived_at.desc()),
    }


# Matches the partial index ix_tracked_ids_recovered_by_poll.
_RECOVERED = text(RECOVERED_PREDICATE)


def _waiting(now: datetime) -> Any:
    return and_(
        TrackedId.state == TrackedState.TRACKED,
        TrackedId.webhook_grace_until.is_not(None),
        TrackedId.webhook_grace_until > now,
    )


def gauge_values(
    session: Session, settings: Settings, now: datetime
) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The database gauges of the metrics exporter, by vendor (and state)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    counts = {(v, s): 0 for v in Vendor for s in TrackedState}
    for vendor, state, n in session.execute(
        select(TrackedId.vendor, TrackedId.state, func.count()).group_by(
            TrackedId.vendor, TrackedId.state
        )
    ):
        counts[(vendor, state)] = n
    out["ids"] = [({"vendor": v.value, "state": s.value}, n) for (v, s), n in counts.items()]

    def per_vendor(name: str, stmt: Any, value: Any = float) -> None:
        found = {vendor: x for vendor, x in session.execute(stmt) if x is not None}
        out[name] = [({"vendor": v.value}, value(found[v]) if v in found else 0.0) for v in Vendor]

    active = TrackedId.state.in_(ACTIVE_STATES)
    by_vendor = TrackedId.vendor
    per_vendor(
        "oldest_pending_age_seconds",
        select(by_vendor, func.min(TrackedId.registered_at)).where(active).group_by(by_vendor),
        lambda t: max(0.0, (now - t).total_seconds()),
    )
    per_vendor(
        "nearest_deadline_seconds",
        select(by_vendor, func.min(TrackedId.deadline_at)).where(active).group_by(by_vendor),
        lambda t: (t - now).total_seconds(),
    )
    per_vendor(
        "at_risk_ids",
        select(by_vendor, func.count()).where(*at_risk(settings, now)).group_by(by_vendor),
    )
    out["lost_to_expiry_ids"] = [
        ({"vendor": v.value}, counts[(v, TrackedState.EXPIRED)]) for v in Vendor
    ]
    out["error_ids"] = [({"vendor": v.value}, counts[(v, TrackedState.ERROR)]) for v in Vendor]
    per_vendor(
        "webhook_waiting_ids",
        select(by_vendor, func.count()).where(_waiting(now)).group_by(by_vendor),
    )
    per_vendor(
        "webhook_recovered_by_poll_ids",
        select(by_vendor, func.count()).where(_RECOVERED).group_by(by_vendor),
    )
    out["account_paused"] = [
        ({"vendor": v.value}, 0.0 if account_gate(session, v, settings, now) is None else 1.0)
        for v in Vendor
    ]
    out["quarantined_payloads"] = [
        ({}, session.scalar(select(func.count()).select_from(QuarantinedPayload)) or 0)
    ]
    scheduler = describe(read_state(session.connection()), settings)
    # No sample until one was recorded: an age of 0 would claim a sweep just ran.
    for name in ("last_dispatch_age_seconds", "last_tick_age_seconds"):
        age = scheduler[name]
        out[f"scheduler_{name}"] = [({}, age)] if age is not None else []
    out["scheduler_beats_ticking"] = [({}, scheduler["beats_ticking"])]
    return out


def count_active(session: Session) -> int:
    """Ids not yet in a final state."""
    return session.scalar(select(func.count()).where(TrackedId.state.in_(ACTIVE_STATES))) or 0


def escaped(value: Any) -> Any:
    """`value` with every string escaped for rich markup: ids, errors and account
    reasons (the vendors' text, the user's ids) print as they are, and cannot be
    read as styles or raise MarkupError."""
    if isinstance(value, str):
        return escape(value)
    if isinstance(value, dict):
        return {k: escaped(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [escaped(v) for v in value]
    return value


def render_status(raw: dict[str, Any], out: Console) -> None:
    """The human-readable `mentionsync status`."""
    report = escaped(raw)
    vendors = list(report["counts"])
    table = Table(title="tracked ids")
    table.add_column("state")
    for vendor in vendors:
        table.add_column(vendor, justify="right")
    table.add_column("all", justify="right", style="bold")
    for state in TrackedState:
        table.add_row(
            state.value,
            *(str(report["counts"][v][state.value]) for v in vendors),
            str(report["totals"][state.value]),
        )
    table.add_row(
        "total",
        *(str(sum(report["counts"][v].values())) for v in vendors),
        str(report["total"]),
        style="bold",
    )
    out.print(table)

    def line(label: str, item: dict[str, Any] | None, key: str) -> None:
        if item is None:
            out.print(f"{label}: none")
        else:
            out.print(
                f"{label}: {item['vendor']} {item['external_id']} ({key} {item[key]})",
                highlight=False,
            )

    out.print(f"pending: {report['pending']}")
    line("oldest pending", report["oldest_pending"], "registered_at")
    line("nearest deadline", report["nearest_deadline"], "deadline_at")
    risk = report["at_risk"]
    style = "red" if risk["count"] else "green"
    out.print(
        f"[{style}]at risk (deadline within {risk['hours']:g} h, not archived): {risk['count']}[/]"
    )
    for item in risk["ids"]:
        # An id in `error` or `invalid_payload` waits for `mentionsync retry`.
        waits = "" if item["state"] in ACTIVE_STATES else f" ({item['state']}: retry it)"
        out.print(
            f"  {item['vendor']} {item['external_id']} deadline {item['deadline_at']}{waits}",
            highlight=False,
        )
    lost = report["lost_to_expiry"]
    out.print(f"[{'red' if lost['count'] else 'green'}]lost to expiry (410): {lost['count']}[/]")
    for item in lost["ids"]:
        out.print(f"  {item['vendor']} {item['external_id']}", highlight=False)
    errors = report["errors"]
    if errors["count"]:
        out.print(f"[red]gave up after retries (error): {errors['count']}[/] — `mentionsync retry`")
        for item in errors["ids"]:
            out.print(
                f"  {item['vendor']} {item['external_id']}: {item['last_error']}", highlight=False
            )
    if report["quarantined"]:
        out.print(f"[yellow]quarantined bodies: {report['quarantined']}[/]")
    for project in report["refused_projects"]:
        states = ", ".join(f"{n} {state}" for state, n in project["states"].items())
        out.print(
            f"[red]{project['vendor']} project {project['project_id']} refused (403)[/]: "
            f"{project['ids']} ids ({states}): {project['reason']}",
            highlight=False,
            soft_wrap=True,
        )
    hooks = report["webhooks"]
    if hooks["waiting"] or hooks["archived_by_webhook"] or hooks["recovered_by_poll"]:
        out.print(
            f"webhooks: {hooks['archived_by_webhook']} archived from deliveries, "
            f"{hooks['waiting']} waiting (grace {hooks['grace_seconds']:g} s), "
            f"{hooks['recovered_by_poll']} recovered by polling (delivery missed)",
            highlight=False,
            soft_wrap=True,
        )
    render_scheduler(raw["scheduler"], out)  # escapes for itself
    for vendor, account in report["accounts"].items():
        polling = account["paused"] or "polling"
        out.print(
            f"{vendor}: key {'set' if account['configured'] else 'MISSING'} "
            f"(fingerprint {account['key_fingerprint']}), {account['base_url']}: {polling}",
            highlight=False,
        )


def render_scheduler(scheduler: dict[str, Any], out: Console) -> None:
    """The scheduler's line(s) of `mentionsync status`."""
    age = scheduler["last_dispatch_age_seconds"]
    tick = scheduler["last_tick_age_seconds"]
    ticking = scheduler["beats_ticking"]
    beats = f"{ticking} beat{'s' if ticking != 1 else ''} ticking"
    if tick is not None:
        beats += f", newest tick {tick:g} s ago"
    if scheduler["stalled"]:
        out.print(
            f"[red]scheduler: STALLED: {escape(scheduler['reason'])}[/]",
            highlight=False,
            soft_wrap=True,
        )
    elif age is None:
        out.print(
            f"[yellow]scheduler: no dispatch sweep recorded yet ({beats})[/]", highlight=False
        )
    else:
        out.print(
            f"[green]scheduler: last dispatch sweep {age:g} s ago ({beats})[/]", highlight=False
        )
    if ticking > 1:
        names = ", ".join(
            b["instance"]
            for b in scheduler["beats"]
            if (b["last_tick_age_seconds"] or 0) <= scheduler["stall_seconds"]
        )
        out.print(
            f"[yellow]  {ticking} beats are running ({escape(names)}): safe, but one is enough[/]",
            highlight=False,
        )
