"""The standard AI-visibility reports, computed by SQL over the analytics views.

Every number is a GROUP BY in the database, so a report costs the same memory on
a few million answers as on a few hundred; Python only arranges the result rows.
Definitions and formulas: docs/analytics.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    CTE,
    BigInteger,
    ColumnElement,
    Float,
    Select,
    Subquery,
    Table,
    Text,
    and_,
    case,
    cast,
    func,
    literal,
    literal_column,
    select,
    true,
    union_all,
)
from sqlalchemy.orm import Session

from models import CatalogBrand
from worker.analytics.stats import wilson
from worker.analytics.views import answer_facts, citation_facts, label_facts, mention_facts

TAG = "tag"
# `--by label:KEY`: a free label given at registration.
LABEL_PREFIX = "label:"


def label_key_of(by: str | None) -> str | None:
    """The label_facts key a grouping reads: `tag`, or KEY of `label:KEY`."""
    if by == TAG:
        return TAG
    if by is not None and by.startswith(LABEL_PREFIX) and len(by) > len(LABEL_PREFIX):
        return by[len(LABEL_PREFIX) :]
    return None


KINDS = ("share-of-voice", "visibility", "position", "sentiment", "citations", "domain-categories")
TIME_GROUPS = ("day", "week", "month")
# Labels given at registration, columns of every view (migration 0010).
LABEL_GROUPS = ("topic", "prompt", "country", "persona")
GROUPS = (*TIME_GROUPS, "provider", "model", "vendor", *LABEL_GROUPS, "tag", "group")
# Label of a group or domain the data leaves empty (a MentionLab model no
# provider is known for, a citation without a domain).
UNKNOWN = "(unknown)"
# An answer without that label, a brand without a competitor group.
NONE = "(none)"
# --own-vs-competitors: every brand the catalog does not know, as one.
OTHERS = "(everyone else)"
# The rate each report prints with its numerator and denominator, for the
# interval (worker/analytics/stats.py): (rate, numerator, denominator).
RATES = {
    "share-of-voice": ("share", "mentions", "total_mentions"),
    "visibility": ("visibility", "answers_mentioning", "answers"),
    "sentiment": ("positive_share", "positive", "labelled"),
    "citations": ("share", "citations", "total_citations"),
    "domain-categories": ("share", "citations", "total_citations"),
}
INTERVAL = ("numerator", "denominator", "ci_low", "ci_high")
LABELS = ("positive", "neutral", "negative")
PERIOD = ("period_first", "period_last")


@dataclass(frozen=True)
class Filters:
    since: datetime | None = None  # inclusive
    until: datetime | None = None  # exclusive
    brands: tuple[str, ...] = ()
    vendors: tuple[str, ...] = ()
    providers: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    topics: tuple[str, ...] = ()
    prompts: tuple[str, ...] = ()
    countries: tuple[str, ...] = ()
    personas: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()  # the brands' competitor groups
    labels: tuple[tuple[str, str], ...] = ()  # free labels: (key, value), all must hold
    # The own brand, each competitor and everyone else, instead of every brand.
    own_vs_competitors: bool = False
    # Groups with fewer answers are left out.
    min_answers: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            **{
                name: list(getattr(self, name))
                for name in (
                    "brands",
                    "vendors",
                    "providers",
                    "models",
                    "topics",
                    "prompts",
                    "countries",
                    "personas",
                    "tags",
                    "groups",
                )
            },
            "labels": [f"{key}={value}" for key, value in self.labels],
            "own_vs_competitors": self.own_vs_competitors,
            "min_answers": self.min_answers,
        }


# Filters on the label columns: (Filters field, view column).
LABEL_FILTERS = (
    ("topics", "topic"),
    ("prompts", "prompt"),
    ("countries", "country"),
    ("personas", "persona"),
)


@dataclass
class Report:
    kind: str
    by: str | None
    filters: Filters
    columns: list[str]
    rows: list[dict[str, Any]]
    # First and last instant covered: the filters' bounds, else the data's.
    period: tuple[datetime | None, datetime | None]
    series: str  # the column naming a line or bar of the chart: brand or domain
    metric: str  # the column the chart plots
    weight: str  # the count that ranks series when a chart shows only the largest
    notes: list[str] = field(default_factory=list)
    # compare and change: the report whose rate they set side by side.
    rate: str | None = None


@dataclass(frozen=True)
class _Shape:
    """What a report's rows hold, after the group column."""

    columns: tuple[str, ...]
    series: str
    metric: str
    weight: str
    notes: tuple[str, ...] = ()


