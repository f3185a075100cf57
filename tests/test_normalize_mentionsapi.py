"""The MentionsAPI normalizer on its own: every documented field reaches a column."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from decimal import Decimal

import orjson
import pytest

from tests.fixtures.documented import ASK_DOC_EXAMPLE as DOC_EXAMPLE
from tests.fixtures.documented import ASK_ID
from worker.normalize import PayloadError, parse_json
from worker.normalize.common import parse_document
from worker.vendors.mentionsapi.normalize import normalize_ask

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_documented_example_maps_every_field() -> None:
    n = normalize_ask(DOC_EXAMPLE, ask_id=ASK_ID, fetched_at=NOW)
    assert n.table == "asks"
    assert n.row == {
        "ask_id": ASK_ID,
        "request_id": "req_01H8X2Y3Z4ABC",
        "status": "succeeded",  # no status on a 200 means succeeded
        "cached": False,
        "cache_tier": "miss",
        "billable_units": 1,
        "latency_ms": 1240,
        "cost_cents": Decimal("4"),
        "cost_breakdown": DOC_EXAMPLE["usage"]["cost_breakdown"],
        "error_code": None,
        "error_message": None,
        "raw_payload": DOC_EXAMPLE,
        "fetched_at": NOW,
    }
    assert n.children["ask_provider_responses"] == [
        {
            "ask_id": ASK_ID,
            "position": 0,
            "provider": "openai",
            "model": "gpt-4o-2024-11-20",
            "content": "Supabase has emerged as a developer favorite…",
            "latency_ms": 1240,
            "input_tokens": 64,
            "output_tokens": 312,
        }
    ]
    assert n.children["ask_citations"] == [
        {
            "ask_id": ASK_ID,
            "position": 0,
            "provider": None,  # top-level list
            "model": None,
            "url": "https://supabase.com/pricing",
            "domain": "supabase.com",
            "title": "Pricing | Supabase",
        },
        {
            "ask_id": ASK_ID,
            "position": 1,
            "provider": "openai",
            "model": "gpt-4o-2024-11-20",
            "url": "https://supabase.com/pricing",
            "domain": "supabase.com",
            "title": "Pricing | Supabase",
        },
    ]
    assert n.children["ask_brand_mentions"] == [
        {
            "ask_id": ASK_ID,
            "position": 0,
            "brand": "Supabase",
            "provider": "openai",
            "rank": 0,
            "sentiment": "positive",
            "context": "Supabase has emerged…",
        }
    ]


def test_failed_without_detail_gets_documented_default() -> None:
    n = normalize_ask({"id": "a1", "status": "failed"}, ask_id="a1", fetched_at=NOW)
    assert (n.row["status"], n.row["error_code"], n.row["error_message"]) == (
        "failed",
        "provider_error",
        "Request failed.",
    )
    assert all(rows == [] for rows in n.children.values())


def test_failed_with_detail_keeps_it() -> None:
    body = {"status": "failed", "error": {"code": "upstream_timeout", "message": "slow"}}
    n = normalize_ask(body, ask_id="a1", fetched_at=NOW)
    assert (n.row["error_code"], n.row["error_message"]) == ("upstream_timeout", "slow")


def test_duplicates_within_a_list_do_not_repeat_rows() -> None:
    body = copy.deepcopy(DOC_EXAMPLE)
    body["citations"].append(dict(body["citations"][0], title="same url, other title"))
    body["brand_mentions"].append(dict(body["brand_mentions"][0]))  # exact repeat
    body["brand_mentions"].append(dict(body["brand_mentions"][0], rank=3))  # mentioned again
    n = normalize_ask(body, ask_id=ASK_ID, fetched_at=NOW)
    top = [c for c in n.children["ask_citations"] if c["provider"] is None]
    assert [c["title"] for c in top] == ["Pricing | Supabase"]
    assert [m["rank"] for m in n.children["ask_brand_mentions"]] == [0, 3]
    assert [m["position"] for m in n.children["ask_brand_mentions"]] == [0, 1]


def test_unicode_extra_fields_and_missing_optionals() -> None:
    body = {
        "id": "a1",
        "status": "succeeded",
        "x_trace": {"span": 1},
        "providers": [{"provider": "anthropic", "content": '🚀 "Café" O\'Reilly 数据库' * 1000}],
        "brand_mentions": [{"brand": "Ñandú Labs 🚀"}],
        "citations": None,
    }
    n = normalize_ask(body, ask_id="a1", fetched_at=NOW)
    assert n.row["raw_payload"]["x_trace"] == {"span": 1}
    p = n.children["ask_provider_responses"][0]
    assert p["content"].startswith('🚀 "Café" O\'Reilly 数据库')
    assert (p["model"], p["latency_ms"], p["input_tokens"]) == (None, None, None)
    assert n.children["ask_brand_mentions"][0]["brand"] == "Ñandú Labs 🚀"
    assert n.row["billable_units"] is None


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b["usage"].update(latency_ms="1240"), "usage.latency_ms"),
        (lambda b: b.update(cached="yes"), "cached"),
        (lambda b: b["brand_mentions"][0].update(rank=2**40), "brand_mentions.0.rank"),
        (lambda b: b.update(providers={"provider": "openai"}), "providers"),
        (lambda b: b.update(status="cancelled"), "status"),
        (lambda b: b.update(id="ask_other"), "not the requested"),
    ],
)
def test_wrong_types_raise_payload_error(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    body = copy.deepcopy(DOC_EXAMPLE)
    mutate(body)
    with pytest.raises(PayloadError, match=message):
        normalize_ask(body, ask_id=ASK_ID, fetched_at=NOW)


def test_pending_status_is_not_archivable() -> None:
    with pytest.raises(PayloadError, match="not final"):
        normalize_ask({"status": "queued"}, ask_id="a1", fetched_at=NOW)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b'{"id": "a1", "status": "succ', "malformed JSON"),
        (b"[1, 2]", "expected a JSON object"),
        (b'{"a": ' + b"[" * 2000 + b"]" * 2000 + b"}", "malformed JSON"),
        (b'{"a": ' + b"[" * 1000 + b"1" * 30 + b"]" * 1000 + b"}", "nested too deeply"),
    ],
)
def test_parse_json_rejects_bodies_that_cannot_be_read(body: bytes, message: str) -> None:
    with pytest.raises(PayloadError, match=message):
        parse_json(body)


@pytest.mark.parametrize(
    ("body", "text", "payload"),
    [
        # U+0000 escapes are removed, in values and keys alike.
        (b'{"id": "a\\u0000b"}', '{"id": "ab"}', {"id": "ab"}),
        (b'{"k\\u0000ey": "\\u0000"}', '{"key": ""}', {"key": ""}),
        # An escaped backslash before "u0000" is text, not a NUL; an odd run is both.
        (b'{"a": "\\\\u0000"}', None, {"a": "\\u0000"}),
        (b'{"a": "\\\\\\u0000x"}', '{"a": "\\\\x"}', {"a": "\\x"}),
    ],
)
def test_parse_document_removes_nul_and_keeps_the_rest(
    body: bytes, text: str | None, payload: dict[str, str]
) -> None:
    document = parse_document(body)
    assert document.payload == payload
    assert document.text == (text if text is not None else body.decode())
    assert document.altered is (text is not None)


def test_parse_json_accepts_escaped_backslash_u0000_text() -> None:
    assert parse_json(orjson.dumps({"a": "\\u0000"})) == {"a": "\\u0000"}
