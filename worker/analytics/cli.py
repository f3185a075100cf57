"""The `report`, `export` and `reprocess` commands, attached to `mentionsync`."""

from __future__ import annotations

import sys
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.console import Console
from rich.markup import escape
from rich.progress import MofNCompleteColumn, Progress
from sqlalchemy.exc import OperationalError, ProgrammingError

from models import Vendor
from worker.analytics.compare import METRICS, change, compare
from worker.analytics.reports import GROUPS, KINDS, Filters, label_key_of
from worker.analytics.views import VIEWS as VIEW_NAMES
from worker.common import parse_iso_utc
from worker.config import Settings

err = Console(stderr=True)
out = Console()

EXIT_FAILED = 1  # reprocess: some stored payloads no longer normalize
# Reports of two sides of one --metric.
PAIRED = {"compare": compare, "change": change}


class Timestamp(click.ParamType):  # type: ignore[type-arg]  # generic only in stubs
    """An ISO 8601 date or time, in UTC unless it has an offset.

    A bare date as an upper bound means the whole of that day.
    """

    name = "timestamp"

    def __init__(self, *, end_of_day: bool = False) -> None:
        self.end_of_day = end_of_day

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, datetime):
            return value
        try:
            day = date.fromisoformat(value)
        except ValueError:
            day = None
        if day is not None:
            start = datetime(day.year, day.month, day.day, tzinfo=UTC)
            return start + timedelta(days=1) if self.end_of_day else start
        try:
            return parse_iso_utc(value)
        except ValueError:
            self.fail(f"not an ISO 8601 date or timestamp: {value!r}", param, ctx)


class Grouping(click.ParamType):  # type: ignore[type-arg]  # generic only in stubs
    """One of GROUPS, or `label:KEY` for a free label."""

    name = "grouping"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value not in GROUPS and label_key_of(value) is None:
            self.fail(f"{value!r}: expected one of {', '.join(GROUPS)}, or label:KEY", param, ctx)
        return value


class LabelFilter(click.ParamType):  # type: ignore[type-arg]  # generic only in stubs
    """KEY=VALUE, a free label an answer must carry."""

    name = "key=value"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, tuple):
            return value
        key, sep, label = str(value).partition("=")
        if not sep or not key.strip():
            self.fail(f"{value!r}: give KEY=VALUE", param, ctx)
        return (key.strip(), label.strip())


SINCE = click.option(
    "--since", type=Timestamp(), help="From this date or time (ISO 8601, UTC), inclusive."
)
UNTIL = click.option(
    "--until",
    type=Timestamp(end_of_day=True),
    help="Up to this time, exclusive; a bare date includes that whole day.",
)
FORMULA_GUARD = click.option(
    "--formula-guard/--no-formula-guard",
    default=True,
    show_default=True,
    help="CSV: prefix text cells starting with = + - @, tab or CR with ' so a "
    "spreadsheet shows them instead of running them as formulas.",
)


def _database_error(exc: Exception) -> NoReturn:
    message = str(exc).splitlines()[0]
    # The message quotes SQL and values: printed as it is, never as markup.
    err.print(f"[red]database error[/red]: {escape(message)}", highlight=False, soft_wrap=True)
    if any(name in message for name in VIEW_NAMES):
        err.print("the analytics views are missing: run `mentionsync db upgrade`")
    sys.exit(EXIT_FAILED)


