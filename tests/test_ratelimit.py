"""The shared rate budget: reservations in real Redis, shared across processes,
paused by 429s without a herd, synced to the vendor's headers, and still working
(per process) while Redis is down. No wall-clock timing is asserted: the tests
read the waits the budget hands out."""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import socket
import uuid

import httpx
import pytest
import redis

from tests.conftest import REDIS_URL
from worker.config import load_settings
from worker.ratelimit import (
    HEADROOM,
    PREFETCH_SECONDS,
    PREFETCH_SLOTS,
    Budget,
    KeyBudget,
    LocalBucket,
    SharedBucket,
    budget_from_headers,
    build_limiter,
    pause_seconds,
)
from worker.vendors.registry import MENTIONLAB, MENTIONSAPI

BUDGET = Budget(rate=10.0, burst=3.0)
INTERVAL = 1 / BUDGET.effective_rate


def shared(key: str | None = None, url: str = REDIS_URL) -> SharedBucket:
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    return SharedBucket(client, key or f"test:rl:{uuid.uuid4().hex}", local_share=0.25)


def _reserve_many(key: str, n: int, out: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    bucket = shared(key)
    out.put([bucket.reserve(BUDGET, 3600) for _ in range(n)])


def test_burst_then_one_slot_per_interval() -> None:
    bucket = shared()
    waits = [bucket.reserve(BUDGET, 3600) for _ in range(8)]
    assert waits[:3] == [0.0, 0.0, 0.0]
    # Slot k (after the burst) is (k - burst + 1) intervals away, give or take
    # the few milliseconds these calls take.
    for k, wait in enumerate(waits[3:], start=1):
        assert wait == pytest.approx(k * INTERVAL, abs=0.02)


def test_processes_sharing_a_key_never_get_the_same_slot() -> None:
    key = f"test:rl:{uuid.uuid4().hex}"
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()  # type: ignore[type-arg]
    procs = [ctx.Process(target=_reserve_many, args=(key, 25, out)) for _ in range(4)]
    for p in procs:
        p.start()
    waits = sorted(w for _ in procs for w in out.get(timeout=60))
    for p in procs:
        p.join(30)
    assert len(waits) == 100
    # 100 reservations from 4 processes: one budget, so the last slot is about
    # (100 - burst) intervals out, not a quarter of that.
    assert waits[-1] >= (100 - BUDGET.burst) * INTERVAL - 2.0
    assert sum(1 for w in waits if w == 0.0) <= BUDGET.burst


def test_a_reservation_beyond_max_wait_is_refused_and_not_taken() -> None:
    bucket = shared()
    for _ in range(3):
        bucket.reserve(BUDGET, 3600)
    refused = bucket.reserve(BUDGET, max_wait=0.01)
    assert refused == pytest.approx(INTERVAL, abs=0.02)
    # The refused call took no slot: the next caller still gets the first one.
    assert bucket.reserve(BUDGET, 3600) == pytest.approx(INTERVAL, abs=0.02)


def test_pause_holds_everyone_then_releases_one_slot_at_a_time() -> None:
    key = f"test:rl:{uuid.uuid4().hex}"
    first, second = shared(key), shared(key)  # two workers on one key
    first.pause(BUDGET, 5.0)
    waits = [second.reserve(BUDGET, 3600) for _ in range(4)]
    assert waits[0] == pytest.approx(5.0, abs=0.05)
    gaps = [b - a for a, b in itertools.pairwise(waits)]
    assert gaps == pytest.approx([INTERVAL] * 3, abs=0.02)


def test_vendor_remaining_lowers_our_count() -> None:
    bucket = shared()
    bucket.sync(BUDGET, remaining=0)  # another client drained the key
    waits = [bucket.reserve(BUDGET, 3600) for _ in range(3)]
    assert waits == pytest.approx([INTERVAL, 2 * INTERVAL, 3 * INTERVAL], abs=0.02)
    # More remaining than we think never raises our count.
    other = shared()
    other.reserve(BUDGET, 3600)
    other.sync(BUDGET, remaining=3)
    assert other.reserve(BUDGET, 3600) == 0.0


def test_the_vendor_s_remaining_count_reaches_the_key_s_other_processes() -> None:
    """The floor a low remaining count sets goes out with the process's next
    reservation (no round trip of its own), and then holds for every process."""
    key = f"test:rl:{uuid.uuid4().hex}"
    ours, theirs = shared(key), shared(key)
    ours.sync(BUDGET, remaining=0)
    assert ours.reserve(BUDGET, 3600) == pytest.approx(INTERVAL, abs=0.02)
    assert theirs.reserve(BUDGET, 3600) == pytest.approx(2 * INTERVAL, abs=0.02)


def test_dead_redis_falls_back_to_a_local_share(caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    bucket = shared(url=f"redis://127.0.0.1:{port}/0")
    with caplog.at_level(logging.WARNING, logger="mentionsync.ratelimit"):
        waits = [bucket.reserve(BUDGET, 3600) for _ in range(3)]
    local = Budget(BUDGET.rate * 0.25, 1.0)
    assert waits[0] == 0.0
    assert waits[1] == pytest.approx(1 / local.effective_rate, abs=0.02)
    warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
    assert len(warnings) == 1  # said once, not per request


def test_local_bucket_with_a_fake_clock() -> None:
    now = [1000.0]
    bucket = LocalBucket(clock=lambda: now[0])
    assert [bucket.reserve(BUDGET, 3600) for _ in range(4)][-1] == pytest.approx(INTERVAL)
    now[0] += 60  # a minute idle refills the burst, no more
    assert [bucket.reserve(BUDGET, 3600) for _ in range(3)] == pytest.approx([0.0, 0.0, 0.0])
    bucket.pause(BUDGET, 2.0)
    assert bucket.reserve(BUDGET, 3600) == pytest.approx(2.0)


def test_budget_from_headers_reads_the_documented_plans() -> None:
    def h(limit: str) -> httpx.Headers:
        return httpx.Headers({"X-RateLimit-Limit": limit})

    assert budget_from_headers(MENTIONSAPI, h("5")) == Budget(1.0, 5.0)
    assert budget_from_headers(MENTIONSAPI, h("120")) == Budget(60.0, 120.0)
    assert budget_from_headers(MENTIONSAPI, h("64")) == Budget(32.0, 64.0)
    # MentionLab's docs disagree on the unit: keep the safe rate, take the burst.
    assert budget_from_headers(MENTIONLAB, h("20")) == Budget(2.0, 20.0)
    for bad in ("", "abc", "0", "-3", "nan", "inf"):
        assert budget_from_headers(MENTIONSAPI, h(bad)) is None
    assert budget_from_headers(MENTIONSAPI, httpx.Headers()) is None


def test_mentionlab_s_reset_header_says_whether_its_limit_counts_per_second() -> None:
    import time

    def h(limit: str, reset_in: float) -> httpx.Headers:
        reset = f"{time.time() + reset_in:.3f}"
        return httpx.Headers({"X-RateLimit-Limit": limit, "X-RateLimit-Reset": reset})

    # Enterprise, "100/s": the window resets within the second.
    assert budget_from_headers(MENTIONLAB, h("100", 1), window=1.0) == Budget(100.0, 100.0)
    # "120 requests per minute, burst 20": a minute's window.
    assert budget_from_headers(MENTIONLAB, h("120", 40), window=40.0) == Budget(2.0, 20.0)

    budget = KeyBudget(MENTIONLAB, shared(), configured=None)
    budget.observe(200, h("100", 1))
    assert budget.budget == Budget(100.0, 100.0)
    # A minute's window once seen is not mistaken for a second's near its end.
    budget.observe(200, h("3000", 45))
    budget.observe(200, h("3000", 1))
    assert budget.budget == Budget(50.0, 20.0)


def test_a_budget_read_from_headers_is_known_to_the_keys_other_processes() -> None:
    """Celery's dispatch claims in whichever pool process is free, often one that
    never fetched: it must plan with the budget the others read, not the safe default
    (which held an Enterprise key's claims to a batch per tick)."""
    key = f"test:rl:{uuid.uuid4().hex}"
    now = [0.0]
    fetcher = KeyBudget(MENTIONSAPI, shared(key), configured=None)
    claimer = KeyBudget(MENTIONSAPI, shared(key), configured=None, clock=lambda: now[0])
    assert not claimer.known and claimer.budget == MENTIONSAPI.safe_budget
    fetcher.observe(200, httpx.Headers({"X-RateLimit-Limit": "1000"}))
    assert fetcher.budget == Budget(500.0, 1000.0)
    assert not claimer.known  # looked up a moment ago: not again before a second
    now[0] += 1.0
    assert claimer.known and claimer.budget == Budget(500.0, 1000.0)
    # Once it hears from the key itself, its own headers decide.
    claimer.observe(200, httpx.Headers({"X-RateLimit-Limit": "40"}))
    assert claimer.budget == Budget(20.0, 40.0)
    # The key's plan changed: the newest reading is shared.
    now[0] += 1.0
    assert KeyBudget(MENTIONSAPI, shared(key), configured=None).budget == Budget(20.0, 40.0)
    # Anything else under the key (another program, a garbled value) is ignored.
    client = redis.Redis.from_url(REDIS_URL)
    for garbage in (b"fast", b"500", b"nan 10", b"-5 10", b"500 0.5"):
        client.set(f"{key}:budget", garbage)
        stranger = KeyBudget(MENTIONSAPI, shared(key), configured=None)
        assert not stranger.known and stranger.budget == MENTIONSAPI.safe_budget


def test_without_redis_each_process_learns_the_budget_on_its_own(configure) -> None:  # type: ignore[no-untyped-def]
    configure(
        CELERY_BROKER_URL="sqla+sqlite:///:memory:",
        REDIS_URL="",
        MENTIONSAPI_RATE_LIMIT="",
        MENTIONSAPI_RATE_BURST="",
    )
    settings = load_settings()
    assert settings.shared_redis_url is None
    limiter = build_limiter(settings, MENTIONSAPI)
    assert not limiter.known
    limiter.observe(200, httpx.Headers({"X-RateLimit-Limit": "1000"}))
    assert limiter.known and limiter.budget == Budget(500.0, 1000.0)
    assert build_limiter(settings, MENTIONSAPI).known is False  # nothing shared


def test_pause_comes_from_retry_after_else_reset() -> None:
    assert pause_seconds(200, httpx.Headers({"Retry-After": "9"}), 0) is None
    assert pause_seconds(429, httpx.Headers({"Retry-After": "7"}), 0) == 7.0
    assert pause_seconds(429, httpx.Headers({"X-RateLimit-Reset": "1030"}), 1000.0) == 30.0
    assert pause_seconds(429, httpx.Headers({"Retry-After": "soon"}), 0) == 1.0
    assert pause_seconds(429, httpx.Headers(), 0) == 1.0


def test_key_budget_learns_from_headers_and_pauses_on_429() -> None:
    slept: list[float] = []
    budget = KeyBudget(MENTIONSAPI, shared(), configured=None, sleep=slept.append)
    assert budget.budget == Budget(1.0, 5.0)  # safe until the vendor says otherwise
    budget.observe(200, httpx.Headers({"X-RateLimit-Limit": "40", "X-RateLimit-Remaining": "39"}))
    assert budget.budget == Budget(20.0, 40.0)
    budget.observe(429, httpx.Headers({"Retry-After": "3", "X-RateLimit-Limit": "40"}))
    refused = budget.acquire(max_wait=1.0)
    assert refused is not None and refused == pytest.approx(3.0, abs=0.05)
    assert budget.acquire(max_wait=10.0) is None and slept[-1] == pytest.approx(3.0, abs=0.05)
    configured = KeyBudget(MENTIONLAB, shared(), configured=Budget(50, 50))
    configured.observe(200, httpx.Headers({"X-RateLimit-Limit": "5"}))
    assert configured.budget == Budget(50, 50)
    assert HEADROOM < 1


def test_reserve_many_grants_only_the_slots_within_max_wait() -> None:
    bucket = shared()
    # Burst 3 is free now, then one slot per interval: 2.5 intervals of patience
    # reach 2 more slots (at 1 and 2 intervals), not the one at 3.
    granted, wait = bucket.reserve_many(BUDGET, 10, max_wait=2.5 * INTERVAL)
    assert granted == 5 and wait <= 0
    granted, wait = bucket.reserve_many(BUDGET, 10, max_wait=0.5 * INTERVAL)
    assert granted == 0 and wait == pytest.approx(3 * INTERVAL, abs=0.02)  # the next slot
    local = LocalBucket(clock=lambda: 100.0)
    assert local.reserve_many(BUDGET, 10, max_wait=2.5 * INTERVAL) == (5, -2 * INTERVAL)


class CountingBucket:
    """The real shared bucket, counting the reservation round trips made to Redis."""

    def __init__(self, bucket: SharedBucket) -> None:
        self.bucket = bucket
        self.calls: list[int] = []

    def reserve_many(self, budget: Budget, n: int, max_wait: float) -> tuple[int, float]:
        self.calls.append(n)
        return self.bucket.reserve_many(budget, n, max_wait)

    def pause(self, budget: Budget, seconds: float) -> None:
        self.bucket.pause(budget, seconds)

    def sync(self, budget: Budget, remaining: float) -> None:
        self.bucket.sync(budget, remaining)

    def share(self, budget: Budget) -> None:
        self.bucket.share(budget)

    def shared(self) -> Budget | None:
        return self.bucket.shared()


def test_a_fast_key_takes_its_slots_a_few_at_a_time_and_drops_stale_ones() -> None:
    now = [1000.0]
    counting = CountingBucket(shared())
    fast = KeyBudget(
        MENTIONSAPI, counting, Budget(1000, 1000), sleep=lambda _: None, clock=lambda: now[0]
    )
    # PREFETCH_SECONDS of a 970/s budget, at most PREFETCH_SLOTS, per round trip.
    each = min(PREFETCH_SLOTS, int(1000 * HEADROOM * PREFETCH_SECONDS))
    assert 16 <= each < 97
    assert all(fast.acquire(max_wait=1.0) is None for _ in range(4 * each))
    assert counting.calls == [each] * 4  # four round trips for four times that many requests
    assert fast.acquire(max_wait=1.0) is None
    now[0] += 10  # the slots left over are stale now: a new reservation is made
    assert fast.acquire(max_wait=1.0) is None
    assert counting.calls == [each] * 6

    slow_counting = CountingBucket(shared())
    slow = KeyBudget(MENTIONSAPI, slow_counting, Budget(2, 2), sleep=lambda _: None)
    assert slow.acquire(max_wait=60) is None and slow.acquire(max_wait=60) is None
    assert slow_counting.calls == [1, 1]  # a slow key never holds slots it may not use


def test_a_429_drops_slots_taken_before_it() -> None:
    slept: list[float] = []
    budget = KeyBudget(MENTIONSAPI, shared(), Budget(1000, 1000), sleep=slept.append)
    assert budget.acquire(max_wait=1.0) is None  # holds more slots now
    budget.observe(429, httpx.Headers({"Retry-After": "2"}))
    assert budget.acquire(max_wait=10.0) is None
    assert slept[-1] == pytest.approx(2.0, abs=0.05)
