"""The dashboard's login: one shared token, remembered by a signed cookie.

The cookie holds its issue time and an HMAC of it under a key derived from
DASHBOARD_TOKEN, so no session table is needed, changing the token ends every
session at once, and a session cannot outlive SESSION_SECONDS. It is HttpOnly
(no script reads it), SameSite=Lax (no other site's form or image request
carries it) and Secure when the request came over HTTPS.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlsplit

from pydantic import SecretStr
from starlette.requests import Request
from starlette.responses import Response

COOKIE = "mentionsync_dashboard"
SESSION_SECONDS = 12 * 3600
# Sessions issued "in the future" by more than this are refused (clock skew
# between processes behind one load balancer is allowed).
SKEW_SECONDS = 300


class Sessions:
    """Issues and checks session cookies for one dashboard token."""

    def __init__(self, token: SecretStr) -> None:
        secret = token.get_secret_value().encode()
        # Bytes on both sides of every comparison: hmac.compare_digest refuses str
        # with non-ASCII characters, and a form field or cookie may carry any.
        self._token = secret
        self._key = hashlib.sha256(b"mentionsync dashboard session\x00" + secret).digest()

    def token_matches(self, given: bytes) -> bool:
        """Whether `given` is the token, compared in constant time."""
        return hmac.compare_digest(given, self._token)

    def _mac(self, issued: str) -> str:
        return hmac.new(self._key, issued.encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float | None = None) -> str:
        issued = str(int(now if now is not None else time.time()))
        return f"{issued}.{self._mac(issued)}"

    def valid(self, cookie: str | None, now: float | None = None) -> bool:
        if not cookie:
            return False
        issued, _, mac = cookie.partition(".")
        if not (issued.isascii() and issued.isdigit() and len(issued) <= 12):
            return False
        if not hmac.compare_digest(mac.encode(), self._mac(issued).encode()):
            return False
        age = (now if now is not None else time.time()) - int(issued)
        return -SKEW_SECONDS <= age <= SESSION_SECONDS


def set_session_cookie(response: Response, request: Request, value: str) -> None:
    response.set_cookie(
        COOKIE,
        value,
        max_age=SESSION_SECONDS,
        path="/",
        httponly=True,
        samesite="lax",
        secure=request.url.scheme == "https",
    )


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(
        COOKIE, path="/", httponly=True, samesite="lax", secure=request.url.scheme == "https"
    )


def local_target(value: str | None, default: str) -> str:
    """`value` if it is a path on this site, else `default`: the login form's
    `next` must never send a person to another host (an open redirect)."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urlsplit(value)
    if parts.scheme or parts.netloc or any(ord(c) < 0x20 for c in value):
        return default
    return value
