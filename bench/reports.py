"""Scenario "reports" (not in the default run): the figures of docs/analytics.md,
"Performance and maintenance", reproducible.

A synthetic archive of both vendors is bulk-loaded into a fresh bench database
with set-based SQL (INSERT ... SELECT over generate_series, then VACUUM ANALYZE):

- MentionsAPI: ASKS succeeded asks, each answered by 2 providers (a provider
  response each), 3-5 brand mentions per provider (4 on average; rank, and a
  sentiment of positive/neutral/negative/NULL) and 2-4 citations per provider
  (3 on average), plus the ask's top-level citations list (the union of the
  providers' lists, which the view leaves out, as it does for real archives);
  some citations have no domain, so the view parses the URL's host. Answered
  over 60 days through tracked_ids.remote_created_at (the view's answered_at).
- MentionLab: RUNS successful job executions initiated over the same 60 days,
  3-5 entities each (sentimentScore NULL for one in 7) and 2-4 sources.

Raw payloads are small placeholders: real ones are TOASTed, so the heap pages
the views scan hold little more than a pointer to them.

At FULL size that is 200,000 answers, 800,000 mention_facts rows and 600,000
citation_facts rows. Figures (no targets; the table marks them info):

- `SELECT count(*)` of each view: the cost of just computing it, the baseline;
- each report `--by week`, in process, through `run_report` as the CLI calls it;
- `mentionsync report visibility --by week` as a subprocess: wall time including
  Python start-up, and its peak RSS (its own ru_maxrss, see LAUNCHER); and
  `mentionsync report --help`, the start-up alone;
- `mentionsync export mention_facts` to JSON lines, Parquet and CSV as
  subprocesses, wall time and peak RSS; the exported row count must equal the
  view's.
"""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, text

from bench.harness import (
    PROJECTS,
    Result,
    autocommit,
    console,
    fresh_database,
    in_process_product,
    run_dir,
)
from simulator.dataset import BRANDS

T = TypeVar("T")

SCENARIO = "reports"
BY = "week"
VIEWS = ("mention_facts", "citation_facts", "answer_facts")
# Which view each report reads (visibility also counts answers), for its baseline.
REPORT_VIEWS: dict[str, tuple[str, ...]] = {
    "share-of-voice": ("mention_facts",),
    "visibility": ("mention_facts", "answer_facts"),
    "position": ("mention_facts",),
    "sentiment": ("mention_facts",),
    "citations": ("citation_facts",),
}
SUBPROCESS_REPORT = "visibility"
EXPORTS = ("jsonl", "parquet", "csv")
MB = 1024 * 1024

# Fixed, so every run loads identical rows.
END = datetime(2026, 11, 23, tzinfo=UTC)
SPAN_SECONDS = 60 * 86400
DOMAINS = (
    "reddit.com",
    "g2.com",
    "capterra.com",
    "news.ycombinator.com",
    "medium.com",
    "dev.to",
    "stackoverflow.com",
    "github.com",
    "en.wikipedia.org",
    "techcrunch.com",
    "forbes.com",
    "youtube.com",
    "producthunt.com",
    "trustradius.com",
    "gartner.com",
    "zapier.com",
    "hubspot.com",
    "supabase.com",
    "neon.tech",
    "vercel.com",
    "theverge.com",
    "wired.com",
    "nytimes.com",
    "bloomberg.com",
    "substack.com",
    "quora.com",
    "linkedin.com",
    "x.com",
    "docs.python.org",
    "postgresql.org",
)
# MentionsAPI: four providers with two models each, (provider i) -> MODELS[2i..2i+1].
PROVIDERS = ("openai", "anthropic", "google", "perplexity")
MODELS = (
    "gpt-4o-2024-11-20",
    "gpt-4.1-2025-04-14",
    "claude-sonnet-4-20250514",
    "claude-3-5-haiku-20241022",
    "gemini-2.5-pro",
    "gemini-2.0-flash-001",
    "sonar-pro",
    "sonar",
)
ML_MODELS = (
    "gpt-4o",
    "gpt-4o-mini",
    "claude-3-5-sonnet",
    "gemini-1.5-pro",
    "perplexity-sonar",
    "google-ai-overview",
    "copilot",
)
# Weighted as vendors report them: mostly positive, some unlabelled.
SENTIMENTS = ("positive",) * 5 + ("neutral",) * 3 + ("negative", None)


