"""What a vendor is to mentionsync: the interface every vendor package implements.

A vendor is configuration plus a few pure functions: where an id is requested
and with which headers, what a status means (overrides of the common table),
how a body becomes an outcome and rows, how its rate-limit header reads, what a
valid id looks like. The HTTP mechanics shared by all of them are in
worker/vendors/client.py; the list of vendors is worker/vendors/registry.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
from sqlalchemy import ColumnElement

from models import Base, LabelScope, TrackedState, Vendor
from worker.config import Settings
from worker.normalize import Normalized, PayloadError, parse_json
from worker.outcome import COMMON_RULES, OTHER_STATUS, TRANSPORT_ERROR, Action, Outcome, Rule
from worker.ratelimit import Budget


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
    # No request could be built for this id (or key): sending again cannot help.
    unsendable: bool = False
    # Why the body was not decoded (an encoding we refuse), if it was not.
    refused: str | None = None


class BadDelivery(ValueError):
    """Signed, but not a delivery we can read: 400."""


class SignatureError(Exception):
    """A delivery that must be refused; `status` is 400 (malformed) or 401 (not ours)."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Verified:
    scheme: str  # which of the vendor's signing schemes vouched for the delivery
    timestamp: float


@dataclass(frozen=True, slots=True)
class Envelope:
    """A webhook delivery that carries one finished answer."""

    event_id: str  # the idempotency key: the same across redeliveries
    delivery_id: str | None
    event_type: str
    external_id: str  # as sent: the intake validates it as registration does
    data: dict[str, Any]  # the answer body, as a poll would get it
    created_at: datetime | None


class VendorSpec(ABC):
    """One vendor API. Subclasses are stateless; one instance each is registered."""

    vendor: ClassVar[Vendor]
    title: ClassVar[str]  # the vendor's own spelling, for people
    # Each id belongs to a project that travels with every request.
    needs_project: ClassVar[bool] = False
    # The vendor can push finished answers (worker/intake, POST /webhooks/<vendor>);
    # polling stays the net. Such a vendor implements the three webhook methods below.
    sends_webhooks: ClassVar[bool] = False
    # What a delivery of another kind is answered with ("ignored").
    webhook_ignored_detail: ClassVar[str] = ""
    rule_overrides: ClassVar[Mapping[int | str, Rule]] = {}
    # Until a rate-limit header says otherwise: the cheapest documented plan.
    safe_budget: ClassVar[Budget]
    # The archive table and the name of its key column (the vendor's own id).
    archive_table: ClassVar[type[Base]]
    archive_key_name: ClassVar[str]
    # An id nobody has: `doctor` requests it to prove host and key work.
    probe_id: ClassVar[str]
    # What its ids are called, for people ("ask ids"); and its project, if any.
    id_noun: ClassVar[str]
    project_help: ClassVar[str] = ""
    # Which ids a label may name: the first is the id's own (the archived answer),
    # the others wider (every run of a query, say).
    label_scopes: ClassVar[tuple[LabelScope, ...]]
    # Keys the vendor issues start so (the demo's and the simulator's made-up keys).
    key_prefix: ClassVar[str]
    # The largest documented plan (the demo's simulator plays it).
    top_budget: ClassVar[Budget]

    def __repr__(self) -> str:
        return f"<vendor {self.vendor.value}>"

    @property
    def archive_key(self) -> ColumnElement[str]:
        # Looked up, not stored: a mapped attribute on another class is a descriptor.
        key: ColumnElement[str] = getattr(self.archive_table, self.archive_key_name)
        return key

    @cached_property
    def rules(self) -> Mapping[int | str, Rule]:
        return {**COMMON_RULES, **self.rule_overrides}

    def rule_for(self, status: int | None) -> Rule:
        if status is None:
            return self.rules[TRANSPORT_ERROR]
        return self.rules.get(status) or self.rules[OTHER_STATUS]

    @abstractmethod
    def url(self, settings: Settings, target: Target) -> str: ...

    @abstractmethod
    def headers(self, settings: Settings, target: Target) -> dict[str, str]: ...

    @abstractmethod
    def interpret_body(
        self, target: Target, status: int | None, payload: dict[str, Any], fetched_at: datetime
    ) -> Outcome:
        """Turn an answer body (polled, or delivered by webhook with no status)
        into ARCHIVE or POLL_LATER; PayloadError when it cannot be archived."""

    @abstractmethod
    def normalize(
        self, payload: dict[str, Any], *, target: Target, fetched_at: datetime
    ) -> Normalized:
        """The rows of a final answer (also used by `reprocess`)."""

    @abstractmethod
    def error_reason(self, raw: RawResponse) -> str:
        """A one-line description of an error response, from the vendor's envelope."""

    def describe_error(self, target: Target, raw: RawResponse) -> str:
        """The reason recorded for an error status; a vendor may say what it concerns."""
        return self.error_reason(raw)

    def budget_from_limit(self, limit: float, window: float | None = None) -> Budget:
        """The key's budget from its X-RateLimit-Limit header (and `window`, the
        longest time to X-RateLimit-Reset seen, if the vendor sends one). By
        default only the burst is taken from it; the rate stays configured or safe."""
        return Budget(self.safe_budget.rate, limit)

    def canonical_id(self, value: str) -> str:
        """The id as stored, after the common checks; raise ValueError if the
        vendor cannot have issued it."""
        return value

    def project_for_probe(self, tracked_project: str | None) -> str:
        """The project `doctor`'s probe request names."""
        return tracked_project or ""

    # --- webhooks (only when sends_webhooks; the secrets are settings'
    # `<vendor>_webhook_secret`) ---

    def verify_delivery(
        self,
        headers: Mapping[str, str],
        body: bytes,
        secrets: list[str],
        *,
        now: float,
        tolerance: float,
    ) -> Verified:
        """Check a delivery's signature and freshness, or raise SignatureError."""
        raise SignatureError(404, f"{self.title} sends no webhooks")

    def parse_delivery(self, body: bytes, headers: Mapping[str, str]) -> Envelope | None:
        """A verified delivery's envelope; None for an event that carries no
        answer; BadDelivery when it cannot be read."""
        return None


def archive(status: int | None, answer: Normalized, state: TrackedState, **extra: Any) -> Outcome:
    return Outcome(Action.ARCHIVE, status, answer=answer, final_state=state, **extra)


def path_segment(external_id: str) -> str:
    """Percent-encode an id as exactly one path segment.

    Registration already refuses '/', '?', '#', '..' and friends; this is the
    second fence, so no id can ever change which URL is requested.
    """
    if external_id in ("", ".", ".."):
        raise ValueError(f"refusing to use {external_id!r} as a path segment")
    return quote(external_id, safe="")


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
