"""The demo's analyst setup: topics attached to its ids at registration, a
five-brand catalog (one own) imported from `demo-brands.csv`, and the charts of
the own-vs-competitors and per-vendor reports.

The simulator's answers do not depend on a topic: the demo hands its ids
topics in turn, as a team would label the prompts it sends.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy.orm import Session

from models import Vendor
from worker.analytics.catalog import Imported, import_catalog, parse_catalog_csv
from worker.analytics.labels import LabelledId, store_labels

CATALOG_FILE = Path(__file__).with_name("demo-brands.csv")
DEMO_TOPICS = (
    "managed PostgreSQL hosting",
    "vector databases",
    "CRM software for startups",
)
# (report file, kind, --by, --metric): the two charts issue 14 asks the demo for.
CATALOG_CHARTS = (
    ("visibility-by-topic-own-vs-competitors.png", "visibility", "topic", None),
    ("compare-visibility-per-vendor.png", "compare", None, "visibility"),
)


def _topical(ids: Sequence[str]) -> list[LabelledId]:
    return [
        LabelledId(f"line {i + 2}", external_id, {"topic": [DEMO_TOPICS[i % len(DEMO_TOPICS)]]})
        for i, external_id in enumerate(ids)
    ]


def write_id_file(path: Path, rows: Sequence[LabelledId]) -> None:
    """The CSV `mentionsync track VENDOR --file` reads, for the reader to reuse."""
    lines = ["id,topic"] + [f"{r.external_id},{r.labels['topic'][0]}" for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def label_demo_ids(
    session: Session,
    directory: Path,
    ask_ids: Sequence[str],
    executions: dict[str, list[str]],
) -> int:
    """Give every registered id a topic, and keep the id files in `directory`."""
    rows = _topical(ask_ids)
    write_id_file(directory / "asks.csv", rows)
    labelled, _ = store_labels(session, Vendor.MENTIONSAPI, rows)
    for project_id, ids in executions.items():
        rows = _topical(ids)
        write_id_file(directory / f"executions-{project_id}.csv", rows)
        count, _ = store_labels(session, Vendor.MENTIONLAB, rows, project_id=project_id)
        labelled += count
    return labelled


def import_demo_catalog(session: Session, directory: Path) -> Imported:
    """`mentionsync brands import brands.csv` with the shipped example catalog."""
    text = CATALOG_FILE.read_text(encoding="utf-8")
    (directory / "brands.csv").write_text(text, encoding="utf-8")
    return import_catalog(session, parse_catalog_csv(io.StringIO(text)))


def write_catalog_charts(session: Session, directory: Path) -> list[Path]:
    from worker.analytics.charts import write_chart
    from worker.analytics.compare import compare
    from worker.analytics.reports import Filters, run_report

    filters = Filters(own_vs_competitors=True)
    paths = []
    for name, kind, by, metric in CATALOG_CHARTS:
        if kind == "compare":
            report = compare(session, metric or "visibility", filters, by)
        else:
            report = run_report(session, kind, filters, by)
        write_chart(report, directory / name)
        paths.append(directory / name)
    return paths