@dataclass(frozen=True)
class Plan:
    asks: int  # MentionsAPI asks, 2 answers each
    runs: int  # MentionLab job executions, 1 answer each
    repeats: int  # timings per in-process figure; the median is reported


FULL = Plan(asks=50_000, runs=100_000, repeats=3)
SMOKE = Plan(asks=200, runs=400, repeats=1)


# --- Data -------------------------------------------------------------------------

# Row g of generate_series is ask g / run g; the multipliers (primes, coprime to
# SPAN_SECONDS) scatter the answers over the 60 days.
ASK_ID = "'ask_' || lpad(g::text, 26, '0')"
ASK_AT = "CAST(:end AS timestamptz) - ((g * 7919) % :span) * interval '1 second'"
RUN_ID = "CAST(md5('run' || g::text) AS uuid)"
RUN_AT = "CAST(:end AS timestamptz) - ((g * 7877) % :span) * interval '1 second'"
ASKS = "generate_series(1, CAST(:asks AS bigint)) AS g"
RUNS = "generate_series(1, CAST(:runs AS bigint)) AS g"
# One MentionsAPI answer per (g, p): provider i (1-based) differs between p = 0 and 1.
MA_ANSWERS = f"""{ASKS}
CROSS JOIN generate_series(0, 1) AS p
CROSS JOIN LATERAL (
    SELECT 1 + CASE WHEN p = 0 THEN g % 4 ELSE (g + 1 + (g / 4) % 3) % 4 END AS i
) AS x"""
MA_MODEL = "(CAST(:models AS text[]))[2 * i - 1 + (g / 16) % 2]"
PROVIDER = "(CAST(:providers AS text[]))[i]"
BRAND = "(CAST(:brands AS text[]))[1 + ({expr}) % cardinality(CAST(:brands AS text[]))]"
DOMAIN = "(CAST(:domains AS text[]))[1 + ({expr}) % cardinality(CAST(:domains AS text[]))]"
# A third of the URLs carry 'www.', which the view strips from the host.
URL = "'https://' || CASE WHEN (g + k) % 3 = 0 THEN 'www.' ELSE '' END || d || {path}"

