"""Logging: text or JSON lines, with secrets scrubbed from every record."""

from __future__ import annotations

import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson

from models import Vendor
from worker.config import Settings

# Header values that must never reach a log line, whatever logged them.
# The separator covers "name: value", "name=value", {'name': 'value'} and the
# (b'name', b'value') pairs httpcore logs; any auth scheme word is dropped too.
_SEPARATOR = r"['\"]?\s*[:=,]\s*(?:(?-i:b)?['\"])?"
_VALUE = r"[^\s'\",})\]]+"
_HEADER_PATTERNS = [
    re.compile(rf"(?i)(authorization{_SEPARATOR})(?:[A-Za-z][\w-]*\s+)?{_VALUE}"),
    re.compile(rf"(?i)(x-api-key{_SEPARATOR}){_VALUE}"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9_\-\.]{6,}"),
]
_SECRET_FIELDS = frozenset({"authorization", "x-api-key"})
# Attributes every record has, plus what formatters add and Celery's own `data`
# (the arguments its message was formatted from): not worth repeating as extras.
_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "data",
    "color_message",
    "taskName",
}


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "[REDACTED]")
    for pattern in _HEADER_PATTERNS:
        text = pattern.sub(lambda m: m.group(1) + "[REDACTED]", text)
    return text


def redact_value(value: Any, secrets: list[str]) -> Any:
    """`redact` through dicts, lists and tuples, keeping their shape."""
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, bytes):
        return redact(value.decode("utf-8", "replace"), secrets)
    if isinstance(value, dict):
        return {
            k: "[REDACTED]" if str(k).lower() in _SECRET_FIELDS else redact_value(v, secrets)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact_value(v, secrets) for v in value)
    return value


class RedactingFilter(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = redact(message, self.secrets)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            # Render the traceback now, scrubbed, instead of letting the
            # formatter print the raw one.
            record.exc_text = redact(
                logging.Formatter().formatException(record.exc_info), self.secrets
            )
            record.exc_info = None
        for key, value in list(record.__dict__.items()):
            if key not in _STANDARD_ATTRS:
                setattr(record, key, redact_value(value, self.secrets))
        return True


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                doc[key] = value
        if record.exc_text:
            doc["exception"] = record.exc_text
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = [
            f"{k}={v}"
            for k, v in record.__dict__.items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")
        ]
        return f"{line} [{' '.join(extras)}]" if extras else line


def secrets_of(settings: Settings) -> list[str]:
    """Every secret value the settings hold: API keys, the intake token, webhook
    secrets, the alert URL (a chat webhook's URL is its credential) and the
    passwords inside connection URLs."""
    found = [
        s.get_secret_value()
        for s in (
            *(settings.api_key(vendor) for vendor in Vendor),
            settings.intake_token,
            settings.alert_webhook_url,
        )
        if s is not None
    ]
    for vendor in Vendor:
        found.extend(settings.webhook_secrets(vendor))
    for url in (settings.database_url, settings.celery_broker_url, settings.redis_url):
        password = urlsplit(url).password if url else None
        if password:
            found.append(password)
    # A one-letter password would redact every occurrence of that letter.
    return [s for s in found if len(s) >= 4]


def install_filter(handler: logging.Handler, settings: Settings) -> None:
    if not any(isinstance(f, RedactingFilter) for f in handler.filters):
        handler.addFilter(RedactingFilter(secrets_of(settings)))


def setup_logging(settings: Settings, *, level: str | None = None, fmt: str | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JSONFormatter() if (fmt or settings.log_format) == "json" else TextFormatter()
    )
    install_filter(handler, settings)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel((level or settings.log_level).upper())
    # httpx logs one INFO line per request; a batch line is enough.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    # Celery's own INFO lines come one per task and per beat tick, without vendor,
    # count or duration; the batch and dispatch lines say all that. DEBUG keeps them.
    quiet = logging.WARNING if root.level >= logging.INFO else logging.NOTSET
    for name in ("celery.app.trace", "celery.worker.strategy", "celery.beat"):
        logging.getLogger(name).setLevel(quiet)
