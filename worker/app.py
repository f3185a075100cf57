"""The Celery application: `celery -A worker.app worker` and `celery -A worker.app beat`.

Every option that matters for delivery guarantees is set here, explicitly; the
README's "Guarantees" section explains each.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from celery import Celery, signals
from kombu.entity import Queue

from worker.common import is_redis_url
from worker.config import ConfigError, Settings, load_settings
from worker.logs import setup_logging
from worker.resources import close_process_runtime, process_runtime
from worker.schedule import (
    DISPATCH_QUEUE,
    DISPATCH_TASK,
    FETCH_TASK,
    HOUSEKEEPING_TASK,
    beat_schedule,
)


def _transport_options(settings: Settings) -> dict[str, Any]:
    if is_redis_url(settings.celery_broker_url):
        # Redis redelivers an unacknowledged message after this; it must exceed
        # the longest batch. Long waits never sit in the broker (next_poll_at).
        return {"visibility_timeout": max(3600, int(settings.lease_seconds * 2))}
    # kombu's SQLAlchemy transport hands its options to create_engine(): none.
    return {}


def _settings() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        # `celery -A worker.app ...` then ends with what to fix, not a traceback.
        raise SystemExit(str(exc)) from None


def celery_config() -> dict[str, Any]:
    """Celery's configuration, read from the settings when Celery first needs it
    (importing this module reads nothing)."""
    settings = _settings()
    return {
        "broker_url": settings.celery_broker_url,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a dead Redis is waited out, not fatal
        # The broker only carries work: no results are stored anywhere.
        "task_ignore_result": True,
        "result_backend": None,
        "task_serializer": "json",
        "accept_content": ["json"],
        "event_serializer": "json",
        "task_default_queue": "mentionsync",
        # Sweeps have a queue of their own, which every worker also consumes: a
        # sweep waits for the next free process, not behind every queued batch.
        "task_queues": (Queue("mentionsync"), Queue(DISPATCH_QUEUE)),
        "task_routes": {
            DISPATCH_TASK: {"queue": DISPATCH_QUEUE},
            HOUSEKEEPING_TASK: {"queue": DISPATCH_QUEUE},
        },
        # At-least-once: a message is acknowledged only after its task finished, and
        # a task whose worker process died (SIGKILL, OOM) is requeued, not dropped.
        # Every task is idempotent, so a second delivery only repeats a no-op.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # One message at a time per process: a batch is long, prefetching more would
        # only hold leases hostage on a busy worker.
        "worker_prefetch_multiplier": 1,
        "worker_max_tasks_per_child": 1000,
        # No task outlives its limits, whatever hangs (a vendor, a lock, a bug). A
        # batch past its lease gets a soft limit (it gives its ids back and stops);
        # the hard limit replaces the pool process whatever it is doing, and the ids
        # are due again once their lease expires, the lease fence stopping any late
        # writer. Sweeps are short by design.
        "task_annotations": {
            FETCH_TASK: {
                "soft_time_limit": settings.lease_seconds,
                "time_limit": settings.lease_seconds + settings.http_request_deadline + 30,
            },
            DISPATCH_TASK: {"time_limit": 300},
            HOUSEKEEPING_TASK: {"time_limit": 600},
        },
        "broker_transport_options": _transport_options(settings),
        "beat_schedule": beat_schedule(settings),
        # Beat records its ticks in Postgres (worker/beat.py), and wakes at least this
        # often to do so even when nothing is due.
        "beat_scheduler": "worker.beat:HeartbeatScheduler",
        "beat_max_loop_interval": settings.scheduler_heartbeat_seconds,
        "timezone": "UTC",
        "enable_utc": True,
        "worker_hijack_root_logger": False,
    }


app = Celery("mentionsync", include=["worker.tasks"])
app.add_defaults(celery_config)


@signals.setup_logging.connect
def _configure_logging(loglevel: int | str | None = None, **_: Any) -> None:
    # Connecting this signal stops Celery from installing its own handlers; the
    # worker's --loglevel still decides the level.
    level = logging.getLevelName(loglevel) if isinstance(loglevel, int) else loglevel
    setup_logging(_settings(), level=level)


@signals.worker_init.connect
def _serve_metrics(**_: Any) -> None:
    # In the main process, before the pool forks: it serves the sum of every
    # pool process's counters (PROMETHEUS_MULTIPROC_DIR) on one port.
    port = _settings().worker_metrics_port
    if port:
        from worker.metrics import start_worker_metrics_server

        start_worker_metrics_server(port)


@signals.worker_ready.connect
def _watch_the_scheduler(**_: Any) -> None:
    # In the main process, which outlives its pool's children: a dead or hung beat
    # cannot report itself, so every worker checks that sweeps still run.
    from worker.beat import start_watchdog

    start_watchdog(_settings())


@signals.worker_shutting_down.connect
def _stop_watching(**_: Any) -> None:
    # A worker on its way out has no say on the scheduler.
    from worker.beat import stop_watchdog

    stop_watchdog()


@signals.worker_process_init.connect
def _fresh_process(**_: Any) -> None:
    # A forked child must not reuse its parent's sockets: its own runtime.
    close_process_runtime()
    process_runtime()


@signals.worker_process_shutdown.connect
def _close_process(pid: int | None = None, **_: Any) -> None:
    from worker.metrics import mark_process_dead

    mark_process_dead(pid or os.getpid())
    close_process_runtime()
