"""What mentionsync writes out stays safe whatever the vendors (or users) put in:

- `export` handles any JSON Postgres stores: integers wider than 64 bits, a few
  hundred levels of nesting, any unicode, in every format;
- CSV cells a spreadsheet would run as a formula are neutralized (OWASP's leading
  quote), in `export` and `report --format csv`, unless `--no-formula-guard`;
- vendor and user text is never read as rich console markup: report tables,
  track, status, reprocess and export messages print it as it is.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from sqlalchemy import text, update

from models import TrackedId, TrackedState, Vendor
from tests.helpers import MENTIONSYNC, cli
from tests.resources import session_scope
from worker.config import load_settings
from worker.migrate import upgrade
from worker.registry import label_arguments, register
from worker.store import upsert_answers
from worker.vendors.mentionsapi.normalize import normalize_ask

FETCHED = datetime(2026, 11, 20, 6, 0, tzinfo=UTC)
WIDE = 123456789012345678901234567890
DEPTH = 400

# Cells OWASP lists as formula triggers, and what a guarded CSV must hold instead.
TRIGGERS = [
    '=HYPERLINK("https://evil.example","click")',
    "+1+cmd|' /C calc'!A0",
    "-2+3",
    "@SUM(A1:A2)",
    "\tTabbed",
    "\rReturned",
]


def _deep(depth: int) -> str:
    return '{"d":' * depth + '"bottom"' + "}" * depth


# One stored document with everything a JSON encoder may choke on. Postgres
# keeps numbers exactly (jsonb numeric), so the export must too.
HOSTILE_JSON = (
    "{"
    f'"wide": {WIDE}, "negative_wide": -{WIDE}, "list": [{WIDE}, 1, -1],'
    ' "exact": 0.1000000000000000000000001,'
    ' "unicode": "Ünïcødé 日本語 עברית 👩\u200d👩\u200d👧 e\u0301 \u2028 \\" , \\n",'
    ' "formula": "=cmd|\' /C calc\'!A0",'
    f' "deep": {_deep(DEPTH)}'
    "}"
)


def _insert_ask(ask_id: str, raw_json: str, *, latency_ms: int | None = None) -> None:
    # Raw SQL: the stored document is exactly this text, whatever our own
    # encoders would make of it.
    with session_scope() as session:
        session.execute(
            text(
                "INSERT INTO asks (ask_id, status, raw_payload, cost_breakdown, latency_ms,"
                " fetched_at) VALUES (:id, 'succeeded', CAST(:raw AS jsonb),"
                " CAST(:cost AS jsonb), :latency, :at)"
            ),
            {
                "id": ask_id,
                "raw": raw_json,
                "cost": f'{{"openai": {WIDE}}}',
                "latency": latency_ms,
                "at": FETCHED,
            },
        )


def _exact(document: str) -> Any:
    # The standard library keeps wide integers and long decimals exact.
    return json.loads(document, parse_float=Decimal)


def _read_rows(path: Path, fmt: str) -> list[dict[str, Any]]:
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            return list(csv.DictReader(f))
    if fmt == "jsonl":
        # Split on LF only: str.splitlines would also split at the U+2028 inside a value.
        return [_exact(line) for line in path.read_bytes().split(b"\n") if line]
    return pq.read_table(path).to_pylist()


# --- export: any stored JSON ------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet"])
def test_export_keeps_wide_integers_deep_nesting_and_unicode(fmt: str, tmp_path: Path) -> None:
    _insert_ask("ask_hostile", HOSTILE_JSON, latency_ms=-5)
    _insert_ask("ask_plain", '{"id": "ask_plain", "status": "succeeded"}')
    path = tmp_path / f"asks.{fmt}"

    result = cli("export", "asks", "--format", fmt, "--out", str(path))

    assert result.returncode == 0, result.stderr
    assert "exported 2 rows of asks" in result.stderr
    rows = {row["ask_id"]: row for row in _read_rows(path, fmt)}
    hostile = rows["ask_hostile"]
    payload, cost = hostile["raw_payload"], hostile["cost_breakdown"]
    if fmt != "jsonl":  # CSV and Parquet hold JSON documents as JSON text
        payload, cost = _exact(payload), _exact(cost)
    assert payload == _exact(HOSTILE_JSON)
    assert payload["wide"] == WIDE and isinstance(payload["wide"], int)
    assert payload["exact"] == Decimal("0.1000000000000000000000001")
    assert cost == {"openai": WIDE}
    node = payload["deep"]
    for _ in range(DEPTH):
        node = node["d"]
    assert node == "bottom"
    # A JSON column is a document, not a spreadsheet cell: never prefixed.
    assert payload["formula"].startswith("=")
    assert str(hostile["latency_ms"]) == "-5"


def test_export_to_standard_output_keeps_wide_integers() -> None:
    _insert_ask("ask_hostile", HOSTILE_JSON)
    result = cli("export", "asks", "--format", "jsonl")
    assert result.returncode == 0, result.stderr
    assert _exact(result.stdout)["raw_payload"]["negative_wide"] == -WIDE


def test_export_on_sqlite_keeps_stored_text_and_one_line_per_row(
    tmp_path: Path, configure: Callable[..., None]
) -> None:
    # SQLite keeps a document's text as written: a body archived as the vendor
    # pretty-printed it has newlines between tokens, which must not split a line.
    url = f"sqlite:///{tmp_path / 'archive.db'}"
    upgrade("head", database_url=url)
    configure(DATABASE_URL=url)
    pretty = f'{{\n  "wide": {WIDE},\r\n  "text": "a\\nb é",\n  "deep": {_deep(DEPTH)}\n}}'
    with session_scope() as session:
        session.execute(
            text(
                "INSERT INTO asks (ask_id, status, raw_payload, fetched_at)"
                " VALUES ('ask_s', 'succeeded', :raw, :at)"
            ),
            {"raw": pretty, "at": FETCHED},
        )
    for fmt in ("jsonl", "csv", "parquet"):
        path = tmp_path / f"asks.{fmt}"
        result = cli("export", "asks", "--format", fmt, "--out", str(path))
        assert result.returncode == 0, result.stderr
        (row,) = _read_rows(path, fmt)
        payload = row["raw_payload"] if fmt == "jsonl" else _exact(row["raw_payload"])
        assert payload == _exact(pretty), fmt
        assert payload["wide"] == WIDE and payload["text"] == "a\nb é"
    assert path.with_suffix(".jsonl").read_bytes().count(b"\n") == 1


# --- CSV formula injection ----------------------------------------------------------------


def _archive(ask_id: str, mentions: list[tuple[str, int]], *, domain: str = "ok.example") -> None:
    """One answer through the worker's own path: registered, normalized, upserted."""
    payload = {
        "id": ask_id,
        "status": "succeeded",
        "providers": [
            {
                "provider": "openai",
                "model": "gpt-4o",
                "content": "...",
                "citations": [{"url": f"https://{domain}/x", "domain": domain, "title": "t"}],
            }
        ],
        "brand_mentions": [
            {"brand": brand, "provider": "openai", "rank": rank, "context": brand}
            for brand, rank in mentions
        ],
    }
    with session_scope() as session:
        register(
            session,
            Vendor.MENTIONSAPI,
            label_arguments([ask_id]),
            settings=load_settings(),
            created_at=datetime(2026, 11, 2, 10, tzinfo=UTC),
            now=FETCHED,
        )
    with session_scope() as session:
        upsert_answers(session, [normalize_ask(payload, ask_id=ask_id, fetched_at=FETCHED)])


