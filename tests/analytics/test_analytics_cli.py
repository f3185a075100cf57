"""`mentionsync report` as a user runs it: formats, charts, filters and errors."""

from __future__ import annotations

import csv
import io
import struct
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from matplotlib.container import BarContainer, ErrorbarContainer

from tests.helpers import cli
from tests.resources import read_session
from worker.analytics.charts import chart_series, draw_chart, write_chart
from worker.analytics.reports import KINDS, Filters, run_report
from worker.migrate import upgrade

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
EXPECTED_SIZE = (1000, 560)  # as docs/analytics.md promises


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    # The IHDR chunk comes first: length, type, then width and height.
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def test_report_json(archive: str) -> None:
    result = cli("report", "visibility", "--by", "vendor", "--format", "json")
    assert result.returncode == 0, result.stderr
    document = orjson.loads(result.stdout)
    assert document["report"] == "visibility"
    assert document["period"] == {
        "from": "2026-11-02T10:00:00+00:00",
        "to": "2026-11-11T09:00:00+00:00",
    }
    got = {
        (r["vendor"], r["brand"]): (r["answers_mentioning"], r["answers"]) for r in document["rows"]
    }
    # MentionsAPI: 5 answers (a1o a1a a2o a3 a5g); MentionLab: 3 (L1 L2 L4).
    assert got == {
        ("mentionsapi", "Acme"): (2, 5),
        ("mentionsapi", "Globex"): (2, 5),
        ("mentionsapi", "Initech"): (2, 5),
        ("mentionlab", "Acme"): (2, 3),
        ("mentionlab", "Globex"): (1, 3),
        ("mentionlab", "Initech"): (1, 3),
    }


def test_report_csv_and_table(archive: str) -> None:
    result = cli("report", "share-of-voice", "--format", "csv", "--brand", "Globex")
    assert result.returncode == 0, result.stderr
    header, row = list(csv.reader(io.StringIO(result.stdout)))
    # Every rate carries its numerator, denominator and 95% Wilson interval;
    # 3 of 10 is (0.1078, 0.6032) in published tables of the interval.
    assert header == [
        "brand",
        "mentions",
        "total_mentions",
        "share",
        "numerator",
        "denominator",
        "ci_low",
        "ci_high",
    ]
    assert row[:6] == ["Globex", "3", "10", "0.3", "3", "10"]
    assert (float(row[6]), float(row[7])) == (
        pytest.approx(0.1078, abs=5e-5),
        pytest.approx(0.6032, abs=5e-5),
    )
    result = cli(
        "report", "sentiment", "--vendor", "mentionlab", "--model", "gpt-4o", "--brand", "Acme"
    )
    assert result.returncode == 0, result.stderr
    assert "Sentiment, 2026-11-03 to 2026-11-03" in result.stdout
    assert "80.00" in result.stdout  # L1's only score for Acme
    result = cli("report", "citations", "--since", "2026-11-11", "--top-urls", "1")
    assert result.returncode == 0, result.stderr
    assert "other.org" in result.stdout and "100.0%" in result.stdout  # L4's one source
    assert "https://www.Other.org/g (1)" in result.stdout


def test_chart_option_writes_a_png(archive: str, tmp_path: Path) -> None:
    chart = tmp_path / "visibility.png"
    result = cli("report", "visibility", "--by", "week", "--chart", str(chart))
    assert result.returncode == 0, result.stderr
    assert f"chart written to {chart}" in result.stderr
    assert png_size(chart) == EXPECTED_SIZE


@pytest.mark.parametrize("kind", KINDS)
def test_charts_for_every_kind_and_grouping(archive: str, kind: str, tmp_path: Path) -> None:
    for by in (None, "day", "month", "provider", "vendor"):
        with read_session() as session:
            result = run_report(session, kind, Filters(), by)
        path = tmp_path / f"{kind}-{by}.png"
        write_chart(result, path)
        # A blank 1000 x 560 PNG compresses to about 5 kB; a drawn chart is larger.
        assert path.stat().st_size > 15_000, path
        assert png_size(path) == EXPECTED_SIZE


