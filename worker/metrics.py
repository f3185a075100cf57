"""Prometheus metrics: what the processes did, and what the database says.

Two sources, two kinds of series:

- **Process counters** (fetches, latency, 429s, rate-limit pauses, archive lag,
  webhook requests) are counted where they happen. Celery's prefork workers are
  several processes, so with `PROMETHEUS_MULTIPROC_DIR` set every process writes
  its values to files there and the worker's main process serves their sum on
  `WORKER_METRICS_PORT` (prometheus_client's multiprocess mode).
- **Database gauges** (ids by vendor and state, the oldest pending id, ids at
  risk, ids lost to expiry, webhook recovery, the age of the last dispatch sweep
  and of the newest beat tick) describe the whole deployment, so
  one `mentionsync metrics` exporter computes them at scrape time, whichever
  machine it runs on.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

# Multiprocess mode is chosen when the first metric is built and writes files
# into this directory at once; create it rather than fail at import.
_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _MULTIPROC_DIR:
    os.makedirs(_MULTIPROC_DIR, exist_ok=True)

import click  # noqa: E402
from prometheus_client import (  # noqa: E402
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
)
from prometheus_client.core import GaugeMetricFamily  # noqa: E402
from prometheus_client.registry import Collector  # noqa: E402

from models import Vendor, utcnow  # noqa: E402
from worker.policy import Action, Outcome, TrackedView  # noqa: E402

# --- process counters -------------------------------------------------------------

FETCHES = Counter(
    "mentionsync_fetches",
    "Requests sent to a vendor API, by HTTP status ('error': no response).",
    ["vendor", "status"],
)
FETCH_SECONDS = Histogram(
    "mentionsync_fetch_duration_seconds",
    "Time from sending a request to having read its body.",
    ["vendor"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RATE_LIMITED = Counter(
    "mentionsync_rate_limited_responses", "429 responses from a vendor.", ["vendor"]
)
RATE_LIMIT_PAUSED = Counter(
    "mentionsync_rate_limit_paused_seconds",
    "Seconds spent paused by rate limits: waiting for a slot of our own budget"
    " (reason=budget), or announced by a vendor's 429 for the whole key (reason=429).",
    ["vendor", "reason"],
)
ARCHIVED = Counter(
    "mentionsync_archived_answers",
    "Final answers written to the archive, by the path that brought them.",
    ["vendor", "via"],
)
ARCHIVE_LAG = Histogram(
    "mentionsync_archive_lag_seconds",
    "From when an answer could first be seen final to its being archived:"
    " the event's creation for webhooks; the previous poll that found it unfinished"
    " (else its registration) for polling.",
    ["vendor", "via"],
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 6 * 3600, 86400, 7 * 86400),
)
WEBHOOK_REQUESTS = Counter(
    "mentionsync_webhook_requests",
    "Webhook requests received by the intake service, by result.",
    ["vendor", "result"],
)


def observe_response(vendor: Vendor, status: int | None, seconds: float) -> None:
    FETCHES.labels(vendor.value, str(status) if status is not None else "error").inc()
    FETCH_SECONDS.labels(vendor.value).observe(seconds)
    if status == 429:
        RATE_LIMITED.labels(vendor.value).inc()


def observe_pause(vendor: Vendor, reason: str, seconds: float) -> None:
    if seconds > 0:
        RATE_LIMIT_PAUSED.labels(vendor.value, reason).inc(seconds)


def observe_archived(vendor: Vendor, via: str, lag_seconds: float | None) -> None:
    ARCHIVED.labels(vendor.value, via).inc()
    if lag_seconds is not None:
        ARCHIVE_LAG.labels(vendor.value, via).observe(max(0.0, lag_seconds))


def observe_polled_batch(
    views: Sequence[TrackedView], outcomes: Sequence[Outcome], *, now: datetime
) -> None:
    """Archive counts and lag of one written batch of polls."""
    for view, outcome in zip(views, outcomes, strict=True):
        if outcome.action is not Action.ARCHIVE:
            continue
        # The answer was not final at the previous poll; before the first poll
        # it was not ours to fetch. Either way the lag is an upper bound.
        since = view.last_polled_at or view.registered_at
        lag = (now - since).total_seconds() if since is not None else None
        observe_archived(view.vendor, "poll", lag)


def process_registry() -> CollectorRegistry:
    """The registry holding this machine's process counters: the sum over every
    process in multiprocess mode, else this process's own."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        return REGISTRY
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