def _run(*args: str) -> tuple[int, str, str]:
    """`mentionsync ARGS`, its standard output decoded without newline translation
    (a cell's own carriage return must reach the CSV reader)."""
    result = subprocess.run(
        [MENTIONSYNC, *args], capture_output=True, env=dict(os.environ), timeout=300, check=False
    )
    return result.returncode, result.stdout.decode(), result.stderr.decode()


def _csv(output: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(output, newline="")))


def test_export_csv_neutralizes_formulas_but_not_numbers() -> None:
    _archive("ask_f", [(brand, -3) for brand in TRIGGERS] + [("Acme", 2)])

    code, guarded, errors = _run("export", "ask_brand_mentions")

    assert code == 0, errors
    rows = _csv(guarded)
    assert sorted(r["brand"] for r in rows) == sorted(["Acme", *("'" + b for b in TRIGGERS)])
    assert sorted(r["context"] for r in rows) == sorted(["Acme", *("'" + b for b in TRIGGERS)])
    # A negative number in a numeric column is a number, not a formula.
    assert {r["rank"] for r in rows} == {"-3", "2"}
    # The opt-out writes cells as stored; a CR inside a cell stays inside it.
    code, raw, errors = _run("export", "ask_brand_mentions", "--no-formula-guard")
    assert code == 0, errors
    assert sorted(r["brand"] for r in _csv(raw)) == sorted(["Acme", *TRIGGERS])


