"""`mentionsync doctor`: check a deployment and say how to fix what is wrong.

The readiness probe of the intake service (`GET /readyz`) runs the first three
checks (database, schema, broker) from here too, and reports the scheduler's ages.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.markup import escape

from worker.common import is_redis_url, short_error
from worker.config import Settings
from worker.db import Database
from worker.vendors.registry import VENDORS

if TYPE_CHECKING:
    from worker.resources import Runtime

OK, WARN, FAIL = "ok", "warn", "fail"
SKEW_WARN_SECONDS = 5.0
# Signed webhook timestamps and every deadline are compared with this clock.
SKEW_FAIL_SECONDS = 60.0
TIMEOUT = 5.0


@dataclass
class Check:
    name: str
    level: str
    detail: str
    fix: str = ""


# --- the probes readyz shares -----------------------------------------------------------


def check_database(settings: Settings, db: Database) -> Check:
    from sqlalchemy import text

    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        return Check(
            "database",
            FAIL,
            f"cannot connect: {short_error(exc)}",
            "check DATABASE_URL, that the server is up and that this host may connect",
        )
    return Check("database", OK, _safe_url(settings.database_url))


def check_schema(db: Database) -> Check:
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from worker.migrate import alembic_config

    try:
        heads = set(ScriptDirectory.from_config(alembic_config()).get_heads())
        with db.engine.connect() as conn:
            current = set(MigrationContext.configure(conn).get_current_heads())
    except Exception as exc:
        return Check("migrations", FAIL, f"cannot read the schema version: {short_error(exc)}")
    if current == heads:
        return Check("migrations", OK, f"at head ({', '.join(sorted(heads))})")
    return Check(
        "migrations",
        FAIL,
        f"database at {', '.join(sorted(current)) or 'no revision'}, code expects "
        f"{', '.join(sorted(heads))}",
        "run `mentionsync db upgrade` (before starting workers of a new version)",
    )


def check_broker(settings: Settings) -> Check:
    url = settings.celery_broker_url
    try:
        if is_redis_url(url):
            import redis

            client = redis.Redis.from_url(
                url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT
            )
            try:
                client.ping()
                policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
            except redis.ResponseError:
                policy = None  # CONFIG is disabled on some managed Redis
            finally:
                client.close()
            if policy not in (None, "noeviction"):
                return Check(
                    "broker",
                    WARN,
                    f"{_safe_url(url)} reachable, but maxmemory-policy is {policy}",
                    "set `maxmemory-policy noeviction`: an evicting Redis can drop queued batches",
                )
        else:
            from kombu.connection import Connection

            with Connection(url, connect_timeout=TIMEOUT) as conn:
                conn.ensure_connection(max_retries=1)
    except Exception as exc:
        return Check(
            "broker",
            FAIL,
            f"cannot reach {_safe_url(url)}: {short_error(exc)}",
            "check CELERY_BROKER_URL and that Redis is up",
        )
    return Check("broker", OK, _safe_url(url))


def check_scheduler(settings: Settings, db: Database) -> Check:
    """Did a dispatch sweep run lately, and how many beats tick? (database clock)"""
    from worker.heartbeat import read_state, stall_after, stall_reason

    try:
        with db.session() as session:
            state = read_state(session.connection())
    except Exception as exc:
        return Check("scheduler", FAIL, f"cannot read the heartbeats: {short_error(exc)}")
    threshold = stall_after(settings)
    start = "start one beat: `celery -A worker.app beat` (or `mentionsync run`)"
    reason = stall_reason(state, settings)
    if reason is not None:
        return Check(
            "scheduler",
            FAIL,
            reason,
            f"{start}; if it runs, read its log and check that a worker is running",
        )
    ticking = state.ticking(threshold)
    tick_age = state.age(state.last_tick_at)
    dispatch_age = state.age(state.last_dispatch_at)
    if not ticking:
        last = f"newest tick {tick_age:.0f} s ago" if tick_age is not None else "none ever"
        return Check("scheduler", WARN, f"no beat is ticking ({last}): nothing is polled", start)
    beats = f"{len(ticking)} beat{'s' if len(ticking) > 1 else ''} ticking"
    if dispatch_age is None:
        return Check("scheduler", WARN, f"{beats}, but no dispatch sweep recorded yet")
    detail = f"last dispatch sweep {dispatch_age:.1f} s ago, {beats}"
    if len(ticking) > 1:
        return Check(
            "scheduler",
            WARN,
            f"{detail} ({', '.join(b.instance for b in ticking)}): safe, but one is enough",
            "stop the extra beats",
        )
    return Check("scheduler", OK, detail)


def readiness(settings: Settings, db: Database) -> dict[str, Any]:
    """What `GET /readyz` reports: can this process do its work right now?

    Ready means database, schema and broker answer: what the intake needs. The
    scheduler's ages are reported but do not make it unready (taking ids and
    deliveries works while beat restarts; the workers' watchdog alerts on it).
    No detail that names a host or URL: `doctor` gives those.
    """
    database = check_database(settings, db)
    schema = check_schema(db) if database.level == OK else None
    checks = [database, *([schema] if schema is not None else []), check_broker(settings)]
    report: dict[str, Any] = {
        "ok": all(c.level != FAIL for c in checks),
        "checks": {c.name: {"ok": c.level != FAIL} for c in checks},
    }
    if schema is not None and schema.level == OK:
        report["scheduler"] = _scheduler_ages(settings, db)
    return report


def _scheduler_ages(settings: Settings, db: Database) -> dict[str, Any] | None:
    from worker.heartbeat import describe, read_state

    try:
        with db.session() as session:
            described = describe(read_state(session.connection()), settings)
    except Exception:
        return None  # the schema check says why
    keys = ("stalled", "last_dispatch_age_seconds", "last_tick_age_seconds", "beats_ticking")
    return {k: described[k] for k in keys}


# --- the rest of doctor ---------------------------------------------------------------------


def check_configuration(settings: Settings) -> list[Check]:
    from models import Vendor

    checks = []
    for vendor in Vendor:
        if settings.api_key(vendor) is None:
            checks.append(
                Check(
                    f"{vendor} key",
                    WARN,
                    "not set: its ids are registered but never polled",
                    f"set {vendor.upper()}_API_KEY",
                )
            )
        else:
            checks.append(
                Check(f"{vendor} key", OK, f"set (fingerprint {settings.key_fingerprint(vendor)})")
            )
    if settings.database_url.startswith("sqlite"):
        checks.append(
            Check(
                "database url",
                WARN,
                "SQLite: fine on one machine, not for workers on several",
                "use postgresql+psycopg://… in production",
            )
        )
    if not is_redis_url(settings.celery_broker_url):
        checks.append(
            Check(
                "broker url",
                WARN,
                "not Redis: the embedded broker and per-process rate budgets are for one machine",
                "use CELERY_BROKER_URL=redis://… in production",
            )
        )
    if settings.intake_token is None:
        checks.append(
            Check(
                "intake token",
                WARN,
                "unset: POST /v1/track refuses every request",
                "set INTAKE_TOKEN",
            )
        )
    elif len(settings.intake_token.get_secret_value()) < 24:
        checks.append(
            Check(
                "intake token",
                WARN,
                "shorter than 24 characters",
                "use a long random token, e.g. `openssl rand -hex 32`",
            )
        )
    for spec in VENDORS.values():
        if spec.sends_webhooks and not settings.webhook_secrets(spec.vendor):
            checks.append(
                Check(
                    "webhook secret",
                    WARN,
                    f"unset: {spec.title} deliveries are refused (polling still archives"
                    " everything)",
                    f"set {spec.vendor.upper()}_WEBHOOK_SECRET to the secret of your webhook"
                    " endpoint",
                )
            )
    if settings.alert_webhook_url is None:
        checks.append(
            Check("alerts", WARN, "ALERT_WEBHOOK_URL unset: nobody is told when ids are at risk")
        )
    for vendor in Vendor:
        url = settings.base_url(vendor)
        if not url.startswith("https://") and not _is_loopback(url):
            checks.append(
                Check(
                    f"{vendor} url",
                    WARN,
                    f"{url} is not HTTPS: the API key would travel in clear text",
                    f"use https:// in {vendor.upper()}_BASE_URL",
                )
            )
    return checks


def check_shared_redis(settings: Settings) -> Check | None:
    url = settings.shared_redis_url
    if url is None or url == settings.celery_broker_url:
        return None  # no shared budget, or already checked as the broker
    import redis

    try:
        client = redis.Redis.from_url(url, socket_timeout=TIMEOUT, socket_connect_timeout=TIMEOUT)
        client.ping()
        client.close()
    except Exception as exc:
        return Check(
            "rate budget",
            WARN,
            f"cannot reach {_safe_url(url)}: {short_error(exc)}; each process falls back to "
            f"{settings.rate_limit_local_share:g} of the budget",
            "check REDIS_URL",
        )
    return Check("rate budget", OK, _safe_url(url))


def check_vendors(settings: Settings) -> tuple[list[Check], list[tuple[str, float]]]:
    """One cheap authenticated request per configured vendor: an id nobody has.

    A 404 (or any answer) proves the host is reachable and the key is accepted;
    401/402/403 say the key is refused. Also returns each vendor's clock skew,
    read from its Date header.
    """
    from worker.resources import Runtime

    with Runtime.open(settings) as runtime:
        return _probe_vendors(runtime, settings)


def _probe_vendors(
    runtime: Runtime, settings: Settings
) -> tuple[list[Check], list[tuple[str, float]]]:
    from models import Vendor
    from worker.vendors.base import Target

    checks: list[Check] = []
    skews: list[tuple[str, float]] = []
    for vendor in Vendor:
        if settings.api_key(vendor) is None:
            continue
        client = runtime.clients[vendor]
        spec = client.spec
        tracked_project = _any_project(runtime.db, vendor) if spec.needs_project else None
        project = spec.project_for_probe(tracked_project) if spec.needs_project else ""
        sent = time.time()
        raw = client.get(Target(vendor, spec.probe_id, project))
        received = time.time()
        name = f"{vendor} api"
        base = settings.base_url(vendor)
        if raw.status is None:
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{base} unreachable: {raw.error}",
                    "check the base URL, DNS, proxies and the outbound firewall",
                )
            )
            continue
        if raw.status == 403 and spec.needs_project and not tracked_project:
            # No id of this vendor is tracked yet, so the probe named a made-up
            # project: a 403 may only mean the key has no access to that project.
            checks.append(
                Check(
                    name,
                    WARN,
                    f"{base} answered 403 for a made-up project: the key may be fine",
                    "track an id of a real project, then run doctor again",
                )
            )
        elif raw.status in (401, 402, 403):
            checks.append(
                Check(
                    name,
                    FAIL,
                    f"{base} refused the key (HTTP {raw.status}): {spec.error_reason(raw)}",
                    f"check {vendor.upper()}_API_KEY (fingerprint "
                    f"{settings.key_fingerprint(vendor)}) and the account's plan",
                )
            )
        elif raw.status == 429:
            checks.append(
                Check(name, WARN, f"{base} accepted the key but is rate limiting it (429)")
            )
        elif raw.status >= 500:
            checks.append(Check(name, WARN, f"{base} answered HTTP {raw.status}: try again later"))
        else:
            checks.append(
                Check(name, OK, f"{base} accepts the key (probe answered HTTP {raw.status})")
            )
        date = raw.headers.get("date")
        if date:
            try:
                remote = parsedate_to_datetime(date).timestamp()
            except (TypeError, ValueError):
                continue
            # The Date header has whole seconds; compare with the request's midpoint.
            skews.append((vendor.value, (sent + received) / 2 - remote))
    return checks, skews


def check_clocks(
    settings: Settings, db: Database, vendor_skews: list[tuple[str, float]]
) -> list[Check]:
    from sqlalchemy import func, select

    skews = list(vendor_skews)
    try:
        with db.engine.connect() as conn:
            before = time.time()
            db_now = conn.execute(select(func.now())).scalar_one()
            after = time.time()
        if isinstance(db_now, datetime) and db_now.tzinfo is not None:
            skews.append(("database", (before + after) / 2 - db_now.timestamp()))
    except Exception:  # noqa: S110 - the database check already says why
        pass
    redis_url = settings.shared_redis_url
    if redis_url:
        try:
            import redis

            client = redis.Redis.from_url(redis_url, socket_timeout=TIMEOUT)
            before = time.time()
            seconds, micros = client.time()
            after = time.time()
            client.close()
            skews.append(("redis", (before + after) / 2 - (seconds + micros / 1e6)))
        except Exception:  # noqa: S110 - the broker or rate-budget check says why
            pass
    checks = []
    for source, skew in skews:
        # The vendors' Date headers have whole seconds: up to 1 s is no skew.
        level = OK if abs(skew) < SKEW_WARN_SECONDS else WARN
        if abs(skew) >= SKEW_FAIL_SECONDS:
            level = FAIL
        checks.append(
            Check(
                f"clock vs {source}",
                level,
                f"this host is {skew:+.1f} s off",
                ""
                if level == OK
                else "run NTP (chrony, systemd-timesyncd) on every host: webhook timestamps "
                f"older than {settings.webhook_tolerance_seconds:g} s are refused and deadlines "
                "are computed from this clock",
            )
        )
    return checks


def run_checks(settings: Settings, db: Database, *, vendors: bool = True) -> list[Check]:
    checks = check_configuration(settings)
    database = check_database(settings, db)
    checks.append(database)
    schema = check_schema(db) if database.level == OK else None
    if schema is not None:
        checks.append(schema)
    checks.append(check_broker(settings))
    # Behind the code, the heartbeat table may not exist yet: the schema says why.
    if schema is not None and schema.level == OK:
        checks.append(check_scheduler(settings, db))
    if (shared := check_shared_redis(settings)) is not None:
        checks.append(shared)
    skews: list[tuple[str, float]] = []
    if vendors:
        vendor_checks, skews = check_vendors(settings)
        checks.extend(vendor_checks)
    checks.extend(check_clocks(settings, db, skews))
    return checks


def _any_project(db: Database, vendor: Any) -> str | None:
    """A project this deployment tracks for a vendor whose requests name one."""
    from worker.tracking import any_project

    try:
        with db.session() as session:
            return any_project(session, vendor)
    except Exception:
        return None


def _safe_url(url: str) -> str:
    """A URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return url.split("@")[-1]


