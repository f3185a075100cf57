"""Answer labels: the prompt, topic, tags, country, persona and free labels of an id.

Given at registration (`track --file ids.csv`, `track --topic …`, `POST
/v1/track`) or later (`mentionsync label`), stored in `answer_labels` keyed by
the vendor's id, and read by every view as dimensions (migration 0010).
Parsing is pure; `store_labels` writes in the caller's transaction.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import orjson
from sqlalchemy import delete
from sqlalchemy.orm import Session

from models import AnswerLabel, LabelScope, Vendor
from worker.registry import InvalidId, Rejected, validate_external_id
from worker.store import dialect_insert
from worker.vendors.registry import VENDORS

# Labels with a column of their own in every view; `tag` may hold several values.
DIMENSIONS = ("prompt", "topic", "country", "persona")
TAG = "tag"
TAGS_COLUMN = "tags"  # the CSV column and option: values separated by ';'
ID_COLUMN = "id"
_KEY = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
MAX_VALUE_LENGTH = 20_000  # a long prompt fits; a whole answer pasted by mistake does not
_CHUNK = 500

Labels = dict[str, list[str]]


class InvalidLabel(ValueError):
    pass


@dataclass
class LabelledId:
    where: str
    external_id: str
    labels: Labels = field(default_factory=dict)


def split_tags(value: str) -> list[str]:
    return [t.strip() for t in value.split(";") if t.strip()]


def label_key(column: str) -> str:
    """A CSV column or option name as a label key ('tags' is the key 'tag')."""
    key = column.strip()
    if key.lower() in (*DIMENSIONS, TAGS_COLUMN, TAG):
        key = key.lower()
    if key == TAGS_COLUMN:
        return TAG
    if not _KEY.match(key):
        raise InvalidLabel(f"label name {column!r}: letters, digits, '_', '.', '-' (up to 64)")
    return key


def add_label(labels: Labels, key: str, value: str) -> None:
    """One value (several for tags) under `key`; blank values are no label."""
    values = split_tags(value) if key == TAG else [value.strip()]
    for v in values:
        if not v:
            continue
        if len(v) > MAX_VALUE_LENGTH:
            raise InvalidLabel(f"{key}: longer than {MAX_VALUE_LENGTH} characters")
        if "\x00" in v:
            raise InvalidLabel(f"{key}: contains U+0000")
        bucket = labels.setdefault(key, [])
        if v not in bucket:
            bucket.append(v)


def option_labels(
    *,
    prompt: str | None = None,
    topic: str | None = None,
    tags: Sequence[str] = (),
    country: str | None = None,
    persona: str | None = None,
    free: Sequence[str] = (),
) -> Labels:
    """Labels from `track`/`label` options; `free` holds KEY=VALUE strings."""
    labels: Labels = {}
    for key, value in (("prompt", prompt), ("topic", topic), ("country", country)):
        if value is not None:
            add_label(labels, key, value)
    if persona is not None:
        add_label(labels, "persona", persona)
    for tag in tags:
        add_label(labels, TAG, tag)
    for item in free:
        key, sep, value = item.partition("=")
        if not sep:
            raise InvalidLabel(f"--label {item!r}: give KEY=VALUE")
        add_label(labels, label_key(key), value)
    return labels


def mapping_labels(given: Mapping[str, str | list[str]]) -> Labels:
    """Labels from a JSON object (`POST /v1/track`): a string, or a list of strings."""
    labels: Labels = {}
    for column, value in given.items():
        key = label_key(column)
        for v in [value] if isinstance(value, str) else value:
            add_label(labels, key, v)
    return labels


JSON_LINES = (".jsonl", ".ndjson")


def is_label_file(name: str | None) -> bool:
    """A `.csv` or JSON-lines id file carries labels; any other is one id per line."""
    return bool(name) and str(name).lower().endswith((".csv", *JSON_LINES))


def read_label_file(stream: TextIO, name: str | None) -> tuple[list[LabelledId], list[Rejected]]:
    if str(name or "").lower().endswith(JSON_LINES):
        return read_label_jsonl(stream)
    return read_label_csv(stream)


def read_label_jsonl(stream: TextIO) -> tuple[list[LabelledId], list[Rejected]]:
    """One JSON object per line: `id`, and labels as strings (lists for several tags)."""
    rows: list[LabelledId] = []
    rejected: list[Rejected] = []
    for number, line in enumerate(stream, start=1):
        where = f"line {number}"
        if not line.strip():
            continue
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            rejected.append(Rejected(where, line.rstrip("\r\n"), f"not JSON: {exc}"))
            continue
        if not isinstance(document, dict) or not isinstance(document.get(ID_COLUMN), str):
            rejected.append(Rejected(where, line.rstrip("\r\n"), 'not an object with an "id"'))
            continue
        external_id = document.pop(ID_COLUMN)
        try:
            if not all(
                isinstance(v, str) or (isinstance(v, list) and all(isinstance(x, str) for x in v))
                for v in document.values()
            ):
                raise InvalidLabel("label values are strings or lists of strings")
            labels = mapping_labels(document)
        except InvalidLabel as exc:
            rejected.append(Rejected(where, external_id, str(exc)))
            continue
        rows.append(LabelledId(where, external_id, labels))
    return rows, rejected


def read_label_csv(
    stream: TextIO, id_column: str = ID_COLUMN
) -> tuple[list[LabelledId], list[Rejected]]:
    """Rows of a CSV with a header holding `id_column`: every other column is a label."""
    reader = csv.reader(stream)
    header = next(reader, None)
    if header is None:
        raise InvalidLabel("the CSV file is empty: its first line must be a header")
    # A spreadsheet's UTF-8 byte-order mark must not rename the first column.
    names = [h.strip().lstrip("\ufeff").strip() for h in header]
    if id_column not in [n.lower() for n in names]:
        raise InvalidLabel(f"the CSV header has no {id_column!r} column: {', '.join(names)}")
    id_index = [n.lower() for n in names].index(id_column)
    keys: list[str | None] = []
    for i, name in enumerate(names):
        keys.append(None if i == id_index or not name else label_key(name))
    rows: list[LabelledId] = []
    rejected: list[Rejected] = []
    for cells in reader:
        where = f"line {reader.line_num}"
        if not any(c.strip() for c in cells):
            continue
        if len(cells) > len(names):
            rejected.append(Rejected(where, ",".join(cells), "more cells than the header"))
            continue
        labels: Labels = {}
        try:
            for key, cell in zip(keys, cells, strict=False):
                if key is not None:
                    add_label(labels, key, cell)
        except InvalidLabel as exc:
            rejected.append(
                Rejected(where, cells[id_index] if id_index < len(cells) else "", str(exc))
            )
            continue
        external_id = cells[id_index] if id_index < len(cells) else ""
        rows.append(LabelledId(where, external_id, labels))
    return rows, rejected


def scope_for(vendor: Vendor, scope: LabelScope | None = None) -> LabelScope:
    """The scope a label of this vendor's ids has: `scope` if the vendor's ids
    can have it, else by default the id's own (the answer)."""
    scopes = VENDORS[vendor].label_scopes
    if scope is None:
        return scopes[0]
    if scope not in scopes:
        raise InvalidLabel(f"{vendor.value} ids cannot be labelled per {scope.value}")
    return scope


