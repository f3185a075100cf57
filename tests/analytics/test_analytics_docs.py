"""The SQL in docs/analytics.md runs, on the database it is written for."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import text

from tests.conftest import ROOT
from tests.resources import session_scope

DOC = (ROOT / "docs" / "analytics.md").read_text(encoding="utf-8")
SNIPPETS = re.findall(r"```sql\n(.*?)```", DOC, flags=re.DOTALL)


def test_the_doc_has_snippets() -> None:
    assert len(SNIPPETS) >= 6


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"sql{i}" for i in range(len(SNIPPETS))])
def test_snippet_runs(archive: str, snippet: str) -> None:
    first_line = snippet.splitlines()[0]
    if first_line in ("-- Postgres", "-- SQLite"):
        wanted = "postgres" if first_line == "-- Postgres" else "sqlite"
        if archive != wanted:
            pytest.skip(f"written for {wanted}")
    # The doc's brands are the demo's; the test archive has others.
    snippet = snippet.replace("'Neon'", "'Globex'").replace("'Supabase'", "'Acme'")
    with session_scope() as session:
        rows = session.execute(text(snippet)).all()
    assert rows, "every snippet has something to show on the test archive"
