"""Never lose an answer: a few thousand ids sync through real Celery workers, two
beats (or `mentionsync run`'s supervised worker and beat), a Redis and Postgres,
while the simulator injects faults (20% errors, latency spikes, 429 storms,
connection resets, malformed and oversized bodies) and the test SIGKILLs worker
processes and beats, crashes Redis and cuts Postgres off.

At the end the archive must equal the simulator's ground truth exactly, and no
id may have been fetched after the worker recorded it final."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select

from models import QuarantinedPayload, TrackedId
from simulator import Dataset
from tests.chaos.harness import CeleryProcesses, PrivateRedis, children, postgres_outage
from tests.conftest import ADMIN_URL, TEST_DB
from tests.expected import check_everything
from tests.helpers import MENTIONSYNC, pending, register_dataset
from tests.resources import session_scope
from worker.pipeline import BEHIND_FACTOR

SEED = 11
ASKS = EXECUTIONS = 1500
BATCH_SIZE = 25
CHAOS_ENV = {
    "BATCH_SIZE": str(BATCH_SIZE),
    "FETCH_CONCURRENCY": "4",
    # Short leases so ids of killed batches come back within the test.
    "LEASE_SECONDS": "20",
    "HTTP_CONNECT_TIMEOUT": "2",
    "HTTP_READ_TIMEOUT": "5",
    # A 20% error rate must not exhaust attempts by bad luck: 0.23^12 per id.
    "MAX_ATTEMPTS": "12",
    "INVALID_PAYLOAD_ATTEMPTS": "5",
    "MAX_RESPONSE_BYTES": str(1024 * 1024),
    "DB_OUTAGE_SECONDS": "60",
}
FAULTS: dict[str, Any] = {
    "error_rate": 0.2,
    "reset_rate": 0.03,
    "malformed_rate": 0.02,
    "huge_rate": 0.002,
    "latency_spike_rate": 0.02,
    "latency_spike_ms": 1500,
    "storm_every": 9.0,
    "storm_seconds": 1.5,
}


def fetches_after_final(base_url: str) -> list[tuple[str, str, float]]:
    """(vendor, id, seconds late) for every request that reached the vendor after
    the worker had recorded the id final."""
    log = httpx.get(f"{base_url}/_sim/requests", timeout=30).json()
    with session_scope() as session:
        finals: dict[tuple[str, str], datetime] = {
            (vendor.value, external_id.lower()): final_at
            for vendor, external_id, final_at in session.execute(
                select(TrackedId.vendor, TrackedId.external_id, TrackedId.final_at)
            )
        }
    late = []
    for vendor, by_id in log.items():
        for external_id, times in by_id.items():
            final_at = finals.get((vendor, external_id.lower()))
            assert final_at is not None, f"the worker fetched an id nobody tracked: {external_id}"
            late += [
                (vendor, external_id, t - final_at.timestamp())
                for t in times
                if t > final_at.timestamp()
            ]
    return late


@pytest.mark.timeout(420)
def test_sync_survives_kills_broker_crash_and_database_outage(  # type: ignore[no-untyped-def]
    sim, configure, tmp_path: Path
) -> None:
    rng = random.Random(SEED)
    base_url = sim(seed=SEED, max_pending_polls=2, **FAULTS)
    broker = PrivateRedis(tmp_path)
    broker.start()
    configure(CELERY_BROKER_URL=broker.url, REDIS_URL=broker.url, **CHAOS_ENV)
    register_dataset(Dataset(seed=SEED), asks=ASKS, executions=EXECUTIONS)
    total = ASKS + EXECUTIONS

    celery = CeleryProcesses(tmp_path, dict(os.environ))
    celery.start_node("a", concurrency=3)
    celery.start_node("b", concurrency=3)
    celery.wait_ready("a")
    celery.wait_ready("b")
    celery.start_beat()
    celery.start_beat()  # by mistake: a second beat must not double-fetch
    started = time.monotonic()
    events: list[str] = []

    def during_sync(label: str) -> bool:
        left = pending()
        if left:
            events.append(f"{time.monotonic() - started:5.1f}s {label} ({left} pending)")
        return left > 0

    def wait_until(t: float) -> None:
        while time.monotonic() - started < t:
            time.sleep(0.1)

    child_kills = 0
    node_kills = 0
    try:
        # The chaos schedule, in seconds since the workers started.
        for t in (4.0, 6.0, 8.0):
            wait_until(t)
            if during_sync("SIGKILL one pool process"):
                events[-1] += f" of node {celery.kill_pool_process(rng)}"
                child_kills += 1
        wait_until(10.0)
        if during_sync("crash Redis"):
            broker.crash()
            time.sleep(2.0)
            broker.start()
            events.append(f"{time.monotonic() - started:5.1f}s Redis back, empty")
        wait_until(13.0)
        if during_sync("SIGKILL node b (main and pool)"):
            child_kills += celery.kill_node("b")
            node_kills += 1
            time.sleep(1.0)
            celery.start_node("b", concurrency=3)
            celery.wait_ready("b")
        wait_until(16.0)
        if during_sync("cut Postgres off for 4s"):
            cut = postgres_outage(ADMIN_URL, TEST_DB, seconds=4.0)
            events.append(f"{time.monotonic() - started:5.1f}s Postgres back ({cut} cut)")
        wait_until(20.0)
        if during_sync("SIGKILL one pool process"):
            events[-1] += f" of node {celery.kill_pool_process(rng, node='a')}"
            child_kills += 1

        deadline = time.monotonic() + 240
        while pending() and time.monotonic() < deadline:
            time.sleep(1.0)
    finally:
        celery.stop()
        broker.crash()
    output = celery.output()
    summary = "\n".join(events)
    left = pending()
    assert left == 0, f"{left} ids never became final\n{summary}\n{output[-6000:]}"
    # The chaos really happened while ids were syncing.
    assert child_kills >= 4 and node_kills == 1, summary
    assert any("Redis back" in e for e in events) and any("Postgres back" in e for e in events)
    stats = httpx.get(f"{base_url}/_sim/stats", timeout=30).json()
    for fault in ("error", "reset", "malformed", "storm", "latency_spike"):
        assert stats["faults"][fault] > 0, (fault, stats["faults"])
    assert stats["by_status"].get("429", 0) > 0

    # Exactly the truth: every id in its expected final state, every archived
    # answer with exactly its rows (no duplicate, missing or altered row).
    with session_scope() as session:
        states = check_everything(session, base_url)
        quarantined = session.scalar(select(func.count()).select_from(QuarantinedPayload))
    assert sum(states.values()) == total
    assert states["archived"] > total * 0.6
    # Malformed bodies were met, kept, and the ids archived on a later fetch.
    assert quarantined and quarantined > 0

    # Zero wasted polls: nothing was fetched once the worker had it final.
    late = fetches_after_final(base_url)
    assert late == [], late[:20]
    # The simulator also counts final bodies served twice. Those can only come
    # from processes killed after a fetch and before its commit: each holds at most
    # its requests in flight and the answers its writer has not yet written.
    served_twice = sum(
        n for status, n in stats["polls_after_final_by_status"].items() if status != "404"
    )
    held = 2 * int(CHAOS_ENV["FETCH_CONCURRENCY"]) + BEHIND_FACTOR * BATCH_SIZE
    assert served_twice <= child_kills * held, (served_twice, child_kills)
    for secret in ("lvk_test_suite_key", "ml_test_suite_key"):
        assert secret not in output
    print(f"\nchaos run: {summary}\nstates {states}, re-served finals {served_twice}")


def _celery_child(run_pid: int, command: str) -> int | None:
    """The `celery ... <command>` process `mentionsync run` started, if running."""
    for pid in children(run_pid):
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            continue
        if command.encode() in argv:
            return pid
    return None


def _wait_for_child(run_pid: int, command: str, timeout: float = 60.0) -> int:
    deadline = time.monotonic() + timeout
    while (pid := _celery_child(run_pid, command)) is None:
        if time.monotonic() > deadline:
            raise RuntimeError(f"`mentionsync run` has no celery {command}")
        time.sleep(0.1)
    return pid


@pytest.mark.timeout(420)
def test_run_survives_sigkill_of_any_of_its_processes(  # type: ignore[no-untyped-def]
    sim, configure, tmp_path: Path
) -> None:
    """`mentionsync run` (worker + embedded beat under a supervisor) against a slow,
    faulty vendor: its beat, a pool process busy with requests, its worker's
    main process and beat again are SIGKILLed, Redis crashes and Postgres is cut
    off. Every id still ends final and exactly archived."""
    rng = random.Random(SEED + 1)
    # Every request waits on the vendor (200 ms, spikes of 1.5 s): a pool process
    # killed is killed while its requests are in flight.
    base_url = sim(
        seed=SEED + 1, max_pending_polls=1, latency_ms=200, **{**FAULTS, "latency_spike_rate": 0.1}
    )
    broker = PrivateRedis(tmp_path)
    broker.start()
    configure(
        CELERY_BROKER_URL=broker.url,
        REDIS_URL=broker.url,
        SCHEDULER_STALL_SECONDS="10",
        **{**CHAOS_ENV, "FETCH_CONCURRENCY": "8"},
    )
    asks = executions = 600
    register_dataset(Dataset(seed=SEED + 1), asks=asks, executions=executions)
    log = tmp_path / "run.log"
    events: list[str] = []
    with log.open("ab") as out:
        run = subprocess.Popen(
            [MENTIONSYNC, "run", "-c", "3"],
            env=dict(os.environ),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    started = time.monotonic()

    def kill(what: str, pid: int) -> None:
        os.kill(pid, signal.SIGKILL)
        events.append(f"{time.monotonic() - started:5.1f}s SIGKILL {what} ({pending()} pending)")

    try:
        worker = _wait_for_child(run.pid, "worker")
        deadline = time.monotonic() + 60
        while b"ready." not in log.read_bytes() and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(4)
        kill("beat", _wait_for_child(run.pid, "beat"))
        time.sleep(3)
        kill("a busy pool process", rng.choice(children(worker)))
        time.sleep(2)
        broker.crash()
        time.sleep(2)
        broker.start()
        events.append(f"{time.monotonic() - started:5.1f}s Redis back, empty")
        time.sleep(3)
        kill("the worker's main process", _wait_for_child(run.pid, "worker"))
        time.sleep(3)
        cut = postgres_outage(ADMIN_URL, TEST_DB, seconds=4.0)
        events.append(f"{time.monotonic() - started:5.1f}s Postgres back ({cut} cut)")
        kill("beat again", _wait_for_child(run.pid, "beat"))

        deadline = time.monotonic() + 240
        while pending() and time.monotonic() < deadline:
            time.sleep(1.0)
        left = pending()
        run.send_signal(signal.SIGTERM)
        code = run.wait(90)
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
        broker.crash()
    output = log.read_text(errors="replace")
    summary = "\n".join(events)
    assert left == 0, f"{left} ids never became final\n{summary}\n{output[-6000:]}"
    assert code == 0, output[-3000:]
    # Each death was noticed and repaired by the supervisor.
    assert output.count("celery beat (pid") >= 2 and "exited with signal SIGKILL" in output
    assert "celery worker (pid" in output and "restarting it in" in output

    with session_scope() as session:
        states = check_everything(session, base_url)
    assert sum(states.values()) == asks + executions
    assert fetches_after_final(base_url) == []
    for secret in ("lvk_test_suite_key", "ml_test_suite_key"):
        assert secret not in output
    print(f"\nrun under chaos: {summary}\nstates {states}")
