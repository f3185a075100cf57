"""The MentionLab normalizer on its own: every documented field reaches a column."""

from __future__ import annotations

import copy
from datetime import UTC, datetime

import pytest

from tests.fixtures.documented import RUN_DOC_EXAMPLE as DOC_EXAMPLE
from tests.fixtures.documented import RUN_ID
from tests.fixtures.documented import RUN_PROJECT as PROJECT
from worker.normalize import PayloadError
from worker.vendors.mentionlab.normalize import created_at, normalize_execution

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def normalize(body: dict) -> object:  # type: ignore[type-arg]
    return normalize_execution(body, job_execution_id=RUN_ID, project_id=PROJECT, fetched_at=NOW)


def test_documented_example_maps_every_field() -> None:
    n = normalize(DOC_EXAMPLE)
    assert n.table == "job_executions"
    assert n.row == {
        "job_execution_id": RUN_ID,
        "project_id": PROJECT,
        "ai_response_id": "a8d2e4f0-1b3c-4d5e-9f8a-7c6b5a4d3e2f",
        "job_id": "d9c8b7a6-5f4e-4d3c-9b2a-1e0f9d8c7b6a",
        "query_id": "c2b4d6e8-0a1f-4c3d-8e7b-6a5f4d3c2b1a",
        "initiated_at": datetime(2026, 6, 8, 10, 15, 30, tzinfo=UTC),
        "created_at": datetime(2026, 6, 8, 10, 15, 31, tzinfo=UTC),
        "model": "gpt-4o",
        "status": "success",
        "execution_number": 1,
        "has_sources": True,
        "has_shopping": False,
        "country": "US",
        "language": "en",
        "raw_payload": DOC_EXAMPLE,
        "fetched_at": NOW,
    }
    assert n.children == {
        "job_execution_sources": [
            {
                "job_execution_id": RUN_ID,
                "position": 0,
                "domain": "reddit.com",
                "url": "https://reddit.com/r/crm/...",
            }
        ],
        "job_execution_entities": [
            {
                "job_execution_id": RUN_ID,
                "position": 0,
                "display_key": "550e8400-e29b-41d4-a716-446655440000",
                "display_name": "Acme Corp",
                "is_primary": True,
                "sentiment_score": 72.3,
            }
        ],
    }


def test_every_documented_field_has_a_column() -> None:
    from models import JobExecution

    documented = {
        "jobExecutionId": "job_execution_id",
        "aiResponseId": "ai_response_id",
        "jobId": "job_id",
        "initiatedAt": "initiated_at",
        "createdAt": "created_at",
        "model": "model",
        "status": "status",
        "executionNumber": "execution_number",
        "hasSources": "has_sources",
        "hasShopping": "has_shopping",
        "queryId": "query_id",
        "country": "country",
        "language": "language",
    }
    assert set(documented) | {"sources", "entities"} == set(DOC_EXAMPLE)
    assert set(documented.values()) <= set(JobExecution.__table__.columns.keys())


def test_duplicates_missing_sentiment_and_optional_fields() -> None:
    body = copy.deepcopy(DOC_EXAMPLE)
    body["sources"].append(dict(body["sources"][0]))
    body["entities"].append(dict(body["entities"][0], displayName="Acme again"))
    body["entities"].append({"displayKey": "k2", "displayName": "Ünïcode 🚀", "isPrimary": False})
    del body["queryId"], body["language"]
    n = normalize(body)
    assert len(n.children["job_execution_sources"]) == 1
    names = [e["display_name"] for e in n.children["job_execution_entities"]]
    assert names == ["Acme Corp", "Ünïcode 🚀"]
    assert n.children["job_execution_entities"][1]["sentiment_score"] is None
    assert (n.row["query_id"], n.row["language"]) == (None, None)


def test_integer_sentiment_and_uppercase_uuid_are_accepted() -> None:
    body = copy.deepcopy(DOC_EXAMPLE)
    body["entities"][0]["sentimentScore"] = 72
    body["jobExecutionId"] = RUN_ID.upper()
    n = normalize(body)
    assert n.children["job_execution_entities"][0]["sentiment_score"] == 72


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda b: b.update(executionNumber="1"), "executionNumber"),
        (lambda b: b.update(hasSources="true"), "hasSources"),
        (lambda b: b["entities"][0].update(sentimentScore="high"), "sentimentScore"),
        (lambda b: b["entities"][0].update(sentimentScore=140.0), "outside 0..100"),
        (lambda b: b.update(jobId="not-a-uuid"), "jobId is not a UUID"),
        (lambda b: b.update(createdAt="yesterday"), "createdAt"),
        (lambda b: b.update(status="done"), "status"),
        (lambda b: b.update(jobExecutionId="0a1a7b2c-9d4e-4f6a-8b1c-2e5f7a9d0c11"), "requested"),
    ],
)
def test_wrong_types_raise_payload_error(mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    body = copy.deepcopy(DOC_EXAMPLE)
    mutate(body)
    with pytest.raises(PayloadError, match=message):
        normalize(body)


def test_pending_is_not_archivable_but_tells_the_creation_time() -> None:
    body = dict(DOC_EXAMPLE, status="retrying")
    with pytest.raises(PayloadError, match="not final"):
        normalize(body)
    assert created_at(body) == datetime(2026, 6, 8, 10, 15, 31, tzinfo=UTC)
