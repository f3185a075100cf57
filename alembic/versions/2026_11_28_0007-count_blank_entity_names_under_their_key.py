"""MentionLab entities with a blank display name count under their display key.

0006 named a MentionLab brand COALESCE(display_name, display_key), so an entity
whose displayName was "" became a mention of the brand "" (and one with a blank
name and key was still counted). MentionsAPI mentions with a blank brand were
already left out. Now a blank name falls back to the key, and an entity with
neither is left out, as docs/analytics.md says.

mention_facts is recreated with that one change; answer_facts reads it, so it is
dropped first and recreated unchanged. The rest of the SQL is 0006's own,
loaded from that revision rather than copied, so the two cannot drift.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-28 10:00:00
"""

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_BRAND = "COALESCE(display_name, display_key)"
NEW_BRAND = "COALESCE(NULLIF(display_name, ''), NULLIF(display_key, ''))"


def _revision_0006() -> ModuleType:
    path = Path(__file__).with_name("2026_11_23_0006-create_analytics_views.py")
    spec = importlib.util.spec_from_file_location("mentionsync_revision_0006", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _recreate(mention_facts: str, answer_facts: str) -> None:
    op.execute("DROP VIEW answer_facts")
    op.execute("DROP VIEW mention_facts")
    op.execute(mention_facts)
    op.execute(answer_facts)


def upgrade() -> None:
    old = _revision_0006()
    # The name expression appears in the select list, the filter and the grouping.
    assert old.MENTION_FACTS.count(OLD_BRAND) == 3, "0006's MentionLab brand expression moved"
    _recreate(old.MENTION_FACTS.replace(OLD_BRAND, NEW_BRAND), old.ANSWER_FACTS)


def downgrade() -> None:
    old = _revision_0006()
    _recreate(old.MENTION_FACTS, old.ANSWER_FACTS)