LOAD_SQL: tuple[tuple[str, str], ...] = (
    (
        "asks",
        f"""
INSERT INTO asks (ask_id, request_id, status, cached, cache_tier, billable_units,
                  latency_ms, cost_cents, raw_payload, fetched_at)
SELECT {ASK_ID}, 'req_' || md5(g::text), 'succeeded', g % 5 = 0,
       CASE WHEN g % 5 = 0 THEN 'exact' END, 2, 800 + (g * 31) % 8000, 2.5,
       jsonb_build_object('id', {ASK_ID}, 'status', 'succeeded', 'synthetic', true),
       at + interval '3 minutes'
FROM {ASKS}, LATERAL (SELECT {ASK_AT} AS at) AS t
""",  # noqa: S608 (this module's constants only)
    ),
    (
        "tracked_ids (asks)",
        f"""
INSERT INTO tracked_ids (vendor, project_id, external_id, state, registered_at,
                         remote_created_at, deadline_at, next_poll_at, attempts,
                         last_http_status, last_polled_at, final_at, archived_at)
SELECT 'mentionsapi', '', {ASK_ID}, 'archived', at + interval '20 seconds', at,
       at + interval '30 days', at + interval '3 minutes', 1, 200,
       at + interval '3 minutes', at + interval '3 minutes', at + interval '3 minutes'
FROM {ASKS}, LATERAL (SELECT {ASK_AT} AS at) AS t
""",  # noqa: S608 (this module's constants only)
    ),
    (
        "ask_provider_responses",
        f"""
INSERT INTO ask_provider_responses (ask_id, position, provider, model, content,
                                    latency_ms, input_tokens, output_tokens)
SELECT {ASK_ID}, p, {PROVIDER}, {MA_MODEL},
       repeat('A synthetic answer that ranks a few brands. ', 12) || g,
       400 + (g * 17 + p) % 8600, 20 + g % 200, 300 + (g * 7) % 900
FROM {MA_ANSWERS}
""",  # noqa: S608 (this module's constants only)
    ),
    (
        "ask_brand_mentions",
        f"""
INSERT INTO ask_brand_mentions (ask_id, position, brand, provider, rank, sentiment, context)
SELECT {ASK_ID}, p * 8 + k, {BRAND.format(expr="g * 7 + p * 11 + k * 3")}, {PROVIDER}, k,
       (CAST(:sentiments AS text[]))[1 + (g * 3 + k) % cardinality(CAST(:sentiments AS text[]))],
       'A solid pick for most teams.'
FROM {MA_ANSWERS}
CROSS JOIN LATERAL generate_series(0, 2 + (g + p) % 3) AS k
""",  # noqa: S608 (this module's constants only)
    ),
    (
        "ask_citations",
        # Each provider's list (positions 16+), and the top-level list repeating
        # them without a provider (positions 0-15), as the normalizer stores them.
        f"""
INSERT INTO ask_citations (ask_id, position, provider, model, url, domain, title)
SELECT {ASK_ID}, CASE WHEN top THEN 0 ELSE 16 END + p * 8 + k,
       CASE WHEN NOT top THEN {PROVIDER} END, CASE WHEN NOT top THEN {MA_MODEL} END,
       {URL.format(path="'/best-tools-' || g % 5000 || '-' || p || '-' || k")},
       CASE WHEN (g + k) % 5 <> 0 THEN d END,
       'Best tools in 2026 | ' || d
FROM {MA_ANSWERS}
CROSS JOIN LATERAL generate_series(0, 1 + (g + p) % 3) AS k
CROSS JOIN LATERAL (SELECT {DOMAIN.format(expr="g * 13 + p * 5 + k * 7")} AS d) AS dd
CROSS JOIN (VALUES (true), (false)) AS l (top)
""",  # noqa: S608 (this module's constants only)
    ),
    (
        "job_executions",
        f"""
INSERT INTO job_executions (job_execution_id, project_id, ai_response_id, job_id, query_id,
                            initiated_at, created_at, model, status, execution_number,
                            has_sources, has_shopping, country, language, raw_payload,
                            fetched_at)
SELECT {RUN_ID}, (CAST(:projects AS text[]))[1 + g % 3],
       CAST(md5('response' || g::text) AS uuid), CAST(md5('job' || (g % 36)::text) AS uuid),
       CAST(md5('query' || (g % 120)::text) AS uuid), at, at + interval '40 seconds',
       (CAST(:ml_models AS text[]))[1 + g % cardinality(CAST(:ml_models AS text[]))],
       'success', 1, true, g % 8 = 0, 'US', 'en',
       jsonb_build_object('jobExecutionId', {RUN_ID}, 'status', 'success', 'synthetic', true),
       at + interval '5 minutes'
FROM {RUNS}, LATERAL (SELECT {RUN_AT} AS at) AS t
""",  # noqa: S608 (this module's constants only)
    ),
    (
        "tracked_ids (runs)",
        f"""
INSERT INTO tracked_ids (vendor, project_id, external_id, state, registered_at,
                         deadline_at, next_poll_at, attempts, last_http_status,
                         last_polled_at, final_at, archived_at)
SELECT 'mentionlab', (CAST(:projects AS text[]))[1 + g % 3], CAST({RUN_ID} AS text),
       'archived', at + interval '20 seconds', at + interval '30 days',
       at + interval '5 minutes', 1, 200, at + interval '5 minutes',
       at + interval '5 minutes', at + interval '5 minutes'
FROM {RUNS}, LATERAL (SELECT {RUN_AT} AS at) AS t
""",  # noqa: S608 (this module's constants only)
    ),
    (
        "job_execution_entities",
        f"""
INSERT INTO job_execution_entities (job_execution_id, position, display_key, display_name,
                                    is_primary, sentiment_score)
SELECT {RUN_ID}, k, CAST(CAST(md5('entity' || b) AS uuid) AS text), b, k = 0,
       CASE WHEN (g + k) % 7 <> 0 THEN ((g * 37 + k * 11) % 1001) / 10.0 END
FROM {RUNS}
CROSS JOIN LATERAL generate_series(0, 2 + g % 3) AS k
CROSS JOIN LATERAL (SELECT {BRAND.format(expr="g * 5 + k * 3")} AS b) AS bb
""",  # noqa: S608 (this module's constants only)
    ),
    (
        "job_execution_sources",
        f"""
INSERT INTO job_execution_sources (job_execution_id, position, domain, url)
SELECT {RUN_ID}, k, CASE WHEN (g + k) % 5 <> 0 THEN d END,
       {URL.format(path="'/guide-' || g % 5000 || '-' || k")}
FROM {RUNS}
CROSS JOIN LATERAL generate_series(0, 1 + g % 3) AS k
CROSS JOIN LATERAL (SELECT {DOMAIN.format(expr="g * 11 + k * 7")} AS d) AS dd
""",  # noqa: S608 (this module's constants only)
    ),
)


