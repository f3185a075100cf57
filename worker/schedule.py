"""Beat's schedule: one periodic sweep that claims due ids and dispatches batches."""

from __future__ import annotations

from typing import Any

from worker.config import Settings

DISPATCH_TASK = "mentionsync.dispatch_due"
FETCH_TASK = "mentionsync.fetch_batch"
DISPATCH_QUEUE = "mentionsync.dispatch"
HOUSEKEEPING_TASK = "mentionsync.housekeeping"


def beat_schedule(settings: Settings) -> dict[str, dict[str, Any]]:
    return {
        "dispatch-due-ids": {
            "task": DISPATCH_TASK,
            "schedule": settings.poll_tick_seconds,
            # A sweep that waited longer than a tick is stale; the next one is
            # already on its way, so drop it instead of running both.
            "options": {"expires": settings.poll_tick_seconds * 2},
        },
        # Alerts and pruning; safe to run from two beats (alert_state rate-limits).
        "housekeeping": {
            "task": HOUSEKEEPING_TASK,
            "schedule": settings.alert_check_seconds,
            "options": {"expires": settings.alert_check_seconds},
        },
    }
