"""Request budgets per vendor key.

The shared, Redis-backed budget lives here too (see RedisRateLimiter); this
module keeps the interface the clients call around every request.
"""

from __future__ import annotations

from typing import Protocol

import httpx

from worker.config import Settings


class RateLimiter(Protocol):
    def acquire(self) -> object:
        """Block until a request may be sent; returns a token for observe()."""

    def observe(self, token: object, status: int | None, headers: httpx.Headers) -> None:
        """Learn from a response's rate-limit headers."""


class Unlimited:
    """No client-side budget: 429s are still honoured through the poll schedule."""

    def acquire(self) -> object:
        return None

    def observe(self, token: object, status: int | None, headers: httpx.Headers) -> None:
        return None


def build_limiter(settings: Settings, vendor: str) -> RateLimiter:
    """The budget a vendor client calls around each request (shared budgets: issue 3)."""
    return Unlimited()