def load(conn: Connection, plan: Plan) -> int:
    """Fill the archive tables; return how many rows were inserted."""
    params: dict[str, Any] = {
        "asks": plan.asks,
        "runs": plan.runs,
        "end": END,
        "span": SPAN_SECONDS,
        # The simulator's brand pool: accents, CJK, emoji and quotes, as archived.
        "brands": list(BRANDS),
        "domains": list(DOMAINS),
        "providers": list(PROVIDERS),
        "models": list(MODELS),
        "ml_models": list(ML_MODELS),
        "sentiments": list(SENTIMENTS),
        "projects": list(PROJECTS),
    }
    rows = 0
    for table, sql in LOAD_SQL:
        started = time.perf_counter()
        n = conn.execute(text(sql), params).rowcount
        rows += n
        console.print(
            f"[dim]reports: {table}: {n:,} rows in {time.perf_counter() - started:.1f}s[/]"
        )
    # ANALYZE: the planner needs statistics for the views' joins. VACUUM: hint
    # bits and the visibility map set, as on an aged archive, so the first timed
    # query does not pay for cleaning up freshly loaded rows.
    conn.execute(text("VACUUM ANALYZE"))
    return rows


# --- Timing -------------------------------------------------------------------------


def median_seconds(repeats: int, fn: Callable[[], T]) -> tuple[float, T]:
    """Median wall time of `repeats` (>= 1) calls, and the last call's result."""
    times: list[float] = []
    for _ in range(repeats):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def count_view(view: str) -> int:
    from worker.analytics.db import read_session
    from worker.resources import process_runtime

    sql = f"SELECT count(*) FROM {view}"  # noqa: S608 (one of VIEWS)
    with read_session(process_runtime().db) as session:
        return int(session.execute(text(sql)).scalar_one())


def run_one_report(kind: str) -> int:
    """One report as `mentionsync report KIND --by week` computes it; its row count."""
    from worker.analytics.db import read_session
    from worker.analytics.reports import Filters, run_report
    from worker.resources import process_runtime

    with read_session(process_runtime().db) as session:
        return len(run_report(session, kind, Filters(), BY).rows)


@dataclass(frozen=True)
class Command:
    seconds: float
    peak_mb: float
    stderr: str


def mentionsync() -> str:
    """The `mentionsync` script installed next to this interpreter."""
    script = Path(sys.executable).with_name("mentionsync")
    if not script.exists():
        raise RuntimeError(f"{script} not found: pip install -e . into this environment")
    return str(script)


# Runs argv[2:] and writes "seconds max_rss_kib" to argv[1]. Linux keeps a
# process's peak RSS across exec, and a child forked (or vforked) from this
# bench process starts with the bench's own pages counted: its ru_maxrss would
# be at least the bench's size. Forked from this small interpreter instead, the
# command's ru_maxrss is its own (it starts from ~10 MB, well under any command).
LAUNCHER = """
import os, sys, time
started = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - started
with open(sys.argv[1], "w") as f:
    f.write(f"{seconds} {usage.ru_maxrss}")
sys.exit(os.waitstatus_to_exitcode(status))
"""


def run_command(args: list[str], workdir: Path, name: str, env: Mapping[str, str]) -> Command:
    """Run a command to completion: its wall time and its own peak RSS."""
    out, err, usage = (workdir / f"{name}.{ext}" for ext in ("out", "err", "usage"))
    with out.open("wb") as stdout, err.open("wb") as stderr:
        # -I -S: no site-packages or user paths, so the launcher stays small.
        returncode = subprocess.run(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, str(usage), *args],
            stdout=stdout,
            stderr=stderr,
            env=dict(env),
            cwd=workdir,
            check=False,
        ).returncode
    stderr_text = err.read_text(errors="replace")
    if returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited with {returncode}:\n{stderr_text}")
    seconds, max_rss_kib = usage.read_text().split()
    # Linux reports ru_maxrss in KiB.
    return Command(float(seconds), int(max_rss_kib) / 1024, stderr_text)


