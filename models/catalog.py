"""The analyst's side of the archive: the brand catalog, answer labels, domain categories.

None of these change an archived row. The analytics views join them when they
are read, so a catalog or label change shows in the next report without any
re-sync or reprocess (docs/analytics.md).
"""

from __future__ import annotations

import enum

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, String, Text, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base
from models.tracking import BigId, Vendor, _enum


class AliasKind(enum.StrEnum):
    # `value` is the name folded by worker.normalize.names.fold: matches any
    # spelling that differs only by case or accents.
    NAME = "name"
    EXACT = "exact"  # `value` is the raw name exactly as the vendor wrote it
    DISPLAY_KEY = "display_key"  # `value` is a MentionLab entity's displayKey


class LabelScope(enum.StrEnum):
    """What a label's `external_id` names; MentionLab's more specific scope wins."""

    ASK = "ask"  # a MentionsAPI ask id
    EXECUTION = "execution"  # a MentionLab job execution id
    QUERY = "query"  # a MentionLab queryId: every run of that query
    JOB = "job"  # a MentionLab jobId: every run of that job


class CatalogBrand(Base):
    __tablename__ = "catalog_brands"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    own: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    # A competitor group ("CRM", "databases"): the `--by group` dimension.
    group_name: Mapped[str | None] = mapped_column(Text)


def _brand_fk() -> ForeignKey:
    return ForeignKey("catalog_brands.id", ondelete="CASCADE")


class CatalogAlias(Base):
    __tablename__ = "catalog_aliases"
    # One brand per spelling: the views join on (kind, value) and must find one.
    __table_args__ = (
        UniqueConstraint("kind", "value"),
        Index("ix_catalog_aliases_brand_id", "brand_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    brand_id: Mapped[int] = mapped_column(BigInteger, _brand_fk())
    kind: Mapped[AliasKind] = mapped_column(_enum(AliasKind, "alias_kind"))
    value: Mapped[str] = mapped_column(Text)
    # What the analyst typed (for `kind = name` `value` is its folded form).
    alias: Mapped[str] = mapped_column(Text)


class CatalogDomain(Base):
    """A brand's own web domain: its citations are `own` or `competitor`."""

    __tablename__ = "catalog_domains"
    __table_args__ = (Index("ix_catalog_domains_brand_id", "brand_id"),)

    domain: Mapped[str] = mapped_column(Text, primary_key=True)
    brand_id: Mapped[int] = mapped_column(BigInteger, _brand_fk())


class DomainCategory(Base):
    """An analyst's category for a domain, over the shipped default list
    (migration 0010); `other` un-classifies a default."""

    __tablename__ = "domain_categories"

    domain: Mapped[str] = mapped_column(Text, primary_key=True)
    category: Mapped[str] = mapped_column(String(64))


class BrandName(Base):
    """Every raw brand name the archive holds, with its folded form.

    Filled when answers are written; folding needs Unicode tables neither
    database has in SQL, and the views match `name` aliases through it.
    """

    __tablename__ = "brand_names"
    __table_args__ = (Index("ix_brand_names_fold_key", "fold_key"),)

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    fold_key: Mapped[str] = mapped_column(Text)


class AnswerLabel(Base):
    """A label given at registration (or later): topic, prompt, tag, … or free.

    Keyed by the vendor's own id, like every child table; the answer need not
    be archived yet. `tag` may hold several values; other keys hold one.
    """

    __tablename__ = "answer_labels"
    vendor: Mapped[Vendor] = mapped_column(_enum(Vendor, "vendor"), primary_key=True)
    # '' for MentionsAPI, as in tracked_ids.
    project_id: Mapped[str] = mapped_column(String(256), primary_key=True, server_default="")
    scope: Mapped[LabelScope] = mapped_column(_enum(LabelScope, "label_scope"), primary_key=True)
    external_id: Mapped[str] = mapped_column(String(256), primary_key=True)
    # The primary key, in this order, is also the index the views look labels up by.
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text, primary_key=True)
