"""One request budget per vendor key, shared by every worker process on every machine.

The vendors meter each API key with a token bucket, so we keep a mirror of that
bucket in Redis and take a token before each request. Taking a token is a
reservation (the generic cell rate algorithm): one atomic Lua call says how long
this request must wait for its slot, so requests leave evenly spaced at the
sustained rate, and when a 429's pause ends they resume one slot at a time
instead of all at once.

The budget is set, in order of preference, from:
1. `{VENDOR}_RATE_LIMIT` / `{VENDOR}_RATE_BURST` (the key's plan, configured);
2. the `X-RateLimit-Limit` header, read through the vendor's documented plans;
3. a safe default (the cheapest documented plan) while no header has been seen.

`X-RateLimit-Remaining` lowers the mirror when the vendor counts fewer tokens
than we do (another client on the same key), a 429's `Retry-After` (or, without
one, `X-RateLimit-Reset`) pauses the key for everyone. Without Redis, or while it
is down, each process keeps a local bucket with a fraction of the budget.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import httpx
import redis

from models import Vendor
from worker.config import Settings

log = logging.getLogger("mentionsync.ratelimit")

# MentionsAPI plans (api-notes): X-RateLimit-Limit is the burst; sustained rate by plan.
MENTIONSAPI_PLANS: dict[int, float] = {5: 1.0, 10: 5.0, 40: 20.0, 120: 60.0, 1000: 500.0}
# Until a header says otherwise: the cheapest documented plan of each vendor
# (MentionsAPI Free 1/s burst 5; MentionLab's stricter page, 120/min burst 20).
SAFE_DEFAULTS: dict[Vendor, tuple[float, float]] = {
    Vendor.MENTIONSAPI: (1.0, 5.0),
    Vendor.MENTIONLAB: (2.0, 20.0),
}
# Aim a little under the vendor's rate: arrival jitter on the network must not
# turn an exactly-at-the-limit request stream into 429s.
HEADROOM = 0.97
REDIS_RETRY_SECONDS = 10.0


@dataclass(frozen=True, slots=True)
class Budget:
    rate: float  # sustained requests per second
    burst: float  # bucket size

    @property
    def effective_rate(self) -> float:
        return self.rate * HEADROOM


def budget_from_headers(vendor: Vendor, headers: httpx.Headers) -> Budget | None:
    """What the vendor's headers say about the key's plan, if anything."""
    raw = headers.get("x-ratelimit-limit")
    try:
        limit = float(raw) if raw is not None else math.nan
    except ValueError:
        return None
    if not math.isfinite(limit) or limit < 1:
        return None
    if vendor is Vendor.MENTIONSAPI:
        # Every paid plan's burst is twice its sustained rate; Free is the exception.
        return Budget(MENTIONSAPI_PLANS.get(int(limit), limit / 2), limit)
    # MentionLab's pages disagree on what the limit counts (per second or per
    # minute), so only the burst is taken from it; the rate stays configured/safe.
    return Budget(SAFE_DEFAULTS[vendor][0], limit)


def pause_seconds(status: int | None, headers: httpx.Headers, now: float) -> float | None:
    """How long a response says the key must rest: Retry-After, else X-RateLimit-Reset."""
    if status != 429:
        return None
    retry_after = headers.get("retry-after")
    if retry_after is not None:
        try:
            return max(0.0, float(retry_after))
        except ValueError:
            pass
    reset = headers.get("x-ratelimit-reset")
    if reset is not None:
        try:
            return max(0.0, min(float(reset) - now, 3600.0))
        except ValueError:
            pass
    return 1.0


def remaining_tokens(headers: httpx.Headers) -> float | None:
    raw = headers.get("x-ratelimit-remaining")
    try:
        return max(0.0, float(raw)) if raw is not None else None
    except ValueError:
        return None


def pause_floor(budget: Budget, seconds: float) -> float:
    """Where a pause puts the bucket's TAT: one slot free when the pause ends, the
    rest refilling at the sustained rate, so workers come back one at a time."""
    return seconds + (budget.burst - 1) / budget.effective_rate


class RateLimiter(Protocol):
    @property
    def budget(self) -> Budget:
        """The key's budget as currently known."""

    def acquire(self, max_wait: float) -> float | None:
        """Wait for a request slot. None: send now. A number: the wait that was
        needed, longer than max_wait, so the request was not sent (nor reserved)."""

    def observe(self, status: int | None, headers: httpx.Headers) -> None:
        """Learn from a response's rate-limit headers and 429s."""


