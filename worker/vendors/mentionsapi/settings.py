"""MentionsAPI's settings, mixed into worker.config.Settings (no other imports:
the settings object is built before anything else)."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class MentionsAPISettings(BaseModel):
    mentionsapi_base_url: str = "https://api.mentionsapi.com"
    mentionsapi_api_key: SecretStr | None = None
    # Request budget of the key (requests/s and burst). Unset: learned from the
    # X-RateLimit-Limit header through the documented plans, safe until then.
    mentionsapi_rate_limit: float | None = Field(None, gt=0)
    mentionsapi_rate_burst: float | None = Field(None, ge=1)
    mentionsapi_webhook_secret: SecretStr | None = Field(
        None,
        description="Signing secret of MentionsAPI webhooks (several: comma-separated, while"
        " rotating); unset: deliveries are refused.",
    )
