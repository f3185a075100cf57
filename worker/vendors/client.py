"""Requests to any vendor: capped reads, a deadline per request, the rate budget,
the status table; what is vendor-specific comes from its VendorSpec."""

from __future__ import annotations

import logging
import time
import zlib
from datetime import datetime

import httpx

from worker.config import Settings
from worker.logs import redact
from worker.metrics import observe_pause, observe_response
from worker.normalize import PayloadError
from worker.normalize.common import parse_document
from worker.outcome import Action, Outcome
from worker.ratelimit import RateLimiter, pause_seconds, retry_after_seconds
from worker.vendors.base import RawResponse, Target, VendorSpec

log = logging.getLogger("mentionsync.clients")

# One layer of these is inflated under the size cap; anything else is refused.
_INFLATABLE = frozenset({"gzip", "x-gzip", "deflate"})


class RequestDeadlineExceeded(httpx.TimeoutException):
    """The whole request took longer than HTTP_REQUEST_DEADLINE."""


class UnsupportedEncoding(httpx.DecodingError):
    """A Content-Encoding we do not inflate (stacked layers, unknown codings)."""


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
        # Only codings _read_capped inflates under its cap (httpx would offer br/zstd
        # when their packages are installed).
        headers={
            "User-Agent": "mentionsync/0.1 (+https://github.com/mentionsync)",
            "Accept-Encoding": "gzip, deflate",
        },
    )


