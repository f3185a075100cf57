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
3. what another process read from those headers, shared beside the bucket in
   Redis: a process that only claims (Celery's dispatch runs in whichever pool
   process is free) must not plan with the safe default while others know better;
4. a safe default (the cheapest documented plan) while no header has been seen.

`X-RateLimit-Remaining` lowers the mirror when the vendor counts fewer tokens
than we do (another client on the same key), a 429's `Retry-After` (or, without
one, `X-RateLimit-Reset`) pauses the key for everyone. Without Redis, or while it
is down, each process keeps a local bucket with a fraction of the budget.

A process takes its slots a few at a time (at most PREFETCH_SECONDS of the
budget, at most PREFETCH_SLOTS) rather than one Redis call per request: on a fast
key that saves most round trips, each of which also holds up the fetch pipeline's
event loop, and on a slow key it still takes one slot at a time. Slots not used
within SLOT_TTL_SECONDS are dropped, never sent late.
"""

from __future__ import annotations

import collections
import email.utils
import logging
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import httpx
import redis

from models import Vendor
from worker.config import Settings

log = logging.getLogger("mentionsync.ratelimit")
T = TypeVar("T")

# Aim a little under the vendor's rate: arrival jitter on the network must not
# turn an exactly-at-the-limit request stream into 429s.
HEADROOM = 0.97
REDIS_RETRY_SECONDS = 10.0
PREFETCH_SECONDS = 0.05
PREFETCH_SLOTS = 16
SLOT_TTL_SECONDS = 0.5
# The vendor's Remaining count is pushed to the shared bucket at most this often
# per process: it corrects drift, it does not need to be exact per request.
SYNC_INTERVAL_SECONDS = 0.1
# A budget read from headers is shared for this long after the last process
# that read it said so, and re-said at most this often; a process that has not
# heard from the key looks it up at most once a second.
SHARED_BUDGET_TTL_SECONDS = 3600
SHARE_EVERY_SECONDS = 60.0
LOOKUP_EVERY_SECONDS = 1.0


@dataclass(frozen=True, slots=True)
class Budget:
    rate: float  # sustained requests per second
    burst: float  # bucket size

    @property
    def effective_rate(self) -> float:
        return self.rate * HEADROOM


class RatePlan(Protocol):
    """What a vendor says about its keys' budgets (its VendorSpec)."""

    @property
    def vendor(self) -> Vendor: ...

    @property
    def safe_budget(self) -> Budget: ...

    def budget_from_limit(self, limit: float, window: float | None = None) -> Budget: ...


def budget_from_headers(
    plan: RatePlan, headers: httpx.Headers, window: float | None = None
) -> Budget | None:
    """What the vendor's headers say about the key's plan, if anything; `window`:
    the longest time to X-RateLimit-Reset seen so far, if the vendor sends it."""
    raw = headers.get("x-ratelimit-limit")
    try:
        limit = float(raw) if raw is not None else math.nan
    except ValueError:
        return None
    if not math.isfinite(limit) or limit < 1:
        return None
    return plan.budget_from_limit(limit, window)


def reset_window(headers: httpx.Headers, now: float) -> float | None:
    """Seconds until X-RateLimit-Reset (epoch seconds), if it is there and ahead."""
    raw = headers.get("x-ratelimit-reset")
    try:
        seconds = float(raw) - now if raw is not None else math.nan
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


# A vendor's Retry-After or reset header is honoured up to this many seconds
# (MAX_RETRY_AFTER_SECONDS): a typo or a hostile "1e12" must not park a key for ever.
DEFAULT_MAX_PAUSE_SECONDS = 300.0


def clamp_seconds(value: float, cap: float) -> float:
    """A header's wait, made finite and put within [0, cap]."""
    if math.isnan(value):
        return 0.0
    return min(max(0.0, value), cap)


def retry_after_seconds(
    headers: httpx.Headers, cap: float = DEFAULT_MAX_PAUSE_SECONDS
) -> float | None:
    """Retry-After in seconds (delta-seconds or an HTTP-date), clamped to `cap`."""
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return clamp_seconds(float(value), cap)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:
        return None
    return clamp_seconds(when.timestamp() - time.time(), cap)


