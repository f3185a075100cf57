"""The dashboard's routes, mounted by the intake service (`mentionsync serve`).

Read-only pages rendered on the server (Jinja2, autoescaped: vendor text is
hostile and is never markup), charts drawn by the same code as `report
--chart` and embedded as SVG images (an image cannot run script), and no
script at all, which the Content-Security-Policy enforces. The health page
refreshes itself with a meta refresh.

Every route but the login form and the stylesheet is behind the session check
of `_guarded`: `routes()` wraps each page as it builds the list, so a page added
here is refused without a session unless it is added to the public ones.
Database work runs in Starlette's thread pool, in read sessions (`analytics.db`) that
never hold the SQLite write lock; the visibility page runs its five reports side by side.
"""

from __future__ import annotations

import asyncio
import base64
import csv
import io
import logging
import threading
import time
import warnings
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import jinja2
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from models import utcnow
from worker.analytics.output import FRACTIONS, TITLES
from worker.analytics.reports import GROUPS, KINDS, Filters, Report
from worker.config import Settings
from worker.dashboard import filters as params
from worker.dashboard import queries
from worker.dashboard.auth import (
    COOKIE,
    Sessions,
    clear_session_cookie,
    local_target,
    set_session_cookie,
)

log = logging.getLogger("mentionsync.dashboard")

HERE = Path(__file__).parent
REFRESH_SECONDS = 30
ROWS_ON_OVERVIEW = 10  # rows of each report on the visibility page (all: its own page)
REPORT_PAGE_ROWS = 50  # rows a page of a report's own page
LOGIN_BODY_BYTES = 8192
# The filters' provider and model lists scan the answers: read them this often at most.
CHOICES_SECONDS = 300.0
FAILED_LOGIN_DELAY = 0.5  # seconds: slows guessing without a lockout anyone could trigger
# No script, no frame, no form posting elsewhere; images only from here or data:
# URIs (the charts).
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self' data:; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "content-security-policy": CSP,
    "x-content-type-options": "nosniff",
    "referrer-policy": "same-origin",
    "x-frame-options": "DENY",
}

# What every page's template may use.
PAGE_GLOBALS = {
    "kinds": KINDS,
    "titles": TITLES,
    "fractions": FRACTIONS,
    "raw_shown": queries.RAW_SHOWN,
}

Endpoint = Callable[[Request], Awaitable[Response]]
ReadSession = Callable[[], AbstractContextManager[Session]]

# matplotlib's rc_context, used while a chart is drawn, changes process-wide
# settings: one chart at a time.
_CHART_LOCK = threading.Lock()