def _inflate_capped(response: httpx.Response, cap: int, deadline: float) -> tuple[bytes, bool]:
    """Decode a gzip or deflate body up to cap + 1 bytes, however small it is on the wire.

    httpx inflates each network read whole, so a 64 KiB read can become 64 MiB in
    memory before any cap applies; here every decompress call is bounded.
    """
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
    out = bytearray()
    try:
        for chunk in response.iter_raw():
            _check_deadline(deadline)
            out += inflater.decompress(chunk, cap + 1 - len(out))
            if len(out) > cap:
                return bytes(out[:cap]), True
        out += inflater.flush()
    except zlib.error as exc:
        raise httpx.DecodingError(f"cannot decode body: {exc}") from None
    if len(out) > cap:
        return bytes(out[:cap]), True
    return bytes(out), False


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def _check_deadline(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise RequestDeadlineExceeded("the response took longer than HTTP_REQUEST_DEADLINE")


class VendorClient:
    """One vendor's requests, with this process's HTTP client and rate budget."""

    def __init__(
        self, spec: VendorSpec, http: httpx.Client, settings: Settings, limiter: RateLimiter
    ) -> None:
        self.spec = spec
        self.vendor = spec.vendor
        self.http = http
        self.settings = settings
        self.limiter = limiter

    @property
    def configured(self) -> bool:
        return self.settings.api_key(self.vendor) is not None

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
        started = time.monotonic()
        deadline = started + self.settings.http_request_deadline
        try:
            request = self.http.build_request(
                "GET",
                self.spec.url(self.settings, target),
                headers=self.spec.headers(self.settings, target),
            )
        except Exception as exc:  # an id or key no request can carry
            return RawResponse(
                None, b"", False, httpx.Headers(), _describe(exc), 0.0, unsendable=True
            )
        refused: str | None = None
        try:
            response = self.http.send(request, stream=True)
            try:
                _check_deadline(deadline)
                body, truncated, refused = self._read_capped(response, deadline)
            finally:
                response.close()
            raw = RawResponse(
                response.status_code,
                body,
                truncated,
                response.headers,
                None,
                time.monotonic() - started,
                refused=refused,
            )
        except Exception as exc:
            if not isinstance(exc, httpx.HTTPError):
                log.exception(
                    "unexpected error requesting %s %s",
                    self.vendor,
                    target.external_id,
                    extra={"vendor": self.vendor.value},
                )
            # The message names the exception and the URL, never the headers.
            raw = RawResponse(
                None, b"", False, httpx.Headers(), _describe(exc), time.monotonic() - started
            )
        self.limiter.observe(raw.status, raw.headers)
        observe_response(self.vendor, raw.status, raw.elapsed)
        if raw.status == 429:
            pause = pause_seconds(
                429, raw.headers, time.time(), self.settings.max_retry_after_seconds
            )
            observe_pause(self.vendor, "429", pause or 0.0)
        return raw

    def _read_capped(
        self, response: httpx.Response, deadline: float
    ) -> tuple[bytes, bool, str | None]:
        """The body up to the size cap, whether it was cut, and why it was not
        decoded if it was not. Reads raw bytes: every decoding layer is ours."""
        cap = self.settings.max_response_bytes
        codings = [
            c.strip().lower()
            for c in response.headers.get("content-encoding", "").split(",")
            if c.strip() and c.strip().lower() != "identity"
        ]
        if len(codings) == 1 and codings[0] in _INFLATABLE:
            return (*_inflate_capped(response, cap, deadline), None)
        refused = None
        if codings:
            refused = f"unsupported Content-Encoding {', '.join(codings)[:64]!r}"
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > cap:
            return next(response.iter_raw(cap), b"")[:cap], True, refused
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_raw():
            _check_deadline(deadline)
            chunks.append(chunk)
            size += len(chunk)
            if size > cap:
                return b"".join(chunks)[:cap], True, refused
        return b"".join(chunks), False, refused

    def interpret(self, target: Target, raw: RawResponse, fetched_at: datetime) -> Outcome:
        """What one response means for its id. Never raises: whatever goes wrong
        with one body stays that id's retry or quarantine."""
        if raw.unsendable:
            return self.unsendable(raw)
        rule = self.spec.rule_for(raw.status)
        if raw.status is None:
            return Outcome(Action.RETRY, None, reason=raw.error)
        if rule.action is not Action.INSPECT:
            return self.error_outcome(target, rule.action, raw)
        if raw.refused:
            return self.quarantine(raw, raw.refused)
        if raw.truncated:
            return self.quarantine(
                raw, f"body larger than {self.settings.max_response_bytes} bytes"
            )
        try:
            body = self.without_key(raw.body)
            document = parse_document(body)
            outcome = self.spec.interpret_body(target, raw.status, document.payload, fetched_at)
            if outcome.answer is not None:
                # The body's own JSON text is archived, not a re-encoding of it;
                # the exact bytes too when the text had to be changed to fit.
                outcome.answer.row["raw_payload"] = document.text
                outcome.answer.row["raw_body"] = body if document.altered else None
        except PayloadError as exc:
            return self.quarantine(raw, str(exc))
        except Exception as exc:
            log.exception(
                "cannot interpret the body of %s %s",
                self.vendor,
                target.external_id,
                extra={"vendor": self.vendor.value},
            )
            return self.quarantine(raw, f"cannot be read: {_describe(exc)}")
        if outcome.action is Action.ARCHIVE:
            # Kept as received, for quarantine if the database refuses the rows.
            outcome.body = raw.body
        return outcome

    def error_outcome(self, target: Target, action: Action, raw: RawResponse) -> Outcome:
        """An error status's outcome; a vendor may say more about what it concerns."""
        return Outcome(
            action,
            raw.status,
            reason=self.spec.describe_error(target, raw),
            retry_after=retry_after_seconds(raw.headers, self.settings.max_retry_after_seconds),
        )

    def unsendable(self, raw: RawResponse) -> Outcome:
        """No request could be built. If even a plain id cannot be requested, the
        configuration (the key) is at fault and the key pauses; else only this id."""
        plain = Target(self.vendor, "x", "x")
        try:
            self.http.build_request(
                "GET",
                self.spec.url(self.settings, plain),
                headers=self.spec.headers(self.settings, plain),
            )
        except Exception:
            return Outcome(
                Action.PAUSE_ACCOUNT,
                None,
                reason=f"cannot build a request with this key: {raw.error}",
            )
        return Outcome(Action.REJECT, None, reason=f"cannot request this id: {raw.error}")

    def without_key(self, body: bytes) -> bytes:
        """The body with our API key replaced, should the vendor echo it back."""
        key = self.settings.api_key(self.vendor)
        secret = key.get_secret_value().encode() if key else b""
        if len(secret) >= 4 and secret in body:
            return body.replace(secret, b"[REDACTED]")
        return body

    @staticmethod
    def quarantine(raw: RawResponse, reason: str) -> Outcome:
        return Outcome(
            Action.QUARANTINE,
            raw.status,
            reason=f"invalid payload: {reason}",
            body=raw.body,
            body_truncated=raw.truncated,
        )