SHAPES = {
    "share-of-voice": _Shape(
        ("brand", "mentions", "total_mentions", "share"), "brand", "share", "mentions"
    ),
    "visibility": _Shape(
        ("brand", "answers_mentioning", "answers", "visibility"),
        "brand",
        "visibility",
        "answers_mentioning",
    ),
    "position": _Shape(
        ("brand", "ranked_mentions", "avg_position", "best_position"),
        "brand",
        "avg_position",
        "ranked_mentions",
        ("Only MentionsAPI reports a rank; MentionLab mentions are left out.",),
    ),
    "sentiment": _Shape(
        ("brand", "mentions", "scored", "avg_score", *LABELS, "other", "unlabelled"),
        "brand",
        "avg_score",
        "scored",
    ),
    "citations": _Shape(
        ("domain", "citations", "total_citations", "share"), "domain", "share", "citations"
    ),
    "domain-categories": _Shape(
        ("category", "citations", "total_citations", "share"), "category", "share", "citations"
    ),
}


def group_expression(view: Table, by: str | None, dialect: str) -> ColumnElement[str]:
    """The text label of a row's group: a period start, a provider, a model, a vendor."""
    if by is None:
        return literal_column("'all'", Text)
    if by in ("provider", "model", "vendor"):
        return func.coalesce(view.c[by], UNKNOWN)
    if by in LABEL_GROUPS:
        return func.coalesce(view.c[by], NONE)
    if by == "group":
        # A brand's dimension: views without brands count every answer as one group.
        if "brand_group" not in view.c:
            return literal_column("'all'", Text)
        return func.coalesce(view.c.brand_group, NONE)
    if label_key_of(by) is not None:
        raise ValueError("tag and label groups join label_facts: use _base")
    if by not in TIME_GROUPS:
        raise ValueError(f"unknown grouping {by!r}; expected one of {GROUPS}")
    at = view.c.answered_at
    # Periods are UTC calendar days, ISO weeks (starting Monday) and months,
    # labelled by their first day so that labels sort in time order.
    if dialect == "postgresql":
        utc = func.timezone("UTC", at)
        if by == "week":
            utc = func.date_trunc("week", utc)
        return func.to_char(utc, "YYYY-MM" if by == "month" else "YYYY-MM-DD")
    # SQLite keeps timestamps as naive UTC text.
    if by == "day":
        return func.strftime("%Y-%m-%d", at)
    if by == "week":
        return func.date(at, "weekday 0", "-6 days")
    return func.strftime("%Y-%m", at)


def _conditions(view: Table, filters: Filters, *, brand: bool) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.since is not None:
        conditions.append(view.c.answered_at >= filters.since)
    if filters.until is not None:
        conditions.append(view.c.answered_at < filters.until)
    # Vendor and provider names are matched ignoring case ("OpenAI", "openai").
    if filters.vendors:
        conditions.append(view.c.vendor.in_([v.lower() for v in filters.vendors]))
    if filters.providers:
        conditions.append(func.lower(view.c.provider).in_([p.lower() for p in filters.providers]))
    if filters.models:
        conditions.append(view.c.model.in_(filters.models))
    for field_name, column in LABEL_FILTERS:
        if getattr(filters, field_name):
            conditions.append(view.c[column].in_(getattr(filters, field_name)))
    wanted = [(TAG, filters.tags)] if filters.tags else []
    for key, value in filters.labels:
        wanted.append((key, (value,)))
    for key, values in wanted:
        # Several values of one key: any of them; several keys: all of them.
        labelled = select(label_facts.c.answer_id).where(
            label_facts.c.vendor == view.c.vendor,
            label_facts.c.key == key,
            label_facts.c.value.in_(values),
        )
        conditions.append(view.c.answer_id.in_(labelled))
    # The group is a brand's: it narrows the brands, never the answers counted.
    if filters.groups and "brand_group" in view.c:
        conditions.append(view.c.brand_group.in_(filters.groups))
    if brand and filters.brands:
        conditions.append(_brand_expression(view, filters).in_(filters.brands))
    return conditions


