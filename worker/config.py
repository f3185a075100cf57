"""The one settings object, read from the environment (and an optional .env)."""

from __future__ import annotations

import hashlib
from datetime import timedelta
from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.common import is_redis_url
from worker.vendors.mentionlab.settings import MentionLabSettings
from worker.vendors.mentionsapi.settings import MentionsAPISettings


def fingerprint(secret: SecretStr | str | None) -> str:
    """A short, stable, non-reversible tag for a secret, safe to log and store."""
    if secret is None:
        return "none"
    value = secret.get_secret_value() if isinstance(secret, SecretStr) else secret
    if not value:
        return "none"
    return hashlib.sha256(value.encode()).hexdigest()[:12]


class Settings(MentionsAPISettings, MentionLabSettings, BaseSettings):
    """Every setting. Each vendor's own (`{vendor}_base_url`, `_api_key`,
    `_rate_limit`, `_rate_burst`, ...) come from its package's mixin."""

    # An empty variable counts as unset: `.env` files (and compose's env_file)
    # often hold `KEY=`, and an empty key must not look like a configured one.
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    # Storage and broker. The defaults need no server: SQLite files in the
    # working directory, with kombu's SQLAlchemy transport as the broker.
    database_url: str = "sqlite:///mentionsync.db"
    celery_broker_url: str = "sqla+sqlite:///mentionsync-broker.db"
    # Where the shared rate-limit budget lives. Defaults to the broker when that is
    # Redis; without Redis, budgets are kept per process.
    redis_url: str | None = None

    rate_limit_local_share: float = Field(
        0.25, gt=0, le=1, description="Share of a key's budget one process uses without Redis."
    )

    # Scheduling.
    # A tick claims at most MAX_IN_FLIGHT ids per vendor: one tick a second must
    # claim faster than the largest documented plan fetches.
    poll_tick_seconds: float = Field(1.0, gt=0, description="How often beat claims due ids.")
    poll_interval_seconds: float = Field(
        20.0, gt=0, description="First wait before re-polling an unfinished answer."
    )
    poll_max_interval_seconds: float = Field(
        300.0, gt=0, description="Cap of the backoff between polls of an unfinished answer."
    )
    # A task and its two transactions cost about ten statements whatever the
    # batch size, so larger batches spread them over more answers (measured in
    # docs/benchmarks.md); a killed process re-fetches one batch.
    batch_size: int = Field(100, ge=1, le=1000, description="Ids per worker task.")
    max_in_flight: int = Field(2000, ge=1, description="Claimed, unfinished ids at most.")
    lease_seconds: float = Field(
        300.0, gt=0, description="A claimed id is due again after this, if its batch died."
    )
    fetch_concurrency: int = Field(
        256,
        ge=1,
        le=4096,
        description=(
            "Requests of one key in flight per process, at most. Below it, each process"
            " keeps as many in flight as the key's rate times the vendor's latency call for."
        ),
    )

    # Errors.
    max_attempts: int = Field(8, ge=1, description="Consecutive retryable errors before `error`.")
    retry_base_seconds: float = Field(2.0, gt=0)
    retry_max_seconds: float = Field(600.0, gt=0)
    not_found_confirmations: int = Field(
        3, ge=1, description="404s in a row before an id is recorded not_found."
    )
    invalid_payload_attempts: int = Field(
        3, ge=1, description="Unarchivable bodies in a row before `invalid_payload`."
    )
    not_found_recheck_seconds: float = Field(60.0, gt=0)
    db_outage_seconds: float = Field(
        60.0, ge=0, description="How long a fetched batch waits for the database to return."
    )
    auth_recheck_seconds: float = Field(
        900.0, gt=0, description="How often a rejected key is tried again."
    )

    # HTTP.
    http_connect_timeout: float = Field(5.0, gt=0)
    http_read_timeout: float = Field(30.0, gt=0)
    http_pool_timeout: float = Field(10.0, gt=0)
    max_response_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, description="Bodies larger than this are quarantined."
    )
    # Timeouts are per read: a vendor dripping a byte at a time would hold a
    # request for ever without an overall deadline.
    http_request_deadline: float = Field(
        60.0, gt=0, description="Longest one request may take, headers and body included."
    )
    max_retry_after_seconds: float = Field(
        300.0,
        gt=0,
        description="Retry-After and rate-limit reset headers are clamped to this many seconds.",
    )

    retention_days: int = Field(30, ge=1)
    loss_grace_seconds: float = Field(
        3600.0,
        ge=0,
        description="An id still being polled this long after its deadline is recorded lost.",
    )
    at_risk_hours: float = Field(48.0, gt=0)

    log_level: str = "INFO"
    log_format: str = Field("text", pattern="^(text|json)$")

    # Intake service (`mentionsync serve`).
    intake_token: SecretStr | None = Field(
        None, description="Bearer token for POST /v1/track; unset: the endpoint refuses all."
    )
    intake_max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Larger request bodies are refused (413)."
    )
    webhook_tolerance_seconds: float = Field(
        300.0, gt=0, description="A signed timestamp further than this from now is stale."
    )
    webhook_grace_seconds: float = Field(
        900.0, ge=0, description="How long an id registered with expect_webhook waits unpolled."
    )
    # The read-only web dashboard of `mentionsync serve` (worker/dashboard).
    dashboard_token: SecretStr | None = Field(
        None, description="Password of the dashboard's login form; unset: the dashboard is off."
    )

    # Metrics and alerts.
    worker_metrics_port: int | None = Field(
        None, ge=1, le=65535, description="Celery workers serve /metrics on this port."
    )
    # A chat webhook URL usually carries its own token, so it is kept secret too.
    alert_webhook_url: SecretStr | None = None
    alert_interval_seconds: float = Field(
        3600.0, gt=0, description="At most one alert of each kind this often."
    )
    alert_check_seconds: float = Field(60.0, gt=0, description="How often beat checks for alerts.")

    # The scheduler's own health (worker/heartbeat.py): a beat that died or hung
    # must be noticed by something other than itself.
    scheduler_heartbeat_seconds: float = Field(
        5.0, gt=0, description="How often beat records in the database that it is ticking."
    )
    scheduler_stall_seconds: float = Field(
        45.0,
        gt=0,
        description="No dispatch sweep (or, for one beat, no tick) for this long is a stall.",
    )

    @property
    def retention(self) -> timedelta:
        return timedelta(days=self.retention_days)

    @property
    def shared_redis_url(self) -> str | None:
        if self.redis_url:
            return self.redis_url
        if is_redis_url(self.celery_broker_url):
            return self.celery_broker_url
        return None

    # Every vendor's mixin names its fields `{vendor}_...` (worker/vendors/*/settings.py).
    def base_url(self, vendor: str) -> str:
        return str(getattr(self, f"{vendor}_base_url"))

    def api_key(self, vendor: str) -> SecretStr | None:
        key: SecretStr | None = getattr(self, f"{vendor}_api_key")
        return key

    def rate_limit(self, vendor: str) -> float | None:
        rate: float | None = getattr(self, f"{vendor}_rate_limit")
        return rate

    def rate_burst(self, vendor: str) -> float | None:
        burst: float | None = getattr(self, f"{vendor}_rate_burst")
        return burst

    def webhook_secrets(self, vendor: str) -> list[str]:
        """Every secret a vendor's delivery may be signed with (comma-separated,
        so a secret can be rotated); none for a vendor that sends no webhooks."""
        raw: SecretStr | None = getattr(self, f"{vendor}_webhook_secret", None)
        if raw is None:
            return []
        return [s.strip() for s in raw.get_secret_value().split(",") if s.strip()]

    def key_fingerprint(self, vendor: str) -> str:
        return fingerprint(self.api_key(vendor))


class ConfigError(ValueError):
    """The environment does not make valid settings; the message names each
    variable and what is wrong with it (never its value: it may be a secret)."""


def load_settings(**overrides: Any) -> Settings:
    """The settings from the environment, `overrides` (field names) taking
    precedence: read anew on every call, where work starts (a CLI command, a
    Celery process), and passed on from there."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = [
            f"{'_'.join(str(part) for part in error['loc']).upper()}: {error['msg']}"
            for error in exc.errors()
        ]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(problems)) from None
