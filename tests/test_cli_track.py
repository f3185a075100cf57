"""`mentionsync track` from the command line: bad lines named, good lines kept."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from models import TrackedId, Vendor
from tests.helpers import cli
from tests.resources import session_scope


def count(vendor: Vendor) -> int:
    with session_scope() as session:
        return session.scalar(select(func.count()).where(TrackedId.vendor == vendor)) or 0


def test_bad_lines_are_named_and_good_lines_registered(tmp_path: Path) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text("ask_1\nask 2\n\nask_3\nask/../etc\nask_1\n" + "x" * 300 + "\n")
    result = cli("track", "mentionsapi", "--file", str(ids))
    assert result.returncode == 1
    assert "line 2: 'ask 2': contains whitespace" in result.stderr
    assert "line 3: '': empty id" in result.stderr
    assert "line 5: 'ask/../etc': contains '/'" in result.stderr
    assert "line 7:" in result.stderr and "longer than 256" in result.stderr
    assert "2 registered, 1 already tracked, 4 rejected" in result.stderr
    assert count(Vendor.MENTIONSAPI) == 2


def test_arguments_and_stdin_together_and_idempotent() -> None:
    result = cli("track", "mentionsapi", "ask_a", "ask_b", "--file", "-", input="ask_c\nask_a\n")
    assert result.returncode == 0, result.stderr
    assert "3 registered, 1 already tracked, 0 rejected" in result.stderr
    again = cli("track", "mentionsapi", "ask_a", "ask_b", "ask_c")
    assert "0 registered, 3 already tracked" in again.stderr
    assert count(Vendor.MENTIONSAPI) == 3


def test_mentionlab_needs_a_project_and_uuids() -> None:
    assert cli("track", "mentionlab", "3f1a7b2c-9d4e-4f6a-8b1c-2e5f7a9d0c11").returncode == 2
    result = cli("track", "mentionlab", "--project", "p/1", "3f1a7b2c-9d4e-4f6a-8b1c-2e5f7a9d0c11")
    assert result.returncode == 2 and "project id contains '/'" in result.stderr
    result = cli(
        "track", "mentionlab", "--project", "p1", "ask_1", "3F1A7B2C-9D4E-4F6A-8B1C-2E5F7A9D0C11"
    )
    assert result.returncode == 1
    assert "argument 1: 'ask_1': not a UUID" in result.stderr
    with session_scope() as session:
        assert session.scalars(select(TrackedId.external_id)).all() == [
            "3f1a7b2c-9d4e-4f6a-8b1c-2e5f7a9d0c11"
        ]


def test_created_at_must_be_iso() -> None:
    result = cli("track", "mentionsapi", "ask_1", "--created-at", "last tuesday")
    assert result.returncode == 2 and "not an ISO 8601 timestamp" in result.stderr
    assert count(Vendor.MENTIONSAPI) == 0