def _brand_expression(view: Table, filters: Filters) -> ColumnElement[str]:
    """The brand a row counts for: --own-vs-competitors merges the unknown ones."""
    if filters.own_vs_competitors and "brand_id" in view.c:
        return case((view.c.brand_id.is_(None), OTHERS), else_=view.c.brand)
    return view.c.brand


def _base(view: Table, filters: Filters, by: str | None, dialect: str, *, brand: bool) -> Subquery:
    """The view's filtered rows with their group label as `grp`.

    Grouping by a column of a subquery, rather than repeating the expression,
    keeps Postgres from seeing two different expressions in SELECT and GROUP BY
    when the expression carries bound parameters. By tag (or a free label), an
    answer is a row of each of its values (or of `(none)`).
    """
    source: Any = view
    key = label_key_of(by)
    if key is not None:
        tags = label_facts.alias("labels")
        source = view.outerjoin(
            tags,
            and_(
                tags.c.vendor == view.c.vendor,
                tags.c.answer_id == view.c.answer_id,
                tags.c.key == key,
            ),
        )
        grp: ColumnElement[str] = func.coalesce(tags.c.value, NONE)
    else:
        grp = group_expression(view, by, dialect)
    columns: list[ColumnElement[Any]] = [c for c in view.c if c.name != "brand"]
    if "brand" in view.c:
        columns.append(_brand_expression(view, filters).label("brand"))
    return (
        select(grp.label("grp"), *columns)
        .select_from(source)
        .where(*_conditions(view, filters, brand=brand))
        .subquery()
    )


def _wanted_brands(brands: Sequence[str]) -> Subquery:
    rows = [select(cast(literal(b), Text).label("brand")) for b in brands]
    return (union_all(*rows) if len(rows) > 1 else rows[0]).subquery("wanted")


def _totals(base: Subquery, count: ColumnElement[Any]) -> CTE:
    """Per group: the denominator, and the first and last answer it counts."""
    return (
        select(
            base.c.grp,
            cast(count, BigInteger).label("total"),
            func.min(base.c.answered_at).label("first"),
            func.max(base.c.answered_at).label("last"),
        )
        .group_by(base.c.grp)
        .cte("totals")
    )


def _ratio(
    counts: CTE, totals: CTE, brands: Sequence[str], *, one_total: bool = False
) -> Select[tuple[Any, ...]]:
    """Per group and brand: `counts.n`, the group's `totals.total`, their ratio.

    With --brand, every requested brand gets a row in every group, at 0 when it
    was never mentioned there. The last two columns are the report's period.
    `one_total`: the denominator is the same for every group (visibility by a
    brand's group: every answer could have mentioned any group's brands).
    """
    if brands and not one_total:
        wanted = _wanted_brands(brands)
        n: ColumnElement[Any] = func.coalesce(counts.c.n, 0)
        source = totals.join(wanted, true()).outerjoin(
            counts, and_(counts.c.grp == totals.c.grp, counts.c.brand == wanted.c.brand)
        )
        brand = wanted.c.brand
        grp = totals.c.grp
    else:
        n = counts.c.n
        on = true() if one_total else totals.c.grp == counts.c.grp
        source = counts.join(totals, on)
        brand = counts.c.brand
        grp = counts.c.grp
    ratio = cast(n, Float) / totals.c.total
    return (
        select(
            grp,
            brand.label("brand"),
            n.label("n"),
            totals.c.total,
            ratio.label("ratio"),
            select(func.min(totals.c.first)).scalar_subquery(),
            select(func.max(totals.c.last)).scalar_subquery(),
        )
        .select_from(source)
        .order_by(grp, ratio.desc(), brand)
    )