def _is_loopback(url: str) -> bool:
    from urllib.parse import urlsplit

    return (urlsplit(url).hostname or "") in ("127.0.0.1", "localhost", "::1")


_MARKS: dict[str, Callable[[str], str]] = {
    OK: lambda s: f"[green]ok  [/] {s}",
    WARN: lambda s: f"[yellow]warn[/] {s}",
    FAIL: lambda s: f"[red]FAIL[/] {s}",
}


@click.command("doctor")
@click.option("--no-vendors", is_flag=True, help="Skip the requests to the vendor APIs.")
@click.option("--test-alert", is_flag=True, help="Also send a test alert to ALERT_WEBHOOK_URL.")
@click.pass_obj
def doctor(settings: Settings, no_vendors: bool, test_alert: bool) -> None:
    """Check configuration, database, migrations, broker, vendors and clocks.

    Exit code 0 when nothing failed (warnings allowed), 1 otherwise.
    """
    out = Console()
    with Database(settings.database_url) as db:
        checks = run_checks(settings, db, vendors=not no_vendors)
    if test_alert:
        from worker.alerts import send_test_alert

        error = send_test_alert(settings)
        checks.append(
            Check("test alert", OK, "sent")
            if error is None
            else Check("test alert", FAIL, error, "check ALERT_WEBHOOK_URL")
        )
    width = max(len(c.name) for c in checks)
    for check in checks:
        line = f"{escape(check.name):<{width}}  {escape(check.detail)}"
        out.print(_MARKS[check.level](line), highlight=False)
        if check.fix:
            out.print(f"      {'':<{width}}  [dim]→ {escape(check.fix)}[/]", highlight=False)
    failed = sum(c.level == FAIL for c in checks)
    warned = sum(c.level == WARN for c in checks)
    out.print(
        f"{len(checks)} checks: {failed} failed, {warned} warnings "
        f"({datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC)",
        highlight=False,
    )
    sys.exit(1 if failed else 0)
