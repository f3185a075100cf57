"""A real Celery worker and beat, on Redis and Postgres, against the simulator over
HTTP, until a mixed set of ids is final; then every row is checked field by field."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import orjson
import redis

from simulator import Dataset
from tests.conftest import REDIS_URL
from tests.expected import check_everything
from tests.helpers import celery_worker_with_beat, pending, register_dataset, wasted_polls
from tests.resources import session_scope

SEED = 5


def test_celery_worker_and_beat_archive_a_mixed_set(sim, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    base_url = sim(seed=SEED, max_pending_polls=2)
    redis.Redis.from_url(REDIS_URL).flushdb()
    register_dataset(Dataset(seed=SEED), asks=150, executions=150)

    # JSON log lines, as a production deployment would collect them.
    with celery_worker_with_beat(tmp_path, env={**os.environ, "LOG_FORMAT": "json"}) as worker:
        deadline = time.monotonic() + 180
        while pending() and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.5)
    output = (tmp_path / "celery.log").read_text()
    assert pending() == 0, output[-4000:]
    assert "dispatched" in output and "batch mentionlab" in output
    check_log_lines(output, fetches=httpx.get(f"{base_url}/_sim/stats").json()["requests"])

    with session_scope() as session:
        states = check_everything(session, base_url)
    assert states["archived"] > 200 and sum(states.values()) == 300
    assert wasted_polls(httpx.get(f"{base_url}/_sim/stats").json()) == 0
    assert "lvk_test_suite_key" not in output and "ml_test_suite_key" not in output


def check_log_lines(output: str, fetches: int) -> None:
    """At INFO: one line per batch (and per dispatch sweep), never one per id or
    per Celery task, and every such line carries the vendor, count and duration."""
    lines = [orjson.loads(line) for line in output.splitlines() if line.startswith("{")]
    info = [r for r in lines if r["level"] == "info"]
    work = [r for r in info if r["logger"] in ("mentionsync.poller", "mentionsync.tasks")]
    assert work
    for record in work:
        assert {"vendor", "count", "duration_s"} <= set(record), record
    batches = [r for r in work if r["message"].startswith("batch ")]
    # Every fetch is counted in exactly one batch line, and a batch holds many.
    assert sum(r["count"] for r in batches) == fetches
    assert len(batches) < fetches / 5
    # Celery's per-task lines ("Task ... received", "... succeeded in ...") are
    # quiet at INFO: the batch lines say the same with vendor and count.
    assert not [r for r in info if r["logger"] in ("celery.app.trace", "celery.worker.strategy")]