def _period_over_rows(at: ColumnElement[datetime]) -> list[ColumnElement[datetime]]:
    """The first and last answer over every group of an aggregate query."""
    first, last = PERIOD
    return [func.min(func.min(at)).over().label(first), func.max(func.max(at)).over().label(last)]


def _run(
    session: Session, kind: str, stmt: Select[tuple[Any, ...]], filters: Filters, by: str | None
) -> Report:
    """Run a report's statement: its rows as dicts (the group column named after
    the grouping), and the period: the filters' bounds, else the first and last
    answer counted, which every statement gives as its last two columns."""
    shape = SHAPES[kind]
    rows = []
    first = last = None
    for row in session.execute(stmt):
        *values, first, last = row
        named = dict(zip(shape.columns, values[1:], strict=True))
        rows.append({by: values[0], **named} if by else named)
    since = filters.since or first
    until = filters.until - timedelta(microseconds=1) if filters.until else last
    return Report(
        kind,
        by,
        filters,
        [by, *shape.columns] if by else list(shape.columns),
        rows,
        (since, until),
        series=shape.series,
        metric=shape.metric,
        weight=shape.weight,
        notes=list(shape.notes),
    )


def _shares(
    session: Session,
    kind: str,
    base: Subquery,
    series: ColumnElement[Any],
    filters: Filters,
    by: str | None,
    wanted: Sequence[str] = (),
) -> Report:
    """Each series' rows ÷ all rows of its group, in one pass over `base`: counts
    per series, and from them the totals, which take every series whatever
    `wanted` selects."""
    counts = (
        select(
            base.c.grp,
            series.label("brand"),
            func.count().label("n"),
            func.min(base.c.answered_at).label("first"),
            func.max(base.c.answered_at).label("last"),
        )
        .group_by(base.c.grp, series)
        .cte("counts")
    )
    totals = (
        select(
            counts.c.grp,
            cast(func.sum(counts.c.n), BigInteger).label("total"),
            func.min(counts.c.first).label("first"),
            func.max(counts.c.last).label("last"),
        )
        .group_by(counts.c.grp)
        .cte("totals")
    )
    return _run(session, kind, _ratio(counts, totals, wanted), filters, by)


def share_of_voice(session: Session, filters: Filters, by: str | None, dialect: str) -> Report:
    m = _base(mention_facts, filters, by, dialect, brand=False)
    return _shares(session, "share-of-voice", m, m.c.brand, filters, by, filters.brands)


def domain_categories(session: Session, filters: Filters, by: str | None, dialect: str) -> Report:
    """Citations per domain category (own, competitor, ugc, reference, …) ÷ all citations."""
    c = _base(citation_facts, filters, by, dialect, brand=False)
    return _shares(session, "domain-categories", c, c.c.domain_category, filters, by)


def visibility(session: Session, filters: Filters, by: str | None, dialect: str) -> Report:
    # mention_facts has one row per brand and answer, so counting its rows counts
    # the answers that mention the brand.
    m = _base(mention_facts, filters, by, dialect, brand=True)
    # Merged brands (everyone else) can share an answer: count answers, not rows.
    n = func.count(m.c.answer_key.distinct()) if filters.own_vs_competitors else func.count()
    counts = select(m.c.grp, m.c.brand, n.label("n")).group_by(m.c.grp, m.c.brand).cte("counts")
    one_total = by == "group"
    answers = _base(answer_facts, filters, None if one_total else by, dialect, brand=False)
    totals = _totals(answers, func.count())
    stmt = _ratio(counts, totals, filters.brands, one_total=one_total)
    return _run(session, "visibility", stmt, filters, by)


def position(session: Session, filters: Filters, by: str | None, dialect: str) -> Report:
    m = _base(mention_facts, filters, by, dialect, brand=True)
    avg = cast(func.avg(cast(m.c.rank, Float)), Float)
    stmt = (
        select(
            m.c.grp,
            m.c.brand,
            func.count(m.c.rank),
            avg.label("avg_position"),
            func.min(m.c.rank),
            *_period_over_rows(m.c.answered_at),
        )
        .where(m.c.rank.is_not(None))
        .group_by(m.c.grp, m.c.brand)
        .order_by(m.c.grp, avg, m.c.brand)
    )
    return _run(session, "position", stmt, filters, by)


