"""Brand names as analysts compare them: folded for matching, keyed for suggestions.

Pure functions, no I/O: the write path records each raw name's folded form
(`brand_name_rows`), the views match catalog aliases through it, and
`brands suggest` groups raw names by `suggest_key`.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from typing import Any

# Words that name a company's legal form, product line or web address rather
# than the brand:
# "HubSpot", "HubSpot CRM" and "Hubspot, Inc." are one brand to a person.
SUFFIXES = frozenset(
    {
        "inc",
        "incorporated",
        "llc",
        "ltd",
        "limited",
        "corp",
        "corporation",
        "co",
        "company",
        "gmbh",
        "ag",
        "sa",
        "sas",
        "bv",
        "plc",
        "crm",
        "hq",
        # A domain ending written as part of the name: "Fly.io" is "Fly".
        "io",
        "com",
        "ai",
        "app",
        "net",
    }
)
_WORD = re.compile(r"\w+")


def fold(name: str) -> str:
    """Case- and accent-insensitive form: 'Café Crème' and 'CAFE CREME' fold alike.

    Compatibility decomposition, combining marks dropped, case folded, runs of
    white space made one space. Punctuation stays: 'Fly.io' is not 'Fly io'.
    """
    decomposed = unicodedata.normalize("NFKD", name)
    bare = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return " ".join(bare.casefold().split())


def suggest_key(name: str) -> str:
    """What `brands suggest` groups by: the folded name's words without
    punctuation, emoji or spaces, and without trailing suffixes such as Inc or CRM.

    A name that is nothing but a suffix ("CRM") keeps it, so it is not lumped
    with every other empty key.
    """
    words = _WORD.findall(fold(name).replace("_", " "))
    while len(words) > 1 and words[-1] in SUFFIXES:
        words.pop()
    return "".join(words)


def raw_brand(row: dict[str, Any], table: str) -> str | None:
    """The name a view calls a raw mention by (docs/analytics.md, mention_facts)."""
    if table == "ask_brand_mentions":
        return row.get("brand") or None
    if table == "job_execution_entities":
        return row.get("display_name") or row.get("display_key") or None
    return None


def brand_name_rows(children: Iterable[tuple[str, dict[str, Any]]]) -> list[dict[str, str]]:
    """`brand_names` rows for the mentions among (table, row) pairs, each name once."""
    seen: dict[str, str] = {}
    for table, row in children:
        name = raw_brand(row, table)
        if name is not None and name not in seen:
            seen[name] = fold(name)
    return [{"name": name, "fold_key": key} for name, key in seen.items()]