def exported_rows(path: Path, fmt: str) -> int:
    """Rows in an export file, read back independently of the exporter's own count."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.read_metadata(path).num_rows)
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8") as f:
            return sum(1 for _ in csv.reader(f)) - 1  # minus the header
    with path.open("rb") as f:
        return sum(1 for _ in f)


# --- Scenario -----------------------------------------------------------------------


def run(smoke: bool = False) -> list[Result]:
    plan = SMOKE if smoke else FULL
    workdir = run_dir(SCENARIO)
    database_url = fresh_database()
    with autocommit(database_url) as conn:
        started = time.perf_counter()
        archive_rows = load(conn, plan)
        load_seconds = time.perf_counter() - started
    console.print(
        f"[dim]reports: loaded {archive_rows:,} archive rows ({plan.asks:,} asks, "
        f"{plan.runs:,} runs) in {load_seconds:.1f}s, VACUUM ANALYZE included[/]"
    )
    results = [
        Result(
            SCENARIO,
            "load the synthetic archive (INSERT ... SELECT, VACUUM ANALYZE)",
            load_seconds,
            "s",
            target=None,
            note=f"({archive_rows:,} archive rows, {archive_rows / load_seconds:,.0f} rows/s)",
        )
    ]

    with in_process_product(database_url):
        counts: dict[str, int] = {}
        count_seconds: dict[str, float] = {}
        for view in VIEWS:
            count_view(view)  # warm-up: connection, and the view's pages into cache
            seconds, n = median_seconds(plan.repeats, lambda v=view: count_view(v))
            counts[view], count_seconds[view] = n, seconds
        console.print(
            "[dim]reports: view rows: "
            + ", ".join(f"{v} {counts[v]:,}" for v in VIEWS)
            + f"; {workdir}[/]"
        )
        for view in VIEWS:
            results.append(
                Result(
                    SCENARIO,
                    f"SELECT count(*) FROM {view}",  # noqa: S608 (a label)
                    count_seconds[view],
                    "s",
                    target=None,
                    note=f"({counts[view]:,} rows, "
                    f"{counts[view] / count_seconds[view]:,.0f} rows/s)",
                )
            )

        report_seconds: dict[str, float] = {}
        for kind, views in REPORT_VIEWS.items():
            seconds, out_rows = median_seconds(plan.repeats, lambda k=kind: run_one_report(k))
            report_seconds[kind] = seconds
            view_rows = sum(counts[v] for v in views)
            results.append(
                Result(
                    SCENARIO,
                    f"report {kind} --by {BY}, in process",
                    seconds,
                    "s",
                    target=None,
                    higher_is_better=False,
                    baseline=sum(count_seconds[v] for v in views),
                    baseline_label="count(*) " + " + ".join(views),
                    note=f"({out_rows} rows out; {view_rows / seconds:,.0f} view rows/s)",
                )
            )

    env = {**os.environ, "DATABASE_URL": database_url}
    script = mentionsync()
    startup = run_command([script, "report", "--help"], workdir, "startup", env)
    command = run_command([script, "report", SUBPROCESS_REPORT, "--by", BY], workdir, "report", env)
    results += [
        Result(
            SCENARIO,
            "Python start-up: mentionsync report --help",
            startup.seconds,
            "s",
            target=None,
            higher_is_better=False,
            note=f"(peak RSS {startup.peak_mb:.0f} MB)",
        ),
        Result(
            SCENARIO,
            f"mentionsync report {SUBPROCESS_REPORT} --by {BY}, whole command",
            command.seconds,
            "s",
            target=None,
            higher_is_better=False,
            baseline=report_seconds[SUBPROCESS_REPORT],
            baseline_label="in process",
            note=f"(peak RSS {command.peak_mb:.0f} MB)",
        ),
    ]

    rows = counts["mention_facts"]
    for fmt in EXPORTS:
        path = workdir / f"mention_facts.{fmt}"
        export = run_command(
            [script, "export", "mention_facts", "--format", fmt, "--out", str(path)],
            workdir,
            f"export-{fmt}",
            env,
        )
        written = exported_rows(path, fmt)
        if written != rows or f"exported {rows} rows" not in export.stderr:
            raise RuntimeError(
                f"export {fmt}: {written:,} rows in the file, {rows:,} in mention_facts; "
                f"the command said: {export.stderr.strip()}"
            )
        size_mb = path.stat().st_size / MB
        path.unlink()  # hundreds of MB at full size; the logs stay in workdir
        results.append(
            Result(
                SCENARIO,
                f"mentionsync export mention_facts --format {fmt}",
                export.seconds,
                "s",
                target=None,
                higher_is_better=False,
                baseline=count_seconds["mention_facts"],
                baseline_label="count(*)",
                note=f"({rows:,} rows = the view's, {rows / export.seconds:,.0f} rows/s, "
                f"{size_mb:.0f} MB file, peak RSS {export.peak_mb:.0f} MB)",
            )
        )
    return results