@click.command()
@click.argument("kind", type=click.Choice((*KINDS, *PAIRED)))
@SINCE
@UNTIL
@click.option("--brand", "brands", multiple=True, help="Only this brand (repeatable; exact name).")
@click.option("--vendor", "vendors", multiple=True, type=click.Choice([v.value for v in Vendor]))
@click.option("--provider", "providers", multiple=True, help="e.g. openai (repeatable).")
@click.option("--model", "models", multiple=True, help="Exact model name (repeatable).")
@click.option("--topic", "topics", multiple=True, help="Only answers with this topic (repeatable).")
@click.option("--tag", "tags", multiple=True, help="Only answers with this tag (repeatable).")
@click.option(
    "--prompt", "prompts", multiple=True, help="Only answers to this prompt (repeatable)."
)
@click.option("--country", "countries", multiple=True, help="Only this country (repeatable).")
@click.option("--persona", "personas", multiple=True, help="Only this persona (repeatable).")
@click.option("--group", "groups", multiple=True, help="Only brands of this competitor group.")
@click.option(
    "--own-vs-competitors",
    is_flag=True,
    help="Your own brand, each competitor, and everyone else as one (the brand catalog).",
)
@click.option(
    "--min-answers",
    type=click.IntRange(min=0),
    default=0,
    help="Hide groups resting on fewer answers than this.",
)
@click.option(
    "--metric",
    type=click.Choice(METRICS),
    default="visibility",
    show_default=True,
    help="compare, change: the rate set side by side.",
)
@click.option(
    "--label",
    "labels",
    multiple=True,
    type=LabelFilter(),
    help="Only answers with this free label, KEY=VALUE (repeatable).",
)
@click.option(
    "--by",
    type=Grouping(),
    default=None,
    help=f"One row per group: {', '.join(GROUPS)}, or label:KEY for a free label.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json"]),
    default="table",
    show_default=True,
)
@click.option(
    "--chart",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="Also draw the report to this PNG file.",
)
@click.option(
    "--top",
    type=click.IntRange(min=1),
    default=10,
    show_default=True,
    help="citations: domains per group.",
)
@click.option(
    "--top-urls",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="citations: URLs shown per domain.",
)
@FORMULA_GUARD
@click.pass_obj
def report(
    settings: Settings,
    kind: str,
    since: datetime | None,
    until: datetime | None,
    brands: tuple[str, ...],
    vendors: tuple[str, ...],
    providers: tuple[str, ...],
    models: tuple[str, ...],
    topics: tuple[str, ...],
    tags: tuple[str, ...],
    prompts: tuple[str, ...],
    countries: tuple[str, ...],
    personas: tuple[str, ...],
    groups: tuple[str, ...],
    labels: tuple[tuple[str, str], ...],
    own_vs_competitors: bool,
    min_answers: int,
    metric: str,
    by: str | None,
    fmt: str,
    chart: Path | None,
    top: int,
    top_urls: int,
    formula_guard: bool,
) -> None:
    """Share of voice, visibility, position, sentiment, citations, domain
    categories; compare (per vendor) and change (on the previous period) of a
    --metric. Definitions: docs/analytics.md.

    KIND is one of: share-of-voice, visibility, position, sentiment, citations,
    domain-categories, compare, change. Rates carry numerator, denominator and
    a 95% Wilson interval (ci_low, ci_high).
    """
    from worker.analytics.db import read_session
    from worker.analytics.export import utf8_stdout
    from worker.analytics.output import render_table, to_json, write_csv
    from worker.analytics.reports import run_report
    from worker.db import Database

    filters = Filters(
        since=since,
        until=until,
        brands=brands,
        vendors=vendors,
        providers=providers,
        models=models,
        topics=topics,
        tags=tags,
        prompts=prompts,
        countries=countries,
        personas=personas,
        groups=groups,
        labels=labels,
        own_vs_competitors=own_vs_competitors,
        min_answers=min_answers,
    )
    try:
        with Database(settings.database_url) as db, read_session(db) as session:
            if kind in PAIRED:
                result = PAIRED[kind](session, metric, filters, by)
            else:
                result = run_report(session, kind, filters, by, top=top, top_urls=top_urls)
    except (OperationalError, ProgrammingError) as exc:
        _database_error(exc)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if fmt == "json":
        sys.stdout.buffer.write(to_json(result) + b"\n")
    elif fmt == "csv":
        with utf8_stdout() as stream:
            write_csv(result, stream, formula_guard=formula_guard)
    else:
        # Piped tables would wrap at rich's default 80 columns.
        render_table(result, out if out.is_terminal else Console(width=200))
    if chart is not None:
        from worker.analytics.charts import write_chart

        write_chart(result, chart)
        err.print(f"chart written to {chart}", markup=False, highlight=False, soft_wrap=True)


