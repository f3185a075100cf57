"""Requests to any vendor: capped reads, a deadline per request, the rate budget,
the status table; what is vendor-specific comes from its VendorSpec."""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from datetime import datetime
from typing import Any

import aiohttp
import httpx
import yarl

from worker.config import Settings
from worker.logs import redact
from worker.metrics import observe_pause, observe_response
from worker.normalize import PayloadError
from worker.normalize.common import parse_document
from worker.outcome import Action, Outcome
from worker.ratelimit import RateLimiter, pause_seconds, retry_after_seconds
from worker.vendors.base import RawResponse, Target, VendorSpec

log = logging.getLogger("mentionsync.clients")

# Headers aiohttp writes itself from the URL and the body.
_SET_BY_AIOHTTP = frozenset({"host", "content-length", "transfer-encoding"})
# Header sets (one per MentionLab project, say) whose checked form is kept.
_HEADER_SETS = 1024

# One layer of these is inflated under the size cap; anything else is refused.
_INFLATABLE = frozenset({"gzip", "x-gzip", "deflate"})


class RequestDeadlineExceeded(httpx.TimeoutException):
    """The whole request took longer than HTTP_REQUEST_DEADLINE."""


class UnsupportedEncoding(httpx.DecodingError):
    """A Content-Encoding we do not inflate (stacked layers, unknown codings)."""


def _client_options(settings: Settings) -> dict[str, Any]:
    return {
        "timeout": httpx.Timeout(
            connect=settings.http_connect_timeout,
            read=settings.http_read_timeout,
            write=settings.http_read_timeout,
            pool=settings.http_pool_timeout,
        ),
        # Room for every request the in-flight cap allows, of either vendor.
        "limits": httpx.Limits(
            max_connections=settings.fetch_concurrency * 2,
            max_keepalive_connections=settings.fetch_concurrency * 2,
        ),
        "follow_redirects": False,
        # Only codings CappedBody inflates under its cap (httpx would offer br/zstd
        # when their packages are installed).
        "headers": {
            "User-Agent": "mentionsync/0.1 (+https://github.com/mentionsync)",
            "Accept-Encoding": "gzip, deflate",
        },
    }


def build_http_client(settings: Settings) -> httpx.Client:
    """The blocking client: probes (doctor) and one-off requests."""
    # Retries are ours, per id, with backoff (worker/scheduling.py).
    return httpx.Client(
        transport=httpx.HTTPTransport(retries=0, verify=True), **_client_options(settings)
    )


