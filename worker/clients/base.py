"""What both vendor clients share: capped reads, timeouts, the policy lookup."""

from __future__ import annotations

import time
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

import httpx

from models import TrackedState, Vendor
from worker.config import Settings
from worker.logs import redact
from worker.metrics import observe_pause, observe_response
from worker.normalize import Normalized, PayloadError, parse_json
from worker.policy import Action, Outcome, rule_for
from worker.ratelimit import RateLimiter, pause_seconds


@dataclass(frozen=True, slots=True)
class Target:
    vendor: Vendor
    external_id: str
    project_id: str = ""


@dataclass(slots=True)
class RawResponse:
    status: int | None
    body: bytes
    truncated: bool
    headers: httpx.Headers
    error: str | None
    elapsed: float


def path_segment(external_id: str) -> str:
    """Percent-encode an id as exactly one path segment.

    Registration already refuses '/', '?', '#', '..' and friends; this is the
    second fence, so no id can ever change which URL is requested.
    """
    if external_id in ("", ".", ".."):
        raise ValueError(f"refusing to use {external_id!r} as a path segment")
    return quote(external_id, safe="")


def build_http_client(settings: Settings) -> httpx.Client:
    return httpx.Client(
        timeout=httpx.Timeout(
            connect=settings.http_connect_timeout,
            read=settings.http_read_timeout,
            write=settings.http_read_timeout,
            pool=settings.http_pool_timeout,
        ),
        limits=httpx.Limits(
            max_connections=settings.fetch_concurrency * 2,
            max_keepalive_connections=settings.fetch_concurrency * 2,
        ),
        # Retries are ours, per id, with backoff (worker/policy.py).
        transport=httpx.HTTPTransport(retries=0, verify=True),
        follow_redirects=False,
        headers={"User-Agent": "mentionsync/0.1 (+https://github.com/mentionsync)"},
    )


def _inflate_capped(response: httpx.Response, cap: int) -> tuple[bytes, bool]:
    """Decode a gzip or deflate body up to cap + 1 bytes, however small it is on the wire.

    httpx inflates each network read whole, so a 64 KiB read can become 64 MiB in
    memory before any cap applies; here every decompress call is bounded.
    """
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
    out = bytearray()
    try:
        for chunk in response.iter_raw():
            out += inflater.decompress(chunk, cap + 1 - len(out))
            if len(out) > cap:
                return bytes(out[:cap]), True
        out += inflater.flush()
    except zlib.error as exc:
        raise httpx.DecodingError(f"cannot decode body: {exc}") from None
    if len(out) > cap:
        return bytes(out[:cap]), True
    return bytes(out), False


def retry_after_seconds(headers: httpx.Headers) -> float | None:
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP-date; rare enough that our own backoff is fine


