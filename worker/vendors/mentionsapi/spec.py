"""MentionsAPI: `GET /v1/ask/{id}` with a Bearer key (docs: ../shared/api-docs)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from models import Ask, LabelScope, TrackedState, Vendor
from worker.config import Settings
from worker.normalize import Normalized, PayloadError
from worker.outcome import Action, Outcome, Rule
from worker.ratelimit import Budget
from worker.vendors.base import (
    RawResponse,
    Target,
    VendorSpec,
    archive,
    envelope_message,
    path_segment,
)
from worker.vendors.mentionsapi import signatures, webhooks
from worker.vendors.mentionsapi.normalize import PENDING_STATUSES, answer_status, normalize_ask

# Plans (api-notes): X-RateLimit-Limit is the burst; the sustained rate by plan.
PLANS: dict[int, float] = {5: 1.0, 10: 5.0, 40: 20.0, 120: 60.0, 1000: 500.0}


class MentionsAPI(VendorSpec):
    vendor = Vendor.MENTIONSAPI
    title = "MentionsAPI"
    sends_webhooks = True
    webhook_ignored_detail = f"not an {webhooks.EVENT_TYPE} event"
    rule_overrides: ClassVar[Mapping[int | str, Rule]] = {
        202: Rule(Action.INSPECT, "queued or processing: poll again later"),
        410: Rule(Action.EXPIRE, "older than the 30-day retention: recorded as lost"),
    }
    # The Free plan: 1/s, burst 5.
    safe_budget = Budget(1.0, 5.0)
    archive_table = Ask
    archive_key_name = "ask_id"
    probe_id = "ask_mentionsync_doctor_probe"
    id_noun = "ask ids"
    label_scopes = (LabelScope.ASK,)
    key_prefix = "lvk_"
    # Enterprise, the largest plan.
    top_budget = Budget(PLANS[max(PLANS)], float(max(PLANS)))

    def url(self, settings: Settings, target: Target) -> str:
        base = settings.mentionsapi_base_url.rstrip("/")
        return f"{base}/v1/ask/{path_segment(target.external_id)}"

    def headers(self, settings: Settings, target: Target) -> dict[str, str]:
        key = settings.mentionsapi_api_key
        return {"Authorization": f"Bearer {key.get_secret_value() if key else ''}"}

    def interpret_body(
        self, target: Target, status: int | None, payload: dict[str, Any], fetched_at: datetime
    ) -> Outcome:
        # A webhook delivery carries the same body a 200 would.
        lifecycle = answer_status(payload, status or 200)
        if lifecycle in PENDING_STATUSES:
            return Outcome(Action.POLL_LATER, status)
        if status == 202:
            raise PayloadError(f"HTTP 202 with status {lifecycle!r}")
        answer = self.normalize(payload, target=target, fetched_at=fetched_at)
        state = TrackedState.FAILED if answer.row["status"] == "failed" else TrackedState.ARCHIVED
        reason = None
        if state is TrackedState.FAILED:
            reason = f"vendor job failed: {answer.row['error_code']}: {answer.row['error_message']}"
        return archive(status, answer, state, reason=reason)

    def normalize(
        self, payload: dict[str, Any], *, target: Target, fetched_at: datetime
    ) -> Normalized:
        return normalize_ask(payload, ask_id=target.external_id, fetched_at=fetched_at)

    def error_reason(self, raw: RawResponse) -> str:
        # Envelope: {"error": {"code", "message"}, "request_id"}; match on code.
        code = envelope_message(raw.body, ("error", "code"))
        message = envelope_message(raw.body, ("error", "message"))
        detail = ": ".join(p for p in (code, message) if p)
        return f"HTTP {raw.status}" + (f" {detail}" if detail else "")

    def budget_from_limit(self, limit: float, window: float | None = None) -> Budget:
        # Every paid plan's burst is twice its sustained rate; Free is the exception.
        return Budget(PLANS.get(int(limit), limit / 2), limit)

    # Signed under either documented scheme; `data` is the body a poll returns.
    verify_delivery = staticmethod(signatures.verify)
    parse_delivery = staticmethod(webhooks.parse_envelope)


MENTIONSAPI = MentionsAPI()
