"""The database gauges of `mentionsync metrics`: ids by vendor and state, the
oldest pending id, ids at risk, ids lost to expiry, webhook recovery, the age
of the last dispatch sweep and of the newest beat tick. They describe the whole
deployment, so they are computed at scrape time from the database, whichever
machine the exporter runs on. Process counters: worker/metrics.py.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from models import utcnow
from worker.config import Settings
from worker.db import Database


class DatabaseCollector(Collector):
    """Deployment-wide gauges, read from the database at every scrape."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.db = db

    def collect(self) -> Iterator[Any]:
        from worker.status import gauge_values

        up = GaugeMetricFamily(
            "mentionsync_database_up", "1 if the exporter could read the database."
        )
        try:
            with self.db.session() as session:
                values = gauge_values(session, self.settings, utcnow())
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


def database_registry(settings: Settings, db: Database) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DatabaseCollector(settings, db))
    return registry


def exporter_registry(settings: Settings, db: Database) -> CollectorRegistry:
    """What `mentionsync metrics` serves: the database gauges, plus the process
    counters of this machine when workers share a multiprocess directory with it."""
    registry = database_registry(settings, db)
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]  # untyped in prometheus_client
    return registry