def pause_seconds(
    status: int | None,
    headers: httpx.Headers,
    now: float,
    cap: float = DEFAULT_MAX_PAUSE_SECONDS,
) -> float | None:
    """How long a response says the key must rest: Retry-After, else
    X-RateLimit-Reset (epoch seconds), each clamped to `cap`."""
    if status != 429:
        return None
    retry_after = retry_after_seconds(headers, cap)
    if retry_after is not None:
        return retry_after
    reset = headers.get("x-ratelimit-reset")
    if reset is not None:
        try:
            return clamp_seconds(float(reset) - now, cap)
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


def slots_within(wait: float, interval: float, n: int, max_wait: float) -> int:
    """How many of n consecutive slots, the first `wait` seconds away (negative:
    burst room), can be sent within max_wait."""
    if wait > max_wait:
        return 0
    return min(n, int((max_wait - wait) / interval) + 1)


def single(reservation: tuple[int, float]) -> float:
    """A one-slot reservation as the wait before sending (refused: the wait needed)."""
    granted, wait = reservation
    return max(0.0, wait) if granted else wait


class RateLimiter(Protocol):
    @property
    def budget(self) -> Budget:
        """The key's budget as currently known."""

    @property
    def known(self) -> bool:
        """Whether the budget is settled: configured, read from a header, or the
        safe default after an answer that carried none."""

    def take(self, max_wait: float) -> tuple[bool, float]:
        """Reserve a slot within max_wait: (True, wait until it) or (False, wait)."""

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
        return single(self.reserve_many(budget, 1, max_wait))

    def reserve_many(self, budget: Budget, n: int, max_wait: float) -> tuple[int, float]:
        with self._lock:
            now = self._clock()
            interval = 1.0 / budget.effective_rate
            tat = max(self.tat, now)
            wait = tat - now - (budget.burst - 1) * interval
            granted = slots_within(wait, interval, n, max_wait)
            if granted:
                self.tat = tat + granted * interval
            return granted, wait

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
# Up to n consecutive slots within max_wait: returns {granted, wait of the first}
# (numbers as strings: Redis would truncate Lua numbers to integers).
_RESERVE = (
    _NOW
    + """
local interval, burst, max_wait = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local n, horizon = tonumber(ARGV[4]), tonumber(ARGV[5])
-- A TAT beyond the horizon (written by a bug or an older version) is not honoured.
local tat = math.min(math.max(tonumber(redis.call('GET', KEYS[1]) or 0), now), now + horizon)
-- The floor the vendor's remaining count set since this process's last call.
tat = math.max(tat, now + tonumber(ARGV[6] or 0))
local wait = tat - now - (burst - 1) * interval
if wait > max_wait then return {'0', tostring(wait)} end
local granted = math.min(n, math.floor((max_wait - wait) / interval) + 1)
redis.call('SET', KEYS[1], tostring(tat + granted * interval), 'EX', 3600)
return {tostring(granted), tostring(wait)}
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

    def __init__(
        self,
        client: redis.Redis[bytes],
        key: str,
        local_share: float,
        label: str = "",
        max_pause: float = DEFAULT_MAX_PAUSE_SECONDS,
    ) -> None:
        self.client = client
        self.max_pause = max_pause
        self.key = key
        self.label = label or key
        self.local_share = local_share
        self.local = LocalBucket()
        self._reserve = client.register_script(_RESERVE)
        self._push = client.register_script(_PUSH)
        self._down_until = 0.0
        self._lock = threading.Lock()
        # A floor from the vendor's remaining count (monotonic time), sent with the
        # next reservation rather than in a round trip of its own.
        self._floor_at = -math.inf

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
        return single(self.reserve_many(budget, 1, max_wait))

    def reserve_many(self, budget: Budget, n: int, max_wait: float) -> tuple[int, float]:
        if self._redis_ok():
            interval = 1.0 / budget.effective_rate
            try:
                horizon = self.max_pause + budget.burst * interval
                floor_at, self._floor_at = self._floor_at, -math.inf
                floor = min(horizon, max(0.0, floor_at - time.monotonic()))
                granted, wait = self._reserve(
                    keys=[self.key], args=[interval, budget.burst, max_wait, n, horizon, floor]
                )
                return int(granted), float(wait)
            except redis.RedisError as exc:
                self._went_down(exc)
        return self.local.reserve_many(self._local_budget(budget), n, max_wait)

    def _best_effort(self, call: Callable[[], T]) -> T | None:
        """`call` against Redis, or None while it is down (then it is marked down)."""
        if not self._redis_ok():
            return None
        try:
            return call()
        except redis.RedisError as exc:
            self._went_down(exc)
            return None

    def _push_to(self, seconds_from_now: float) -> None:
        self._best_effort(lambda: self._push(keys=[self.key], args=[seconds_from_now]))

    def pause(self, budget: Budget, seconds: float) -> None:
        self.local.pause(self._local_budget(budget), seconds)
        self._push_to(pause_floor(budget, seconds))

    def sync(self, budget: Budget, remaining: float) -> None:
        interval = 1.0 / budget.effective_rate
        self.local.sync(self._local_budget(budget), remaining * self.local_share)
        # Sent with this process's next reservation, a few slots from now: a
        # round trip per sync would cost more than the slots it saves.
        floor_at = time.monotonic() + (budget.burst - remaining) * interval
        self._floor_at = max(self._floor_at, floor_at)

    def share(self, budget: Budget) -> None:
        value = f"{budget.rate!r} {budget.burst!r}"
        self._best_effort(
            lambda: self.client.set(f"{self.key}:budget", value, ex=SHARED_BUDGET_TTL_SECONDS)
        )

    def shared(self) -> Budget | None:
        return parse_shared_budget(self._best_effort(lambda: self.client.get(f"{self.key}:budget")))


def parse_shared_budget(value: bytes | None) -> Budget | None:
    """A budget as `SharedBucket.share` stores it; None for anything else (a
    missing key, or a value some other program wrote)."""
    if value is None:
        return None
    try:
        rate, burst = (float(part) for part in value.split())
    except ValueError:
        return None
    if not (math.isfinite(rate) and math.isfinite(burst) and rate > 0 and burst >= 1):
        return None
    return Budget(rate, burst)


class Bucket(Protocol):
    def reserve_many(self, budget: Budget, n: int, max_wait: float) -> tuple[int, float]: ...
    def pause(self, budget: Budget, seconds: float) -> None: ...
    def sync(self, budget: Budget, remaining: float) -> None: ...
    def share(self, budget: Budget) -> None:
        """Tell the key's other processes the budget read from its headers."""

    def shared(self) -> Budget | None:
        """The budget another process read from the key's headers, if any."""


class KeyBudget:
    """The limiter a vendor client calls around each request."""

    def __init__(
        self,
        plan: RatePlan,
        bucket: Bucket,
        configured: Budget | None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        max_pause: float = DEFAULT_MAX_PAUSE_SECONDS,
    ) -> None:
        self.plan = plan
        self.vendor = plan.vendor
        self.max_pause = max_pause
        self.bucket = bucket
        self.configured = configured
        self.learned: Budget | None = None
        self.answered = False  # any answer seen, with or without rate headers
        self._window: float | None = None  # longest time to X-RateLimit-Reset seen
        self._sleep = sleep
        self._clock = clock
        self._lock = threading.Lock()
        self._slots: collections.deque[float] = collections.deque()  # monotonic send times
        self._synced_at = -math.inf
        self._shared_at = -math.inf  # when `learned` was last shared
        self._others: Budget | None = None  # what another process shared
        self._looked_at = -math.inf

    @property
    def budget(self) -> Budget:
        if self.configured is not None:
            return self.configured
        if self.learned is not None:
            return self.learned
        return self._from_others() or self.plan.safe_budget

    @property
    def known(self) -> bool:
        if self.configured is not None or self.learned is not None or self.answered:
            return True
        return self._from_others() is not None

    def _from_others(self) -> Budget | None:
        """The budget other processes read from headers, until this one has heard
        from the key itself (looked up at most every LOOKUP_EVERY_SECONDS)."""
        if self.answered:
            return None
        now = self._clock()
        if now - self._looked_at >= LOOKUP_EVERY_SECONDS:
            self._looked_at = now
            self._others = self.bucket.shared()
        return self._others

    def take(self, max_wait: float) -> tuple[bool, float]:
        """Reserve this key's next slot if it comes within `max_wait` seconds:
        (True, seconds until it) or (False, seconds the caller would wait). The
        caller sleeps until its slot, with time.sleep or asyncio.sleep."""
        max_wait = max(0.0, max_wait)
        with self._lock:
            now = self._clock()
            while self._slots and self._slots[0] < now - SLOT_TTL_SECONDS:
                self._slots.popleft()  # too old to send: gone, like an unused token
            if not self._slots:
                budget = self.budget
                interval = 1.0 / budget.effective_rate
                n = max(1, min(PREFETCH_SLOTS, int(budget.effective_rate * PREFETCH_SECONDS)))
                granted, wait = self.bucket.reserve_many(budget, n, max_wait)
                if not granted:
                    return False, wait
                self._slots.extend(now + max(0.0, wait + i * interval) for i in range(granted))
            wait = self._slots[0] - now
            if wait > max_wait:
                return False, wait  # kept for a caller that may wait longer
            self._slots.popleft()
        return True, max(0.0, wait)

    def acquire(self, max_wait: float) -> float | None:
        granted, wait = self.take(max_wait)
        if not granted:
            return wait
        if wait > 0:
            self._sleep(wait)
        return None

    def observe(self, status: int | None, headers: httpx.Headers) -> None:
        if status is None:
            return
        self.answered = True
        if self.configured is None:
            # The longest window seen: a minute's window read near its end must not
            # pass for a second's.
            window = reset_window(headers, time.time())
            if window is not None:
                self._window = max(self._window or 0.0, window)
            learned = budget_from_headers(self.plan, headers, self._window)
            if learned is not None and learned != self.learned:
                log.info(
                    "%s rate budget from headers: %.1f/s, burst %.0f",
                    self.vendor,
                    learned.rate,
                    learned.burst,
                    extra={"vendor": self.vendor.value},
                )
                self.learned = learned
                self._shared_at = -math.inf
            now = self._clock()
            if learned is not None and now - self._shared_at >= SHARE_EVERY_SECONDS:
                self._shared_at = now
                self.bucket.share(learned)
        pause = pause_seconds(status, headers, time.time(), self.max_pause)
        if pause is not None:
            log.info(
                "%s answered 429: every worker on this key waits %.1fs",
                self.vendor,
                pause,
                extra={"vendor": self.vendor.value},
            )
            with self._lock:
                self._slots.clear()  # taken before the pause: not valid through it
            self.bucket.pause(self.budget, pause)
            return
        remaining = remaining_tokens(headers)
        if remaining is None or remaining >= self.budget.burst:
            return
        now = self._clock()
        if remaining > 0 and now - self._synced_at < SYNC_INTERVAL_SECONDS:
            return
        self._synced_at = now
        self.bucket.sync(self.budget, remaining)


def configured_budget(settings: Settings, vendor: Vendor) -> Budget | None:
    rate = settings.rate_limit(vendor)
    if rate is None:
        return None
    burst = settings.rate_burst(vendor) or max(1.0, rate)
    return Budget(rate, burst)


def build_limiter(settings: Settings, plan: RatePlan) -> RateLimiter:
    vendor = plan.vendor
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
        bucket = SharedBucket(
            client, key, settings.rate_limit_local_share, label, settings.max_retry_after_seconds
        )
    return KeyBudget(
        plan,
        bucket,
        configured_budget(settings, vendor),
        max_pause=settings.max_retry_after_seconds,
    )


class _LocalOnly:
    """No Redis configured: a per-process share of the budget."""

    def __init__(self, share: float) -> None:
        self.fraction = share
        self.local = LocalBucket()

    def _scaled(self, budget: Budget) -> Budget:
        return Budget(budget.rate * self.fraction, max(1.0, budget.burst * self.fraction))

    def reserve_many(self, budget: Budget, n: int, max_wait: float) -> tuple[int, float]:
        return self.local.reserve_many(self._scaled(budget), n, max_wait)

    def pause(self, budget: Budget, seconds: float) -> None:
        self.local.pause(self._scaled(budget), seconds)

    def sync(self, budget: Budget, remaining: float) -> None:
        self.local.sync(self._scaled(budget), remaining * self.fraction)

    def share(self, budget: Budget) -> None:
        pass  # each process learns the budget from its own answers

    def shared(self) -> Budget | None:
        return None