@pytest.mark.parametrize("by", ["week", "provider", None])
def test_chart_shapes_labels_and_legend(archive: str, by: str | None) -> None:
    with read_session() as session:
        report = run_report(session, "visibility", Filters(), by)
    (ax,) = draw_chart(report).axes
    series = chart_series(report)
    assert series
    bars = [p for c in ax.containers if isinstance(c, BarContainer) for p in c]
    # Rates carry their 95% interval: error bars (with caps) on bars, bands on lines.
    caps = {line for c in ax.containers if isinstance(c, ErrorbarContainer) for line in c.lines[1]}
    if by == "week":  # a line per brand, no bars
        assert [line.get_label() for line in ax.get_lines()] == series
        assert not bars
        assert len(ax.collections) == len(series)  # one interval band per line
    else:  # bars only: one per brand, or one per brand and provider
        assert set(ax.get_lines()) <= caps
        groups = 1 if by is None else len({row[by] for row in report.rows})
        assert len(bars) == len(series) * groups
        assert len([c for c in ax.containers if isinstance(c, ErrorbarContainer)]) == len(series)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == series
    assert ax.get_xlabel() and ax.get_ylabel() == "Visibility (% of answers that mention the brand)"
    # The period of the fixture's answers: the 2nd to the 11th of November.
    assert "2026-11-02 to 2026-11-11" in ax.get_title(loc="left")


def test_chart_of_nothing(backend: str, tmp_path: Path) -> None:
    with read_session() as session:
        result = run_report(session, "share-of-voice", Filters(brands=("Nobody",)), "week")
    path = tmp_path / "empty.png"
    write_chart(result, path)
    assert png_size(path) == EXPECTED_SIZE


def test_bad_options(archive: str) -> None:
    result = cli("report", "visibility", "--since", "last tuesday")
    assert result.returncode == 2
    assert "not an ISO 8601 date or timestamp" in result.stderr
    result = cli("report", "reach")
    assert result.returncode == 2
    # Nothing matches: an empty report, not an error.
    result = cli("report", "visibility", "--model", "no-such-model", "--format", "json")
    assert result.returncode == 0
    assert orjson.loads(result.stdout)["rows"] == []


def test_report_before_the_views_exist(tmp_path: Path, configure: Callable[..., None]) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade("0002", database_url=url)
    configure(DATABASE_URL=url)
    result = cli("report", "share-of-voice")
    assert result.returncode == 1
    assert "mentionsync db upgrade" in result.stderr


def test_report_by_model_names_the_model(archive: str) -> None:
    result = cli("report", "visibility", "--by", "model", "--format", "json", "--brand", "Acme")
    rows = {r["model"]: r["visibility"] for r in orjson.loads(result.stdout)["rows"]}
    # Every model that answered gets a row; Acme is in L1 (gpt-4o), L4 (copilot),
    # a1o (gpt-4o-2024-11-20) and a2o (gpt-4o-mini-2024-07-18).
    assert rows == {
        "gpt-4o": 1.0,
        "copilot": 1.0,
        "gpt-4o-2024-11-20": 1.0,
        "gpt-4o-mini-2024-07-18": 1.0,
        "claude-sonnet-4-20250514": 0.0,
        "claude-3-5-sonnet": 0.0,
        "sonar": 0.0,
        "gemini-2.5-pro": 0.0,
    }


def test_chart_draws_brands_with_dollar_signs_as_text(archive: str, tmp_path: Path) -> None:
    with read_session() as session:
        report = run_report(session, "visibility", Filters(), "provider")
    odd = ["$5 plans", "x^2$ $", "\\frac{a}{b}"]
    for i, row in enumerate(report.rows):
        row[report.series] = odd[i % len(odd)]
    path = tmp_path / "dollars.png"
    write_chart(report, path)  # mathtext would raise ParseFatalException here
    assert png_size(path) == EXPECTED_SIZE
    (ax,) = draw_chart(report).axes
    assert {t.get_text() for t in ax.get_legend().get_texts()} <= set(odd)
