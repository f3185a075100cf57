"""Starlette app simulating MentionsAPI and MentionLab, with rate limits and fault injection.

Latency is ``latency_ms``, optionally jittered per request (``latency_jitter_ms``: uniform
in latency +- jitter, never below 0), slept asynchronously so hundreds of requests wait at
once. Rate limits are token buckets per API key: ``rate_limit`` for both vendors, or one
per vendor (``rate_limits``, ``rate_bursts``; ``--rate-limit-mentionsapi`` ...), each
announced in that vendor's headers (X-RateLimit-Limit is the burst; MentionLab adds
X-RateLimit-Reset; 429s carry Retry-After). ``/_sim/stats`` counts answers ``by_vendor``.

State (poll counters, rate-limit buckets, stats) lives in memory, per app instance. All of it
is mutated from the event-loop thread with no ``await`` in between reads and writes, so no
locks are needed.

Poison mode serves chosen ids the hostile inputs that once broke the worker. It is chosen
per id, explicitly: ``SimConfig(poison={kind: ids})`` (``--poison KIND=ID,ID`` on the
command line). An id is poisoned for whichever vendor it is asked of, MentionLab UUIDs in
any case; ``Dataset.poison_ids(vendor, kind, n)`` makes fresh ids for the purpose. Every
poisoned id succeeds (after its usual pending polls), and its final answer comes as:

- ``nul``: valid JSON whose texts carry ``\\u0000``: MentionsAPI in a provider's content, a
  brand mention's brand and a citation title; MentionLab in ``model`` and an entity's
  ``displayName``.
- ``wide_int``: extra fields ``x_snowflake`` (2**64) and ``x_counters`` (-(2**63)-1, 10**30).
- ``deep``: an extra ``x_tree`` nesting the body ``poison_depth`` (1000) levels deep.
- ``ts_min``: MentionLab ``initiatedAt`` (MentionsAPI an extra ``createdAt``) is
  ``0001-01-01T00:00:00+01:00``; ``ts_max``: ``createdAt`` is ``9999-12-31T23:59:59Z``.
- ``key_echo``: the caller's key (Bearer token or x-api-key) in a stored text field
  (MentionsAPI a provider's content, MentionLab a source url) and in an extra ``x_debug``.
- ``retry_after``: first ``poison_retry_after_count`` (2) requests of the id answer 429 with
  ``Retry-After: 1e12``; they do not count as polls.
- ``gzip2``: ``Content-Encoding: gzip, gzip``, a gzip of a gzip of the answer with an
  ``x_padding`` string of ``poison_bomb_bytes`` (256 MiB) zeros: 2-6 KB on the wire.
- ``drip``: the answer, one byte every ``poison_drip_seconds`` (1.5 s), behind an honest
  Content-Length.
- ``forbidden_project``: the ids listed are MentionLab *project* ids; every request made
  with one of them answers 403 ``{"statusCode":403,"message":"Forbidden resource",
  "error":"Forbidden"}``.

``/_sim/truth`` names the kind in ``poison``. For the six kinds that change the body it
shows that body exactly as served (``?api_key=K`` puts K where key_echo's key goes); for
retry_after, gzip2 and drip, the answer they delay or wrap; with
``?project_id=<forbidden project>``, fate ``forbidden`` and the 403. ``/_sim/requests/counts``
counts each id's requests by status (499: connection reset).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import math
import random
import socket
import struct
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import httpx
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from simulator.dataset import (
    BODY_POISONS,
    FORBIDDEN_BODY,
    MENTIONLAB,
    MENTIONSAPI,
    POISON_KINDS,
    VENDORS,
    Dataset,
    fill_key,
)

# Padding that pushes a "huge" body past 20 MB (and 20 MiB).
_HUGE_PAD_BYTES = 20 * 1024 * 1024 + 1024
_DEFAULT_LIMIT = 1000
_MALFORMED_KINDS = ("truncated", "wrong_type", "html")
_POISON_RETRY_AFTER = "1e12"
_FINAL_POISONS = BODY_POISONS | {"gzip2", "drip"}  # kinds that change the final answer
# MentionsAPI's documented plans (api-notes): sustained requests/s -> burst. Its
# X-RateLimit-Limit is the burst, so a per-vendor MentionsAPI limit at a plan's rate
# announces that plan's burst (500/s: 1000), as the real API would.
MENTIONSAPI_PLAN_BURSTS: dict[float, float] = {1: 5, 5: 10, 20: 40, 60: 120, 500: 1000}


@dataclass
class SimConfig:
    """Simulator knobs; every fault rate is a fraction of requests in [0, 1]."""

    seed: int = 0
    latency_ms: float = 0.0
    # Each request waits a time drawn uniformly from [latency - jitter, latency + jitter]
    # ms (never below 0), asynchronously, so any number of requests wait at once.
    latency_jitter_ms: float = 0.0
    error_rate: float = 0.0
    rate_limit: float | None = None  # requests/second per API key; burst = max(1, rate_limit)
    # Per vendor, overriding rate_limit for that vendor's keys: requests/second per key.
    # Its burst is rate_bursts[vendor] when given; otherwise, for MentionsAPI at one of
    # its documented plans' rates, that plan's burst (MENTIONSAPI_PLAN_BURSTS); else
    # max(1, rate). X-RateLimit-Limit announces the burst.
    rate_limits: Mapping[str, float] = field(default_factory=dict)
    rate_bursts: Mapping[str, float] = field(default_factory=dict)
    max_pending_polls: int = 2
    anchor: datetime | None = None
    reset_rate: float = 0.0
    malformed_rate: float = 0.0
    huge_rate: float = 0.0
    latency_spike_rate: float = 0.0
    latency_spike_ms: float = 0.0
    storm_every: float = 0.0  # seconds between 429 storms; 0 disables them
    storm_seconds: float = 0.0
    # Poison mode (see the module docstring): kind -> ids, or project ids for
    # forbidden_project.
    poison: Mapping[str, Collection[str]] = field(default_factory=dict)
    poison_retry_after_count: int = 2
    poison_drip_seconds: float = 1.5
    poison_bomb_bytes: int = 256 * 1024 * 1024
    poison_depth: int = 1000


class ORJSONResponse(Response):
    """JSON response rendered with orjson; pre-serialized bytes pass through untouched."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes | bytearray):
            return bytes(content)
        return orjson.dumps(content)


