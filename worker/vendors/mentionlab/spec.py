"""MentionLab: `GET /api/v1/job-executions/{id}` with x-api-key and x-project-id."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any, ClassVar

from models import JobExecution, LabelScope, TrackedState, Vendor
from worker.config import Settings
from worker.normalize import Normalized
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
from worker.vendors.mentionlab.normalize import (
    PENDING_STATUSES,
    created_at,
    execution_status,
    normalize_execution,
)

# An id nobody has, in the shape the vendor checks (a UUID).
NOBODYS_UUID = "00000000-0000-4000-8000-000000000000"


# Seconds to X-RateLimit-Reset up to which MentionLab's window is a second's
# (a little more than one, for the clocks' skew).
PER_SECOND_WINDOW = 2.0


class MentionLab(VendorSpec):
    vendor = Vendor.MENTIONLAB
    title = "MentionLab"
    needs_project = True
    rule_overrides: ClassVar[Mapping[int | str, Rule]] = {
        # MentionLab checks the project (x-project-id) per request: a 403 says this
        # project is refused (mistyped, revoked), not the key, so it stays with
        # that project's ids. A refused key answers 401.
        403: Rule(Action.RETRY, "project refused: its ids back off, then `error`; others go on"),
        # Not documented for MentionLab; if it comes, it means the same.
        410: Rule(Action.EXPIRE, "past retention: recorded as lost"),
    }
    # The stricter of its pages: 120/min, burst 20. Its pages disagree on what
    # X-RateLimit-Limit counts (per second or per minute): X-RateLimit-Reset says.
    safe_budget = Budget(2.0, 20.0)
    archive_table = JobExecution
    archive_key_name = "job_execution_id"
    probe_id = NOBODYS_UUID
    id_noun = "job execution ids (UUIDs)"
    project_help = "project id (x-project-id)."
    # A label names a run, or every run of a query or of a job.
    label_scopes = (LabelScope.EXECUTION, LabelScope.QUERY, LabelScope.JOB)
    key_prefix = "ml_"
    # Enterprise (the pages' version B): 100/s; the burst as one second of it.
    top_budget = Budget(100.0, 100.0)

    def url(self, settings: Settings, target: Target) -> str:
        base = settings.mentionlab_base_url.rstrip("/")
        return f"{base}/api/v1/job-executions/{path_segment(target.external_id)}"

    def headers(self, settings: Settings, target: Target) -> dict[str, str]:
        key = settings.mentionlab_api_key
        return {
            "x-api-key": key.get_secret_value() if key else "",
            "x-project-id": target.project_id,
        }

    def interpret_body(
        self, target: Target, status: int | None, payload: dict[str, Any], fetched_at: datetime
    ) -> Outcome:
        # MentionLab answers 200 at every stage; the body's status tells.
        lifecycle = execution_status(payload)
        if lifecycle in PENDING_STATUSES:
            return Outcome(Action.POLL_LATER, status, remote_created_at=created_at(payload))
        answer = self.normalize(payload, target=target, fetched_at=fetched_at)
        state = TrackedState.FAILED if answer.row["status"] == "failed" else TrackedState.ARCHIVED
        return archive(
            status,
            answer,
            state,
            remote_created_at=answer.row["created_at"],
            reason="vendor run failed" if state is TrackedState.FAILED else None,
        )

    def normalize(
        self, payload: dict[str, Any], *, target: Target, fetched_at: datetime
    ) -> Normalized:
        return normalize_execution(
            payload,
            job_execution_id=target.external_id,
            project_id=target.project_id,
            fetched_at=fetched_at,
        )

    def error_reason(self, raw: RawResponse) -> str:
        # Envelope: {"statusCode", "message", "error"}.
        message = envelope_message(raw.body, ("message",), ("error",))
        return f"HTTP {raw.status}" + (f": {message}" if message else "")

    def describe_error(self, target: Target, raw: RawResponse) -> str:
        reason = self.error_reason(raw)
        if raw.status == 403:
            reason = f"{reason} (project {target.project_id!r} refused)"
        return reason

    def canonical_id(self, value: str) -> str:
        try:
            # Canonical lowercase form, as the vendor returns it in bodies.
            return str(uuid.UUID(value))
        except ValueError:
            raise ValueError("not a UUID (MentionLab job execution ids are UUIDs)") from None

    def budget_from_limit(self, limit: float, window: float | None = None) -> Budget:
        # A window that resets within PER_SECOND_WINDOW counts per second (the
        # Enterprise "100/s"); a longer one per minute ("120 requests per minute").
        # Without X-RateLimit-Reset, only the burst is read.
        if window is None:
            return Budget(self.safe_budget.rate, limit)
        if window <= PER_SECOND_WINDOW:
            return Budget(limit, limit)
        return Budget(limit / 60, min(limit, self.safe_budget.burst))

    def project_for_probe(self, tracked_project: str | None) -> str:
        # The header is required; with no tracked project, a made-up one.
        return tracked_project or NOBODYS_UUID


MENTIONLAB = MentionLab()
