"""MentionsAPI: `GET /v1/ask/{id}` with a Bearer key."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models import TrackedState, Vendor
from worker.clients.base import RawResponse, Target, VendorClient, envelope_message, path_segment
from worker.normalize import PayloadError
from worker.normalize.mentionsapi import PENDING_STATUSES, answer_status, normalize_ask
from worker.policy import Action, Outcome


class MentionsAPIClient(VendorClient):
    vendor = Vendor.MENTIONSAPI

    def url(self, target: Target) -> str:
        base = self.settings.mentionsapi_base_url.rstrip("/")
        return f"{base}/v1/ask/{path_segment(target.external_id)}"

    def headers(self, target: Target) -> dict[str, str]:
        key = self.settings.mentionsapi_api_key
        return {"Authorization": f"Bearer {key.get_secret_value() if key else ''}"}

    def interpret_body(
        self, target: Target, status: int, payload: dict[str, Any], fetched_at: datetime
    ) -> Outcome:
        lifecycle = answer_status(payload, status)
        if lifecycle in PENDING_STATUSES:
            return Outcome(Action.POLL_LATER, status)
        if status == 202:
            raise PayloadError(f"HTTP 202 with status {lifecycle!r}")
        answer = normalize_ask(payload, ask_id=target.external_id, fetched_at=fetched_at)
        state = TrackedState.FAILED if answer.row["status"] == "failed" else TrackedState.ARCHIVED
        reason = None
        if state is TrackedState.FAILED:
            reason = f"vendor job failed: {answer.row['error_code']}: {answer.row['error_message']}"
        return self.archive(status, answer, state, reason=reason)

    def error_reason(self, raw: RawResponse) -> str:
        # Envelope: {"error": {"code", "message"}, "request_id"}; match on code.
        code = envelope_message(raw.body, ("error", "code"))
        message = envelope_message(raw.body, ("error", "message"))
        detail = ": ".join(p for p in (code, message) if p)
        return f"HTTP {raw.status}" + (f" {detail}" if detail else "")