class LocalBucket:
    """The same reservation algorithm, in process; used without Redis."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.tat = 0.0  # theoretical arrival time of the next free slot

    def reserve(self, budget: Budget, max_wait: float) -> float:
        with self._lock:
            now = self._clock()
            interval = 1.0 / budget.effective_rate
            tat = max(self.tat, now)
            wait = tat - now - (budget.burst - 1) * interval
            if wait > max_wait:
                return wait
            self.tat = tat + interval
            return max(0.0, wait)

    def pause(self, budget: Budget, seconds: float) -> None:
        with self._lock:
            self.tat = max(self.tat, self._clock() + pause_floor(budget, seconds))

    def sync(self, budget: Budget, remaining: float) -> None:
        with self._lock:
            now = self._clock()
            interval = 1.0 / budget.effective_rate
            # Free slots = burst - (tat - now)/interval; lower it to `remaining`.
            floor = now + (budget.burst - remaining) * interval
            self.tat = max(self.tat, floor)


# The Redis state is the same single number, the bucket's theoretical arrival
# time (TAT), on Redis's own clock so machines with skewed clocks agree.
_NOW = "local t = redis.call('TIME') local now = tonumber(t[1]) + tonumber(t[2]) / 1e6 "
_RESERVE = (
    _NOW
    + """
local interval, burst, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tat = math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now)
local wait = tat - now - (burst - 1) * interval
if wait > max_wait then return tostring(wait) end
redis.call('SET', KEYS[1], tostring(tat + interval), 'EX', 3600)
return tostring(math.max(wait, 0))
"""
)
_PUSH = (
    _NOW
    + """
local floor = now + tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or 0)
if floor > tat then redis.call('SET', KEYS[1], tostring(floor), 'EX', 3600) end
return 1
"""
)


class SharedBucket:
    """The key's bucket in Redis; falls back to a local share while Redis is down."""

    def __init__(self, client: redis.Redis, key: str, local_share: float, label: str = "") -> None:
        self.client = client
        self.key = key
        self.label = label or key
        self.local_share = local_share
        self.local = LocalBucket()
        self._reserve = client.register_script(_RESERVE)
        self._push = client.register_script(_PUSH)
        self._down_until = 0.0
        self._lock = threading.Lock()

    def _redis_ok(self) -> bool:
        return time.monotonic() >= self._down_until

    def _went_down(self, exc: Exception) -> None:
        with self._lock:
            first = self._redis_ok()
            self._down_until = time.monotonic() + REDIS_RETRY_SECONDS
        if first:
            log.warning(
                "Redis unavailable for the shared rate budget of %s (%s); this process uses "
                "%.0f%% of the budget on its own until Redis is back",
                self.label,
                type(exc).__name__,
                self.local_share * 100,
            )

    def _local_budget(self, budget: Budget) -> Budget:
        return Budget(budget.rate * self.local_share, max(1.0, budget.burst * self.local_share))

    def reserve(self, budget: Budget, max_wait: float) -> float:
        if self._redis_ok():
            interval = 1.0 / budget.effective_rate
            try:
                return float(
                    self._reserve(keys=[self.key], args=[interval, budget.burst, max_wait])
                )
            except redis.RedisError as exc:
                self._went_down(exc)
        return self.local.reserve(self._local_budget(budget), max_wait)

    def _push_to(self, seconds_from_now: float) -> None:
        if self._redis_ok():
            try:
                self._push(keys=[self.key], args=[seconds_from_now])
                return
            except redis.RedisError as exc:
                self._went_down(exc)

    def pause(self, budget: Budget, seconds: float) -> None:
        self.local.pause(self._local_budget(budget), seconds)
        self._push_to(pause_floor(budget, seconds))

    def sync(self, budget: Budget, remaining: float) -> None:
        interval = 1.0 / budget.effective_rate
        self.local.sync(self._local_budget(budget), remaining * self.local_share)
        self._push_to((budget.burst - remaining) * interval)


