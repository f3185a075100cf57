"""`mentionsync brands …`, `mentionsync domains …` and `mentionsync label …`,
plus the label options `track` takes. Thin over worker/analytics/catalog.py and
labels.py; one transaction per command."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, TextIO, TypeVar

import click
import orjson
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from models import AliasKind, LabelScope, Vendor
from worker.config import Settings
from worker.db import Database

err = Console(stderr=True)
out = Console()

EXIT_REJECTED = 1
F = TypeVar("F", bound=Callable[..., Any])


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc)) from None


def _print_rejected(rejected: list[Any]) -> None:
    for bad in rejected[:1000]:
        err.print(f"[red]rejected[/red] {escape(str(bad))}", highlight=False, soft_wrap=True)
    if len(rejected) > 1000:
        err.print(f"... and {len(rejected) - 1000} more rejected lines")


# --- label options, shared by `track` and `label` ---------------------------------


def label_options(command: F) -> F:
    """--prompt, --topic, --tag, --country, --persona and --label KEY=VALUE."""
    for option in reversed(
        (
            click.option("--prompt", help="Label: the prompt text."),
            click.option("--topic", help="Label: the topic."),
            click.option("--tag", "tags", multiple=True, help="Label: a tag (repeatable)."),
            click.option("--country", help="Label: the country."),
            click.option("--persona", help="Label: the persona."),
            click.option(
                "--label", "free", multiple=True, help="Any label, KEY=VALUE (repeatable)."
            ),
        )
    ):
        command = option(command)
    return command


def labels_from(options: dict[str, Any]) -> dict[str, list[str]]:
    """The labels of the options `label_options` added (removed from `options`)."""
    from worker.analytics.labels import InvalidLabel, option_labels

    given = {k: options.pop(k) for k in ("prompt", "topic", "tags", "country", "persona", "free")}
    try:
        return option_labels(**given)
    except InvalidLabel as exc:
        raise click.BadParameter(str(exc)) from None


def read_id_file(file: TextIO) -> tuple[list[Any], list[Any]]:
    """A `.csv` or JSON-lines id file's rows with their labels; (rows, rejected)."""
    from worker.analytics.labels import InvalidLabel, read_label_file

    try:
        return read_label_file(file, getattr(file, "name", None))
    except InvalidLabel as exc:
        raise click.BadParameter(str(exc), param_hint="--file") from None


def track_labels(
    db: Database,
    vendor: Vendor,
    project_id: str,
    ids: tuple[str, ...],
    rows: list[Any],
    common: dict[str, list[str]],
) -> int:
    """After `track` registered the ids: store the CSV's and the options' labels."""
    from worker.analytics.labels import LabelledId, store_labels

    entries = [LabelledId(f"argument {i}", v) for i, v in enumerate(ids, start=1)]
    if not common and not any(r.labels for r in rows):
        return 0
    with db.session() as session:
        # Ids registration rejected are rejected here too, and reported once (by track).
        labelled, _ = store_labels(
            session, vendor, [*entries, *rows], project_id=project_id, common=common
        )
    return labelled


# --- brands -------------------------------------------------------------------


@click.group()
def brands() -> None:
    """The brand catalog: canonical brands, which is yours, aliases, domains."""


@brands.command("add")
@click.argument("name")
@click.option("--own/--competitor", default=None, help="Your own brand, or a competitor.")
@click.option("--group", help="Competitor group (the `--by group` dimension).")
@click.option("--alias", "aliases", multiple=True, help="Another spelling (case/accents ignored).")
@click.option("--exact", "exact", multiple=True, help="A spelling matched exactly.")
@click.option("--display-key", "keys", multiple=True, help="A MentionLab entity displayKey.")
@click.option("--domain", "domains", multiple=True, help="The brand's web domain (repeatable).")
@click.pass_obj
def brands_add(
    settings: Settings,
    name: str,
    own: bool | None,
    group: str | None,
    aliases: tuple[str, ...],
    exact: tuple[str, ...],
    keys: tuple[str, ...],
    domains: tuple[str, ...],
) -> None:
    """Add brand NAME (or update it); its name always matches ignoring case and accents."""
    from worker.analytics.catalog import CatalogError, add_brand
    from worker.db import transaction

    given = [
        *((AliasKind.NAME, a) for a in aliases),
        *((AliasKind.EXACT, a) for a in exact),
        *((AliasKind.DISPLAY_KEY, a) for a in keys),
    ]
    try:
        with transaction(settings.database_url) as session:
            add_brand(session, name, own=own, group=group, aliases=given, domains=domains)
    except CatalogError as exc:
        _fail(exc)
    err.print(f"brand {name!r} saved", markup=False, highlight=False)