class ConnectionDropped(ConnectionResetError):
    """A simulated reset, raised when the server socket is out of reach (e.g. TestClient)."""


@dataclass(frozen=True)
class VendorLimit:
    """One vendor's limit per API key: None rate means unlimited."""

    rate: float | None
    burst: float

    @property
    def header(self) -> str:
        return str(max(1, math.floor(self.burst)))


def vendor_limit(config: SimConfig, vendor: str) -> VendorLimit:
    """The limit the simulator applies to each of `vendor`'s keys (see SimConfig)."""
    if vendor in config.rate_limits:
        rate: float | None = float(config.rate_limits[vendor])
    else:
        rate = config.rate_limit
    if rate is None:
        return VendorLimit(None, float(_DEFAULT_LIMIT))
    if rate <= 0:
        raise ValueError(f"{vendor}: a rate limit must be > 0, got {rate}")
    burst = config.rate_bursts.get(vendor)
    if burst is None and vendor == MENTIONSAPI and vendor in config.rate_limits:
        burst = MENTIONSAPI_PLAN_BURSTS.get(rate)
    return VendorLimit(rate, max(1.0, float(burst if burst is not None else rate)))


class _Bucket:
    """Token bucket of one API key."""

    __slots__ = ("tokens", "updated")

    def __init__(self, tokens: float, updated: float) -> None:
        self.tokens = tokens
        self.updated = updated


class _Drop:
    """Marker returned by the gate when the connection must be reset."""


_DROP = _Drop()