def start_worker_metrics_server(port: int) -> None:
    """Serve this machine's worker counters (called in Celery's main process)."""
    start_http_server(port, registry=process_registry())


def mark_process_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]


# --- database gauges ------------------------------------------------------------------


class DatabaseCollector(Collector):
    """Deployment-wide gauges, read from the database at every scrape."""

    def collect(self) -> Iterator[Any]:
        from worker.config import get_settings
        from worker.db import session_scope
        from worker.status import gauge_values

        up = GaugeMetricFamily(
            "mentionsync_database_up", "1 if the exporter could read the database."
        )
        try:
            with session_scope() as session:
                values = gauge_values(session, get_settings(), utcnow())
        except Exception:  # a scrape must answer, and say the database is down
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from _families(values)


_GAUGES: dict[str, str] = {
    "ids": "Tracked ids by vendor and state.",
    "oldest_pending_age_seconds": "Age (since registration) of the oldest id not yet final.",
    "nearest_deadline_seconds": "Seconds until the nearest deadline of an id not yet final.",
    "at_risk_ids": "Ids not archived (active, error or invalid_payload) whose deadline "
    "is within AT_RISK_HOURS.",
    "lost_to_expiry_ids": "Ids lost because the vendor's retention passed first (410).",
    "error_ids": "Ids that ran out of attempts (state error; `mentionsync retry`).",
    "webhook_waiting_ids": "Ids expecting a webhook, still inside their grace period.",
    "webhook_archived_ids": "Ids archived from a webhook delivery.",
    "webhook_recovered_by_poll_ids": "Ids that expected a webhook but were archived by polling.",
    "account_paused": "1 while polling a vendor's key is paused (refused, rate limited, unset).",
    "quarantined_payloads": "Bodies that could not be archived, kept raw.",
    "scheduler_last_dispatch_age_seconds": "Seconds since a worker last ran a dispatch sweep"
    " sent by beat (database clock); absent until one was recorded.",
    "scheduler_last_tick_age_seconds": "Seconds since the newest beat tick (database clock);"
    " absent until a beat recorded one.",
    "scheduler_beats_ticking": "Beats that ticked within SCHEDULER_STALL_SECONDS (1 is right;"
    " 2 by mistake is safe).",
}


def _families(values: dict[str, list[tuple[dict[str, str], float]]]) -> Iterator[Any]:
    for name, doc in _GAUGES.items():
        samples = values.get(name, [])
        labels = sorted(samples[0][0]) if samples else []
        family = GaugeMetricFamily(f"mentionsync_{name}", doc, labels=labels)
        for label_values, value in samples:
            family.add_metric([label_values[k] for k in labels], value)
        yield family


def database_registry() -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector())
    return registry


def exporter_registry() -> CollectorRegistry:
    """What `mentionsync metrics` serves: the database gauges, plus the process
    counters of this machine when workers share a multiprocess directory with it."""
    registry = database_registry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    return registry


@click.command("metrics")
@click.option("--host", default="127.0.0.1", show_default=True, help="0.0.0.0 in a container.")
@click.option("--port", type=int, default=9800, show_default=True)
def metrics_command(host: str, port: int) -> None:
    """Serve the Prometheus exporter: database gauges (and this machine's worker
    counters when PROMETHEUS_MULTIPROC_DIR is shared with the workers)."""
    server, thread = start_http_server(port, addr=host, registry=exporter_registry())
    click.echo(f"serving metrics on http://{host}:{port}/metrics", err=True)
    try:
        thread.join()
    except KeyboardInterrupt:
        server.shutdown()