class VendorClient(ABC):
    vendor: Vendor

    def __init__(self, http: httpx.Client, settings: Settings, limiter: RateLimiter) -> None:
        self.http = http
        self.settings = settings
        self.limiter = limiter

    @property
    def configured(self) -> bool:
        return self.settings.api_key(self.vendor) is not None

    @abstractmethod
    def url(self, target: Target) -> str: ...

    @abstractmethod
    def headers(self, target: Target) -> dict[str, str]: ...

    @abstractmethod
    def interpret_body(
        self, target: Target, status: int, payload: dict[str, Any], fetched_at: datetime
    ) -> Outcome:
        """Turn a 200/202 body into ARCHIVE, POLL_LATER or QUARANTINE."""

    @abstractmethod
    def error_reason(self, raw: RawResponse) -> str:
        """A one-line description of an error response, from the vendor's envelope."""

    def fetch(self, target: Target, fetched_at: datetime, max_wait: float = 60.0) -> Outcome:
        """One request for one id, if the key's rate budget has a slot within max_wait."""
        asked = time.monotonic()
        wait = self.limiter.acquire(max_wait)
        if wait is None:
            observe_pause(self.vendor, "budget", time.monotonic() - asked)
        else:
            return Outcome(
                Action.THROTTLE,
                None,
                reason=f"not sent: the {self.vendor} rate budget has no slot for {wait:.1f}s",
                retry_after=wait,
            )
        raw = self.get(target)
        return self.scrubbed(self.interpret(target, raw, fetched_at))

    def scrubbed(self, outcome: Outcome) -> Outcome:
        """The outcome without our key in it: a vendor may echo the key back in an
        error message or a body, and both end up in the database and in logs."""
        key = self.settings.api_key(self.vendor)
        secret = key.get_secret_value() if key else ""
        if outcome.reason:
            outcome.reason = redact(outcome.reason, [secret])
        if secret and outcome.body and secret.encode() in outcome.body:
            outcome.body = outcome.body.replace(secret.encode(), b"[REDACTED]")
        return outcome

    def get(self, target: Target) -> RawResponse:
        url = self.url(target)
        started = time.monotonic()
        try:
            with self.http.stream("GET", url, headers=self.headers(target)) as response:
                body, truncated = self._read_capped(response)
                raw = RawResponse(
                    response.status_code,
                    body,
                    truncated,
                    response.headers,
                    None,
                    time.monotonic() - started,
                )
        except httpx.HTTPError as exc:
            # The message names the exception and the URL, never the headers.
            raw = RawResponse(
                None,
                b"",
                False,
                httpx.Headers(),
                f"{type(exc).__name__}: {exc}",
                time.monotonic() - started,
            )
        self.limiter.observe(raw.status, raw.headers)
        observe_response(self.vendor, raw.status, raw.elapsed)
        if raw.status == 429:
            observe_pause(self.vendor, "429", pause_seconds(429, raw.headers, time.time()) or 0.0)
        return raw

    def _read_capped(self, response: httpx.Response) -> tuple[bytes, bool]:
        cap = self.settings.max_response_bytes
        encoding = response.headers.get("content-encoding", "").strip().lower()
        if encoding in ("gzip", "x-gzip", "deflate"):
            return _inflate_capped(response, cap)
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            return next(response.iter_bytes(cap), b"")[:cap], True
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                return b"".join(chunks)[:cap], True
        return b"".join(chunks), False

    def interpret(self, target: Target, raw: RawResponse, fetched_at: datetime) -> Outcome:
        rule = rule_for(self.vendor, raw.status)
        if raw.status is None:
            return Outcome(Action.RETRY, None, reason=raw.error)
        if rule.action is not Action.INSPECT:
            return Outcome(
                rule.action,
                raw.status,
                reason=self.error_reason(raw),
                retry_after=retry_after_seconds(raw.headers),
            )
        if raw.truncated:
            return self.quarantine(
                raw, f"body larger than {self.settings.max_response_bytes} bytes"
            )
        try:
            payload = parse_json(raw.body)
            outcome = self.interpret_body(target, raw.status, payload, fetched_at)
        except PayloadError as exc:
            return self.quarantine(raw, str(exc))
        if outcome.action is Action.ARCHIVE:
            # Kept as received, for quarantine if the database refuses the rows.
            outcome.body = raw.body
        return outcome

    @staticmethod
    def quarantine(raw: RawResponse, reason: str) -> Outcome:
        return Outcome(
            Action.QUARANTINE,
            raw.status,
            reason=f"invalid payload: {reason}",
            body=raw.body,
            body_truncated=raw.truncated,
        )

    @staticmethod
    def archive(status: int, answer: Normalized, state: TrackedState, **extra: Any) -> Outcome:
        return Outcome(Action.ARCHIVE, status, answer=answer, final_state=state, **extra)


def envelope_message(body: bytes, *paths: tuple[str, ...]) -> str | None:
    """First string found at one of the paths of a JSON error body, if any."""
    try:
        doc = parse_json(body)
    except PayloadError:
        return None
    for path in paths:
        node: Any = doc
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, str | int) and not isinstance(node, bool):
            return str(node)[:300]
    return None
