"""One process's fetch pipeline: requests on an event loop, as many in flight as
each key's rate and the vendor's latency call for, and answers written as they
arrive, in batches.

A claimed batch enters with `submit` (the Celery fetch task, `sync`): its ids
are loaded in the caller's thread, then each id becomes a coroutine on the
pipeline's loop (one aiohttp session for the process) that waits for a place
in flight (`InFlightLimit`), then for a slot of the key's rate budget, then
sends. Every outcome is queued for the writer thread, which writes whatever has
arrived, of any batch, in one transaction (worker/writing.py) once a batch's
worth is there or FLUSH_SECONDS after the first. A slow request delays only its
own id. A batch is done when each of its ids is written or given back.

`close` stops the pipeline: ids still waiting for a slot are given back at once
(due again in a tick), requests in flight get DRAIN_SECONDS to finish and be
written, and whatever is left is given back too.
"""

from __future__ import annotations

import asyncio
import logging
import math
import queue
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

import aiohttp
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from models import Vendor, utcnow
from worker.accounts import account_gate
from worker.common import short_error
from worker.config import Settings
from worker.db import Database
from worker.memory import release_free_memory
from worker.metrics import observe_polled_batch
from worker.outcome import Action, Outcome, TrackedView
from worker.ratelimit import RateLimiter
from worker.scheduling import batch_ids
from worker.tracking import Claim, load_claim
from worker.vendors.base import RawResponse, Target
from worker.vendors.client import VendorClient, build_async_session
from worker.writing import (
    Part,
    apply_parts,
    internal_error,
    is_disconnect,
    release_claim,
    write_outcomes,
    write_surviving_outages,
)

# The batch lines keep the logger name operators filter on.
log = logging.getLogger("mentionsync.poller")
T = TypeVar("T")

# The writer waits at most this long after an answer arrives for more to write with it.
FLUSH_SECONDS = 0.1
# A writer behind takes up to this many batches' worth of answers per transaction,
# and fetching waits while that many are fetched or in flight and unwritten: memory
# stays bounded when the database is slower than the vendor, and a process killed
# loses no more fetched answers than that. One batch: three held more memory and
# were no faster (docs/benchmarks.md, 2026-12-03).
BEHIND_FACTOR = 1
# On close, requests already sent get this long to answer and be written.
DRAIN_SECONDS = 10.0
# Little's law with room: in flight = rate x latency x HEADROOM, so that the
# latency's spread and a burst of slow answers do not leave budget slots unused.
HEADROOM = 2.0
MIN_IN_FLIGHT = 4
# Latency: a fast moving average (now) and a slow one (what is usual).
FAST_WEIGHT = 0.1
SLOW_WEIGHT = 0.01
# A vendor answering this many times slower than usual is struggling (judged
# once a few answers have shown what is usual).
SLOWDOWN = 2.0
WARMUP_ANSWERS = 20
# A refused key stops this process's requests with that key for this long; by
# then the refusal is written and the key's gate keeps its ids from being claimed.
REFUSAL_SECONDS = 5.0
# A Celery process takes another message only while some key it fetches for has
# less than this much work queued (at its places in flight and the vendor's usual
# latency, or the key's rate if that is lower): the next message then goes to a
# process with places free instead of queueing here.
QUEUE_SECONDS = 0.5
# A message may bring a key more than it needed: up to this many batches beyond
# enough, a process still takes messages for another key that runs low.
SPARE_BATCHES = 2
# It waits at most this long for room, and stops waiting once nothing it holds has
# moved on for STALL_SECONDS (a vendor that hangs must not hold other keys' batches).
ROOM_WAIT_SECONDS = 3.0
STALL_SECONDS = 0.5
ROOM_POLL_SECONDS = 0.1
# Bodies larger than this are parsed off the event loop, so that one large answer
# does not hold up every other request's reads and deadlines.
INLINE_BODY_BYTES = 64 * 1024


class PipelineClosed(RuntimeError):
    """The pipeline is closing or closed: it takes no more batches."""


class _LeaseEnding(Exception):
    """A request still in flight when its batch's lease is about to end."""


