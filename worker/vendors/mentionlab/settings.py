"""MentionLab's settings, mixed into worker.config.Settings (no other imports:
the settings object is built before anything else)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class MentionLabSettings(BaseModel):
    mentionlab_base_url: str = "https://api.mentionlab.io"
    mentionlab_api_key: SecretStr | None = None
    # Request budget of the key (requests/s and burst). Unset: the burst is
    # learned from X-RateLimit-Limit, the rate stays safe.
    mentionlab_rate_limit: float | None = Field(None, gt=0)
    mentionlab_rate_burst: float | None = Field(None, ge=1)