def sentiment(session: Session, filters: Filters, by: str | None, dialect: str) -> Report:
    m = _base(mention_facts, filters, by, dialect, brand=True)
    label = m.c.sentiment_label

    def labelled(condition: ColumnElement[bool]) -> ColumnElement[int]:
        return func.sum(case((condition, 1), else_=0))

    stmt = (
        select(
            m.c.grp,
            m.c.brand,
            func.count(),
            func.count(m.c.sentiment_score),
            cast(func.avg(m.c.sentiment_score), Float),
            *(labelled(label == name) for name in LABELS),
            labelled(and_(label.is_not(None), label.not_in(LABELS))),
            labelled(label.is_(None)),
            *_period_over_rows(m.c.answered_at),
        )
        .group_by(m.c.grp, m.c.brand)
        .order_by(m.c.grp, func.count().desc(), m.c.brand)
    )
    return _run(session, "sentiment", stmt, filters, by)


def citations(
    session: Session,
    filters: Filters,
    by: str | None,
    dialect: str,
    *,
    top: int = 10,
    top_urls: int = 3,
) -> Report:
    base = _base(citation_facts, filters, by, dialect, brand=False)
    conditions = []
    if filters.brands:
        # Citations of the answers that mention one of the brands.
        conditions.append(
            base.c.answer_key.in_(
                select(mention_facts.c.answer_key).where(mention_facts.c.brand.in_(filters.brands))
            )
        )
    # Own vs competitors: a brand's domains as that brand, every other as one.
    domain_label: ColumnElement[Any] = (
        func.coalesce(base.c.domain_brand, OTHERS)
        if filters.own_vs_competitors
        else func.coalesce(base.c.domain, UNKNOWN)
    )
    c = (
        select(
            base.c.grp,
            domain_label.label("domain"),
            base.c.url,
            base.c.answered_at,
        )
        .where(*conditions)
        .cte("c")
    )
    n = func.count()
    domains = (
        select(
            c.c.grp,
            c.c.domain,
            n.label("citations"),
            cast(func.sum(n).over(partition_by=c.c.grp), BigInteger).label("total"),
            func.row_number()
            .over(partition_by=c.c.grp, order_by=(n.desc(), c.c.domain))
            .label("place"),
            *_period_over_rows(c.c.answered_at),
        )
        .group_by(c.c.grp, c.c.domain)
        .cte("domains")
    )
    share = cast(domains.c.citations, Float) / domains.c.total
    stmt = (
        select(
            domains.c.grp,
            domains.c.domain,
            domains.c.citations,
            domains.c.total,
            share,
            *(domains.c[name] for name in PERIOD),
        )
        .where(domains.c.place <= top)
        .order_by(domains.c.grp, domains.c.place)
    )
    report = _run(session, "citations", stmt, filters, by)

    urls = (
        select(
            c.c.grp,
            c.c.domain,
            c.c.url,
            n.label("citations"),
            func.row_number()
            .over(partition_by=(c.c.grp, c.c.domain), order_by=(n.desc(), c.c.url))
            .label("place"),
        )
        .where(c.c.url.is_not(None))
        .group_by(c.c.grp, c.c.domain, c.c.url)
        .subquery("urls")
    )
    top_url_rows = session.execute(
        select(urls.c.grp, urls.c.domain, urls.c.url, urls.c.citations)
        .join(domains, and_(domains.c.grp == urls.c.grp, domains.c.domain == urls.c.domain))
        .where(domains.c.place <= top, urls.c.place <= top_urls)
        .order_by(urls.c.grp, urls.c.domain, urls.c.place)
    )
    by_domain: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for grp, domain, url, count in top_url_rows:
        by_domain.setdefault((grp, domain), []).append({"url": url, "citations": count})
    for row in report.rows:
        grp = row[by] if by else "all"
        row["top_urls"] = by_domain.get((grp, row["domain"]), [])
    report.columns.append("top_urls")
    return report