class InFlightLimit:
    """How many requests of one key this process keeps in flight, and the wait
    for a place. Lives on the pipeline's loop only.

    The limit is the smallest of: Little's law (the key's rate times the usual
    latency, with HEADROOM), FETCH_CONCURRENCY, and a window that starts at
    MIN_IN_FLIGHT and grows by one per good answer while it is full (doubling per
    round trip), so a refused key or a struggling vendor costs a few requests, not hundreds.
    The window halves, at most once per latency, while the vendor answers 429 or
    5xx, does not answer, or answers SLOWDOWN times slower than usual.
    """

    def __init__(self, cap: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.cap = cap
        self.window = float(min(cap, MIN_IN_FLIGHT))
        self.latency: float | None = None  # now
        self.usual: float | None = None  # over the last few hundred answers
        self.answers = 0
        self.active = 0
        self._cut_at = -math.inf
        self._clock = clock
        self._waiters: deque[asyncio.Future[None]] = deque()

    def limit(self, rate: float) -> int:
        wanted = self.cap if self.usual is None else math.ceil(rate * self.usual * HEADROOM)
        return max(min(self.cap, MIN_IN_FLIGHT), min(self.cap, int(self.window), wanted))

    def observe(self, raw: RawResponse) -> None:
        """Learn from one answer: its latency, and whether the vendor struggles."""
        struggling = raw.status is None or raw.status == 429 or raw.status >= 500
        if raw.status is not None:
            self.answers += 1
            if self.latency is None or self.usual is None:
                self.latency = self.usual = raw.elapsed
            else:
                self.latency += FAST_WEIGHT * (raw.elapsed - self.latency)
                self.usual += SLOW_WEIGHT * (raw.elapsed - self.usual)
                if self.answers > WARMUP_ANSWERS:
                    struggling |= self.latency > SLOWDOWN * self.usual
        if not struggling:
            # Only a window that holds requests back grows: a vendor answering faster
            # than anything downstream (the writer, a rate slot) needs no more places,
            # and each place costs memory.
            if self._waiters or self.active >= int(self.window):
                self.window = min(float(self.cap), self.window + 1)
            return
        now = self._clock()
        if now - self._cut_at >= (self.latency or 0.0):
            self.window = max(float(MIN_IN_FLIGHT), self.window / 2)
            self._cut_at = now

    def allowed(self, limiter: RateLimiter) -> int:
        # Until the key's budget is known, one request: its answer's headers tell
        # the budget, and slots reserved at the safe default would hold the
        # key's shared bucket back long after.
        return self.limit(limiter.budget.effective_rate) if limiter.known else 1

    def enough(self, limiter: RateLimiter, batch_size: int) -> float:
        """Ids worth QUEUE_SECONDS of this process's fetching for the key (a batch
        until answers have shown the latency and the budget). Unlimited while the
        key's rate, not the places, is the limit: every process holding its ids then
        shares the same budget, and spreading them wins nothing."""
        if self.usual is None or not limiter.known:
            return batch_size
        latency = max(self.usual, 1e-3)
        # The cap, not today's window: a window that fits the rate stops growing.
        if self.cap / latency >= limiter.budget.effective_rate:
            return math.inf
        return max(1, math.ceil(self.allowed(limiter) / latency * QUEUE_SECONDS))

    async def acquire(self, limiter: RateLimiter) -> None:
        """Wait for a place; the waiters are served first come, first served."""
        while self.active >= self.allowed(limiter):
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await waiter
            except BaseException:  # a timeout or a stop: a wake it got goes on
                if waiter.done() and not waiter.cancelled():
                    self._wake(1)
                raise
            finally:
                if waiter in self._waiters:
                    self._waiters.remove(waiter)
        self.active += 1

    def release(self) -> None:
        """Give a place back (synchronous: task callbacks call it, even for a task
        cancelled before it ran)."""
        self.active -= 1
        self._wake(2)  # two: the limit may have grown since the last release

    def _wake(self, count: int) -> None:
        while count and self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                count -= 1


@dataclass(slots=True)
class BatchReport:
    vendor: Vendor
    claimed: int
    processed: int = 0
    actions: Counter[str] = field(default_factory=Counter)
    rows_written: int = 0
    skipped_reason: str | None = None
    seconds: float = 0.0


@dataclass(eq=False)
class Batch:
    """One claimed batch in the pipeline."""

    claim: Claim
    views: list[TrackedView]
    send_by: float  # monotonic; no request of the batch leaves after it
    report: BatchReport
    started: float
    outcomes: list[Outcome | None] = field(default_factory=list)
    left: int = 0  # ids neither written nor given back
    fed: int = 0  # ids the loop has sent on or settled, in order
    stop: Outcome | None = None  # the refusal that makes further requests pointless
    cut_at: float = math.inf  # monotonic; requests still in flight then are abandoned
    cut: int = 0  # requests abandoned at cut_at
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float | None = None) -> BatchReport:
        self.done.wait(timeout)
        return self.report


