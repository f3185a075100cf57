"""The brand catalog: canonical brands, their aliases and domains.

Every function takes the caller's session and never commits: `mentionsync
brands` opens one transaction per command, so an import that fails half-way
leaves the catalog as it was. The views resolve names through these tables when
they are read (migration 0010), so nothing here touches the archive.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from models import AliasKind, CatalogAlias, CatalogBrand, CatalogDomain
from worker.analytics.views import mention_facts
from worker.normalize.names import fold, suggest_key

CSV_COLUMNS = ("brand", "alias", "own", "group", "domain", "match")
REQUIRED_COLUMNS = ("brand", "alias", "own")
TRUE = frozenset({"true", "yes", "1", "y", "t"})
FALSE = frozenset({"false", "no", "0", "n", "f", ""})
# `match` column values: how an alias is compared with the vendors' names.
MATCHES = {
    "name": AliasKind.NAME,  # ignoring case and accents (the default)
    "exact": AliasKind.EXACT,
    "display_key": AliasKind.DISPLAY_KEY,  # a MentionLab entity's displayKey
}


class CatalogError(ValueError):
    """A catalog change that would make a name ambiguous, or a bad file row."""


@dataclass
class BrandEntry:
    name: str
    own: bool
    group: str | None
    aliases: list[tuple[str, str]] = field(default_factory=list)  # (match, alias)
    domains: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "brand": self.name,
            "own": self.own,
            "group": self.group,
            "aliases": [{"match": m, "alias": a} for m, a in self.aliases],
            "domains": self.domains,
        }


def normalize_domain(domain: str) -> str:
    """As the views normalize cited domains: lowercase, without a leading www."""
    domain = domain.strip().lower()
    return domain[4:] if domain.startswith("www.") else domain


def _alias_value(kind: AliasKind, alias: str) -> str:
    return fold(alias) if kind is AliasKind.NAME else alias


def _brand(session: Session, name: str) -> CatalogBrand | None:
    return session.scalar(select(CatalogBrand).where(CatalogBrand.name == name))


def add_alias(
    session: Session, brand: CatalogBrand, alias: str, kind: AliasKind = AliasKind.NAME
) -> bool:
    """Make `alias` resolve to `brand`; False if it already did.

    Raises CatalogError if it resolves to another brand: one spelling, one brand.
    """
    if not alias.strip():
        raise CatalogError("empty alias")
    value = _alias_value(kind, alias)
    owner = session.scalar(
        select(CatalogBrand)
        .join(CatalogAlias, CatalogAlias.brand_id == CatalogBrand.id)
        .where(CatalogAlias.kind == kind, CatalogAlias.value == value)
    )
    if owner is not None:
        if owner.id == brand.id:
            return False
        raise CatalogError(f"{alias!r} ({kind.value}) already belongs to {owner.name!r}")
    session.add(CatalogAlias(brand_id=brand.id, kind=kind, value=value, alias=alias))
    session.flush()
    return True


def add_domain(session: Session, brand: CatalogBrand, domain: str) -> None:
    domain = normalize_domain(domain)
    if not domain:
        return
    existing = session.get(CatalogDomain, domain)
    if existing is not None:
        if existing.brand_id != brand.id:
            owner = session.get(CatalogBrand, existing.brand_id)
            raise CatalogError(
                f"domain {domain!r} already belongs to {owner.name if owner else '?'}"
            )
        return
    session.add(CatalogDomain(domain=domain, brand_id=brand.id))
    session.flush()


def add_brand(
    session: Session,
    name: str,
    *,
    own: bool | None = None,
    group: str | None = None,
    aliases: Iterable[tuple[AliasKind, str]] = (),
    domains: Iterable[str] = (),
) -> CatalogBrand:
    """Create the brand, or update its own flag and group; its canonical name is
    always one of its aliases (ignoring case and accents)."""
    name = name.strip()
    if not name:
        raise CatalogError("empty brand name")
    brand = _brand(session, name)
    if brand is None:
        brand = CatalogBrand(name=name, own=bool(own), group_name=group or None)
        session.add(brand)
        session.flush()
    else:
        if own is not None:
            brand.own = own
        if group is not None:
            brand.group_name = group or None
    add_alias(session, brand, name)
    for kind, alias in aliases:
        add_alias(session, brand, alias, kind)
    for domain in domains:
        add_domain(session, brand, domain)
    return brand


def remove_brand(session: Session, name: str) -> bool:
    brand = _brand(session, name)
    if brand is None:
        return False
    _delete_brands(session, [brand.id])
    return True


def _delete_brands(session: Session, ids: list[int] | None) -> None:
    # Children first: SQLite enforces ON DELETE CASCADE only per connection
    # setting, and analysts' own tools may leave it off.
    for model in (CatalogAlias, CatalogDomain):
        stmt = delete(model)
        if ids is not None:
            stmt = stmt.where(model.brand_id.in_(ids))
        session.execute(stmt)
    stmt = delete(CatalogBrand)
    if ids is not None:
        stmt = stmt.where(CatalogBrand.id.in_(ids))
    session.execute(stmt)


def list_brands(session: Session) -> list[BrandEntry]:
    entries: dict[int, BrandEntry] = {}
    for brand in session.scalars(select(CatalogBrand).order_by(CatalogBrand.name)):
        entries[brand.id] = BrandEntry(brand.name, brand.own, brand.group_name)
    aliases = select(CatalogAlias).order_by(CatalogAlias.brand_id, CatalogAlias.id)
    for alias in session.scalars(aliases):
        entry = entries[alias.brand_id]
        # The canonical name's own alias goes without saying.
        if not (alias.kind is AliasKind.NAME and alias.alias == entry.name):
            entry.aliases.append((alias.kind.value, alias.alias))
    domains = select(CatalogDomain).order_by(CatalogDomain.domain)
    for domain in session.scalars(domains):
        entries[domain.brand_id].domains.append(domain.domain)
    return list(entries.values())


# --- the CSV file (brands import / export) -----------------------------------


@dataclass(frozen=True)
class CatalogRow:
    line: int
    brand: str
    alias: str
    own: bool
    group: str | None
    domain: str
    kind: AliasKind


def _flag(value: str, line: int) -> bool:
    value = value.strip().lower()
    if value in TRUE:
        return True
    if value in FALSE:
        return False
    raise CatalogError(f"line {line}: own must be true or false, not {value!r}")


def parse_catalog_csv(stream: TextIO) -> list[CatalogRow]:
    """The rows of a `brand,alias,own[,group][,domain][,match]` file, or CatalogError."""
    reader = csv.DictReader(stream)
    header = [(h or "").strip().lower() for h in reader.fieldnames or ()]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise CatalogError(f"the header needs the columns {', '.join(missing)}")
    unknown = [c for c in header if c not in CSV_COLUMNS]
    if unknown:
        raise CatalogError(f"unknown columns {', '.join(unknown)}; expected {CSV_COLUMNS}")
    reader.fieldnames = header
    rows = []
    for record in reader:
        line = reader.line_num
        brand = (record.get("brand") or "").strip()
        if not brand:
            raise CatalogError(f"line {line}: no brand")
        match = (record.get("match") or "name").strip().lower() or "name"
        if match not in MATCHES:
            raise CatalogError(f"line {line}: match must be one of {', '.join(MATCHES)}")
        rows.append(
            CatalogRow(
                line=line,
                brand=brand,
                alias=(record.get("alias") or "").strip(),
                own=_flag(record.get("own") or "", line),
                group=(record.get("group") or "").strip() or None,
                domain=(record.get("domain") or "").strip(),
                kind=MATCHES[match],
            )
        )
    return rows


@dataclass
class Imported:
    brands: int = 0
    aliases: int = 0
    domains: int = 0


def import_catalog(session: Session, rows: list[CatalogRow]) -> Imported:
    """Replace the whole catalog with the file's: what the file lacks is removed."""
    flags: dict[str, tuple[bool, str | None, int]] = {}
    for row in rows:
        seen = flags.setdefault(row.brand, (row.own, row.group, row.line))
        if seen[0] != row.own or (row.group and seen[1] and row.group != seen[1]):
            raise CatalogError(
                f"line {row.line}: {row.brand!r} has another own or group value on line {seen[2]}"
            )
        if row.group and not seen[1]:
            flags[row.brand] = (seen[0], row.group, seen[2])
    _delete_brands(session, None)
    result = Imported()
    brands: dict[str, CatalogBrand] = {}
    for name, (own, group, _line) in flags.items():
        brands[name] = add_brand(session, name, own=own, group=group)
        result.brands += 1
    for row in rows:
        try:
            if row.alias and add_alias(session, brands[row.brand], row.alias, row.kind):
                result.aliases += 1
            if row.domain:
                add_domain(session, brands[row.brand], row.domain)
                result.domains += 1
        except CatalogError as exc:
            raise CatalogError(f"line {row.line}: {exc}") from None
    return result