@brands.command("alias")
@click.argument("brand")
@click.argument("aliases", nargs=-1, required=True)
@click.option(
    "--match",
    type=click.Choice(["name", "exact", "display_key"]),
    default="name",
    show_default=True,
    help="name: ignoring case and accents; exact; display_key: a MentionLab displayKey.",
)
@click.pass_obj
def brands_alias(settings: Settings, brand: str, aliases: tuple[str, ...], match: str) -> None:
    """Make ALIASES resolve to the catalog brand BRAND."""
    from sqlalchemy import select

    from models import CatalogBrand
    from worker.analytics.catalog import CatalogError, add_alias
    from worker.db import transaction

    try:
        with transaction(settings.database_url) as session:
            row = session.scalar(select(CatalogBrand).where(CatalogBrand.name == brand))
            if row is None:
                raise CatalogError(f"no brand {brand!r} in the catalog: `mentionsync brands add`")
            added = sum(add_alias(session, row, a, AliasKind(match)) for a in aliases)
    except CatalogError as exc:
        _fail(exc)
    err.print(f"{added} aliases added to {brand!r}", markup=False, highlight=False)


@brands.command("remove")
@click.argument("name")
@click.pass_obj
def brands_remove(settings: Settings, name: str) -> None:
    """Remove brand NAME with its aliases and domains."""
    from worker.analytics.catalog import remove_brand
    from worker.db import transaction

    with transaction(settings.database_url) as session:
        removed = remove_brand(session, name)
    if not removed:
        raise click.ClickException(f"no brand {name!r} in the catalog")
    err.print(f"brand {name!r} removed", markup=False, highlight=False)


@brands.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def brands_list(settings: Settings, fmt: str) -> None:
    """The catalog: each brand, own or competitor, group, aliases and domains."""
    from worker.analytics.catalog import list_brands
    from worker.analytics.db import read_session

    with Database(settings.database_url) as db, read_session(db) as session:
        entries = list_brands(session)
    if fmt == "json":
        sys.stdout.buffer.write(
            orjson.dumps([e.as_dict() for e in entries], option=orjson.OPT_INDENT_2) + b"\n"
        )
        return
    table = Table(title=Text(f"Brand catalog: {len(entries)} brands"), title_justify="left")
    for column in ("brand", "own", "group", "aliases", "domains"):
        table.add_column(column, overflow="fold")
    for e in entries:
        aliases = ", ".join(a if m == "name" else f"{a} ({m})" for m, a in e.aliases)
        table.add_row(
            Text(e.name),
            "own" if e.own else "competitor",
            Text(e.group or ""),
            Text(aliases),
            Text(", ".join(e.domains)),
        )
    (out if out.is_terminal else Console(width=200)).print(table)


@brands.command("import")
@click.argument("file", type=click.File("r", encoding="utf-8-sig"))
@click.pass_obj
def brands_import(settings: Settings, file: TextIO) -> None:
    """Replace the catalog with FILE.csv: columns brand,alias,own[,group][,domain][,match].

    One row per alias; own is true or false; match is name (default: ignoring
    case and accents), exact or display_key.
    """
    from worker.analytics.catalog import CatalogError, import_catalog, parse_catalog_csv
    from worker.db import transaction

    try:
        rows = parse_catalog_csv(file)
        with transaction(settings.database_url) as session:
            result = import_catalog(session, rows)
    except CatalogError as exc:
        _fail(exc)
    err.print(
        f"catalog replaced: {result.brands} brands, {result.aliases} aliases, "
        f"{result.domains} domains",
        highlight=False,
    )


@brands.command("export")
@click.option(
    "--out",
    "path",
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="File to write (default: standard output).",
)
@click.pass_obj
def brands_export(settings: Settings, path: Path | None) -> None:
    """Write the catalog as a CSV that `brands import` reads back."""
    import csv

    from worker.analytics.catalog import CSV_COLUMNS, export_rows
    from worker.analytics.db import read_session
    from worker.analytics.export import utf8_stdout

    with Database(settings.database_url) as db, read_session(db) as session:
        rows = list(export_rows(session))

    def write(stream: IO[str]) -> None:
        writer = csv.DictWriter(stream, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)

    if path is None:
        with utf8_stdout() as stream:
            write(stream)
    else:
        with path.open("w", encoding="utf-8", newline="") as stream:
            write(stream)
        err.print(f"{len(rows)} rows written to {path}", markup=False, highlight=False)


@brands.command("suggest")
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def brands_suggest(settings: Settings, limit: int, fmt: str) -> None:
    """Raw brand names the catalog does not match yet, most mentioned first,
    grouped where they differ only by case, accents, punctuation or a suffix
    such as Inc or CRM."""
    from worker.analytics.catalog import suggest
    from worker.analytics.db import read_session

    with Database(settings.database_url) as db, read_session(db) as session:
        groups = suggest(session)[:limit]
    if fmt == "json":
        document = [g.as_dict() for g in groups]
        sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        return
    table = Table(title=Text("Names not in the catalog"), title_justify="left")
    for column in ("mentions", "suggested brand", "spellings (mentions)", "already in catalog as"):
        table.add_column(
            column, overflow="fold", justify="right" if column == "mentions" else "left"
        )
    for g in groups:
        spellings = ", ".join(f"{n} ({c})" for n, c in g.names)
        table.add_row(str(g.mentions), Text(g.names[0][0]), Text(spellings), Text(g.alias_of or ""))
    (out if out.is_terminal else Console(width=200)).print(table)
    if not groups:
        out.print("every mentioned name is in the catalog")