def _answers_per_group(
    session: Session, filters: Filters, by: str | None, dialect: str
) -> dict[str, int]:
    """How many answers each group holds (--min-answers); one count by brand group."""
    a = _base(answer_facts, filters, None if by == "group" else by, dialect, brand=False)
    counts = session.execute(select(a.c.grp, func.count()).group_by(a.c.grp))
    return {grp: n for grp, n in counts}  # noqa: C416 (rows, not pairs, to dict())


def own_and_competitors(session: Session) -> dict[str, bool]:
    """The catalog's brands: name -> own."""
    rows = session.execute(select(CatalogBrand.name, CatalogBrand.own).order_by(CatalogBrand.name))
    return {name: bool(own) for name, own in rows}


def add_intervals(report: Report) -> None:
    """Numerator, denominator and 95% Wilson interval on every row of a rate report."""
    if report.kind == "sentiment":
        for row in report.rows:
            row["labelled"] = row["mentions"] - row["unlabelled"]
            row["positive_share"] = row["positive"] / row["labelled"] if row["labelled"] else None
        report.columns += ["labelled", "positive_share"]
    if report.kind not in RATES:
        return
    _rate, numerator, denominator = RATES[report.kind]
    for row in report.rows:
        k, n = row[numerator] or 0, row[denominator] or 0
        row["numerator"], row["denominator"] = k, n
        row["ci_low"], row["ci_high"] = wilson(k, n)
    # top_urls stays last.
    columns = report.columns
    at = columns.index("top_urls") if "top_urls" in columns else len(columns)
    columns[at:at] = list(INTERVAL)


def run_report(
    session: Session,
    kind: str,
    filters: Filters,
    by: str | None = None,
    *,
    top: int = 10,
    top_urls: int = 3,
) -> Report:
    dialect = session.get_bind().dialect.name
    # A brand given twice is one brand (it would otherwise get two rows).
    brands = tuple(dict.fromkeys(filters.brands))
    roles: dict[str, bool] = {}
    if filters.own_vs_competitors:
        roles = own_and_competitors(session)
        if not brands and kind != "citations":
            # Every catalog brand gets its row, at 0 where it is never mentioned.
            # The own brand first, then the competitors, everyone else last.
            brands = (*sorted(roles, key=lambda name: not roles[name]), OTHERS)
    filters = replace(filters, brands=brands)
    if by == "group" and kind in ("citations", "domain-categories"):
        raise ValueError("--by group groups brands; citations have none")
    if kind == "share-of-voice":
        report = share_of_voice(session, filters, by, dialect)
    elif kind == "visibility":
        report = visibility(session, filters, by, dialect)
    elif kind == "position":
        report = position(session, filters, by, dialect)
    elif kind == "sentiment":
        report = sentiment(session, filters, by, dialect)
    elif kind == "citations":
        report = citations(session, filters, by, dialect, top=top, top_urls=top_urls)
    elif kind == "domain-categories":
        report = domain_categories(session, filters, by, dialect)
    else:
        raise ValueError(f"unknown report {kind!r}; expected one of {KINDS}")
    add_intervals(report)
    if filters.own_vs_competitors:
        for row in report.rows:
            name = row[report.series]
            row["role"] = ("own" if roles[name] else "competitor") if name in roles else "others"
        report.columns.insert(report.columns.index(report.series) + 1, "role")
    if filters.min_answers > 0:
        answers = _answers_per_group(session, filters, by, dialect)
        kept = [
            row
            for row in report.rows
            if answers.get(row[by] if by else "all", 0) >= filters.min_answers
        ]
        hidden = len({row[by] if by else "all" for row in report.rows}) - len(
            {row[by] if by else "all" for row in kept}
        )
        if hidden:
            report.notes.append(
                f"{hidden} groups with fewer than {filters.min_answers} answers are hidden."
            )
        report.rows = kept
    return report
