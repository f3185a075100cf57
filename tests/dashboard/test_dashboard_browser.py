"""The dashboard in a real browser: log in, load each page, change a filter,
check every figure against `mentionsync report --format json` on the same
archive, download a CSV, follow a brand to its answers and their payloads,
and keep screenshots of both pages."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from simulator import Dataset
from tests.dashboard.conftest import TOKEN, log_in, register_over_days, screenshot
from tests.dashboard.hostile import (
    HOSTILE_ID,
    SCRIPT_BRAND,
    SCRIPT_DOMAIN,
    SCRIPT_TEXT,
    SCRIPT_URL,
    load_hostile_archive,
)
from tests.helpers import MENTIONSYNC, cli, register_dataset
from worker.analytics.reports import KINDS
from worker.migrate import upgrade

SEED = 23
OVERVIEW_ROWS = 10  # rows of each report on the visibility page
REPORT_PAGE_ROWS = 50  # rows of a report's own page


def cli_report(kind: str, *args: str) -> dict[str, Any]:
    result = cli("report", kind, *args, "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def cli_bytes(*args: str) -> bytes:
    """stdout exactly as written (CSV lines end in CRLF)."""
    return subprocess.run(
        [MENTIONSYNC, *args], capture_output=True, env=dict(os.environ), check=True, timeout=120
    ).stdout


def table_rows(page: Any, kind: str) -> list[dict[str, str]]:
    """The report table's cells as the page holds them (data-value: the figure as
    the report computed it), by column."""
    return page.eval_on_selector(
        f"#table-{kind}",
        """table => Array.from(table.querySelectorAll('tbody tr:not(.empty)')).map(tr =>
             Object.fromEntries(Array.from(tr.querySelectorAll('td[data-value]')).map(
               td => [td.dataset.col, td.dataset.value])))""",
    )


def expected_cells(report: dict[str, Any]) -> list[dict[str, str]]:
    """The CLI's JSON rows as the page writes them: str() of each value, '' for none."""
    return [
        {c: "" if row[c] is None else str(row[c]) for c in report["columns"] if c != "top_urls"}
        for row in report["rows"]
    ]


def assert_same_figures(page: Any, kind: str, report: dict[str, Any], rows: int) -> None:
    on_page = table_rows(page, kind)
    assert report["rows"], f"{kind}: the CLI has no rows to compare"
    assert on_page == expected_cells(report)[:rows], kind