def export_rows(session: Session) -> Iterator[dict[str, str]]:
    """The catalog as `brands import` reads it: re-importing gives the same catalog."""
    for entry in list_brands(session):
        common = {"brand": entry.name, "own": "true" if entry.own else "false"}
        common["group"] = entry.group or ""
        # The first row carries the canonical name's alias, so a brand without
        # aliases or domains still has a row.
        extra: list[dict[str, str]] = [{"alias": entry.name, "match": "name"}]
        extra += [{"alias": alias, "match": match} for match, alias in entry.aliases]
        extra += [{"domain": domain} for domain in entry.domains]
        for part in extra:
            yield {**dict.fromkeys(CSV_COLUMNS, ""), **common, **part}


# --- brands suggest -----------------------------------------------------------


@dataclass
class Suggestion:
    names: list[tuple[str, int]]  # raw spellings and their mentions, most first
    mentions: int
    # A catalog brand this group already looks like: add the names as its aliases.
    alias_of: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "suggested_brand": self.names[0][0],
            "mentions": self.mentions,
            "alias_of": self.alias_of,
            "names": [{"name": n, "mentions": c} for n, c in self.names],
        }


def group_names(
    counts: Iterable[tuple[str, int]], known: dict[str, str] | None = None
) -> list[Suggestion]:
    """Raw names grouped by `suggest_key`, the most mentioned group first.

    `known` maps a key to the catalog brand it already belongs to. Pure:
    `suggest` feeds it the database's counts, the tests their own cases.
    """
    groups: dict[str, list[tuple[str, int]]] = {}
    for name, count in counts:
        groups.setdefault(suggest_key(name) or name, []).append((name, count))
    out = []
    for key, names in groups.items():
        names.sort(key=lambda nc: (-nc[1], nc[0]))
        out.append(Suggestion(names, sum(c for _, c in names), (known or {}).get(key)))
    out.sort(key=lambda s: (-s.mentions, s.names[0][0]))
    return out


def suggest(session: Session) -> list[Suggestion]:
    """Raw names no alias resolves yet, grouped, with the answers that mention them."""
    counts = session.execute(
        select(mention_facts.c.brand, func.count())
        .where(mention_facts.c.brand_id.is_(None))
        .group_by(mention_facts.c.brand)
    ).all()
    known: dict[str, str] = {}
    for entry in list_brands(session):
        known.setdefault(suggest_key(entry.name), entry.name)
        for match, alias in entry.aliases:
            if match != AliasKind.DISPLAY_KEY.value:
                known.setdefault(suggest_key(alias), entry.name)
    return group_names(((name, int(count)) for name, count in counts), known)