# (batch, index of the id, its outcome or None to give it back); None: stop.
_Item = tuple[Batch, int, Outcome | None]


class Pipeline:
    """Fetch and write for one process. Built once per process (worker/resources.py)."""

    def __init__(
        self, settings: Settings, db: Database, clients: Mapping[Vendor, VendorClient]
    ) -> None:
        self.settings = settings
        self.db = db
        self.clients = clients
        self.limits = {vendor: InFlightLimit(settings.fetch_concurrency) for vendor in clients}
        self.sent: Counter[Vendor] = Counter()  # requests sent, by vendor
        self._refused: dict[Vendor, tuple[Outcome, float]] = {}  # loop thread only
        self._parse = ThreadPoolExecutor(1, thread_name_prefix="parse")
        self._lock = threading.Condition()
        self._batches: set[Batch] = set()
        self._ids_in = 0
        self._fed = 0  # ids the feeders have sent on or settled, ever (the loop's)
        self._closing = False
        self._written: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sending: set[asyncio.Task[Any]] = set()
        self._loop = asyncio.new_event_loop()
        self._loop_thread = threading.Thread(
            target=self._loop.run_forever, name="fetch-loop", daemon=True
        )
        self._writer = threading.Thread(target=self._write_loop, name="writer", daemon=True)
        self._session: aiohttp.ClientSession | None = None
        self._unwritten = 0  # outcomes queued for the writer
        # The writer cannot reach the database: fetching more would only spend the
        # key's budget on answers that may never be written.
        self._db_down = False
        self._behind = False  # the writer's last transaction took a full batch
        self._room: asyncio.Event | None = None  # the loop's: the writer caught up
        self._loop_thread.start()
        self._writer.start()

    async def _http(self) -> aiohttp.ClientSession:
        """The process's HTTP session, made on the loop when first needed."""
        if self._session is None:
            self._session = build_async_session(self.settings)
        return self._session

    # --- the caller's side ---------------------------------------------------

    def submit(self, claim: Claim) -> Batch:
        """Take a claimed batch in; returns at once, `Batch.wait()` for its report.

        Loads the claim here, in the caller's thread: a claim whose lease is gone
        or whose key may not be polled now is done at once (given back if held).
        """
        if self._closing:
            raise PipelineClosed("the fetch pipeline is closing")
        started = time.monotonic()
        settings = self.settings
        report = BatchReport(claim.vendor, len(claim.ids))
        with self.db.session() as session:
            views, lease_expires, now = load_claim(session, claim)
            gate = account_gate(session, claim.vendor, settings, now)
        batch = Batch(claim, views, 0.0, report, started)
        if not views:
            report.skipped_reason = "lease lost or ids already final"
            return self._finished(batch)
        if gate is not None:
            release_claim(
                self.db, Claim(claim.vendor, claim.token, [v.id for v in views]), settings
            )
            report.skipped_reason = gate
            return self._finished(batch)
        assert lease_expires is not None
        # Stop waiting for rate-budget slots while a quarter of the lease is left for
        # the requests in flight and the write: past the lease, another sweep would
        # claim (and fetch) the same ids again. A batch that sat in the queue has less.
        # Both times are the database's, so a host's own clock does not matter.
        lease_left = (lease_expires - now).total_seconds()
        batch.send_by = started + lease_left - settings.lease_seconds * 0.25
        # A request still unanswered just before the lease ends is abandoned and its
        # id given back at once: its answer could not be written, and the next
        # sweep should not wait for the request deadline to fetch it again.
        batch.cut_at = started + lease_left - min(1.0, settings.lease_seconds * 0.1)
        batch.outcomes = [None] * len(views)
        batch.left = len(views)
        with self._lock:
            self._batches.add(batch)
            self._ids_in += len(views)
        self._loop.call_soon_threadsafe(self._start, batch)
        return batch

    def process(self, claim: Claim) -> BatchReport:
        """Fetch and write one claimed batch, and wait until it is done."""
        return self.submit(claim).wait()

    def fetch(
        self, vendor: Vendor, views: Sequence[TrackedView], send_within: float
    ) -> list[Outcome]:
        """Fetch ids without writing anything (tests, probes): their outcomes."""
        batch = Batch(
            Claim(vendor, "", [v.id for v in views]),
            list(views),
            0.0,
            BatchReport(vendor, len(views)),
            time.monotonic(),
        )
        batch.send_by = batch.started + send_within

        async def run() -> list[Outcome]:
            return list(await asyncio.gather(*(self._fetch(batch, v) for v in views)))

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result()

    def in_flight(self, vendor: Vendor | None = None) -> int:
        """Ids taken in and not yet written or given back."""
        with self._lock:
            if vendor is None:
                return self._ids_in
            return sum(b.left for b in self._batches if b.claim.vendor is vendor)

    def wait_for_room(self, timeout: float = ROOM_WAIT_SECONDS) -> None:
        """Wait while this process has enough queued: a Celery fetch task calls it
        after `submit`, so that its process takes the next message only once it
        needs more. Returns after `timeout` at the latest, and once nothing queued
        has moved on for STALL_SECONDS."""
        started = moved_at = time.monotonic()
        fed = self._fed
        while not self._closing and self._saturated():
            now = time.monotonic()
            if self._fed != fed:
                fed, moved_at = self._fed, now
            if now - moved_at >= STALL_SECONDS or now - started >= timeout:
                return
            time.sleep(ROOM_POLL_SECONDS)

    def _saturated(self) -> bool:
        """Every key with ids here (queued or in flight) has enough queued, or one
        has SPARE_BATCHES beyond enough."""
        queued: Counter[Vendor] = Counter()
        with self._lock:
            for batch in self._batches:
                queued[batch.claim.vendor] += len(batch.views) - batch.fed
        size = batch_ids(self.settings)
        limits = self.limits
        enough = {v: limits[v].enough(self.clients[v].limiter, size) for v in limits}
        if any(queued[v] >= enough[v] + SPARE_BATCHES * size for v in limits):
            return True
        busy = [v for v in limits if queued[v] or limits[v].active]
        return bool(busy) and all(queued[v] >= enough[v] for v in busy)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Wait until every batch taken in is done; False on timeout."""
        with self._lock:
            return self._lock.wait_for(lambda: not self._batches, timeout)

    def close(self, drain: float = DRAIN_SECONDS) -> None:
        """Stop: give back what waits, let what is in flight land, write it, end."""
        if self._closing:
            return
        self._closing = True
        if self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self._drain(drain), self._loop).result(drain + 5)
            except Exception:  # what is left is given back below, or its lease runs out
                log.warning("the fetch loop did not drain in time", exc_info=True)
        self._written.put(None)
        self._writer.join(timeout=max(30.0, self.settings.db_outage_seconds + 5))
        for batch in list(self._batches):  # the writer is gone: what it did not write
            self._finished(batch)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(timeout=5)
        self._parse.shutdown(wait=False, cancel_futures=True)
        if not self._loop.is_running():
            self._loop.close()

    # --- the loop's side -----------------------------------------------------

    def _start(self, batch: Batch) -> None:
        feeder = self._spawn(self._feed(batch))
        feeder.add_done_callback(partial(self._unfed, batch))

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        task = self._loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _feed(self, batch: Batch) -> None:
        """Start the batch's requests one by one, each once it has a place in flight:
        a task (and its memory) exists only for ids being fetched, not for every
        id a process holds."""
        for i, view in enumerate(batch.views):
            blocked = await self._place(batch, view)
            if blocked is not None:
                self._put(batch, i, blocked)
            else:
                request = self._spawn(self._run(batch, view))
                request.add_done_callback(partial(self._ran, batch, i))
            batch.fed = i + 1
            self._fed += 1

    def _unfed(self, batch: Batch, feeder: asyncio.Task[None]) -> None:
        """The feeder ended (cancelled when closing, even before it ran, or failed):
        the ids it did not reach are given back."""
        if not feeder.cancelled() and (error := feeder.exception()) is not None:
            log.error(
                "the feeder of a %s batch failed (%s); its %d unsent ids are given back",
                batch.claim.vendor,
                short_error(error),
                len(batch.views) - batch.fed,
                exc_info=error,
            )
        for i in range(batch.fed, len(batch.views)):
            self._put(batch, i, None)
        batch.fed = len(batch.views)

    async def _run(self, batch: Batch, view: TrackedView) -> Outcome | None:
        try:
            return await self._send(batch, view)
        except _LeaseEnding:
            batch.cut += 1
            return None  # given back, due again in a tick

    def _ran(self, batch: Batch, i: int, request: asyncio.Task[Outcome | None]) -> None:
        """One request ended: its place is free, its outcome queued (None when it was
        cancelled, even before it ran: given back)."""
        self.limits[batch.claim.vendor].release()
        outcome = None
        if not request.cancelled():
            if (error := request.exception()) is not None:  # _send catches the rest
                log.error("a request's task failed: %s", short_error(error))
            else:
                outcome = request.result()
        self._put(batch, i, outcome)

    def _put(self, batch: Batch, i: int, outcome: Outcome | None) -> None:
        with self._lock:
            self._unwritten += 1
        self._written.put((batch, i, outcome))

    async def _backlog_room(self) -> None:
        """Wait while the writer is behind or cannot reach the database: fetching on
        would only pile answers up in memory, and a process killed meanwhile would
        have spent the key's budget on them for nothing.

        Behind (its last transaction took a full batch): the answers waiting and
        the requests sent, which become answers soon, are kept within
        BEHIND_FACTOR batches. A writer that keeps up limits only the answers
        waiting, not the requests in flight."""
        if self._room is None:
            self._room = asyncio.Event()
        while self._held_back():
            self._room.clear()
            await self._room.wait()

    def _held_back(self) -> bool:
        if self._db_down:
            return True
        most = self.settings.batch_size * BEHIND_FACTOR
        if not self._behind:
            return self._unwritten >= most
        # Sent and unanswered: not those holding a place while they wait for a
        # slot of the rate budget, which bring no answer soon.
        return self._unwritten + len(self._sending) >= most

    def _database_down(self) -> None:
        self._db_down = True

    def _written_some(self, count: int) -> None:
        with self._lock:
            self._unwritten -= count
        self._db_down = False
        if self._room is not None:
            self._loop.call_soon_threadsafe(self._room.set)

    async def _fetch(self, batch: Batch, view: TrackedView) -> Outcome:
        """One id's outcome, its place in flight included (fetch(): nothing written)."""
        blocked = await self._place(batch, view)
        if blocked is not None:
            return blocked
        try:
            return await self._send(batch, view)
        finally:
            self.limits[view.vendor].release()

    async def _place(self, batch: Batch, view: TrackedView) -> Outcome | None:
        """Wait for a place in flight for this id: None once it holds one, or the
        outcome of not sending it."""
        client = self.clients[view.vendor]
        if (stop := self._stop(batch)) is not None:
            return _not_sent(stop)
        try:
            # No place before the batch must stop sending: not sent, and not late
            # either (an answer written after its lease would be thrown away).
            async with _until(batch.send_by):
                await self._backlog_room()
                await self.limits[view.vendor].acquire(client.limiter)
        except TimeoutError:
            return _no_place(view)
        return None

    async def _send(self, batch: Batch, view: TrackedView) -> Outcome:
        """Send one id's request (its place in flight held by the caller) and
        interpret the answer; never raises but for cancellation and _LeaseEnding."""
        client = self.clients[view.vendor]
        limit = self.limits[view.vendor]
        try:
            while True:
                if (stop := self._stop(batch)) is not None:
                    return _not_sent(stop)
                refusal = await client.await_slot(batch.send_by - time.monotonic())
                if refusal is not None:
                    return refusal
                if not self._db_down:
                    break
                # The database went away while this request waited for its slot:
                # the slot goes unused, and a new one is taken once it is back.
                try:
                    async with _until(batch.send_by):
                        await self._backlog_room()
                except TimeoutError:
                    return _no_place(view)
            task = asyncio.current_task()
            assert task is not None
            self._sending.add(task)
            try:
                target = Target(view.vendor, view.external_id, view.project_id)
                try:
                    async with _until(batch.cut_at):
                        raw = await client.aget(await self._http(), target)
                except TimeoutError:
                    raise _LeaseEnding from None
                self.sent[view.vendor] += 1
                limit.observe(raw)
            finally:
                self._sending.discard(task)
            fetched_at = utcnow()
            if len(raw.body) <= INLINE_BODY_BYTES:
                outcome = client.scrubbed(client.interpret(target, raw, fetched_at))
            else:
                outcome = await self._loop.run_in_executor(
                    self._parse,
                    lambda: client.scrubbed(client.interpret(target, raw, fetched_at)),
                )
        except (asyncio.CancelledError, _LeaseEnding):
            raise
        except Exception as exc:
            reason = internal_error("unexpected error fetching", view, exc)
            outcome = Outcome(Action.RETRY, None, reason=f"internal error: {reason}")
        if outcome.action is Action.PAUSE_ACCOUNT:
            batch.stop = batch.stop or outcome
            self._refused[view.vendor] = (outcome, time.monotonic())
        return outcome

    def _stop(self, batch: Batch) -> Outcome | None:
        """The refusal that makes sending this batch's requests pointless, if any:
        its own, or its key's within REFUSAL_SECONDS."""
        if batch.stop is not None:
            return batch.stop
        refused = self._refused.get(batch.claim.vendor)
        if refused is not None and time.monotonic() - refused[1] < REFUSAL_SECONDS:
            return refused[0]
        return None

    async def _drain(self, seconds: float) -> None:
        waiting = [t for t in self._tasks if t not in self._sending]
        for task in waiting:
            task.cancel()
        sending = [t for t in self._tasks if t in self._sending]
        if sending:
            _, late = await asyncio.wait(sending, timeout=seconds)
            for task in late:
                task.cancel()
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5)
        if self._session is not None:
            try:
                await self._session.close()
            except Exception:  # closing anyway
                log.debug("could not close the HTTP session", exc_info=True)

    # --- the writer's side ---------------------------------------------------

    def _write_loop(self) -> None:
        stopping = False
        while not stopping:
            item = self._written.get()
            if item is None:
                break
            items = [item]
            batch_size = self.settings.batch_size
            # What arrives within FLUSH_SECONDS, up to a batch; then, when behind,
            # what has piled up meanwhile, so that each commit's fixed cost is
            # shared by more answers.
            stopping = self._gather(items, batch_size, time.monotonic() + FLUSH_SECONDS)
            if not stopping:
                stopping = self._gather(items, batch_size * BEHIND_FACTOR, 0.0)
            # A full batch within a flush: answers come faster than they are written.
            self._behind = len(items) >= batch_size
            try:
                self._write(items)
            except Exception:  # never let the writer die: the leases keep the ids
                log.exception("unexpected error in the writer")
            self._written_some(len(items))
            release_free_memory()

    def _gather(self, items: list[_Item], most: int, until: float) -> bool:
        """Add queued answers to `items`, up to `most`, waiting for them until the
        monotonic time `until`; True if the stop mark came."""
        while len(items) < most:
            wait = until - time.monotonic()
            try:
                more = self._written.get(timeout=wait) if wait > 0 else self._written.get_nowait()
            except queue.Empty:
                return False
            if more is None:
                return True
            items.append(more)
        return False

    def _write(self, items: list[_Item]) -> None:
        arrived: dict[Batch, list[int]] = {}
        given_back: dict[Batch, list[int]] = {}
        for batch, i, outcome in items:
            batch.outcomes[i] = outcome
            (arrived if outcome is not None else given_back).setdefault(batch, []).append(i)
        written = self._store(arrived)
        for batch, indexes in arrived.items():
            for i in indexes:  # written: only what the batch's report needs is kept
                batch.outcomes[i] = _summary(batch.outcomes[i])
        for batch, indexes in given_back.items():
            ids = [batch.views[i].id for i in indexes]
            try:
                release_claim(
                    self.db, Claim(batch.claim.vendor, batch.claim.token, ids), self.settings
                )
            except Exception as exc:  # the lease runs out on its own
                log.warning("could not give back %d ids: %s", len(ids), short_error(exc))
        with self._lock:
            for batch, count in written.items():
                batch.report.rows_written += count
            for batch in {*arrived, *given_back}:
                n = len(arrived.get(batch, ())) + len(given_back.get(batch, ()))
                batch.left -= n
                self._ids_in -= n
            finished = [b for b in {*arrived, *given_back} if b.left == 0]
        for batch in finished:
            self._finished(batch)

    def _store(self, arrived: dict[Batch, list[int]]) -> dict[Batch, int]:
        """Write what arrived in one transaction; if that fails, each batch on its
        own (and, inside it, each id on its own: worker/writing.py)."""
        if not arrived:
            return {}

        def pairs(batch: Batch, indexes: list[int]) -> tuple[list[TrackedView], list[Outcome]]:
            return [batch.views[i] for i in indexes], [_known(batch.outcomes[i]) for i in indexes]

        # In one order every time; the write itself takes its row locks in one
        # order too (worker/writing.py): two processes' writes must not deadlock.
        ordered = sorted(
            arrived.items(), key=lambda item: (item[0].claim.vendor.value, item[0].claim.token)
        )

        def write_all(session: Session) -> dict[Batch, int]:
            parts = [Part(batch.claim, *pairs(batch, indexes)) for batch, indexes in ordered]
            counts = apply_parts(session, self.settings, parts)
            return {batch: count for (batch, _), count in zip(ordered, counts, strict=True)}

        try:
            return write_surviving_outages(
                self.db, write_all, self.settings, on_outage=self._database_down
            )
        except Exception as exc:
            if len(arrived) == 1 and not (isinstance(exc, DBAPIError) and is_disconnect(exc)):
                log.debug("write failed: %s", short_error(exc))
        counts: dict[Batch, int] = {}
        for batch, indexes in arrived.items():
            views, outcomes = pairs(batch, indexes)
            try:
                counts[batch] = write_outcomes(self.db, self.settings, batch.claim, views, outcomes)
            except Exception as exc:
                # The database stayed unreachable: these ids keep their lease and are
                # due again when it ends; their answers are fetched again then.
                log.error(
                    "could not write %d %s answers (%s); due again when their lease ends",
                    len(views),
                    batch.claim.vendor,
                    short_error(exc),
                    extra={"vendor": batch.claim.vendor.value, "count": len(views)},
                )
                for i in indexes:
                    batch.outcomes[i] = None
        return counts

    def _finished(self, batch: Batch) -> Batch:
        report = batch.report
        with self._lock:
            if batch in self._batches:
                self._batches.discard(batch)
                self._ids_in -= batch.left
                batch.left = 0
            self._lock.notify_all()
        landed = [
            (v, o) for v, o in zip(batch.views, batch.outcomes, strict=False) if o is not None
        ]
        report.processed = len(landed)
        report.actions.update(o.action.value for _, o in landed)
        if landed:
            observe_polled_batch([v for v, _ in landed], [o for _, o in landed], now=utcnow())
        report.seconds = time.monotonic() - batch.started
        if batch.cut:
            log.error(
                "%d %s ids ran past its time limit (the lease, %g s) waiting for an answer;"
                " given back unwritten",
                batch.cut,
                report.vendor,
                self.settings.lease_seconds,
                extra={"vendor": report.vendor.value, "count": batch.cut},
            )
        _log_report(report)
        batch.done.set()
        return batch