class Bucket(Protocol):
    def reserve(self, budget: Budget, max_wait: float) -> float: ...
    def pause(self, budget: Budget, seconds: float) -> None: ...
    def sync(self, budget: Budget, remaining: float) -> None: ...


class KeyBudget:
    """The limiter a vendor client calls around each request."""

    def __init__(
        self,
        vendor: Vendor,
        bucket: Bucket,
        configured: Budget | None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.vendor = vendor
        self.bucket = bucket
        self.configured = configured
        self.learned: Budget | None = None
        self._sleep = sleep

    @property
    def budget(self) -> Budget:
        if self.configured is not None:
            return self.configured
        if self.learned is not None:
            return self.learned
        return Budget(*SAFE_DEFAULTS[self.vendor])

    def acquire(self, max_wait: float) -> float | None:
        wait = self.bucket.reserve(self.budget, max(0.0, max_wait))
        if wait > max_wait:
            return wait
        if wait > 0:
            self._sleep(wait)
        return None

    def observe(self, status: int | None, headers: httpx.Headers) -> None:
        if status is None:
            return
        if self.configured is None:
            learned = budget_from_headers(self.vendor, headers)
            if learned is not None and learned != self.learned:
                log.info(
                    "%s rate budget from headers: %.1f/s, burst %.0f",
                    self.vendor,
                    learned.rate,
                    learned.burst,
                    extra={"vendor": self.vendor.value},
                )
                self.learned = learned
        pause = pause_seconds(status, headers, time.time())
        if pause is not None:
            log.info(
                "%s answered 429: every worker on this key waits %.1fs",
                self.vendor,
                pause,
                extra={"vendor": self.vendor.value},
            )
            self.bucket.pause(self.budget, pause)
            return
        remaining = remaining_tokens(headers)
        if remaining is not None and remaining < self.budget.burst:
            self.bucket.sync(self.budget, remaining)


def configured_budget(settings: Settings, vendor: Vendor) -> Budget | None:
    rate = settings.rate_limit(vendor)
    if rate is None:
        return None
    burst = settings.rate_burst(vendor) or max(1.0, rate)
    return Budget(rate, burst)


def build_limiter(settings: Settings, vendor: Vendor) -> RateLimiter:
    bucket: Bucket
    url = settings.shared_redis_url
    if url is None:
        bucket = _LocalOnly(settings.rate_limit_local_share)
    else:
        client = redis.Redis.from_url(
            url, socket_timeout=1.0, socket_connect_timeout=1.0, health_check_interval=30
        )
        key = f"mentionsync:ratelimit:{vendor.value}:{settings.key_fingerprint(vendor)}"
        label = f"{vendor.value} key {settings.key_fingerprint(vendor)}"
        bucket = SharedBucket(client, key, settings.rate_limit_local_share, label)
    return KeyBudget(vendor, bucket, configured_budget(settings, vendor))


class _LocalOnly:
    """No Redis configured: a per-process share of the budget."""

    def __init__(self, share: float) -> None:
        self.share = share
        self.local = LocalBucket()

    def _scaled(self, budget: Budget) -> Budget:
        return Budget(budget.rate * self.share, max(1.0, budget.burst * self.share))

    def reserve(self, budget: Budget, max_wait: float) -> float:
        return self.local.reserve(self._scaled(budget), max_wait)

    def pause(self, budget: Budget, seconds: float) -> None:
        self.local.pause(self._scaled(budget), seconds)

    def sync(self, budget: Budget, remaining: float) -> None:
        self.local.sync(self._scaled(budget), remaining * self.share)