def test_dashboard_agrees_with_the_cli_in_a_browser(
    sim: Any, page: Any, serve: Any, tmp_path: Path
) -> None:
    sim(seed=SEED, max_pending_polls=1)
    dataset = Dataset(seed=SEED)
    register_over_days(dataset.ask_ids(150), days=3)
    register_dataset(dataset, asks=0, executions=150)
    synced = cli("sync", "--until-done", "--timeout", "180")
    assert synced.returncode == 0, synced.stderr[-3000:]

    with serve(DASHBOARD_TOKEN=TOKEN) as base:
        # No session: the visibility page sends the browser to the login form.
        page.goto(f"{base}/visibility?by=day")
        assert "/login" in page.url
        assert page.locator("table").count() == 0

        log_in(page, base)
        assert page.url == f"{base}/"

        # The health page: the figures of `mentionsync status`.
        status = json.loads(cli("status", "--json").stdout)
        for selector, value in (
            ("#total", status["total"]),
            ("#pending", status["pending"]),
            ("#at-risk", status["at_risk"]["count"]),
            ("#lost", status["lost_to_expiry"]["count"]),
            ("#errors", status["errors"]["count"]),
            ("#quarantined", status["quarantined"]),
        ):
            assert page.inner_text(selector) == str(value), selector
        counts = page.eval_on_selector(
            "#counts",
            "t => Array.from(t.querySelectorAll('tbody tr')).map(tr => "
            "Array.from(tr.cells).map(td => td.innerText))",
        )
        vendors = list(status["counts"])
        for state, *numbers, total in counts:
            assert numbers == [str(status["counts"][v][state]) for v in vendors], state
            assert total == str(status["totals"][state])
        assert status["totals"]["archived"] > 150
        assert page.locator("meta[http-equiv=refresh]").count() == 1
        screenshot(page, "dashboard-health.png")

        # The visibility page, unfiltered: each report's first rows are the CLI's.
        page.click("header nav >> text=Visibility")
        assert page.url == f"{base}/visibility"
        for kind in KINDS:
            assert_same_figures(page, kind, cli_report(kind), OVERVIEW_ROWS)
        assert page.locator("img.chart").count() == len(KINDS)

        # Change the filters as a person would: by day, MentionsAPI only.
        page.select_option("select[name=by]", "day")
        page.select_option("select[name=vendors]", ["mentionsapi"])
        page.click("form.filters button[type=submit]")
        page.wait_for_load_state()
        assert "by=day" in page.url and "vendors=mentionsapi" in page.url
        filters = ("--by", "day", "--vendor", "mentionsapi")
        for kind in KINDS:
            assert_same_figures(page, kind, cli_report(kind, *filters), OVERVIEW_ROWS)
        screenshot(page, "dashboard-visibility.png")

        # The CSV download is `report --format csv`, byte for byte.
        with page.expect_download() as download:
            page.click("#visibility a.csv")
        csv = Path(download.value.path()).read_bytes()
        assert csv == cli_bytes("report", "visibility", *filters, "--format", "csv")
        assert download.value.suggested_filename == "visibility-by-day.csv"

        # A report's own page: every row, 50 a page.
        page.click("#share-of-voice >> text=all rows")
        page.wait_for_load_state()
        share = cli_report("share-of-voice", *filters)
        assert_same_figures(page, "share-of-voice", share, REPORT_PAGE_ROWS)
        if len(share["rows"]) > REPORT_PAGE_ROWS:
            page.click("nav.pager >> text=next")
            page.wait_for_load_state()
            second = table_rows(page, "share-of-voice")
            expected = expected_cells(share)
            assert second == expected[REPORT_PAGE_ROWS : 2 * REPORT_PAGE_ROWS]

        # Drill-down: a brand's row of visibility by day -> the answers it counts.
        page.goto(f"{base}/visibility?by=day&vendors=mentionsapi")
        first = cli_report("visibility", *filters)["rows"][0]
        page.click("#table-visibility tbody tr >> nth=0 >> td[data-col=brand] a")
        page.wait_for_load_state()
        assert first["brand"] in page.locator("h1").inner_text()
        listed = 0
        while True:
            listed += page.locator("#answers tbody tr a.evidence").count()
            if page.locator("nav.pager a[rel=next]").count() == 0:
                break
            page.click("nav.pager a[rel=next]")
            page.wait_for_load_state()
        assert listed == first["answers_mentioning"]
        # ... all of them in one download.
        with page.expect_download() as download:
            page.click("a.csv")
        lines = Path(download.value.path()).read_text().splitlines()
        assert lines[0].startswith("vendor,answer_key,answer_id,")
        assert len(lines) - 1 == first["answers_mentioning"]

        # ... and one answer's evidence: its text, mentions, citations and payload.
        page.click("#answers a.evidence >> nth=0")
        page.wait_for_load_state()
        answer_id = page.url.split("/answers/mentionsapi/")[1].split("?")[0]
        assert answer_id in page.inner_text("#raw")
        assert first["brand"] in page.inner_text("#mentions")
        assert page.locator("article.response pre.text").count() >= 1
        payload = page.request.get(f"{base}/answers/mentionsapi/{answer_id}/payload.json")
        assert payload.ok and answer_id in payload.text()

        # Logging out ends the session.
        page.click("form.logout button")
        page.wait_for_load_state()
        page.goto(f"{base}/")
        assert "/login" in page.url


@pytest.fixture
def sqlite_archive(tmp_path: Path, configure: Any) -> str:
    url = f"sqlite:///{tmp_path / 'archive.db'}"
    upgrade("head", database_url=url)
    configure(DATABASE_URL=url)
    load_hostile_archive()
    return url


def test_vendor_script_is_shown_as_text_never_run_on_sqlite(
    sqlite_archive: str, page: Any, serve: Any
) -> None:
    with serve(DASHBOARD_TOKEN=TOKEN) as base:
        log_in(page, base)
        page.goto(f"{base}/visibility")
        # The embedded SQLite archive: the same figures as the CLI reads from it.
        for kind in KINDS:
            assert_same_figures(page, kind, cli_report(kind), OVERVIEW_ROWS)
        brands = [row["brand"] for row in table_rows(page, "share-of-voice")]
        assert SCRIPT_BRAND in brands
        domains = [row["domain"] for row in table_rows(page, "citations")]
        assert SCRIPT_DOMAIN.lower() in domains

        # The brand's answers, then the answer's page full of script.
        page.locator("#table-share-of-voice td[data-col=brand] a", has_text=SCRIPT_BRAND).click()
        page.wait_for_load_state()
        assert SCRIPT_BRAND in page.locator("h1").inner_text()
        page.click("a.evidence >> nth=0")
        page.wait_for_load_state()
        assert HOSTILE_ID in page.url
        text = page.inner_text("main")
        for hostile in (SCRIPT_TEXT, SCRIPT_BRAND, SCRIPT_URL, SCRIPT_DOMAIN):
            assert hostile in text, hostile
        # Shown as text: no element came from vendor text, nothing ran.
        for tag in ("script", "img:not(.chart)", "svg"):
            assert page.locator(f"main {tag}").count() == 0, tag
        assert page.evaluate("() => window.__pwned === undefined")
        screenshot(page, "dashboard-hostile-answer.png")

        page.goto(f"{base}/answers?{urlencode({'domain': SCRIPT_DOMAIN.lower()})}")
        assert SCRIPT_URL in page.inner_text("#answers")
        assert page.locator("#answers a[href^='javascript']").count() == 0
        assert page.evaluate("() => window.__pwned === undefined")