def _summary(outcome: Outcome | None) -> Outcome | None:
    """An outcome without its answer and body, which a batch need not hold once
    written: a process holds thousands of ids in flight."""
    if outcome is None:
        return None
    return Outcome(outcome.action, outcome.http_status, final_state=outcome.final_state)


def _known(outcome: Outcome | None) -> Outcome:
    assert outcome is not None
    return outcome


def _until(deadline: float) -> asyncio.Timeout:
    """A timeout at the monotonic time `deadline` (at once if it has passed)."""
    return asyncio.timeout(max(0.0, deadline - time.monotonic()))


def _no_place(view: TrackedView) -> Outcome:
    return _not_sent(Outcome(Action.THROTTLE, None, reason=f"no place in flight for {view.vendor}"))


def _not_sent(blocked: Outcome) -> Outcome:
    return Outcome(
        blocked.action,
        None,
        reason=f"not sent: {blocked.reason}",
        retry_after=blocked.retry_after,
        sent=False,
    )


def _log_report(report: BatchReport) -> None:
    log.info(
        "batch %s: %d claimed, %d fetched, %s, %d rows in %.2fs%s",
        report.vendor,
        report.claimed,
        report.processed,
        dict(report.actions) or "{}",
        report.rows_written,
        report.seconds,
        f" (skipped: {report.skipped_reason})" if report.skipped_reason else "",
        extra={
            "vendor": report.vendor.value,
            "count": report.processed,
            "duration_s": round(report.seconds, 3),
        },
    )