class _Simulator:
    """Request handlers plus the in-memory state they share."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        self.dataset = Dataset(
            seed=config.seed,
            anchor=config.anchor,
            max_pending_polls=config.max_pending_polls,
            poison=config.poison,
            poison_depth=config.poison_depth,
        )
        self._bombs: dict[tuple[str, str], bytes] = {}
        # One fault RNG per app: reproducible fault sequences for a given request order.
        self.rng = random.Random(config.seed)
        # Latency jitter draws from its own RNG, so it leaves fault sequences unchanged.
        self.latency_rng = random.Random(f"{config.seed}:latency")
        self.started = time.monotonic()
        self._pad: bytes | None = None
        self.limits = {vendor: vendor_limit(config, vendor) for vendor in VENDORS}
        self.reset()

    # ---------------------------------------------------------------- state

    def reset(self) -> None:
        """Forget poll progress, buckets and statistics."""
        self.polls: dict[tuple[str, str, str], int] = {}
        self.final_served: set[tuple[str, str, str]] = set()
        self.buckets: dict[tuple[str, str], _Bucket] = {}
        self.requests = 0
        self.by_status: dict[int, int] = {}
        # Answers by vendor and status, counted when sent: rates per vendor over time.
        self.vendor_status: dict[str, dict[int, int]] = {v: {} for v in VENDORS}
        self.vendor_rate_limited = dict.fromkeys(VENDORS, 0)
        self.in_flight = 0
        self.max_in_flight = 0
        self.polls_after_final = 0
        self.after_final_by_status: dict[int, int] = {}
        self.rate_limited = 0
        self.faults = dict.fromkeys(
            ("error", "reset", "malformed", "huge", "storm", "latency_spike"), 0
        )
        self.per_key: dict[str, dict[str, int]] = {}
        # When each id was asked for (wall clock, at arrival): lets a test compare
        # fetches with the moment the worker recorded the id final.
        self.request_log: dict[str, dict[str, list[float]]] = {v: {} for v in VENDORS}
        # The status each id was answered with, so a test can bound requests per id.
        self.request_statuses: dict[str, dict[str, dict[int, int]]] = {v: {} for v in VENDORS}
        self.poison_429s: dict[tuple[str, str, str], int] = {}
        self.poison_served = dict.fromkeys(POISON_KINDS, 0)
        self.key_labels: dict[str, str] = {}
        self.seq = 0

    def stats(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "polls_after_final": self.polls_after_final,
            # Lets callers tell deliberate 404 re-checks apart from re-reading archived answers.
            "polls_after_final_by_status": {
                str(k): v for k, v in sorted(self.after_final_by_status.items())
            },
            "rate_limited": self.rate_limited,
            "faults": dict(self.faults),
            "poison": dict(self.poison_served),
            "tracked_ids": len(self.polls),
            "per_key": {self.key_labels[k]: dict(v) for k, v in self.per_key.items()},
            # Per vendor: answers sent by status, 429s among them, and its limit.
            "by_vendor": {
                vendor: {
                    "answered": sum(counts.values()),
                    "by_status": {str(k): v for k, v in sorted(counts.items())},
                    "rate_limited": self.vendor_rate_limited[vendor],
                    "rate_limit": self.limits[vendor].rate,
                    "burst": self.limits[vendor].burst,
                }
                for vendor, counts in self.vendor_status.items()
            },
            # Vendor requests being handled now (latency included), and the most at once.
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "monotonic": time.monotonic(),
        }

    # ---------------------------------------------------------------- vendor routes

    async def ask(self, request: Request) -> Response:
        """``GET /v1/ask/{id}`` (MentionsAPI)."""
        id = request.path_params.get("id", "")
        self._log_request(MENTIONSAPI, id)
        self._enter()
        try:
            response = await self._ask(request, id)
        finally:
            self.in_flight -= 1
        self._log_status(MENTIONSAPI, id, response.status_code)
        return response

    async def _ask(self, request: Request, id: str) -> Response:
        await self._delay()
        self.requests += 1
        auth = request.headers.get("authorization", "")
        scheme, _, key = auth.partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key.startswith("lvk_") or "revoked" in key:
            body = self._ma_error("invalid_api_key", "Bearer token missing, malformed, or revoked.")
            return self._send(401, body, self._open_headers(MENTIONSAPI))
        gate = self._gate(MENTIONSAPI, key)
        if gate is _DROP:
            return await self._drop(request)
        if isinstance(gate, Response):
            return gate
        assert isinstance(gate, dict)
        return await self._answer(MENTIONSAPI, id, None, gate, key)

    async def job_execution(self, request: Request) -> Response:
        """``GET /api/v1/job-executions/{id}`` (MentionLab)."""
        id = request.path_params["id"]
        self._log_request(MENTIONLAB, id)
        self._enter()
        try:
            response = await self._job_execution(request, id)
        finally:
            self.in_flight -= 1
        self._log_status(MENTIONLAB, id, response.status_code)
        return response

    async def _job_execution(self, request: Request, id: str) -> Response:
        await self._delay()
        self.requests += 1
        headers = request.headers
        key = headers.get("x-api-key", "")
        if not key.startswith("ml_") or "revoked" in key:
            body = {"statusCode": 401, "message": "Invalid API key", "error": "Unauthorized"}
            return self._send(401, body, self._open_headers(MENTIONLAB))
        gate = self._gate(MENTIONLAB, key)
        if gate is _DROP:
            return await self._drop(request)
        if isinstance(gate, Response):
            return gate
        assert isinstance(gate, dict)
        project = headers.get("x-project-id", "").strip()
        if not project:
            body = {
                "statusCode": 400,
                "message": "x-project-id header is required",
                "error": "Bad Request",
            }
            return self._send(400, body, gate)
        if self.dataset.forbidden(MENTIONLAB, project):
            self.poison_served["forbidden_project"] += 1
            return self._send(403, FORBIDDEN_BODY, gate)
        return await self._answer(MENTIONLAB, id, project, gate, key)

    async def _answer(
        self, vendor: str, id: str, project: str | None, headers: dict[str, str], key: str
    ) -> Response:
        """Pending or final answer, advancing the per-id poll counter."""
        ds = self.dataset
        _, pending = ds.plan(vendor, id, project)
        pkey = (vendor, ds.canonical_id(vendor, id), (project or "").lower())
        kind = ds.poison_kind(vendor, id)
        if kind == "retry_after":
            sent = self.poison_429s.get(pkey, 0)
            if sent < self.config.poison_retry_after_count:
                self.poison_429s[pkey] = sent + 1
                self.poison_served[kind] += 1
                return self._too_many(vendor, _POISON_RETRY_AFTER, headers)
        poll = self.polls.get(pkey, 0) + 1
        self.polls[pkey] = poll
        if poll <= pending:
            status, body = ds.pending_bytes(vendor, id, poll)
            return self._send(status, body, headers)
        status, body = ds.final_bytes(vendor, id, project)
        if pkey in self.final_served:
            self.polls_after_final += 1
            self.after_final_by_status[status] = self.after_final_by_status.get(status, 0) + 1
        if status == 200 and kind is not None and kind in _FINAL_POISONS:
            self.poison_served[kind] += 1
            # Not marked as served: re-fetching an answer never received whole is not waste.
            if kind == "gzip2":
                bomb = await self._bomb(vendor, pkey[1], body)
                return self._send(status, bomb, {**headers, "Content-Encoding": "gzip, gzip"})
            if kind == "drip":
                self._count(status)
                headers = {**headers, "Content-Length": str(len(body))}
                return StreamingResponse(
                    self._drip(body),
                    status_code=status,
                    headers=headers,
                    media_type="application/json",
                )
            if kind == "key_echo":
                body = fill_key(body, key)
        elif status == 200:
            mangled = self._mangle(vendor, pkey[1], body)
            if mangled is not None:
                # Not marked as served: re-fetching a broken body is legitimate, not waste.
                return self._send(status, mangled, headers)
        self.final_served.add(pkey)
        return self._send(status, body, headers)

    async def _bomb(self, vendor: str, id: str, body: bytes) -> bytes:
        """The gzip2 body of an answer: ~0.6 s of CPU per id, so cached and off the loop
        (two first requests at once may both build it, which is harmless)."""
        bomb = self._bombs.get((vendor, id))
        if bomb is None:
            bomb = await asyncio.to_thread(_gzip2, body, self.config.poison_bomb_bytes)
            self._bombs[(vendor, id)] = bomb
        return bomb

    async def _drip(self, body: bytes) -> AsyncIterator[bytes]:
        for i in range(len(body)):
            if i:
                await asyncio.sleep(self.config.poison_drip_seconds)
            yield body[i : i + 1]

    def _log_request(self, vendor: str, id: str) -> None:
        key = self.dataset.canonical_id(vendor, id)
        self.request_log[vendor].setdefault(key, []).append(time.time())

    def _log_status(self, vendor: str, id: str, status: int) -> None:
        by_status = self.request_statuses[vendor].setdefault(
            self.dataset.canonical_id(vendor, id), {}
        )
        by_status[status] = by_status.get(status, 0) + 1
        counts = self.vendor_status[vendor]
        counts[status] = counts.get(status, 0) + 1

    def _enter(self) -> None:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    # ---------------------------------------------------------------- gate: limits and faults

    def _gate(self, vendor: str, key: str) -> dict[str, str] | Response | _Drop:
        """Rate limit, storms and pre-answer faults; headers to use when the request passes."""
        cfg = self.config
        counts = self.per_key.get(key)
        if counts is None:
            counts = self.per_key[key] = {"requests": 0, "rate_limited": 0}
            self.key_labels[key] = _key_label(key)
        counts["requests"] += 1
        now = time.monotonic()
        # A storm is the vendor being overloaded: it answers 429 without touching the bucket.
        retry_after = self._storm_retry_after(now)
        if retry_after:
            self.faults["storm"] += 1
            remaining, full_in = 0, float(retry_after)
        else:
            _, remaining, retry_after, full_in = self._take(vendor, key, now)
        limit = self.limits[vendor]
        headers = {"X-RateLimit-Limit": limit.header, "X-RateLimit-Remaining": str(remaining)}
        if vendor == MENTIONLAB:
            headers["X-RateLimit-Reset"] = str(math.ceil(time.time() + full_in))
        if retry_after:
            counts["rate_limited"] += 1
            return self._too_many(vendor, retry_after, headers)
        if cfg.reset_rate and self.rng.random() < cfg.reset_rate:
            self.faults["reset"] += 1
            return _DROP
        if cfg.error_rate and self.rng.random() < cfg.error_rate:
            self.faults["error"] += 1
            if vendor == MENTIONSAPI:
                body = self._ma_error("internal_error", "The archive read failed. Retry.")
                return self._send(500, body, headers)
            body = {
                "statusCode": 503,
                "message": "Service temporarily unavailable",
                "error": "Service Unavailable",
            }
            return self._send(503, body, headers)
        return headers

    def _take(self, vendor: str, key: str, now: float) -> tuple[bool, int, int, float]:
        """(allowed, remaining, retry_after seconds or 0, seconds until the bucket is full)."""
        limit = self.limits[vendor]
        rate, burst = limit.rate, limit.burst
        if rate is None:
            return True, _DEFAULT_LIMIT - 1, 0, 60.0
        bucket = self.buckets.get((vendor, key))
        if bucket is None:
            bucket = self.buckets[(vendor, key)] = _Bucket(burst, now)
        tokens = min(burst, bucket.tokens + (now - bucket.updated) * rate)
        bucket.updated = now
        if tokens >= 1.0:
            bucket.tokens = tokens - 1.0
            return True, math.floor(bucket.tokens), 0, (burst - bucket.tokens) / rate
        bucket.tokens = tokens
        retry_after = max(1, math.ceil((1.0 - tokens) / rate))
        return False, 0, retry_after, (burst - tokens) / rate

    def _storm_retry_after(self, now: float) -> int:
        """Seconds left in the current 429 storm, or 0 outside storms."""
        every, length = self.config.storm_every, self.config.storm_seconds
        if every <= 0 or length <= 0:
            return 0
        elapsed = now - self.started
        # The first storm starts one period in, so a fresh simulator is healthy.
        if elapsed < every:
            return 0
        phase = elapsed % every
        return max(1, math.ceil(length - phase)) if phase < length else 0

    def _too_many(self, vendor: str, retry_after: int | str, headers: dict[str, str]) -> Response:
        self.rate_limited += 1
        self.vendor_rate_limited[vendor] += 1
        headers = {**headers, "Retry-After": str(retry_after), "X-RateLimit-Remaining": "0"}
        if vendor == MENTIONSAPI:
            body = self._ma_error(
                "rate_limited", f"Rate limit exceeded. Retry after {retry_after} seconds."
            )
        else:
            body = {
                "statusCode": 429,
                "message": f"Too many requests. Please retry after {retry_after} seconds.",
                "error": "Too Many Requests",
            }
        return self._send(429, body, headers)

    def _mangle(self, vendor: str, id: str, body: bytes) -> bytes | None:
        """A malformed or oversized replacement for a final 200 body, or None."""
        cfg = self.config
        if cfg.malformed_rate and self.rng.random() < cfg.malformed_rate:
            self.faults["malformed"] += 1
            # The kind is a function of the id so a re-fetch shows the same defect.
            h = hashlib.sha256(f"{cfg.seed}:{vendor}:{id}:malformed".encode()).digest()
            kind = _MALFORMED_KINDS[h[0] % len(_MALFORMED_KINDS)]
            if kind == "truncated":
                return body[: max(1, len(body) // 2)]
            if kind == "html":
                return b"<html><body><h1>502 Bad Gateway</h1></body></html>"
            return _wrong_type(vendor, body, h[1])
        if cfg.huge_rate and self.rng.random() < cfg.huge_rate:
            self.faults["huge"] += 1
            if self._pad is None:
                self._pad = b"x" * _HUGE_PAD_BYTES
            return b"".join((body[:-1], b',"x_padding":"', self._pad, b'"}'))
        return None

    # ---------------------------------------------------------------- plumbing

    def latency_ms(self) -> float:
        """This request's base latency: latency_ms, jittered, never below 0."""
        cfg = self.config
        if cfg.latency_jitter_ms <= 0:
            return cfg.latency_ms
        jitter = cfg.latency_jitter_ms
        return max(0.0, cfg.latency_ms + self.latency_rng.uniform(-jitter, jitter))

    async def _delay(self) -> None:
        cfg = self.config
        delay = self.latency_ms()
        if cfg.latency_spike_rate and self.rng.random() < cfg.latency_spike_rate:
            self.faults["latency_spike"] += 1
            delay += cfg.latency_spike_ms
        if delay > 0:
            await asyncio.sleep(delay / 1000.0)

    async def _drop(self, request: Request) -> Response:
        """Reset the TCP connection without sending a byte."""
        # uvicorn's receive() is a bound method of the request cycle, which holds the
        # transport; there is no public ASGI way to abort a connection.
        cycle = getattr(request.receive, "__self__", None)
        transport = getattr(cycle, "transport", None)
        if transport is None:
            raise ConnectionDropped("simulated connection reset")
        sock = transport.get_extra_info("socket")
        if sock is not None:
            # Linger 0 makes close() send RST, so the client sees ECONNRESET, not EOF.
            # A client that already hung up leaves no descriptor (ValueError).
            with contextlib.suppress(OSError, ValueError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
        # Let connection_lost() run so uvicorn knows the client is gone and discards the
        # placeholder response below instead of logging an error.
        for _ in range(10):
            if getattr(cycle, "disconnected", True):
                break
            await asyncio.sleep(0)
        return Response(status_code=499)

    def _open_headers(self, vendor: str) -> dict[str, str]:
        """Rate-limit headers for responses that consume no token (401)."""
        limit = self.limits[vendor]
        headers = {
            "X-RateLimit-Limit": limit.header,
            "X-RateLimit-Remaining": limit.header,
        }
        if limit.rate is None:
            headers["X-RateLimit-Remaining"] = str(_DEFAULT_LIMIT - 1)
        if vendor == MENTIONLAB:
            headers["X-RateLimit-Reset"] = str(math.ceil(time.time()))
        return headers

    def _ma_error(self, code: str, message: str) -> dict[str, Any]:
        self.seq += 1
        return {
            "error": {"code": code, "message": message},
            "request_id": self.dataset.request_id("app", self.seq),
        }

    def _send(self, status: int, body: bytes | dict[str, Any], headers: dict[str, str]) -> Response:
        self._count(status)
        return ORJSONResponse(body, status_code=status, headers=headers)

    def _count(self, status: int) -> None:
        self.by_status[status] = self.by_status.get(status, 0) + 1

    # ---------------------------------------------------------------- introspection routes

    async def health(self, request: Request) -> Response:
        return ORJSONResponse({"ok": True})

    async def dataset_ids(self, request: Request) -> Response:
        q = request.query_params
        vendor = q.get("vendor", MENTIONSAPI).lower()
        try:
            n = int(q.get("n", "100"))
            start = int(q.get("start", "0"))
        except ValueError:
            return ORJSONResponse({"error": "n and start must be integers"}, status_code=400)
        if vendor not in VENDORS or not 0 <= n <= 1_000_000 or start < 0:
            return ORJSONResponse(
                {"error": f"vendor must be one of {list(VENDORS)}, 0 <= n <= 1e6, start >= 0"},
                status_code=400,
            )
        if vendor == MENTIONSAPI:
            return ORJSONResponse({"ids": self.dataset.ask_ids(n, start)})
        pairs = self.dataset.execution_ids(n, start)
        return ORJSONResponse({"ids": [{"project_id": p, "id": i} for p, i in pairs]})

    async def truth(self, request: Request) -> Response:
        vendor = request.path_params["vendor"].lower()
        if vendor not in VENDORS:
            return ORJSONResponse({"error": f"unknown vendor {vendor!r}"}, status_code=404)
        q = request.query_params
        body = self.dataset.truth_bytes(
            vendor, request.path_params["id"], q.get("project_id"), q.get("api_key")
        )
        return Response(body, media_type="application/json")

    async def stats_route(self, request: Request) -> Response:
        return ORJSONResponse(self.stats())

    async def requests_route(self, request: Request) -> Response:
        return ORJSONResponse(self.request_log)

    async def request_counts_route(self, request: Request) -> Response:
        """``{vendor: {id: {"requests": n, "by_status": {"200": n, ...}}}}``."""
        counts = {
            vendor: {
                id: {
                    "requests": len(times),
                    "by_status": {
                        str(k): v
                        for k, v in sorted(self.request_statuses[vendor].get(id, {}).items())
                    },
                }
                for id, times in log.items()
            }
            for vendor, log in self.request_log.items()
        }
        return ORJSONResponse(counts)

    async def reset_route(self, request: Request) -> Response:
        self.reset()
        return ORJSONResponse({"ok": True})

    async def config_route(self, request: Request) -> Response:
        cfg = asdict(self.config)
        cfg["anchor"] = self.dataset.anchor.isoformat()
        cfg["poison"] = {kind: sorted(ids) for kind, ids in self.config.poison.items()}
        return ORJSONResponse({"config": cfg, "projects": self.dataset.projects()})


def _key_label(key: str) -> str:
    """A recognisable but non-secret label: stats may end up in logs and reports."""
    return f"{key[:8]}…{hashlib.sha256(key.encode()).hexdigest()[:8]}"


def _gzip2(body: bytes, pad: int) -> bytes:
    """gzip(gzip(body + an x_padding string of `pad` zeros)), built without holding it."""
    inner = zlib.compressobj(6, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    parts = [inner.compress(body[:-1] + b',"x_padding":"')]
    chunk = b"0" * (1 << 20)
    for start in range(0, pad, len(chunk)):
        parts.append(inner.compress(chunk[: pad - start]))
    parts += [inner.compress(b'"}'), inner.flush()]
    outer = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    return outer.compress(b"".join(parts)) + outer.flush()


def _wrong_type(vendor: str, body: bytes, pick: int) -> bytes:
    """The body with one documented field given the wrong JSON type."""
    doc = orjson.loads(body)
    if vendor == MENTIONSAPI:
        if doc.get("providers"):
            if pick % 2:
                doc["usage"]["latency_ms"] = "abc"
            else:
                doc["providers"][0]["latency_ms"] = "abc"
        else:
            doc["error"] = "provider_error"  # a string where an object is documented
    else:
        scored = [e for e in doc.get("entities", []) if "sentimentScore" in e]
        if scored:
            scored[pick % len(scored)]["sentimentScore"] = "high"
        else:
            doc["executionNumber"] = "one"
    return orjson.dumps(doc)


def create_app(config: SimConfig | None = None) -> Starlette:
    """The simulator as a Starlette app; its state is reachable as ``app.state.sim``."""
    sim = _Simulator(config or SimConfig())
    routes = [
        Route("/v1/ask/{id}", sim.ask, methods=["GET"]),
        Route("/v1/ask/", sim.ask, methods=["GET"]),  # missing id: 400 invalid_request
        Route("/api/v1/job-executions/{id}", sim.job_execution, methods=["GET"]),
        Route("/_sim/health", sim.health, methods=["GET"]),
        Route("/_sim/dataset", sim.dataset_ids, methods=["GET"]),
        Route("/_sim/truth/{vendor}/{id}", sim.truth, methods=["GET"]),
        Route("/_sim/stats", sim.stats_route, methods=["GET"]),
        Route("/_sim/requests", sim.requests_route, methods=["GET"]),
        Route("/_sim/requests/counts", sim.request_counts_route, methods=["GET"]),
        Route("/_sim/reset", sim.reset_route, methods=["POST"]),
        Route("/_sim/config", sim.config_route, methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.sim = sim
    return app


def serve(config: SimConfig, host: str = "127.0.0.1", port: int = 8800) -> None:
    """Run the simulator in the foreground until interrupted."""
    uvicorn.run(
        create_app(config),
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="off",
    )


def run_in_thread(
    config: SimConfig, host: str = "127.0.0.1", port: int = 0
) -> tuple[str, Callable[[], None]]:
    """Start the simulator in a daemon thread; return its base URL and a stop function."""
    # A drip in flight would otherwise hold shutdown for as long as it drips.
    return serve_in_thread(
        create_app(config), "/_sim/health", host=host, port=port, timeout_graceful_shutdown=1
    )


def serve_in_thread(
    app: Any, health_path: str, host: str = "127.0.0.1", port: int = 0, **config: Any
) -> tuple[str, Callable[[], None]]:
    """Serve any ASGI app with uvicorn in a daemon thread, once `health_path`
    answers 200; return its base URL and a stop function (tests). `config` goes
    to uvicorn.Config."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Binding ourselves (port 0 = any free port) avoids the race of probing for a free port.
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(
            app, **{"log_level": "warning", "access_log": False, "lifespan": "off", **config}
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name=f"uvicorn-{bound}", daemon=True
    )
    thread.start()
    base_url = f"http://[{host}]:{bound}" if family == socket.AF_INET6 else f"http://{host}:{bound}"

    def stop() -> None:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()

    deadline = time.monotonic() + 15
    with httpx.Client(trust_env=False, timeout=1.0) as client:
        while True:
            try:
                if client.get(f"{base_url}{health_path}").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if not thread.is_alive() or time.monotonic() > deadline:
                stop()
                raise RuntimeError(f"server did not start on {base_url}")
            time.sleep(0.02)
    return base_url, stop


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m simulator``: serve the simulator from the command line."""
    parser = argparse.ArgumentParser(prog="simulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8800)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--latency-jitter-ms",
        type=float,
        default=0.0,
        help="each request waits uniformly within latency +- this (never below 0)",
    )
    parser.add_argument("--error-rate", type=float, default=0.0)
    parser.add_argument("--rate-limit", type=float, default=None, help="requests/s per API key")
    for vendor in VENDORS:
        parser.add_argument(
            f"--rate-limit-{vendor}",
            type=float,
            default=None,
            help=f"requests/s per {vendor} key (default: --rate-limit)",
        )
        parser.add_argument(
            f"--rate-burst-{vendor}",
            type=float,
            default=None,
            help=f"burst of each {vendor} key (default: the documented plan's, else the rate)",
        )
    parser.add_argument("--max-pending-polls", type=int, default=2)
    parser.add_argument("--reset-rate", type=float, default=0.0)
    parser.add_argument("--malformed-rate", type=float, default=0.0)
    parser.add_argument("--huge-rate", type=float, default=0.0)
    parser.add_argument("--latency-spike-rate", type=float, default=0.0)
    parser.add_argument("--latency-spike-ms", type=float, default=0.0)
    parser.add_argument("--storm-every", type=float, default=0.0)
    parser.add_argument("--storm-seconds", type=float, default=0.0)
    parser.add_argument(
        "--poison",
        action="append",
        default=[],
        metavar="KIND=ID[,ID...]",
        help=f"serve these ids a hostile answer; KIND is one of {', '.join(POISON_KINDS)}",
    )
    parser.add_argument("--poison-retry-after-count", type=int, default=2)
    parser.add_argument("--poison-drip-seconds", type=float, default=1.5)
    parser.add_argument("--poison-bomb-bytes", type=int, default=256 * 1024 * 1024)
    parser.add_argument("--poison-depth", type=int, default=1000)
    parser.add_argument(
        "--anchor",
        type=datetime.fromisoformat,
        default=None,
        help="ISO timestamp the answers' dates are derived from (default: now, to the minute); "
        "fix it to serve identical bodies from several runs",
    )
    args = parser.parse_args(argv)
    poison: dict[str, list[str]] = {}
    for spec in args.poison:
        kind, sep, ids = spec.partition("=")
        if not sep or kind not in POISON_KINDS:
            parser.error(f"--poison {spec!r}: expected KIND=ID[,ID...], KIND in {POISON_KINDS}")
        poison.setdefault(kind, []).extend(i for i in ids.split(",") if i)
    options = vars(args)
    rate_limits = {
        v: options[f"rate_limit_{v}"] for v in VENDORS if options[f"rate_limit_{v}"] is not None
    }
    rate_bursts = {
        v: options[f"rate_burst_{v}"] for v in VENDORS if options[f"rate_burst_{v}"] is not None
    }
    for vendor, rate in rate_limits.items():
        if rate <= 0:
            parser.error(f"--rate-limit-{vendor}: must be > 0")
    config = SimConfig(
        seed=args.seed,
        latency_ms=args.latency_ms,
        latency_jitter_ms=args.latency_jitter_ms,
        error_rate=args.error_rate,
        rate_limit=args.rate_limit,
        rate_limits=rate_limits,
        rate_bursts=rate_bursts,
        max_pending_polls=args.max_pending_polls,
        reset_rate=args.reset_rate,
        malformed_rate=args.malformed_rate,
        huge_rate=args.huge_rate,
        latency_spike_rate=args.latency_spike_rate,
        latency_spike_ms=args.latency_spike_ms,
        storm_every=args.storm_every,
        storm_seconds=args.storm_seconds,
        anchor=args.anchor,
        poison=poison,
        poison_retry_after_count=args.poison_retry_after_count,
        poison_drip_seconds=args.poison_drip_seconds,
        poison_bomb_bytes=args.poison_bomb_bytes,
        poison_depth=args.poison_depth,
    )
    serve(config, host=args.host, port=args.port)
