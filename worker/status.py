"""What `mentionsync status` reports: the truth about every tracked id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from models import ACTIVE_STATES, QuarantinedPayload, TrackedState, Vendor
from worker import tracking_reads as reads
from worker.accounts import account_gate
from worker.config import Settings
from worker.heartbeat import describe, read_state
from worker.vendors.registry import VENDORS


def collect_status(session: Session, settings: Settings, now: datetime) -> dict[str, Any]:
    counts: dict[str, dict[str, int]] = {
        v.value: {s.value: 0 for s in TrackedState} for v in Vendor
    }
    for (vendor, state), n in reads.counts_by_state(session).items():
        counts[vendor.value][state.value] = n
    totals = {s.value: sum(c[s.value] for c in counts.values()) for s in TrackedState}

    horizon = reads.at_risk_horizon(settings, now)
    at_risk_count = reads.count_at_risk(session, horizon)

    accounts = {}
    for vendor in Vendor:
        reason = account_gate(session, vendor, settings, now)
        accounts[vendor.value] = {
            "configured": settings.api_key(vendor) is not None,
            "key_fingerprint": settings.key_fingerprint(vendor),
            "base_url": settings.base_url(vendor),
            "paused": reason,
        }

    oldest = reads.sample_oldest_active(session, limit=1)
    nearest = reads.sample_nearest_deadline(session, limit=1)
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
            "ids": reads.sample_at_risk(session, horizon),
        },
        "lost_to_expiry": {
            "count": totals[TrackedState.EXPIRED.value],
            "ids": reads.sample_latest_final(session, TrackedState.EXPIRED),
        },
        "errors": {
            "count": totals[TrackedState.ERROR.value],
            "ids": reads.sample_latest_final(session, TrackedState.ERROR),
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
    projects: dict[tuple[str, str], dict[str, Any]] = {}
    for vendor, project, state, n, reason in reads.refused_project_counts(session, vendors):
        entry = projects.setdefault(
            (vendor.value, project),
            {"vendor": vendor.value, "project_id": project, "ids": 0, "states": {}},
        )
        entry["ids"] += n
        entry["states"][state.value] = n
        entry.setdefault("reason", reason)
    return list(projects.values())


def _webhooks(session: Session, settings: Settings, now: datetime) -> dict[str, Any]:
    return {
        "grace_seconds": settings.webhook_grace_seconds,
        "waiting": reads.count_waiting_for_webhook(session, now),
        "archived_by_webhook": reads.count_archived_by_webhook(session),
        "recovered_by_poll": reads.count_recovered_by_poll(session),
        "recovered_ids": reads.sample_recovered_by_poll(session),
    }


def gauge_values(
    session: Session, settings: Settings, now: datetime
) -> dict[str, list[tuple[dict[str, str], float]]]:
    """The database gauges of the metrics exporter, by vendor (and state)."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    counts = {(v, s): 0 for v in Vendor for s in TrackedState}
    counts.update(reads.counts_by_state(session))
    out["ids"] = [({"vendor": v.value, "state": s.value}, n) for (v, s), n in counts.items()]

    def per_vendor(name: str, found: dict[Vendor, Any], value: Any = float) -> None:
        out[name] = [({"vendor": v.value}, value(found[v]) if v in found else 0.0) for v in Vendor]

    per_vendor(
        "oldest_pending_age_seconds",
        reads.oldest_active_registration(session),
        lambda t: max(0.0, (now - t).total_seconds()),
    )
    per_vendor(
        "nearest_deadline_seconds",
        reads.nearest_active_deadline(session),
        lambda t: (t - now).total_seconds(),
    )
    per_vendor(
        "at_risk_ids", reads.at_risk_by_vendor(session, reads.at_risk_horizon(settings, now))
    )
    out["lost_to_expiry_ids"] = [
        ({"vendor": v.value}, counts[(v, TrackedState.EXPIRED)]) for v in Vendor
    ]
    out["error_ids"] = [({"vendor": v.value}, counts[(v, TrackedState.ERROR)]) for v in Vendor]
    per_vendor("webhook_waiting_ids", reads.waiting_for_webhook_by_vendor(session, now))
    per_vendor("webhook_recovered_by_poll_ids", reads.recovered_by_poll_by_vendor(session))
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
