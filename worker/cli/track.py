"""`mentionsync track …`: register ids to archive, from arguments or a file."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from typing import Any, TextIO

import click
from rich.markup import escape

from models import Vendor
from worker.analytics.catalog_cli import label_options, labels_from
from worker.cli._common import EXIT_REJECTED, err
from worker.config import Settings
from worker.db import Database
from worker.vendors.base import VendorSpec
from worker.vendors.registry import VENDORS


def _parse_iso(value: str | None) -> datetime | None:
    """--created-at as UTC, refused (exit 2, naming it) outside the registry's range."""
    from worker.registry import InvalidTimestamp, validate_created_at

    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"not an ISO 8601 timestamp: {value!r}", param_hint="--created-at"
        ) from None
    try:
        # Without an offset: UTC. The range check also refuses what UTC cannot hold.
        return validate_created_at(parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed)
    except InvalidTimestamp as exc:
        raise click.BadParameter(f"{value!r}: {exc}", param_hint="--created-at") from None


def _track(
    settings: Settings,
    vendor: Vendor,
    ids: tuple[str, ...],
    file: TextIO | None,
    *,
    project_id: str = "",
    created_at: datetime | None = None,
    expect_webhook: bool = False,
    labels: dict[str, list[str]] | None = None,
) -> None:
    from worker.analytics.catalog_cli import read_id_file, track_labels
    from worker.analytics.labels import is_label_file
    from worker.registry import label_arguments, read_lines, register

    if not ids and file is None:
        raise click.UsageError("give ids as arguments or with --file PATH (or --file - for stdin)")
    sources: list[Any] = [label_arguments(ids)]
    rejected: list[Any] = []
    # A .csv file has a header with an `id` column, its other columns labels;
    # a .jsonl file one object per line with an "id" (worker/analytics/labels.py).
    labelled_rows: list[Any] = []
    if file is not None and is_label_file(getattr(file, "name", None)):
        labelled_rows, rejected = read_id_file(file)
        sources.append((row.where, row.external_id) for row in labelled_rows)
    elif file is not None:
        sources.append(read_lines(file))
    added = known = 0
    with Database(settings.database_url) as db:
        for entries in sources:
            with db.session() as session:
                result = register(
                    session,
                    vendor,
                    entries,
                    settings=settings,
                    project_id=project_id,
                    created_at=created_at,
                    expect_webhook=expect_webhook,
                )
            added += result.added
            known += result.already_tracked
            rejected.extend(result.rejected)
        labelled = track_labels(db, vendor, project_id, ids, labelled_rows, labels or {})
    for bad in rejected[:1000]:
        # The line is the user's text: shown as it is, never read as markup.
        err.print(f"[red]rejected[/red] {escape(str(bad))}", highlight=False, soft_wrap=True)
    if len(rejected) > 1000:
        err.print(f"... and {len(rejected) - 1000} more rejected lines")
    err.print(
        f"{vendor}: {added} registered, {known} already tracked, {len(rejected)} rejected"
        + (f", {labelled} labelled" if labelled else ""),
        highlight=False,
    )
    if rejected:
        sys.exit(EXIT_REJECTED)


@click.group()
def track() -> None:
    """Register ids to archive. Idempotent: known ids are left as they are."""


def _track_command(spec: VendorSpec) -> click.Command:
    """`track <vendor>`, with the options the vendor's spec calls for."""

    def command(
        settings: Settings,
        /,
        ids: tuple[str, ...],
        file: TextIO | None,
        created_at: str | None,
        project: str = "",
        expect_webhook: bool = False,
        **label_values: Any,
    ) -> None:
        if spec.needs_project:
            from worker.registry import InvalidId, validate_project_id

            try:
                project = validate_project_id(project)
            except InvalidId as exc:
                raise click.BadParameter(f"{project!r}: {exc}", param_hint="--project") from None
        _track(
            settings,
            spec.vendor,
            ids,
            file,
            project_id=project,
            created_at=_parse_iso(created_at),
            expect_webhook=expect_webhook,
            labels=labels_from(label_values),
        )

    command.__doc__ = (
        f"Track {spec.title} {spec.id_noun}"
        + (" of one project" if spec.needs_project else "")
        + ". A FILE.csv has an `id` column; its other columns (prompt, topic, tags,"
        " country, persona, any other) are labels."
    )
    decorated: Any = label_options(click.pass_obj(command))
    if spec.sends_webhooks:
        decorated = click.option(
            "--expect-webhook", is_flag=True, help="Wait for a webhook before polling."
        )(decorated)
    decorated = click.option(
        "--created-at",
        help="When they were created (ISO 8601); sets the retention deadline.",
    )(decorated)
    decorated = click.option(
        "--file",
        "file",
        type=click.File("r", encoding="utf-8"),
        help="One id per line (or .csv/.jsonl with labels); - for stdin.",
    )(decorated)
    if spec.needs_project:
        decorated = click.option(
            "--project", "project", required=True, help=f"{spec.title} {spec.project_help}"
        )(decorated)
    decorated = click.argument("ids", nargs=-1)(decorated)
    return click.command(spec.vendor.value)(decorated)


for _spec in VENDORS.values():
    track.add_command(_track_command(_spec))
