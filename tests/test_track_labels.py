"""Labels at registration through POST /v1/track, and revision 0010 going down
to exactly the views it replaced."""

from __future__ import annotations

import orjson
import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, select

from models import AnswerLabel, LabelScope, Vendor
from tests.resources import session_scope, suite_db
from tests.test_migrations import alembic_config, scratch_postgres, scratch_sqlite  # noqa: F401
from worker.config import load_settings
from worker.intake.app import parse_track_request, track_groups


def stored() -> list[tuple[str, str, str, str, str]]:
    with session_scope() as session:
        rows = session.execute(
            select(
                AnswerLabel.vendor,
                AnswerLabel.scope,
                AnswerLabel.external_id,
                AnswerLabel.key,
                AnswerLabel.value,
            ).order_by(AnswerLabel.external_id, AnswerLabel.key, AnswerLabel.value)
        )
        return [tuple(r) for r in rows]  # type: ignore[misc]


def test_post_track_labels_every_id_of_a_group() -> None:
    run = "3f1a7b2c-9d4e-4f6a-8b1c-2e5f7a9d0c11"
    body = orjson.dumps(
        [
            {
                "vendor": "mentionsapi",
                "ids": ["ask_a", "bad id"],
                "labels": {"topic": "crm", "tags": ["x", "y"], "campaign": "q4"},
            },
            {"vendor": "mentionlab", "project_id": "p1", "ids": [run], "labels": {"country": "DE"}},
        ]
    )
    report = track_groups(parse_track_request(body), load_settings(), suite_db())
    assert (report["registered"], report["rejected"]) == (2, 1)
    # The rejected id gets no labels; the tags key is stored as one row per tag.
    assert stored() == [
        (Vendor.MENTIONLAB, LabelScope.EXECUTION, run, "country", "DE"),
        (Vendor.MENTIONSAPI, LabelScope.ASK, "ask_a", "campaign", "q4"),
        (Vendor.MENTIONSAPI, LabelScope.ASK, "ask_a", "tag", "x"),
        (Vendor.MENTIONSAPI, LabelScope.ASK, "ask_a", "tag", "y"),
        (Vendor.MENTIONSAPI, LabelScope.ASK, "ask_a", "topic", "crm"),
    ]


def test_post_track_refuses_bad_labels() -> None:
    with pytest.raises(ValueError, match=r"\[0\]\.labels: label name 'a b'"):
        parse_track_request(b'{"vendor": "mentionsapi", "ids": ["x"], "labels": {"a b": "1"}}')
    with pytest.raises(ValueError, match=r"labels"):
        parse_track_request(b'{"vendor": "mentionsapi", "ids": ["x"], "labels": {"topic": 1}}')


@pytest.fixture(params=["scratch_postgres", "scratch_sqlite"])
def scratch(request: pytest.FixtureRequest) -> str:
    return str(request.getfixturevalue(request.param))


def test_0010_downgrade_restores_the_views_of_0009(scratch: str) -> None:
    config = alembic_config(scratch)
    engine = create_engine(scratch)

    def views() -> dict[str, str]:
        inspector = inspect(engine)
        return {v: inspector.get_view_definition(v) for v in inspector.get_view_names()}

    command.upgrade(config, "0009")
    before = views()
    command.upgrade(config, "0010")
    assert set(views()) == {*before, "label_facts", "domain_category_map"}
    command.downgrade(config, "0009")
    assert views() == before
    assert "catalog_brands" not in inspect(engine).get_table_names()
    engine.dispose()
