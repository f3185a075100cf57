"""Prometheus metrics: the exporter's database gauges, the process counters of a
sync, and Celery prefork workers serving the sum of their processes' counters."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select, text, update

from models import TrackedId, TrackedState, Vendor, utcnow
from simulator import Dataset
from tests.helpers import MENTIONSYNC, celery_worker_with_beat, pending, register_dataset
from tests.resources import session_scope, suite_db, suite_runtime
from worker.config import load_settings
from worker.exporter import exporter_registry
from worker.poller import claim_batches, process_claim
from worker.registry import label_arguments, register

SEED = 17


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a /metrics page, by name and labels."""
    text = httpx.get(url, timeout=10).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def total(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and want <= set(ls))


@pytest.fixture
def exporter() -> Iterator[str]:
    port = free_port()
    process = subprocess.Popen(
        [MENTIONSYNC, "metrics", "--port", str(port)],
        env=dict(os.environ),
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 30
    while True:
        try:
            httpx.get(url, timeout=2)
            break
        except httpx.HTTPError:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline
            time.sleep(0.1)
    yield url
    # SIGTERM, not SIGINT: a test run started in the background (CI's shell
    # runs it as an asynchronous job) ignores SIGINT, and its children inherit that.
    process.terminate()
    process.wait(30)


def test_the_exporter_serves_database_gauges(exporter: str) -> None:
    now = datetime.now(UTC)
    settings = load_settings()
    with session_scope() as session:
        register(
            session,
            Vendor.MENTIONSAPI,
            label_arguments([f"ask_{i}" for i in range(6)]),
            settings=settings,
            now=now - timedelta(hours=2),
        )
        register(
            session,
            Vendor.MENTIONSAPI,
            label_arguments(["ask_risky"]),
            settings=settings,
            created_at=now - timedelta(days=29),
        )
        register(
            session,
            Vendor.MENTIONLAB,
            label_arguments(["3f1a7b2c-9d4e-4f6a-8b1c-2e5f7a9d0c11"]),
            settings=settings,
            project_id="p1",
        )
        register(
            session,
            Vendor.MENTIONSAPI,
            label_arguments(["ask_hooked", "ask_missed"]),
            settings=settings,
            expect_webhook=True,
        )

        def set_state(ids: list[str], **values: object) -> None:
            session.execute(
                update(TrackedId).where(TrackedId.external_id.in_(ids)).values(**values)
            )

        set_state(["ask_0", "ask_1"], state=TrackedState.ARCHIVED, archived_at=now)
        set_state(["ask_2"], state=TrackedState.EXPIRED, final_at=now)
        set_state(["ask_3"], state=TrackedState.ERROR, final_at=now)
        set_state(
            ["ask_hooked"], state=TrackedState.ARCHIVED, archived_at=now, webhook_archived_at=now
        )
        set_state(["ask_missed"], state=TrackedState.ARCHIVED, archived_at=now)

    samples = scrape(exporter)

    def gauge(name: str, **labels: str) -> float:
        return samples[(f"mentionsync_{name}", tuple(sorted(labels.items())))]

    assert gauge("database_up") == 1
    assert gauge("ids", vendor="mentionsapi", state="archived") == 4
    assert gauge("ids", vendor="mentionsapi", state="tracked") == 3  # ask_4, ask_5, ask_risky
    assert gauge("ids", vendor="mentionsapi", state="expired") == 1
    assert gauge("ids", vendor="mentionlab", state="tracked") == 1
    assert gauge("ids", vendor="mentionlab", state="failed") == 0
    assert gauge("lost_to_expiry_ids", vendor="mentionsapi") == 1
    assert gauge("error_ids", vendor="mentionsapi") == 1
    assert gauge("at_risk_ids", vendor="mentionsapi") == 1
    assert gauge("at_risk_ids", vendor="mentionlab") == 0
    assert 7190 < gauge("oldest_pending_age_seconds", vendor="mentionsapi") < 7300
    assert 86300 < gauge("nearest_deadline_seconds", vendor="mentionsapi") < 86500
    assert gauge("webhook_recovered_by_poll_ids", vendor="mentionsapi") == 1
    assert gauge("webhook_waiting_ids", vendor="mentionsapi") == 0
    assert gauge("account_paused", vendor="mentionsapi") == 0
    assert gauge("quarantined_payloads") == 0


def test_the_exporter_says_when_the_database_is_down(configure: Callable[..., None]) -> None:
    configure(DATABASE_URL=f"postgresql+psycopg://postgres@127.0.0.1:{free_port()}/nothing")
    server, thread = start_http_server(
        0, addr="127.0.0.1", registry=exporter_registry(load_settings(), suite_db())
    )
    try:
        samples = scrape(f"http://127.0.0.1:{server.server_port}/metrics")
    finally:
        server.shutdown()
        thread.join(5)
    assert samples[("mentionsync_database_up", ())] == 0
    assert not any(name == "mentionsync_ids" for name, _ in samples)


VENDORS = ("mentionsapi", "mentionlab")


def summed(name: str, **labels: str) -> float:
    """A counter of this process, summed over both vendors."""
    return sum(REGISTRY.get_sample_value(name, {"vendor": v, **labels}) or 0.0 for v in VENDORS)


COUNTERS = {
    "archived": ("mentionsync_archived_answers_total", {"via": "poll"}),
    "lag": ("mentionsync_archive_lag_seconds_count", {"via": "poll"}),
    "fetch_seconds": ("mentionsync_fetch_duration_seconds_count", {}),
    "429": ("mentionsync_rate_limited_responses_total", {}),
    "paused_429": ("mentionsync_rate_limit_paused_seconds_total", {"reason": "429"}),
    "lag_seconds": ("mentionsync_archive_lag_seconds_sum", {"via": "poll"}),
}


def test_polling_counts_fetches_statuses_429s_pauses_and_archive_lag(
    sim: Callable[..., str],
) -> None:
    # A simulator that allows 30 requests/s per key, against our budget of 5000/s.
    base_url = sim(seed=SEED, rate_limit=30, max_pending_polls=1)
    register_dataset(Dataset(seed=SEED), asks=60, executions=40)
    statuses = ("200", "202", "400", "404", "410", "429")
    fetches_before = {s: summed("mentionsync_fetches_total", status=s) for s in statuses}
    before = {k: summed(name, **labels) for k, (name, labels) in COUNTERS.items()}

    started = time.monotonic()
    poll_until_done()
    took = time.monotonic() - started

    stats = httpx.get(f"{base_url}/_sim/stats", timeout=10).json()
    assert stats["rate_limited"] > 0, "the test needs 429s"
    delta = {k: summed(name, **labels) - before[k] for k, (name, labels) in COUNTERS.items()}
    fetched = {
        s: summed("mentionsync_fetches_total", status=s) - fetches_before.get(s, 0.0)
        for s in stats["by_status"]
    }
    assert fetched == {s: float(n) for s, n in stats["by_status"].items()}
    assert delta["fetch_seconds"] == stats["requests"]
    assert delta["429"] == stats["rate_limited"]
    assert delta["paused_429"] > 0
    with session_scope() as session:
        archived = session.scalar(select(func.count()).where(TrackedId.archived_at.is_not(None)))
    assert archived and delta["archived"] == archived and delta["lag"] == archived
    # Each lag runs from registration (or the previous poll) to archiving: all
    # of it inside this test.
    assert 0 < delta["lag_seconds"] <= archived * took


def poll_until_done(timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while pending() and time.monotonic() < deadline:
        with session_scope() as session:
            claims, _ = claim_batches(session, suite_runtime(), now=utcnow())
        for claim in claims:
            process_claim(suite_runtime(), claim)
        if not claims:
            time.sleep(0.2)
    assert pending() == 0


def test_waiting_for_our_own_rate_budget_is_counted(
    sim: Callable[..., str], configure: Callable[..., None]
) -> None:
    # The vendor does not limit; our budget for the key does: 20/s, burst 1.
    sim(seed=SEED, max_pending_polls=0)
    configure(MENTIONSAPI_RATE_LIMIT="20", MENTIONSAPI_RATE_BURST="1")
    register_dataset(Dataset(seed=SEED), asks=30, executions=0)
    name, labels = "mentionsync_rate_limit_paused_seconds_total", {"reason": "budget"}
    before = summed(name, **labels)
    poll_until_done()
    waited = summed(name, **labels) - before
    # 30 requests at 20/s are spread over about 1.5 s; with 8 fetch threads each
    # waiting for its own slot, the waits add up to several seconds.
    assert waited > 1.0


def test_celery_workers_serve_the_sum_of_their_processes(
    sim: Callable[..., str], tmp_path: Path
) -> None:
    base_url = sim(seed=SEED, max_pending_polls=1)
    register_dataset(Dataset(seed=SEED), asks=80, executions=80)
    port = free_port()
    env = dict(
        os.environ,
        PROMETHEUS_MULTIPROC_DIR=str(tmp_path / "prom"),
        WORKER_METRICS_PORT=str(port),
        BATCH_SIZE="10",
    )
    with celery_worker_with_beat(tmp_path, env) as worker:
        deadline = time.monotonic() + 120
        while pending() and time.monotonic() < deadline and worker.poll() is None:
            time.sleep(0.5)
        assert pending() == 0, (tmp_path / "celery.log").read_text()[-3000:]
        samples = scrape(f"http://127.0.0.1:{port}/metrics")
    stats = httpx.get(f"{base_url}/_sim/stats", timeout=10).json()
    # The main process fetches nothing itself: every count here was written by a
    # pool process into the shared directory and summed by the main process.
    assert total(samples, "mentionsync_fetches_total") == stats["requests"] > 0
    assert total(samples, "mentionsync_fetch_duration_seconds_count") == stats["requests"]
    pids = {p.name.split("_")[-1] for p in (tmp_path / "prom").glob("*.db")}
    assert len(pids) >= 2, pids


def test_the_exporter_serves_the_scheduler_s_ages(exporter: str) -> None:
    samples = scrape(exporter)
    # Nothing recorded yet: no age at all (a 0 would claim a sweep just ran).
    assert ("mentionsync_scheduler_last_dispatch_age_seconds", ()) not in samples
    assert samples[("mentionsync_scheduler_beats_ticking", ())] == 0

    with session_scope() as session:
        session.execute(
            text(
                "INSERT INTO scheduler_heartbeats VALUES ('beat-host:9',"
                " now() - interval '1 hour', now() - interval '2 seconds',"
                " now() - interval '100 seconds')"
            )
        )
    samples = scrape(exporter)
    assert 100 <= samples[("mentionsync_scheduler_last_dispatch_age_seconds", ())] < 110
    assert 2 <= samples[("mentionsync_scheduler_last_tick_age_seconds", ())] < 12
    assert samples[("mentionsync_scheduler_beats_ticking", ())] == 1
