"""Webhook signatures of MentionsAPI, under both documented schemes.

The vendor's pages disagree on how deliveries are signed (api-notes, "Webhooks"):

- scheme `v1`: `MentionsAPI-Signature: t=<unix>,v1=<hex>`, where v1 is
  HMAC-SHA256(secret, "<t>.<raw body>"). The timestamp is signed.
- scheme `hex`: `x-mentionsapi-signature: <hex>`, a plain HMAC-SHA256(secret,
  raw body), with the time in `x-mentionsapi-timestamp`, which is not signed.

The scheme is chosen by which header came; when both came, `v1` alone decides,
since it is the one that binds the timestamp. Pure functions: no I/O here.
"""

from __future__ import annotations

import hashlib
import hmac
import math
from collections.abc import Mapping

from worker.vendors.base import SignatureError, Verified

V1_HEADER = "mentionsapi-signature"
HEX_HEADER = "x-mentionsapi-signature"
HEX_TIMESTAMP_HEADER = "x-mentionsapi-timestamp"
_MAX_HEADER = 4096


__all__ = ["SignatureError", "Verified", "sign_hex", "sign_v1", "verify"]


def sign_v1(secret: str, body: bytes, timestamp: int) -> str:
    """The `MentionsAPI-Signature` header value for a body (tests, docs, doctor)."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def sign_hex(secret: str, body: bytes) -> str:
    """The `x-mentionsapi-signature` header value for a body."""
    return hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secrets: list[str],
    *,
    now: float,
    tolerance: float,
) -> Verified:
    """Check a delivery's signature and freshness, or raise SignatureError.

    `headers` must look names up case-insensitively (Starlette's do). Any of
    `secrets` may have signed it, so a secret can be rotated without downtime.
    """
    if not secrets:
        raise SignatureError(401, "no webhook secret is configured")
    for name in (V1_HEADER, HEX_HEADER, HEX_TIMESTAMP_HEADER):
        value = headers.get(name)
        # We sign with hex digits and decimal times: a header with any other
        # byte cannot be ours (and the comparisons below take ASCII only).
        if value is not None and not value.isascii():
            raise SignatureError(401, f"{name} header contains non-ASCII bytes")
    if (v1 := headers.get(V1_HEADER)) is not None:
        return _verify_v1(v1, body, secrets, now=now, tolerance=tolerance)
    if (plain := headers.get(HEX_HEADER)) is not None:
        return _verify_hex(plain, headers.get(HEX_TIMESTAMP_HEADER), body, secrets, now, tolerance)
    raise SignatureError(401, f"no signature header ({V1_HEADER} or {HEX_HEADER})")


def _verify_v1(
    header: str, body: bytes, secrets: list[str], *, now: float, tolerance: float
) -> Verified:
    if len(header) > _MAX_HEADER:
        raise SignatureError(400, f"{V1_HEADER} header too long")
    timestamp: str | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            continue
        if key == "t":
            timestamp = value.strip()
        elif key == "v1":  # several v1 entries: the vendor signing with two secrets
            candidates.append(value.strip().lower())
    if timestamp is None or not (timestamp.isascii() and timestamp.isdigit()) or not candidates:
        raise SignatureError(400, f"malformed {V1_HEADER} header: expected t=<unix>,v1=<hex>")
    signed = timestamp.encode() + b"." + body
    expected = [hmac.new(s.encode(), signed, hashlib.sha256).hexdigest() for s in secrets]
    if not _any_match(expected, candidates):
        raise SignatureError(401, "signature does not match the body")
    return Verified("v1", _fresh(float(timestamp), now, tolerance))


def _verify_hex(
    header: str,
    timestamp: str | None,
    body: bytes,
    secrets: list[str],
    now: float,
    tolerance: float,
) -> Verified:
    candidate = header.strip().lower().removeprefix("sha256=")
    if len(candidate) != 64:
        raise SignatureError(400, f"malformed {HEX_HEADER} header: expected 64 hex digits")
    if timestamp is None:
        raise SignatureError(401, f"{HEX_TIMESTAMP_HEADER} header missing")
    try:
        sent_at = float(timestamp.strip())
    except ValueError:
        raise SignatureError(400, f"malformed {HEX_TIMESTAMP_HEADER} header") from None
    if not math.isfinite(sent_at):  # "nan" would pass any freshness check
        raise SignatureError(400, f"malformed {HEX_TIMESTAMP_HEADER} header")
    expected = [hmac.new(s.encode(), body, hashlib.sha256).hexdigest() for s in secrets]
    if not _any_match(expected, [candidate]):
        raise SignatureError(401, "signature does not match the body")
    return Verified("hex", _fresh(sent_at, now, tolerance))


def _any_match(expected: list[str], candidates: list[str]) -> bool:
    # Compare every pair, so the time taken says nothing about which one matched.
    # As bytes: compare_digest raises TypeError on non-ASCII str, and this must
    # answer False for any input, never raise.
    matched = False
    for want in expected:
        for got in candidates:
            matched |= hmac.compare_digest(
                want.encode("utf-8", "surrogatepass"), got.encode("utf-8", "surrogatepass")
            )
    return matched


def _fresh(timestamp: float, now: float, tolerance: float) -> float:
    if abs(now - timestamp) > tolerance:
        raise SignatureError(
            401,
            f"stale delivery: signed {now - timestamp:+.0f} s from now, "
            f"beyond the {tolerance:g} s tolerance",
        )
    return timestamp
