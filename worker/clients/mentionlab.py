"""MentionLab: `GET /api/v1/job-executions/{id}` with x-api-key and x-project-id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from models import TrackedState, Vendor
from worker.clients.base import RawResponse, Target, VendorClient, envelope_message, path_segment
from worker.normalize.mentionlab import (
    PENDING_STATUSES,
    created_at,
    execution_status,
    normalize_execution,
)
from worker.policy import Action, Outcome


class MentionLabClient(VendorClient):
    vendor = Vendor.MENTIONLAB

    def url(self, target: Target) -> str:
        base = self.settings.mentionlab_base_url.rstrip("/")
        return f"{base}/api/v1/job-executions/{path_segment(target.external_id)}"

    def headers(self, target: Target) -> dict[str, str]:
        key = self.settings.mentionlab_api_key
        return {
            "x-api-key": key.get_secret_value() if key else "",
            "x-project-id": target.project_id,
        }

    def interpret_body(
        self, target: Target, status: int, payload: dict[str, Any], fetched_at: datetime
    ) -> Outcome:
        # MentionLab answers 200 at every stage; the body's status tells.
        lifecycle = execution_status(payload)
        if lifecycle in PENDING_STATUSES:
            return Outcome(Action.POLL_LATER, status, remote_created_at=created_at(payload))
        answer = normalize_execution(
            payload,
            job_execution_id=target.external_id,
            project_id=target.project_id,
            fetched_at=fetched_at,
        )
        state = TrackedState.FAILED if answer.row["status"] == "failed" else TrackedState.ARCHIVED
        return self.archive(
            status,
            answer,
            state,
            remote_created_at=answer.row["created_at"],
            reason="vendor run failed" if state is TrackedState.FAILED else None,
        )

    def error_outcome(self, target: Target, action: Action, raw: RawResponse) -> Outcome:
        outcome = super().error_outcome(target, action, raw)
        if raw.status == 403:
            outcome.reason = f"{outcome.reason} (project {target.project_id!r} refused)"
        return outcome

    def error_reason(self, raw: RawResponse) -> str:
        # Envelope: {"statusCode", "message", "error"}.
        message = envelope_message(raw.body, ("message",), ("error",))
        return f"HTTP {raw.status}" + (f": {message}" if message else "")
