"""A small archive holding vendor text that is HTML and script, stored through
the worker's own path (the normalizers, then `upsert_answers`)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from models import Vendor
from tests.resources import session_scope
from worker.config import load_settings
from worker.registry import label_arguments, register
from worker.store import upsert_answers
from worker.vendors.mentionsapi.normalize import normalize_ask

# Every string that a page could run if it were not escaped sets window.__pwned.
SCRIPT_BRAND = "<img src=x onerror=\"window.__pwned = 'brand'\">"
SCRIPT_TEXT = "<script>window.__pwned = 'text'</script>"
SCRIPT_URL = "javascript:window.__pwned='url'"
SCRIPT_DOMAIN = "<svg onload=\"window.__pwned = 'domain'\">"
HOSTILE_ID = "ask_hostile1"
PLAIN_ID = "ask_plain1"


def _ask(ask_id: str, brand: str, content: str, url: str, domain: str) -> dict[str, Any]:
    citation = {"url": url, "domain": domain, "title": SCRIPT_TEXT}
    return {
        "id": ask_id,
        "status": "succeeded",
        "providers": [
            {"provider": "openai", "model": "gpt-4o", "content": content, "citations": [citation]},
            {
                "provider": "anthropic",
                "model": "claude-sonnet-4",
                "content": "Acme leads.",
                "citations": [{"url": "https://acme.example/a", "domain": "acme.example"}],
            },
        ],
        "brand_mentions": [
            {"brand": brand, "provider": "openai", "rank": 0, "sentiment": "positive"},
            {"brand": "Acme", "provider": "openai", "rank": 1, "sentiment": "neutral"},
            {"brand": "Acme", "provider": "anthropic", "rank": 0, "sentiment": "positive"},
        ],
    }


def load_hostile_archive() -> None:
    """Two asks a day apart: one full of script, one plain."""
    settings = load_settings()
    now = datetime.now(UTC)
    bodies = {
        HOSTILE_ID: _ask(HOSTILE_ID, SCRIPT_BRAND, SCRIPT_TEXT, SCRIPT_URL, SCRIPT_DOMAIN),
        PLAIN_ID: _ask(PLAIN_ID, "Globex", "Globex and Acme.", "https://g.example/x", "g.example"),
    }
    for days_ago, ask_id in enumerate(bodies):
        with session_scope() as session:
            register(
                session,
                Vendor.MENTIONSAPI,
                label_arguments([ask_id]),
                settings=settings,
                created_at=now - timedelta(days=days_ago + 1),
            )
    with session_scope() as session:
        upsert_answers(
            session,
            [normalize_ask(body, ask_id=i, fetched_at=now) for i, body in bodies.items()],
        )
