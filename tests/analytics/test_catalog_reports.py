"""Issue 14 on the hand-built archive (conftest.py), every number worked out by hand.

The archive's answers, as test_analytics_reports.py lists them:

    answer                day    mentions                     citations (domain)
    ask_a1 openai         11-02  Acme, Globex                 example.com x2
    ask_a1 anthropic      11-02  Globex                       news.site
    ask_a2 openai         11-03  Acme, Initech                example.com
    L1 openai (gpt-4o)    11-03  Acme, Globex, Initech        example.com x2, other.org
    ask_a3 perplexity     11-09  -                            example.com, other.org
    ask_a5 google         11-10  Initech                      -
    L2 anthropic          11-10  -                            -
    L4 microsoft          11-11  Acme                         other.org

8 answers (5 MentionsAPI, 3 MentionLab); Acme is in 4, Globex 3, Initech 3.
10 citations: example.com 6, other.org 3, news.site 1.

Wilson intervals quoted below are the published values of the 95% interval
(e.g. 3 of 10: 0.1078 to 0.6032), not recomputed with the code under test.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from sqlalchemy import select

from models import AnswerLabel, LabelScope, Vendor
from tests.analytics.conftest import FETCHED, L1_ID, PROJECT, _ask, _mention, at
from tests.helpers import cli
from tests.resources import read_session, session_scope
from worker.analytics.catalog import (
    add_brand,
    group_names,
    import_catalog,
    parse_catalog_csv,
    suggest,
)
from worker.analytics.compare import change, compare
from worker.analytics.labels import LabelledId, store_labels
from worker.analytics.reports import OTHERS, Filters, Report, run_report
from worker.analytics.stats import difference, wilson
from worker.analytics.views import citation_facts, label_facts, mention_facts
from worker.config import load_settings
from worker.normalize.names import suggest_key
from worker.registry import label_arguments, register
from worker.store import upsert_answers
from worker.vendors.mentionlab.normalize import normalize_execution
from worker.vendors.mentionsapi.normalize import normalize_ask

CATALOG = """brand,alias,own,group,domain
Acme,ACME Inc.,true,tools,example.com
Globex,,false,tools,site
"""


def approx(value: float) -> Any:
    return pytest.approx(value, abs=5e-5)


def rows_by(report: Report, *columns: str) -> dict[tuple[Any, ...], tuple[Any, ...]]:
    key = [c for c in (report.by, report.series) if c]
    return {tuple(r[c] for c in key): tuple(r[c] for c in columns) for r in report.rows}


def run(kind: str, by: str | None = None, **filters: Any) -> Report:
    with read_session() as session:
        return run_report(session, kind, Filters(**filters), by)


def load_catalog(text: str = CATALOG) -> None:
    import io

    with session_scope() as session:
        import_catalog(session, parse_catalog_csv(io.StringIO(text)))


def add_variant_ask() -> None:
    """ask_v1, 2026-11-12: one openai answer naming Acme twice, spelled two ways."""
    with session_scope() as session:
        register(
            session,
            Vendor.MENTIONSAPI,
            label_arguments(["ask_v1"]),
            settings=load_settings(),
            created_at=at("2026-11-12T10:00:00Z"),
            now=FETCHED,
        )
        body = _ask(
            "ask_v1",
            [("openai", "gpt-4o", [])],
            [_mention("ACME Inc.", "openai", 0, "positive"), _mention("acmé", "openai", 1, None)],
        )
        upsert_answers(session, [normalize_ask(body, ask_id="ask_v1", fetched_at=FETCHED)])


# --- intervals ----------------------------------------------------------------


def test_wilson_and_newcombe_match_published_values() -> None:
    assert wilson(3, 10) == (approx(0.1078), approx(0.6032))
    assert wilson(0, 10) == (0.0, approx(0.2775))
    assert wilson(10, 10) == (approx(0.7225), approx(1.0))
    assert wilson(1, 4) == (approx(0.0456), approx(0.6994))
    assert wilson(0, 0) == (None, None)
    # Newcombe (1998), table II, example (a): 56/70 against 48/80.
    d = difference(48, 80, 56, 70)
    assert (d.value, d.low, d.high) == (approx(0.2), approx(0.0524), approx(0.3339))
    assert d.verdict == "up"
    assert difference(56, 70, 48, 80).verdict == "down"
    assert difference(1, 4, 3, 4).verdict == "within uncertainty"


def test_every_rate_carries_its_interval(archive: str) -> None:
    result = run("visibility", "vendor")
    got = rows_by(result, "visibility", "numerator", "denominator", "ci_low", "ci_high")
    # MentionsAPI 5 answers, Acme in a1o a2o: 2/5 (0.1176 to 0.7693).
    assert got[("mentionsapi", "Acme")] == (0.4, 2, 5, approx(0.1176), approx(0.7693))
    # MentionLab 3 answers, Globex in L1: 1/3 (0.0615 to 0.7923).
    assert got[("mentionlab", "Globex")] == (approx(1 / 3), 1, 3, approx(0.0615), approx(0.7923))
    share = rows_by(run("share-of-voice"), "numerator", "denominator", "ci_low", "ci_high")
    assert share[("Globex",)] == (3, 10, approx(0.1078), approx(0.6032))
    cites = rows_by(run("citations"), "numerator", "denominator", "ci_low", "ci_high")
    # other.org: 3 of 10 citations.
    assert cites[("other.org",)] == (3, 10, approx(0.1078), approx(0.6032))
    # Sentiment share: positive of the labelled mentions. Acme's 4 mentions:
    # a1o mixed, a2o none, L1 80 (positive), L4 50 (neutral): 1 of 3 labelled.
    senti = rows_by(run("sentiment"), "positive_share", "numerator", "denominator")
    assert senti[("Acme",)] == (approx(1 / 3), 1, 3)


def test_min_answers_hides_small_groups(archive: str) -> None:
    result = run("visibility", "vendor", min_answers=4)
    # MentionLab has 3 answers: hidden; MentionsAPI's 5 stay.
    assert {r["vendor"] for r in result.rows} == {"mentionsapi"}
    assert result.notes[-1] == "1 groups with fewer than 4 answers are hidden."


# --- the catalog ------------------------------------------------------------------


def test_aliases_resolve_and_a_catalog_change_shows_in_the_next_report(archive: str) -> None:
    add_variant_ask()
    before = rows_by(run("visibility"), "numerator", "denominator")
    # Raw names: 9 answers; the two spellings are two brands.
    assert before[("ACME Inc.",)] == (1, 9) and before[("acmé",)] == (1, 9)
    assert before[("Acme",)] == (4, 9)

    load_catalog()
    after = run("visibility")
    # "ACME Inc." by its alias, "acmé" folded to the canonical "Acme": ask_v1
    # is one more answer mentioning Acme, counted once.
    assert rows_by(after, "numerator", "denominator") == {
        ("Acme",): (5, 9),
        ("Globex",): (3, 9),
        ("Initech",): (3, 9),
    }
    with session_scope() as session:
        (row,) = session.execute(
            select(
                mention_facts.c.brand,
                mention_facts.c.raw_brand,
                mention_facts.c.occurrences,
                mention_facts.c.rank,
                mention_facts.c.own,
                mention_facts.c.brand_group,
            ).where(mention_facts.c.answer_id == "ask_v1")
        ).all()
    # One mention: best rank 0 -> 1, both spellings counted, the smallest raw name.
    assert tuple(row) == ("Acme", "ACME Inc.", 2, 1, True, "tools")

    # The next report follows a catalog change: no re-sync, no reprocess.
    with session_scope() as session:
        add_brand(session, "Initech Corp", aliases=[], own=False)
    assert ("Initech",) in rows_by(run("visibility"), "numerator")  # not an alias yet
    result = cli("brands", "alias", "Initech Corp", "INITECH")
    assert result.returncode == 0, result.stderr
    got = rows_by(run("visibility"), "numerator")
    assert got[("Initech Corp",)] == (3,) and ("Initech",) not in got
    result = cli("brands", "remove", "Acme")
    assert result.returncode == 0, result.stderr
    got = rows_by(run("visibility"), "numerator")
    assert got[("Acme",)] == (4,) and got[("ACME Inc.",)] == (1,)


def test_display_key_alias(archive: str) -> None:
    # MentionLab's displayKey names the entity whatever its display name.
    with session_scope() as session:
        from models import AliasKind

        add_brand(session, "Globex Corporation", aliases=[(AliasKind.DISPLAY_KEY, "key-Globex")])
    got = rows_by(run("visibility", "vendor"), "numerator")
    assert got[("mentionlab", "Globex Corporation")] == (1,)
    assert got[("mentionsapi", "Globex")] == (2,)  # MentionsAPI has no displayKey


def test_import_export_round_trip_and_replace(archive: str, tmp_path: Path) -> None:
    path = tmp_path / "brands.csv"
    path.write_text(CATALOG, encoding="utf-8")
    result = cli("brands", "import", str(path))
    assert result.returncode == 0, result.stderr
    assert "2 brands, 1 aliases, 2 domains" in result.stderr
    exported = cli("brands", "export")
    assert exported.returncode == 0, exported.stderr
    again = tmp_path / "again.csv"
    again.write_text(exported.stdout, encoding="utf-8")
    listed = cli("brands", "list", "--format", "json").stdout
    assert cli("brands", "import", str(again)).returncode == 0
    assert cli("brands", "list", "--format", "json").stdout == listed
    assert orjson.loads(listed)[0] == {
        "brand": "Acme",
        "own": True,
        "group": "tools",
        "aliases": [{"match": "name", "alias": "ACME Inc."}],
        "domains": ["example.com"],
    }
    # Importing replaces: Globex is gone.
    path.write_text("brand,alias,own\nAcme,,true\n", encoding="utf-8")
    assert cli("brands", "import", str(path)).returncode == 0
    assert [b["brand"] for b in orjson.loads(cli("brands", "list", "--format", "json").stdout)] == [
        "Acme"
    ]
    # One spelling, one brand: the file is refused and the catalog kept.
    path.write_text("brand,alias,own\nAcme,x,true\nGlobex,X,false\n", encoding="utf-8")
    result = cli("brands", "import", str(path))
    assert result.returncode == 1 and "already belongs to 'Acme'" in result.stderr
    assert len(orjson.loads(cli("brands", "list", "--format", "json").stdout)) == 1


# --- own vs competitors, compare, change ------------------------------------------


def test_own_vs_competitors(archive: str) -> None:
    load_catalog()
    result = run("visibility", own_vs_competitors=True)
    # Initech is not in the catalog: everyone else, in a2o, L1 and a5g.
    assert rows_by(result, "role", "numerator", "denominator") == {
        ("Acme",): ("own", 4, 8),
        ("Globex",): ("competitor", 3, 8),
        (OTHERS,): ("others", 3, 8),
    }
    share = run("share-of-voice", own_vs_competitors=True)
    assert rows_by(share, "numerator", "denominator")[(OTHERS,)] == (3, 10)


def test_compare_per_vendor(archive: str) -> None:
    with read_session() as session:
        result = compare(session, "visibility", Filters(brands=("Acme",)))
    got = {r["vendor"]: r for r in result.rows}
    assert (got["mentionsapi"]["numerator"], got["mentionsapi"]["denominator"]) == (2, 5)
    assert (got["mentionlab"]["numerator"], got["mentionlab"]["denominator"]) == (2, 3)
    # 2/3 - 2/5 = 0.2667; Newcombe's interval (-0.3224, 0.6586) includes 0.
    assert got["mentionlab"]["difference"] == approx(0.2667)
    assert (got["mentionlab"]["difference_ci_low"], got["mentionlab"]["difference_ci_high"]) == (
        approx(-0.3224),
        approx(0.6586),
    )
    assert got["mentionsapi"]["verdict"] == "within uncertainty"


def test_change_on_the_previous_period(archive: str) -> None:
    with read_session() as session:
        result = change(
            session,
            "visibility",
            Filters(since=at("2026-11-09T00:00:00Z"), until=at("2026-11-16T00:00:00Z")),
        )
    got = {r["brand"]: r for r in result.rows}
    # Week of 11-02: 4 answers, Acme in 3; week of 11-09: 4 answers, Acme in L4 only.
    acme = got["Acme"]
    assert (acme["previous_numerator"], acme["previous_denominator"]) == (3, 4)
    assert (acme["numerator"], acme["denominator"]) == (1, 4)
    assert (acme["change"], acme["change_ci_low"], acme["change_ci_high"]) == (
        -0.5,
        approx(-0.7891),
        approx(0.1355),
    )
    assert acme["verdict"] == "within uncertainty"
    # Globex: 3 of 4, then never: 0 of 4, not a missing row.
    assert (got["Globex"]["numerator"], got["Globex"]["denominator"]) == (0, 4)


# --- labels -------------------------------------------------------------------


def label(vendor: Vendor, scope: LabelScope, external_id: str, **labels: list[str]) -> None:
    with session_scope() as session:
        store_labels(
            session,
            vendor,
            [LabelledId("test", external_id, dict(labels))],
            project_id=PROJECT if vendor is Vendor.MENTIONLAB else "",
            scope=scope,
        )


def test_visibility_by_topic_json(archive: str, tmp_path: Path) -> None:
    ids = tmp_path / "ids.csv"
    ids.write_text("id,topic,tags,persona\nask_a1,crm,a;b,cto\nask_a2,crm,b,\n", encoding="utf-8")
    result = cli("track", "mentionsapi", "--file", str(ids))
    assert result.returncode == 0, result.stderr
    assert "0 registered, 2 already tracked, 0 rejected, 2 labelled" in result.stderr
    label(Vendor.MENTIONLAB, LabelScope.EXECUTION, L1_ID, topic=["db"])
    result = cli("report", "visibility", "--by", "topic", "--brand", "Acme", "--format", "json")
    assert result.returncode == 0, result.stderr
    rows = {r["topic"]: r for r in orjson.loads(result.stdout)["rows"]}
    # crm: a1o a1a a2o, Acme in two; db: L1; none: a3 a5g L2 L4, Acme in L4.
    assert {t: (r["brand"], r["numerator"], r["denominator"]) for t, r in rows.items()} == {
        "crm": ("Acme", 2, 3),
        "db": ("Acme", 1, 1),
        "(none)": ("Acme", 1, 4),
    }
    assert (rows["crm"]["visibility"], rows["crm"]["ci_low"], rows["crm"]["ci_high"]) == (
        approx(2 / 3),
        approx(0.2077),
        approx(0.9385),
    )
    assert (rows["db"]["ci_low"], rows["db"]["ci_high"]) == (approx(0.2065), approx(1.0))
    # By tag an answer counts in each of its tags: a: a1 (2 answers); b: a1, a2 (3).
    tags = rows_by(run("visibility", "tag", brands=("Acme",)), "numerator", "denominator")
    assert tags[("a", "Acme")] == (1, 2) and tags[("b", "Acme")] == (2, 3)
    # Filters likewise.
    only = rows_by(run("visibility", topics=("crm",), personas=("cto",)), "denominator")
    assert set(only.values()) == {(2,)}  # ask_a1's two answers


def test_mentionlab_labels_per_query_and_job(backend: str) -> None:
    from tests.analytics.conftest import _entity, _run

    run_id = "55555555-5555-4555-8555-555555555555"
    query = "66666666-6666-4666-8666-666666666666"
    job = "77777777-7777-4777-8777-777777777777"
    body = _run(
        run_id, "success", "gpt-4o", [_entity("Acme", True, 90.0)], [], "2026-11-10T09:00:00.000Z"
    )
    body.update({"queryId": query, "jobId": job, "country": "DE"})
    with session_scope() as session:
        upsert_answers(
            session,
            [
                normalize_execution(
                    body, job_execution_id=run_id, project_id=PROJECT, fetched_at=FETCHED
                )
            ],
        )
    label(Vendor.MENTIONLAB, LabelScope.JOB, job, topic=["from job"], persona=["buyer"])
    label(Vendor.MENTIONLAB, LabelScope.QUERY, query, topic=["from query"], tag=["x", "y"])

    def labels() -> dict[str, list[str]]:
        with session_scope() as session:
            got: dict[str, list[str]] = {}
            for key, value in session.execute(select(label_facts.c.key, label_facts.c.value)):
                got.setdefault(key, []).append(value)
            return {k: sorted(v) for k, v in got.items()}

    # The query is more specific than the job; the job still gives the persona.
    assert labels() == {"topic": ["from query"], "persona": ["buyer"], "tag": ["x", "y"]}
    label(Vendor.MENTIONLAB, LabelScope.EXECUTION, run_id, topic=["own"], country=["FR"])
    assert labels()["topic"] == ["own"]
    with session_scope() as session:
        (dims,) = session.execute(
            select(mention_facts.c.topic, mention_facts.c.persona, mention_facts.c.country)
        ).all()
    assert tuple(dims) == ("own", "buyer", "FR")  # a label wins over the run's country
    with session_scope() as session:
        stored = session.scalars(select(AnswerLabel.scope).distinct()).all()
    assert set(stored) == {LabelScope.JOB, LabelScope.QUERY, LabelScope.EXECUTION}


# --- citations and domain categories -----------------------------------------------------


def test_every_url_once_per_answer(backend: str) -> None:
    # Two providers; openai lists /a twice; the top-level list has /a, /b
    # (anthropic's) and /z, which no provider cites.
    body = _ask(
        "ask_c1",
        [
            ("openai", "gpt-4o", [{"url": "https://a.com/a"}, {"url": "https://a.com/a"}]),
            ("anthropic", "claude", [{"url": "https://b.com/b"}]),
        ],
        [],
        citations=[
            {"url": "https://a.com/a"},
            {"url": "https://b.com/b"},
            {"url": "https://z.com/z"},
        ],
    )
    with session_scope() as session:
        upsert_answers(session, [normalize_ask(body, ask_id="ask_c1", fetched_at=FETCHED)])
        got = sorted(
            session.execute(select(citation_facts.c.provider, citation_facts.c.url)).all(),
            key=repr,
        )
    assert [tuple(r) for r in got] == sorted(
        [
            ("openai", "https://a.com/a"),
            ("anthropic", "https://b.com/b"),
            # Served by the vendor, cited by no provider: the ask's, provider unknown.
            (None, "https://z.com/z"),
        ],
        key=repr,
    )


def test_domain_categories(archive: str) -> None:
    load_catalog()  # example.com is Acme's (own); site is Globex's, news.site its subdomain
    result = cli("domains", "set", "other.org", "reference")
    assert result.returncode == 0, result.stderr
    got = rows_by(run("domain-categories"), "numerator", "denominator")
    assert got == {("own",): (6, 10), ("reference",): (3, 10), ("competitor",): (1, 10)}
    # The shipped list: en.wikipedia.org is wikipedia.org's, reference.
    with session_scope() as session:
        from worker.analytics.views import domain_category_map

        shipped = dict(
            session.execute(
                select(domain_category_map.c.domain, domain_category_map.c.category)
            ).all()
        )
    assert shipped["reddit.com"] == "ugc" and shipped["wikipedia.org"] == "reference"
    # Own vs competitors on citations: a brand's domains as that brand.
    owners = rows_by(run("citations", own_vs_competitors=True), "numerator")
    assert owners == {("Acme",): (6,), ("Globex",): (1,), (OTHERS,): (3,)}


# --- brands suggest -----------------------------------------------------------------


# What a person groups, and what they keep apart.
SAME = [
    ("HubSpot", "Hubspot", "HUBSPOT", "HubSpot CRM", "HubSpot, Inc.", "Hub-Spot"),
    ("Café Crème", "Cafe Creme", "CAFÉ CRÈME"),
    ("Zoho CRM", "Zoho", "zoho crm"),
    ("Acme Corp", "ACME Corporation", "Acme Inc", "acme"),
    ("Fly.io", "fly io", "FLY.IO"),
    ("🚀 RocketDB", "RocketDB"),
    ("Müller & Söhne", "Muller & Sohne", "MÜLLER & SÖHNE GmbH"),
]
APART = [
    ("Café Crème", "Crème Brûlée Data"),  # share a word, different brands
    ("Crunchy Data", "Crunchy"),  # "Data" is not a suffix
    ("Neon", "Aiven"),
    ("CRM", "HubSpot CRM"),  # a bare suffix is its own name
]


def test_suggest_keys_group_what_a_person_would() -> None:
    from simulator.dataset import BRANDS

    for names in SAME:
        assert len({suggest_key(n) for n in names}) == 1, names
    for a, b in APART:
        assert suggest_key(a) != suggest_key(b), (a, b)
    # The simulator's 30 messy names are 30 brands: none grouped with another.
    assert len({suggest_key(n) for n in BRANDS}) == len(BRANDS)
    groups = group_names([("Hubspot", 2), ("HubSpot", 5), ("Neon", 3), ("HubSpot CRM", 1)])
    assert [(g.names, g.mentions) for g in groups] == [
        ([("HubSpot", 5), ("Hubspot", 2), ("HubSpot CRM", 1)], 8),
        ([("Neon", 3)], 3),
    ]


def test_suggest_on_the_archive(archive: str) -> None:
    add_variant_ask()
    load_catalog("brand,alias,own\nGlobex,,false\n")
    with read_session() as session:
        got = [(g.names, g.alias_of) for g in suggest(session)]
    # Acme's three spellings group (5 answers); Initech alone; Globex is catalogued.
    assert got == [
        ([("Acme", 4), ("ACME Inc.", 1), ("acmé", 1)], None),
        ([("Initech", 3)], None),
    ]


def test_track_a_json_lines_file(backend: str, tmp_path: Path) -> None:
    ids = tmp_path / "ids.jsonl"
    ids.write_text(
        '{"id": "ask_j1", "topic": "crm", "tags": ["a", "b"], "campaign": "q4"}\n'
        "\n"
        '{"id": "ask_j2", "tags": "c;d"}\n'
        '{"id": "ask j3"}\n'
        '{"id": "ask_j4", "topic": 7}\n'
        "not json\n",
        encoding="utf-8",
    )
    result = cli("track", "mentionsapi", "--file", str(ids))
    # ask j3 (whitespace), ask_j4 (a number) and the last line are rejected by line.
    assert result.returncode == 1
    assert "2 registered, 0 already tracked, 3 rejected, 2 labelled" in result.stderr
    assert "line 4: 'ask j3': contains whitespace" in result.stderr
    assert "line 5" in result.stderr and "line 6" in result.stderr
    with session_scope() as session:
        got = sorted(
            tuple(r)
            for r in session.execute(
                select(AnswerLabel.external_id, AnswerLabel.key, AnswerLabel.value)
            )
        )
    assert got == [
        ("ask_j1", "campaign", "q4"),
        ("ask_j1", "tag", "a"),
        ("ask_j1", "tag", "b"),
        ("ask_j1", "topic", "crm"),
        ("ask_j2", "tag", "c"),
        ("ask_j2", "tag", "d"),
    ]


def test_suggest_groups_the_simulators_spellings(backend: str) -> None:
    """On answers the simulator serves: each group holds one brand's spellings,
    and each brand's spellings are one group."""
    from simulator.dataset import BRAND_VARIANTS, BRANDS, Dataset

    dataset = Dataset(seed=3)
    answers = []
    for ask_id in dataset.ask_ids(150):
        if dataset.fate("mentionsapi", ask_id) == "succeeded":
            _, body = dataset.final_response("mentionsapi", ask_id)
            answers.append(normalize_ask(body, ask_id=ask_id, fetched_at=FETCHED))
    for project, run_id in dataset.execution_ids(150):
        if dataset.fate("mentionlab", run_id) in ("success", "retried"):
            _, body = dataset.final_response("mentionlab", run_id, project)
            answers.append(
                normalize_execution(
                    body, job_execution_id=run_id, project_id=project, fetched_at=FETCHED
                )
            )
    with session_scope() as session:
        upsert_answers(session, answers)
    brand_of = {b: b for b in BRANDS} | {v: b for b, vs in BRAND_VARIANTS.items() for v in vs}
    with read_session() as session:
        groups = suggest(session)
    group_of: dict[str, int] = {}
    for i, group in enumerate(groups):
        brands = {brand_of[name] for name, _ in group.names}
        assert len(brands) == 1, group.names  # nothing a person would keep apart
        brand = brands.pop()
        assert brand not in group_of, brand  # every spelling of a brand in one group
        group_of[brand] = i
    spelled = [g for g in groups if len(g.names) > 1]
    # The simulator does spell some brands several ways, and they are grouped.
    assert len(spelled) >= 5, [g.names for g in groups]
    assert [g.mentions for g in groups] == sorted((g.mentions for g in groups), reverse=True)


def test_free_labels_as_dimension_and_filter(archive: str) -> None:
    label(Vendor.MENTIONSAPI, LabelScope.ASK, "ask_a1", campaign=["q4"])
    label(Vendor.MENTIONSAPI, LabelScope.ASK, "ask_a2", campaign=["q3"])
    got = rows_by(run("visibility", "label:campaign", brands=("Acme",)), "numerator", "denominator")
    # q4: a1o a1a, Acme in a1o; q3: a2o; none: a3 a5g L1 L2 L4, Acme in L1 L4.
    assert got == {
        ("q4", "Acme"): (1, 2),
        ("q3", "Acme"): (1, 1),
        ("(none)", "Acme"): (2, 5),
    }
    result = cli(
        "report",
        "share-of-voice",
        "--label",
        "campaign=q4",
        "--by",
        "label:campaign",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    rows = orjson.loads(result.stdout)["rows"]
    # ask_a1: Acme and Globex in openai's answer, Globex in anthropic's: 3 mentions.
    assert {(r["label:campaign"], r["brand"], r["numerator"], r["denominator"]) for r in rows} == {
        ("q4", "Globex", 2, 3),
        ("q4", "Acme", 1, 3),
    }
    assert cli("report", "visibility", "--by", "label:").returncode == 2