@click.command("export")
@click.argument("name", metavar="TABLE_OR_VIEW")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["csv", "jsonl", "parquet"]),
    default="csv",
    show_default=True,
)
@SINCE
@UNTIL
@click.option(
    "--out",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="File to write (default: standard output; Parquet needs a file).",
)
@FORMULA_GUARD
@click.pass_obj
def export_command(
    settings: Settings,
    name: str,
    fmt: str,
    since: datetime | None,
    until: datetime | None,
    out: Path | None,
    formula_guard: bool,
) -> None:
    """Stream a table or view to CSV, JSON lines or Parquet.

    Views select --since/--until on answered_at; tables on when the row was
    archived (fetched_at, or the parent answer's), registered or received.
    """
    from worker.analytics.export import export, exportable
    from worker.db import Database

    names = exportable()
    if name not in names:
        raise click.BadParameter(
            f"{name!r} is not a table or view; choose from {', '.join(names)}",
            param_hint="TABLE_OR_VIEW",
        )
    if fmt == "parquet" and out is None:
        raise click.UsageError("Parquet needs a file: give --out PATH")
    try:
        with Database(settings.database_url) as db:
            rows = export(db, name, fmt, out, since=since, until=until, formula_guard=formula_guard)
    except (OperationalError, ProgrammingError) as exc:
        _database_error(exc)
    err.print(
        f"exported {rows} rows of {name} to {out or 'standard output'}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


@click.command("reprocess")
@click.option("--vendor", type=click.Choice([v.value for v in Vendor]), default=None)
@click.option("--since", type=Timestamp(), help="Only answers archived since then (fetched_at).")
@click.option("--batch-size", type=click.IntRange(min=1, max=5000), default=100, show_default=True)
@click.pass_obj
def reprocess_command(
    settings: Settings, vendor: str | None, since: datetime | None, batch_size: int
) -> None:
    """Rebuild the normalized rows from the stored raw payloads, without calling any API.

    Run it after a normalizer fix. Idempotent; interrupting it is safe (each
    batch is its own transaction), and running it again finishes the job.
    """
    from worker.analytics.reprocess import count_stored, reprocess
    from worker.db import Database

    vendors = [Vendor(vendor)] if vendor else list(Vendor)
    db = Database(settings.database_url)
    with db.session() as session:
        total = count_stored(session, vendors, since)
    err.print(f"reprocessing {total} stored answers", highlight=False)
    started = time.monotonic()
    if err.is_terminal:
        with Progress(*Progress.get_default_columns(), MofNCompleteColumn(), console=err) as bar:
            task = bar.add_task("reprocess", total=total)
            result = reprocess(
                db,
                vendors,
                since=since,
                batch_size=batch_size,
                progress=lambda n: bar.advance(task, n),
            )
    else:
        # Logs and pipes get a line every few seconds instead of a live bar.
        done = [0, started]

        def line(n: int) -> None:
            done[0] += n
            if time.monotonic() - done[1] >= 5:
                done[1] = time.monotonic()
                err.print(f"  {done[0]}/{total} answers", highlight=False)

        result = reprocess(db, vendors, since=since, batch_size=batch_size, progress=line)
    db.dispose()
    for failure in result.failures[:50]:
        err.print(
            f"[red]not reprocessed[/red] {failure.vendor} {escape(failure.answer_id)}: "
            f"{escape(failure.reason)}",
            highlight=False,
        )
    if len(result.failures) > 50:
        err.print(f"... and {len(result.failures) - 50} more")
    err.print(
        f"reprocessed {result.answers} answers ({result.rows_written} rows written) in "
        f"{time.monotonic() - started:.1f}s; {len(result.failures)} payloads rejected",
        highlight=False,
    )
    if result.failures:
        sys.exit(EXIT_FAILED)


COMMANDS = (report, export_command, reprocess_command)