# --- domains ------------------------------------------------------------------


@click.group()
def domains() -> None:
    """Categories of cited domains: ugc, reference, review, editorial, … (yours win)."""


@domains.command("list")
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table")
@click.pass_obj
def domains_list(settings: Settings, fmt: str) -> None:
    """The category of each listed domain: the shipped defaults and your own."""
    from sqlalchemy import select

    from worker.analytics.db import read_session
    from worker.analytics.views import domain_category_map as m

    with Database(settings.database_url) as db, read_session(db) as session:
        rows = session.execute(select(m).order_by(m.c.category, m.c.domain)).all()
    if fmt == "json":
        document = [{"domain": d, "category": c, "source": s} for d, c, s in rows]
        sys.stdout.buffer.write(orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n")
        return
    table = Table(title=Text("Domain categories"), title_justify="left")
    for column in ("domain", "category", "source"):
        table.add_column(column)
    for domain, category, source in rows:
        table.add_row(Text(domain), Text(category), source)
    (out if out.is_terminal else Console(width=200)).print(table)


@domains.command("set")
@click.argument("domain")
@click.argument("category")
@click.pass_obj
def domains_set(settings: Settings, domain: str, category: str) -> None:
    """Put DOMAIN (and its subdomains) in CATEGORY; `other` un-classifies a default."""
    from models import DomainCategory
    from worker.analytics.catalog import normalize_domain
    from worker.db import transaction

    with transaction(settings.database_url) as session:
        session.merge(DomainCategory(domain=normalize_domain(domain), category=category.strip()))
    err.print(f"{normalize_domain(domain)}: {category}", markup=False, highlight=False)


@domains.command("unset")
@click.argument("domain")
@click.pass_obj
def domains_unset(settings: Settings, domain: str) -> None:
    """Forget your category for DOMAIN (a shipped default applies again)."""
    from models import DomainCategory
    from worker.analytics.catalog import normalize_domain
    from worker.db import transaction

    with transaction(settings.database_url) as session:
        row = session.get(DomainCategory, normalize_domain(domain))
        if row is not None:
            session.delete(row)
    err.print(f"{normalize_domain(domain)}: back to the default", markup=False, highlight=False)


# --- label --------------------------------------------------------------------


@click.command("label")
@click.argument("vendor", type=click.Choice([v.value for v in Vendor]))
@click.argument("ids", nargs=-1)
@click.option("--project", default="", help="MentionLab project id.")
@click.option(
    "--per",
    "scope",
    type=click.Choice(["query", "job"]),
    default=None,
    help="MentionLab: the ids are queryIds or jobIds, labelling every run of them.",
)
@click.option(
    "--file",
    "file",
    type=click.File("r", encoding="utf-8-sig"),
    help="A CSV with an `id` column (the other columns are labels), or JSON lines.",
)
@label_options
@click.pass_obj
def label_command(
    settings: Settings,
    /,
    vendor: str,
    ids: tuple[str, ...],
    project: str,
    scope: str | None,
    file: TextIO | None,
    **options: Any,
) -> None:
    """Label ids, registered or not (a webhook-registered ask, every run of a query).

    A label given again replaces that label's value; other labels stay.
    """
    from worker.analytics.labels import InvalidLabel, LabelledId, scope_for, store_labels
    from worker.db import transaction
    from worker.registry import InvalidId, validate_project_id
    from worker.vendors.registry import VENDORS

    chosen = Vendor(vendor)
    common = labels_from(options)
    if VENDORS[chosen].needs_project:
        try:
            project = validate_project_id(project)
        except InvalidId as exc:
            raise click.BadParameter(f"{project!r}: {exc}", param_hint="--project") from None
    elif project or scope:
        with_projects = ", ".join(v.value for v, spec in VENDORS.items() if spec.needs_project)
        raise click.UsageError(f"--project and --per are for {with_projects}")
    try:
        label_scope = scope_for(chosen, LabelScope(scope) if scope else None)
    except InvalidLabel as exc:
        raise click.UsageError(str(exc)) from None
    rows, rejected = read_id_file(file) if file is not None else ([], [])
    entries = [LabelledId(f"argument {i}", v) for i, v in enumerate(ids, start=1)] + rows
    if not entries:
        raise click.UsageError("give ids as arguments or with --file FILE.csv")
    with transaction(settings.database_url) as session:
        labelled, bad = store_labels(
            session, chosen, entries, project_id=project, scope=label_scope, common=common
        )
    rejected += bad
    _print_rejected(rejected)
    err.print(f"{labelled} ids labelled, {len(rejected)} rejected", highlight=False)
    if rejected:
        sys.exit(EXIT_REJECTED)


COMMANDS = (brands, domains, label_command)