def test_export_csv_guard_covers_views_and_files(tmp_path: Path) -> None:
    _archive("ask_v", [("@Acme", 1)], domain="-evil.example")
    path = tmp_path / "m.csv"
    assert cli("export", "mention_facts", "--out", str(path)).returncode == 0
    with path.open(newline="", encoding="utf-8") as f:
        assert [r["brand"] for r in csv.DictReader(f)] == ["'@Acme"]
    result = cli("export", "citation_facts")
    assert result.returncode == 0, result.stderr
    assert {r["domain"] for r in _csv(result.stdout)} == {"'-evil.example"}


def test_report_csv_neutralizes_formulas_but_not_numbers() -> None:
    # Positions count from 1 (rank + 1): rank -3 is position -2, a negative number.
    _archive("ask_r", [(brand, -3) for brand in TRIGGERS])

    code, guarded, errors = _run("report", "position", "--format", "csv")

    assert code == 0, errors
    rows = _csv(guarded)
    assert sorted(r["brand"] for r in rows) == sorted("'" + b for b in TRIGGERS)
    assert {r["avg_position"] for r in rows} == {"-2.0"}
    assert {r["best_position"] for r in rows} == {"-2"}
    code, raw, errors = _run("report", "position", "--format", "csv", "--no-formula-guard")
    assert code == 0, errors
    assert sorted(r["brand"] for r in _csv(raw)) == sorted(TRIGGERS)


def test_csv_to_standard_output_is_utf8_whatever_the_locale() -> None:
    _archive("ask_u", [("日本語 Ünï", 1)])
    env = {**os.environ, "PYTHONIOENCODING": "ascii"}
    for args in (["export", "mention_facts"], ["report", "share-of-voice", "--format", "csv"]):
        result = subprocess.run(
            [MENTIONSYNC, *args], capture_output=True, env=env, timeout=300, check=False
        )
        assert result.returncode == 0, result.stderr.decode()
        assert [r["brand"] for r in _csv(result.stdout.decode("utf-8"))] == ["日本語 Ünï"]


def test_report_csv_guards_top_urls_and_groups() -> None:
    _archive("ask_c", [("Acme", 1)], domain="=evil.example")
    result = cli("report", "citations", "--by", "model", "--format", "csv")
    assert result.returncode == 0, result.stderr
    (row,) = _csv(result.stdout)
    assert row["domain"] == "'=evil.example"
    assert row["model"] == "gpt-4o"
    assert row["top_urls"].startswith("https://=evil.example/x")


# --- rich markup --------------------------------------------------------------------------

MARKUP = ["[/bold] Acme", "[red]Globex[/red]", "[link=https://evil.example]Initech"]


def test_report_table_prints_brands_as_they_are() -> None:
    _archive("ask_m", [(brand, 1) for brand in MARKUP])
    result = cli("report", "share-of-voice")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for brand in MARKUP:
        assert brand in result.stdout


def test_track_prints_rejected_ids_as_they_are() -> None:
    result = cli("track", "mentionsapi", "[/bold]x", "[red]ok", "--file", "-", input="[/]\n")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "argument 1: '[/bold]x': contains '/'" in result.stderr
    assert "line 1: '[/]': contains '/'" in result.stderr
    assert "1 registered, 0 already tracked, 2 rejected" in result.stderr


def test_status_prints_ids_and_errors_as_they_are() -> None:
    with session_scope() as session:
        register(
            session, Vendor.MENTIONSAPI, label_arguments(["[bold]ask"]), settings=load_settings()
        )
        session.execute(
            update(TrackedId).values(
                state=TrackedState.ERROR, last_error="HTTP 500: [/bold] vendor said [red]no"
            )
        )
    result = cli("status")
    assert result.returncode == 0, result.stderr
    assert "[bold]ask: HTTP 500: [/bold] vendor said [red]no" in result.stdout


def test_reprocess_prints_failures_as_they_are() -> None:
    # A stored body for another id: today's normalizer refuses it, quoting the id.
    _insert_ask("ask_x", '{"id": "[/bold]", "status": "succeeded"}')
    result = cli("reprocess")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "body is for id '[/bold]'" in result.stderr


def test_export_and_chart_paths_print_as_they_are(tmp_path: Path) -> None:
    _archive("ask_p", [("Acme", 1)])
    (tmp_path / "[").mkdir()
    out = f"{tmp_path}/[/b].csv"
    result = cli("export", "asks", "--out", out)
    assert result.returncode == 0, result.stderr
    assert f"to {out}" in result.stderr.replace("\n", "")
    chart = f"{tmp_path}/[/c].png"
    result = cli("report", "visibility", "--chart", chart)
    assert result.returncode == 0, result.stderr
    assert f"chart written to {chart}" in result.stderr.replace("\n", "")