def store_labels(
    session: Session,
    vendor: Vendor,
    entries: Iterable[LabelledId],
    *,
    project_id: str = "",
    scope: LabelScope | None = None,
    common: Labels | None = None,
) -> tuple[int, list[Rejected]]:
    """Write each id's labels (plus `common`), replacing the values it had for
    those keys; keys not given are kept. Returns (ids labelled, rejected).

    Every id is validated as registration validates it (a vendor's wider scopes,
    like MentionLab's queryIds and jobIds, have the same shape), so a label
    always names an id the views can match.
    """
    scope = scope_for(vendor, scope)
    table = AnswerLabel.__table__
    labelled = 0
    rejected: list[Rejected] = []
    # Ids with the same keys are replaced together: one DELETE per chunk.
    pending: dict[tuple[str, ...], dict[str, Labels]] = {}

    def flush(keys: tuple[str, ...]) -> None:
        batch = pending.pop(keys, {})
        if not batch:
            return
        session.execute(
            delete(AnswerLabel).where(
                AnswerLabel.vendor == vendor,
                AnswerLabel.project_id == project_id,
                AnswerLabel.scope == scope,
                AnswerLabel.external_id.in_(list(batch)),
                AnswerLabel.key.in_(keys),
            )
        )
        rows = [
            {
                "vendor": vendor,
                "project_id": project_id,
                "scope": scope,
                "external_id": external_id,
                "key": key,
                "value": value,
            }
            for external_id, labels in batch.items()
            for key, values in labels.items()
            for value in values
        ]
        session.execute(dialect_insert(session, table).on_conflict_do_nothing(), rows)

    for entry in entries:
        labels = {**(common or {})}
        for key, values in entry.labels.items():
            labels[key] = list(dict.fromkeys([*labels.get(key, []), *values]))
        if not labels:
            continue
        try:
            external_id = validate_external_id(vendor, entry.external_id)
        except InvalidId as exc:
            rejected.append(Rejected(entry.where, entry.external_id, str(exc)))
            continue
        keys = tuple(sorted(labels))
        pending.setdefault(keys, {})[external_id] = labels
        labelled += 1
        if len(pending[keys]) >= _CHUNK:
            flush(keys)
    for keys in list(pending):
        flush(keys)
    return labelled, rejected


def ids_with(entries: Iterable[tuple[str, str]], labels: Labels) -> Iterator[LabelledId]:
    """(where, id) pairs, each with the same labels."""
    for where, external_id in entries:
        yield LabelledId(where, external_id, labels)