def _secure(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def templates() -> Jinja2Templates:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        # Every template is HTML: escape everything, whatever the file name.
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["pct"] = lambda v: "" if v is None else f"{v * 100:.1f}%"
    env.filters["num"] = _number
    env.filters["age"] = _age
    return Jinja2Templates(env=env)


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def chart_data_uri(report: Report) -> str | None:
    """The report's chart (as `report --chart` draws it) as an SVG data: URI."""
    from worker.analytics.charts import chart_svg

    try:
        with _CHART_LOCK, warnings.catch_warnings():
            # A glyph missing from matplotlib's font (CJK, emoji) is drawn as a
            # box; the table beside the chart shows the name as it is.
            warnings.simplefilter("ignore", UserWarning)
            svg = chart_svg(report)
    except Exception:
        # A chart is an extra: the table carries the figures.
        log.exception("chart of %s could not be drawn", report.kind)
        return None
    return "data:image/svg+xml;base64," + base64.b64encode(svg).decode()


class Dashboard:
    """The pages, holding what they need: the settings, the templates, the
    sessions and how to open a read session."""

    def __init__(self, settings: Settings, read_session: ReadSession) -> None:
        assert settings.dashboard_token is not None
        self.settings = settings
        self.read_session = read_session
        self.sessions = Sessions(settings.dashboard_token)
        self.templates = templates()
        self._choices: tuple[float, dict[str, list[str]]] | None = None

    # --- access ---------------------------------------------------------------------

    def _guarded(self, endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            if not self.sessions.valid(request.cookies.get(COOKIE)):
                return _secure(self._refuse(request))
            response = await endpoint(request)
            # Data pages stay out of every cache, the browser's back button included.
            response.headers.setdefault("cache-control", "no-store")
            return _secure(response)

        return guarded

    def _refuse(self, request: Request) -> Response:
        """A page asked for without a session goes to the login form; a download
        gets 401. Neither carries any data."""
        wants_page = request.method == "GET" and "text/html" in request.headers.get("accept", "")
        if wants_page and not request.url.path.endswith((".csv", ".json")):
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            login = request.url_for("login").path + "?" + urlencode({"next": target})
            return RedirectResponse(login, status_code=303)
        return PlainTextResponse("log in to the dashboard first", status_code=401)

    async def login_form(self, request: Request) -> Response:
        return self._login_page(request, request.query_params.get("next"), error=None)

    def _login_page(self, request: Request, target: str | None, error: str | None) -> Response:
        response = self.templates.TemplateResponse(
            request,
            "login.html",
            {"next": local_target(target, "/"), "error": error},
            status_code=401 if error else 200,
        )
        return _secure(response)

    async def login(self, request: Request) -> Response:
        body = await _read_capped(request, LOGIN_BODY_BYTES)
        # Latin-1 maps every byte to one character and back, so the token is
        # compared as the exact bytes sent, whatever they are.
        text = (body or b"").decode("latin-1")
        form = dict(parse_qsl(text, keep_blank_values=True, encoding="latin-1"))
        given = form.get("token", "").encode("latin-1")
        target = form.get("next", "/").encode("latin-1").decode("utf-8", "replace")
        if body is None or not self.sessions.token_matches(given):
            await asyncio.sleep(FAILED_LOGIN_DELAY)
            return self._login_page(request, target, error="That is not the dashboard token.")
        response = RedirectResponse(local_target(target, "/"), status_code=303)
        set_session_cookie(response, request, self.sessions.issue())
        return _secure(response)

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse(request.url_for("login").path, status_code=303)
        clear_session_cookie(response, request)
        return _secure(response)

    # --- pages ----------------------------------------------------------------------

    def choices(self, session: Session) -> dict[str, list[str]]:
        """The filters' lists, cached: two processes or threads may both refresh
        them, which is harmless."""
        cached = self._choices
        now = time.monotonic()
        if cached is None or now - cached[0] > CHOICES_SECONDS:
            cached = (now, queries.choices(session))
            self._choices = cached
        return cached[1]

    async def _read(self, work: Callable[[Session], Any]) -> Any:
        def run() -> Any:
            with self.read_session() as session:
                return work(session)

        return await run_in_threadpool(run)

    def _page(self, request: Request, name: str, **context: Any) -> Response:
        return self.templates.TemplateResponse(request, name, {**PAGE_GLOBALS, **context})

    def _bad_request(self, request: Request, message: str) -> Response:
        return self.templates.TemplateResponse(
            request,
            "error.html",
            {**PAGE_GLOBALS, "message": message},
            status_code=400,
        )

    async def health(self, request: Request) -> Response:
        report = await self._read(lambda session: queries.health(session, self.settings, utcnow()))
        return self._page(
            request,
            "health.html",
            s=report,
            refresh=REFRESH_SECONDS,
            alerts_configured=self.settings.alert_webhook_url is not None,
        )

    def _query(self, filters: Filters, by: str | None, **extra: Any) -> str:
        items = params.query_items(filters, by)
        items.extend((k, str(v)) for k, v in extra.items() if v is not None)
        return urlencode(items)

    async def visibility(self, request: Request) -> Response:
        try:
            filters = params.parse_filters(request.query_params)
            by = params.parse_by(request.query_params)
        except params.BadFilter as exc:
            return self._bad_request(request, str(exc))

        def section(kind: str) -> Callable[[Session], dict[str, Any]]:
            return lambda session: self._section(
                queries.report(session, kind, filters, by), 0, ROWS_ON_OVERVIEW
            )

        # One read session per report, run side by side: the page waits for the
        # slowest report rather than for the sum of them.
        *sections, choices = await asyncio.gather(
            *(self._read(section(kind)) for kind in KINDS), self._read(self.choices)
        )
        return self._page(
            request,
            "visibility.html",
            sections=sections,
            **self._filter_context(filters, by, choices),
        )

    async def report_page(self, request: Request) -> Response:
        try:
            kind = params.parse_kind(request.path_params["kind"])
            filters = params.parse_filters(request.query_params)
            by = params.parse_by(request.query_params)
        except params.BadFilter as exc:
            return self._bad_request(request, str(exc))
        page = queries.clamp_page(request.query_params.get("page"))
        size = REPORT_PAGE_ROWS
        start = (page - 1) * size

        def work(session: Session) -> tuple[dict[str, Any], dict[str, list[str]]]:
            report = queries.report(session, kind, filters, by)
            return self._section(report, start, start + size), self.choices(session)

        section, choices = await self._read(work)
        return self._page(
            request,
            "report.html",
            section=section,
            page=page,
            has_next=section["total_rows"] > start + size,
            first_row=start + 1,
            **self._filter_context(filters, by, choices),
        )

    def _section(self, report: Report, start: int, stop: int) -> dict[str, Any]:
        """One report as the templates show it: its rows from `start` to `stop`,
        each with the query of the answers behind it, its chart (of every row),
        and its download."""
        by = report.by
        rows = []
        for row in report.rows[start:stop]:
            group = row.get(by) if by else None
            narrowed = params.within_group(report.filters, by, group)
            subject = report.series  # brand or domain
            rows.append(
                {
                    "values": row,
                    "answers": self._query(narrowed, None, **{subject: row[subject]}),
                }
            )
        return {
            "kind": report.kind,
            "title": TITLES.get(report.kind, report.kind),
            "report": report,
            "columns": report.columns,
            "rows": rows,
            "total_rows": len(report.rows),
            "chart": chart_data_uri(report),
            "query": self._query(report.filters, by),
        }

    def _filter_context(
        self, filters: Filters, by: str | None, choices: dict[str, list[str]]
    ) -> dict[str, Any]:
        return {
            "filters": filters,
            "form": params.form_values(filters),
            "list_fields": params.list_fields(),
            "choices": choices,
            "groups": GROUPS,
            "by": by,
            "query": self._query(filters, by),
        }

    async def report_csv(self, request: Request) -> Response:
        """The report's rows as `mentionsync report KIND --format csv` writes them
        (formula cells neutralized for spreadsheets)."""
        from worker.analytics.output import write_csv

        try:
            kind = params.parse_kind(request.path_params["kind"])
            filters = params.parse_filters(request.query_params)
            by = params.parse_by(request.query_params)
        except params.BadFilter as exc:
            return PlainTextResponse(str(exc), status_code=400)
        report = await self._read(lambda session: queries.report(session, kind, filters, by))
        out = io.StringIO()
        write_csv(report, out, formula_guard=True)
        name = f"{kind}{'-by-' + by if by else ''}.csv"
        return Response(
            out.getvalue().encode("utf-8"),
            media_type="text/csv; charset=utf-8",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    def _drill_down(self, request: Request) -> tuple[Filters, dict[str, str]]:
        """The filters and the brand or domain of a drill-down; BadFilter says why not."""
        filters = params.parse_filters(request.query_params)
        brand = request.query_params.get("brand")
        domain = request.query_params.get("domain")
        if brand is not None and domain is None:
            return filters, {"brand": brand}
        if domain is not None and brand is None:
            return filters, {"domain": domain}
        raise params.BadFilter("give either a brand or a domain")

    async def answers(self, request: Request) -> Response:
        """The answers behind a brand's or a domain's figures, a page at a time."""
        try:
            filters, subject = self._drill_down(request)
        except params.BadFilter as exc:
            return self._bad_request(request, str(exc))
        page = queries.clamp_page(request.query_params.get("page"))
        stmt = queries.behind(subject.get("brand"), subject.get("domain"), filters)

        def work(session: Session) -> tuple[queries.Page, dict[str, list[str]]]:
            return queries.page_of(session, stmt, page), self.choices(session)

        found, choices = await self._read(work)
        return self._page(
            request,
            "answers.html",
            found=found,
            subject=subject,
            page_query=lambda n: self._query(filters, None, **subject, page=n),
            csv_query=self._query(filters, None, **subject),
            csv_rows=queries.CSV_ROWS,
            **self._filter_context(filters, None, choices),
        )

    async def answers_csv(self, request: Request) -> Response:
        """Every row of a drill-down (up to CSV_ROWS), formula cells neutralized."""
        from worker.analytics.export import neutralize_formula

        try:
            filters, subject = self._drill_down(request)
        except params.BadFilter as exc:
            return PlainTextResponse(str(exc), status_code=400)
        stmt = queries.behind(subject.get("brand"), subject.get("domain"), filters)
        columns, rows, truncated = await self._read(lambda s: queries.rows_of(s, stmt))
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow(
                ""
                if v is None
                else v.isoformat()
                if isinstance(v, datetime)
                else neutralize_formula(v)
                if isinstance(v, str)
                else v
                for v in row
            )
        headers = {"content-disposition": 'attachment; filename="answers.csv"'}
        if truncated:
            headers["x-mentionsync-truncated"] = f"first {queries.CSV_ROWS} rows"
        return Response(
            out.getvalue().encode("utf-8"), media_type="text/csv; charset=utf-8", headers=headers
        )

    async def answer(self, request: Request) -> Response:
        vendor = request.path_params["vendor"]
        answer_id = request.path_params["answer_id"]
        found = await self._read(lambda session: queries.evidence(session, vendor, answer_id))
        response = self._page(
            request,
            "answer.html",
            e=found,
            provider=request.query_params.get("provider"),
        )
        if not found.found:
            response.status_code = 404
        return response

    async def answer_raw(self, request: Request) -> Response:
        """The stored payload, whole, as a download."""
        vendor = request.path_params["vendor"]
        answer_id = request.path_params["answer_id"]
        raw = await self._read(lambda session: queries.raw_payload(session, vendor, answer_id))
        if raw is None:
            return PlainTextResponse("no such answer", status_code=404)
        return Response(
            raw.encode("utf-8"),
            media_type="application/json",
            headers={"content-disposition": 'attachment; filename="payload.json"'},
        )

    # --- routing --------------------------------------------------------------------

    def routes(self) -> list[BaseRoute]:
        pages: list[tuple[str, Endpoint, str]] = [
            ("/", self.health, "health"),
            ("/visibility", self.visibility, "visibility"),
            ("/visibility/{kind}.csv", self.report_csv, "report_csv"),
            ("/visibility/{kind}", self.report_page, "report"),
            ("/answers", self.answers, "answers"),
            ("/answers.csv", self.answers_csv, "answers_csv"),
            ("/answers/{vendor}/{answer_id}/payload.json", self.answer_raw, "answer_raw"),
            ("/answers/{vendor}/{answer_id}", self.answer, "answer"),
        ]
        return [
            Route("/login", self.login_form, methods=["GET"], name="login"),
            Route("/login", self.login, methods=["POST"], name="login_submit"),
            Route("/logout", self.logout, methods=["POST"], name="logout"),
            Mount(
                "/static/dashboard",
                app=StaticFiles(directory=HERE / "static"),
                name="dashboard_static",
            ),
            *(
                Route(path, self._guarded(endpoint), methods=["GET"], name=name)
                for path, endpoint, name in pages
            ),
        ]


async def _read_capped(request: Request, limit: int) -> bytes | None:
    """The body, or None past `limit` bytes (the rest is not read)."""
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


async def dashboard_off(request: Request) -> Response:
    return PlainTextResponse(
        "The dashboard is off: set DASHBOARD_TOKEN and restart `mentionsync serve`.",
        status_code=404,
    )


def routes(settings: Settings, read_session: ReadSession) -> list[BaseRoute]:
    """The dashboard's routes when DASHBOARD_TOKEN is set; otherwise only `/`,
    saying how to turn it on."""
    token = settings.dashboard_token
    if token is None or not token.get_secret_value():
        return [Route("/", dashboard_off, methods=["GET"], name="health")]
    return Dashboard(settings, read_session).routes()
