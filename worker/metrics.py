"""Prometheus metrics: what the processes did, and what the database says.

Two sources, two kinds of series:

- **Process counters** (fetches, latency, 429s, rate-limit pauses, archive lag,
  webhook requests) are counted where they happen. Celery's prefork workers are
  several processes, so with `PROMETHEUS_MULTIPROC_DIR` set every process writes
  its values to files there and the worker's main process serves their sum on
  `WORKER_METRICS_PORT` (prometheus_client's multiprocess mode).
- **Database gauges** (worker/exporter.py) describe the whole deployment, so
  one `mentionsync metrics` exporter computes them at scrape time, whichever
  machine it runs on.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import datetime

# Multiprocess mode is chosen when the first metric is built and writes files
# into this directory at once; create it rather than fail at import.
_MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
if _MULTIPROC_DIR:
    os.makedirs(_MULTIPROC_DIR, exist_ok=True)

from prometheus_client import (  # noqa: E402
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    multiprocess,
    start_http_server,
)

from models import Vendor  # noqa: E402
from worker.outcome import Action, Outcome, TrackedView  # noqa: E402

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
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
    return registry


def start_worker_metrics_server(port: int) -> None:
    """Serve this machine's worker counters (called in Celery's main process)."""
    start_http_server(port, registry=process_registry())


def mark_process_dead(pid: int) -> None:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
