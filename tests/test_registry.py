"""Registering ids: validation messages, idempotence, big files with bad lines."""

from __future__ import annotations

import io
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from models import TrackedId, TrackedState, Vendor
from tests.resources import session_scope
from worker.config import load_settings
from worker.registry import InvalidId, read_lines, register, validate_external_id
from worker.vendors.base import path_segment


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("", "empty"),
        ("a" * 257, "longer than 256"),
        ("ask/../../admin", "'/'"),
        ("ask?x=1", "'?'"),
        ("ask#frag", "'#'"),
        ("ask 1", "whitespace"),
        ("ask\t1", "whitespace"),
        (" ask1", "whitespace"),
        ("ask\x00", "control"),
        ("ask\x1b[31m", "control"),
        ("ask\u200b", "invisible"),
        ("..", "path segment"),
        ("%2e%2e", "'%'"),
        ("a\\b", "backslash"),
    ],
)
def test_bad_ids_are_rejected_with_a_reason(value: str, reason: str) -> None:
    with pytest.raises(InvalidId, match=reason):
        validate_external_id(Vendor.MENTIONSAPI, value)


def test_good_ids_pass_unchanged() -> None:
    for value in ("ask_01H8X2Y3Z4PQR5STU6VW7XYZ8", "a" * 256, "Ask-ÄÖ_1.2"):
        assert validate_external_id(Vendor.MENTIONSAPI, value) == value


def test_mentionlab_ids_must_be_uuids_and_are_canonicalized() -> None:
    assert (
        validate_external_id(Vendor.MENTIONLAB, "3F1A7B2C-9D4E-4F6A-8B1C-2E5F7A9D0C11")
        == "3f1a7b2c-9d4e-4f6a-8b1c-2e5f7a9d0c11"
    )
    with pytest.raises(InvalidId, match="not a UUID"):
        validate_external_id(Vendor.MENTIONLAB, "ask_123")


def test_path_segment_never_changes_the_url_path() -> None:
    assert path_segment("a b/../c?d#e%") == "a%20b%2F..%2Fc%3Fd%23e%25"
    for bad in ("", ".", ".."):
        with pytest.raises(ValueError, match="path segment"):
            path_segment(bad)


def test_register_is_idempotent_and_sets_deadlines() -> None:
    settings = load_settings()
    now = datetime(2026, 11, 22, 12, tzinfo=UTC)
    created = now - timedelta(days=3)
    lines = read_lines(io.StringIO("ask_1\nask_2\nask_1\n\nbad id\n"))
    with session_scope() as s:
        result = register(
            s, Vendor.MENTIONSAPI, lines, settings=settings, created_at=created, now=now
        )
    assert (result.added, result.already_tracked) == (2, 1)
    assert [str(r) for r in result.rejected] == [
        "line 4: '': empty id",
        "line 5: 'bad id': contains whitespace",
    ]
    with session_scope() as s:
        again = register(s, Vendor.MENTIONSAPI, read_lines(["ask_1", "ask_2"]), settings=settings)
        rows = s.scalars(select(TrackedId).order_by(TrackedId.external_id)).all()
    assert (again.added, again.already_tracked) == (0, 2)
    assert [(r.external_id, r.state, r.remote_created_at, r.deadline_at) for r in rows] == [
        ("ask_1", TrackedState.TRACKED, created, created + timedelta(days=30)),
        ("ask_2", TrackedState.TRACKED, created, created + timedelta(days=30)),
    ]


def test_same_id_in_two_projects_is_two_registrations() -> None:
    settings = load_settings()
    run = "3f1a7b2c-9d4e-4f6a-8b1c-2e5f7a9d0c11"
    with session_scope() as s:
        a = register(s, Vendor.MENTIONLAB, read_lines([run]), settings=settings, project_id="p1")
        b = register(s, Vendor.MENTIONLAB, read_lines([run]), settings=settings, project_id="p2")
    assert (a.added, b.added) == (1, 1)


def test_100k_line_file_with_a_few_bad_lines_registers_every_good_one() -> None:
    lines = [f"ask_{i:06d}" for i in range(100_000)]
    bad_at = {10: "", 5_000: "ask_bad/..", 50_000: "x" * 300, 99_999: "has space"}
    for index, value in bad_at.items():
        lines[index] = value
    with session_scope() as s:
        result = register(s, Vendor.MENTIONSAPI, read_lines(lines), settings=load_settings())
    assert result.added == 100_000 - len(bad_at)
    assert sorted(r.where for r in result.rejected) == sorted(f"line {i + 1}" for i in bad_at)
    with session_scope() as s:
        assert s.scalar(select(func.count()).select_from(TrackedId)) == 100_000 - len(bad_at)