def build_async_session(settings: Settings) -> aiohttp.ClientSession:
    """The session the fetch pipeline (worker/pipeline.py) sends every poll with;
    built on the pipeline's event loop. Bodies arrive as sent (CappedBody inflates)."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=settings.fetch_concurrency * 2, limit_per_host=0),
        timeout=aiohttp.ClientTimeout(
            total=None,
            # aiohttp's connect includes the wait for a free connection.
            connect=settings.http_pool_timeout + settings.http_connect_timeout,
            sock_connect=settings.http_connect_timeout,
            sock_read=settings.http_read_timeout,
        ),
        auto_decompress=False,
        headers=_client_options(settings)["headers"],
        skip_auto_headers=("Accept-Encoding", "User-Agent"),
    )


# What a failed request is recorded as: the same names whichever client sent it.
_TRANSPORT_ERRORS: tuple[tuple[type[BaseException], str], ...] = (
    (aiohttp.ConnectionTimeoutError, "ConnectTimeout"),
    (aiohttp.SocketTimeoutError, "ReadTimeout"),
    (aiohttp.ClientConnectorError, "ConnectError"),
    (aiohttp.ServerDisconnectedError, "RemoteProtocolError"),
    (aiohttp.ClientPayloadError, "RemoteProtocolError"),
    (aiohttp.ClientResponseError, "RemoteProtocolError"),
    (aiohttp.ClientOSError, "ReadError"),
    (TimeoutError, "ReadTimeout"),
    (aiohttp.ClientError, "TransportError"),
)


def _transport_error(exc: BaseException) -> str:
    name = next((n for kind, n in _TRANSPORT_ERRORS if isinstance(exc, kind)), None)
    described = _describe(exc)
    if name is None:
        return described
    return f"{name}: {described.split(': ', 1)[1] or type(exc).__name__}"


class CappedBody:
    """A body read chunk by chunk, kept to the size cap however it is encoded.

    httpx inflates each network read whole, so a 64 KiB read can become 64 MiB in
    memory before any cap applies; here the raw bytes are read and every
    decompress call is bounded. One gzip or deflate layer is inflated; any other
    coding is kept as received and named in `refused`.
    """

    def __init__(self, headers: httpx.Headers, cap: int) -> None:
        self.cap = cap
        codings = [
            c.strip().lower()
            for c in headers.get("content-encoding", "").split(",")
            if c.strip() and c.strip().lower() != "identity"
        ]
        self.inflater = (
            zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
            if len(codings) == 1 and codings[0] in _INFLATABLE
            else None
        )
        self.refused = (
            f"unsupported Content-Encoding {', '.join(codings)[:64]!r}"
            if codings and self.inflater is None
            else None
        )
        declared = headers.get("content-length")
        # Declared too large: the first `cap` bytes are kept for the quarantine, no more.
        self.first_only = (
            self.inflater is None and declared is not None and declared.isdigit()
        ) and int(declared) > cap
        self.chunk_size = cap if self.first_only else None
        # Declared within the cap and nothing to inflate: read in one call (a
        # response never carries more than its declared length).
        self.whole = (
            self.inflater is None
            and declared is not None
            and declared.isdigit()
            and int(declared) <= cap
        )
        self.out = bytearray()
        self.truncated = False

    def feed(self, chunk: bytes) -> bool:
        """Take one raw read; True once nothing more needs to be read."""
        if self.inflater is None:
            self.out += chunk
        else:
            try:
                self.out += self.inflater.decompress(chunk, self.cap + 1 - len(self.out))
                while self.inflater.unconsumed_tail and len(self.out) <= self.cap:
                    tail = self.inflater.unconsumed_tail
                    self.out += self.inflater.decompress(tail, self.cap + 1 - len(self.out))
            except zlib.error as exc:
                raise httpx.DecodingError(f"cannot decode body: {exc}") from None
        if len(self.out) > self.cap or (self.first_only and len(self.out) >= self.cap):
            self.truncated = True
        return self.truncated

    def result(self) -> tuple[bytes, bool, str | None]:
        """The body up to the cap, whether it was cut, and why it was not decoded."""
        if self.inflater is not None and not self.truncated:
            try:
                self.out += self.inflater.flush()
            except zlib.error as exc:
                raise httpx.DecodingError(f"cannot decode body: {exc}") from None
        if len(self.out) > self.cap or self.first_only:
            self.truncated = True
        return bytes(self.out[: self.cap]), self.truncated, self.refused


def _describe(exc: BaseException) -> str:
    """The exception's name and message; an empty message (asyncio's transports
    raise many) is taken from the cause, e.g. "Connection reset by peer"."""
    message = str(exc)
    cause: BaseException | None = exc
    while not message and cause is not None:
        cause = cause.__cause__ or cause.__context__
        message = str(cause) if cause is not None else ""
    return f"{type(exc).__name__}: {message[:300]}"


def _check_deadline(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise RequestDeadlineExceeded("the response took longer than HTTP_REQUEST_DEADLINE")


class VendorClient:
    """One vendor's requests, with this process's HTTP clients and rate budget.

    `fetch` blocks (probes, tests); `await_slot` and `aget` are the fetch
    pipeline's, on its event loop (worker/pipeline.py), which interprets what
    `aget` read with the same `interpret`.
    Both go through the same budget, size cap, deadline and interpretation.
    """

    def __init__(
        self,
        spec: VendorSpec,
        http: httpx.Client,
        settings: Settings,
        limiter: RateLimiter,
    ) -> None:
        self.spec = spec
        self.vendor = spec.vendor
        self.http = http
        self.settings = settings
        self.limiter = limiter
        # What `async_request` learned from httpx, which checks and normalizes
        # what it sends: whether our URLs come out of httpx unchanged, and the
        # headers of each header set, filtered for aiohttp.
        self._url_as_is: bool | None = None
        self._headers: dict[tuple[tuple[str, str], ...], list[tuple[str, str]]] = {}

    @property
    def configured(self) -> bool:
        return self.settings.api_key(self.vendor) is not None

    def fetch(self, target: Target, fetched_at: datetime, max_wait: float = 60.0) -> Outcome:
        """One request for one id, if the key's rate budget has a slot within max_wait."""
        asked = time.monotonic()
        wait = self.limiter.acquire(max_wait)
        if wait is not None:
            return self.no_slot(wait)
        observe_pause(self.vendor, "budget", time.monotonic() - asked)
        raw = self.get(target)
        return self.scrubbed(self.interpret(target, raw, fetched_at))

    async def await_slot(self, max_wait: float) -> Outcome | None:
        """Wait on the event loop for the key's next request slot: None once it is
        here, or the THROTTLE outcome if none comes within max_wait."""
        asked = time.monotonic()
        granted, wait = self.limiter.take(max_wait)
        if not granted:
            return self.no_slot(wait)
        if wait > 0:
            await asyncio.sleep(wait)
        observe_pause(self.vendor, "budget", time.monotonic() - asked)
        return None

    def no_slot(self, wait: float) -> Outcome:
        return Outcome(
            Action.THROTTLE,
            None,
            reason=f"not sent: the {self.vendor} rate budget has no slot for {wait:.1f}s",
            retry_after=wait,
        )

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

    def request(self, http: httpx.Client, target: Target) -> httpx.Request:
        return http.build_request(
            "GET",
            self.spec.url(self.settings, target),
            headers=self.spec.headers(self.settings, target),
        )

    def get(self, target: Target) -> RawResponse:
        started = time.monotonic()
        deadline = started + self.settings.http_request_deadline
        try:
            request = self.request(self.http, target)
        except Exception as exc:  # an id or key no request can carry
            return self.unbuildable(exc)
        try:
            response = self.http.send(request, stream=True)
            try:
                _check_deadline(deadline)
                reader = CappedBody(response.headers, self.settings.max_response_bytes)
                for chunk in response.iter_raw(reader.chunk_size):
                    _check_deadline(deadline)
                    if reader.feed(chunk):
                        break
                body, truncated, refused = reader.result()
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
            raw = self.failed(target, exc, started)
        return self.observed(raw)

    def async_request(self, target: Target) -> tuple[yarl.URL, list[tuple[str, str]]]:
        """The URL and headers `aget` sends: as `request` builds (and checks)
        them, with httpx asked once per header set rather than per request (its
        URL and header handling cost more than the rest of a request). Raises
        as `request` does for an id or key no request can carry."""
        url = self.spec.url(self.settings, target)
        given = self.spec.headers(self.settings, target)
        key = tuple(given.items())
        headers = self._headers.get(key)
        if headers is None or self._url_as_is is None:
            request = self.request(self.http, target)
            headers = [
                (k, v) for k, v in request.headers.multi_items() if k.lower() not in _SET_BY_AIOHTTP
            ]
            if len(self._headers) < _HEADER_SETS:
                self._headers[key] = headers
            # Only the id's segment differs between requests, and path_segment
            # leaves nothing in it for httpx to change: one comparison holds for all.
            self._url_as_is = str(request.url) == url
            if not self._url_as_is:
                return yarl.URL(str(request.url), encoded=True), headers
        elif not self._url_as_is:
            return yarl.URL(str(self.request(self.http, target).url), encoded=True), headers
        return yarl.URL(url, encoded=True), headers

    async def aget(self, session: aiohttp.ClientSession, target: Target) -> RawResponse:
        """`get` on the pipeline's event loop, over its aiohttp session. The request
        is built (and checked) as `get` builds it."""
        started = time.monotonic()
        try:
            url, headers = self.async_request(target)
        except Exception as exc:  # an id or key no request can carry
            return self.unbuildable(exc)
        try:
            # The deadline covers connect, headers and a body however slowly it drips.
            async with asyncio.timeout(self.settings.http_request_deadline):
                async with session.get(
                    url,
                    headers=headers,
                    allow_redirects=False,
                ) as response:
                    response_headers = httpx.Headers(response.raw_headers)
                    reader = CappedBody(response_headers, self.settings.max_response_bytes)
                    if reader.whole:
                        reader.feed(await response.read())
                    else:
                        async for chunk in response.content.iter_chunked(
                            reader.chunk_size or 65536
                        ):
                            if reader.feed(chunk):
                                response.close()  # the rest is not read: not reusable
                                break
                    body, truncated, refused = reader.result()
            raw = RawResponse(
                response.status,
                body,
                truncated,
                response_headers,
                None,
                time.monotonic() - started,
                refused=refused,
            )
        except TimeoutError as exc:
            if isinstance(exc, aiohttp.ServerTimeoutError):
                raw = self.failed(target, exc, started)
            else:
                late = RequestDeadlineExceeded(
                    "the response took longer than HTTP_REQUEST_DEADLINE"
                )
                raw = self.failed(target, late, started)
        except Exception as exc:
            raw = self.failed(target, exc, started)
        return self.observed(raw)

    @staticmethod
    def unbuildable(exc: Exception) -> RawResponse:
        return RawResponse(None, b"", False, httpx.Headers(), _describe(exc), 0.0, unsendable=True)

    def failed(self, target: Target, exc: Exception, started: float) -> RawResponse:
        """No response: the message names the exception and the URL, never the headers."""
        if not isinstance(exc, httpx.HTTPError | aiohttp.ClientError | TimeoutError):
            log.exception(
                "unexpected error requesting %s %s",
                self.vendor,
                target.external_id,
                extra={"vendor": self.vendor.value},
            )
        return RawResponse(
            None, b"", False, httpx.Headers(), _transport_error(exc), time.monotonic() - started
        )

    def observed(self, raw: RawResponse) -> RawResponse:
        """Tell the rate budget and the metrics what a response said."""
        self.limiter.observe(raw.status, raw.headers)
        observe_response(self.vendor, raw.status, raw.elapsed)
        if raw.status == 429:
            pause = pause_seconds(
                429, raw.headers, time.time(), self.settings.max_retry_after_seconds
            )
            observe_pause(self.vendor, "429", pause or 0.0)
        return raw

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
            self.request(self.http, plain)
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
