"""`audit_catalog`: every row of a store's catalog checked field by field, for `verify`.

The readers check what they read and stop at the first crafted value (a `StoreError` naming
it); `verify` instead lists every crafted row it finds (table, row, field, what is wrong)
and carries on, so one look shows the whole damage. Values are checked as the readers use
them: row numbers and labels as integers in range, names as relative names inside the
store, JSON fields as bounded JSON of the right type, paths without NUL or control
characters (a path printed to a terminal or opened later must be what it looks like).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any, cast

from featcache.errors import FeatcacheError
from featcache.store.catalog import Catalog
from featcache.store.heads import HEADS_FOLDER
from featcache.store.paths import relative_name
from featcache.store.shards import STORAGE_DTYPES

__all__ = ["MAX_LISTED", "audit_catalog", "control_characters"]

#: Problems listed per (table, field); the rest are counted in one line.
MAX_LISTED = 20
_JSON_LIMIT = 16 << 20
_MAX_ROW = 2**31 - 1
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def control_characters(text: str) -> bool:
    """True if `text` holds NUL, a C0/C1 control character (ANSI escapes start with one)."""
    return _CONTROL.search(text) is not None


Check = Callable[[Any], str | None]


def _integer(low: int, high: int, *, null: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and null:
            return None
        if type(value) is not int:
            return f"{value!r:.60} is not an integer"
        if not low <= value <= high:
            return f"{value} is outside {low}..{high}"
        return None

    return check


def _text(*, null: bool = False, limit: int = 4096, plain: bool = True) -> Check:
    def check(value: Any) -> str | None:
        if value is None and null:
            return None
        if not isinstance(value, str):
            return f"{type(value).__name__} where text is expected"
        if len(value) > limit:
            return f"{len(value)} characters, past {limit}"
        if plain and control_characters(value):
            return f"{value!r:.80} holds NUL or control characters"
        return None

    return check


def _digest(*, null: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and null:
            return None
        if not isinstance(value, str) or not _HEX64.match(value):
            return f"{value!r:.80} is not a SHA-256 (64 lowercase hex digits)"
        return None

    return check


def _json(kind: type, item: type | None = None) -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or len(value) > _JSON_LIMIT:
            return "not a JSON text of at most 16 MB"
        try:
            parsed = json.loads(value)
        except RecursionError:
            return "JSON nested too deeply"
        except ValueError as exc:
            return f"not JSON ({exc})"
        if not isinstance(parsed, kind):
            return f"a JSON {kind.__name__} was expected, found {type(parsed).__name__}"
        if item is not None and not all(isinstance(x, item) for x in cast(list[Any], parsed)):
            return f"not a list of {item.__name__}s"
        return None

    return check


def _name(root: str, prefix: str = "") -> Check:
    def check(value: Any) -> str | None:
        if not isinstance(value, str) or not value.startswith(prefix):
            return f"{value!r:.80} is not a name under {root}"
        try:
            relative_name(value[len(prefix) :], "name", root=root, given=value)
        except FeatcacheError:
            return f"{value!r:.80} is not a relative name inside {root} (crafted or damaged)"
        return None

    return check


def _one_of(allowed: tuple[str, ...], *, null: bool = False) -> Check:
    def check(value: Any) -> str | None:
        if value is None and null:
            return None
        if value not in allowed:
            return f"{value!r:.60} is not one of {', '.join(allowed)}"
        return None

    return check


# table -> (columns naming a row in messages, {field: check})
_TABLES: dict[str, tuple[tuple[str, ...], dict[str, Check]]] = {
    "extractors": (("fingerprint",), {"fingerprint": _text(), "spec": _json(dict)}),
    "shards": (
        ("id",),
        {
            "id": _integer(0, 2**63 - 1),
            "name": _name("shards/"),
            "fingerprint": _text(),
            "layer": _text(),
            "dtype": _one_of(STORAGE_DTYPES),
            "rows": _integer(0, _MAX_ROW),
            "dim": _integer(1, _MAX_ROW),
            "sha256": _digest(null=True),
            "bytes": _integer(0, 2**63 - 1, null=True),
            "mtime_ns": _integer(-(2**63), 2**63 - 1, null=True),
        },
    ),
    "vectors": (
        ("key", "layer"),
        {
            "key": _text(),
            "layer": _text(),
            "shard_id": _integer(0, 2**63 - 1),
            "row": _integer(0, _MAX_ROW),
        },
    ),
    "datasets": (
        ("name",),
        {"name": _text(), "class_names": _json(list, str), "source": _text(limit=1 << 16)},
    ),
    "dataset_rows": (
        ("dataset", "idx"),
        {
            "idx": _integer(0, 2**63 - 1),
            "key": _text(),
            "path": _text(limit=1 << 16),
            "label": _integer(-1, _MAX_ROW, null=True),
            "split": _text(null=True),
        },
    ),
    "heads": (
        ("name", "version"),
        {
            "name": _text(),
            "version": _integer(1, _MAX_ROW),
            "file": _name(f"{HEADS_FOLDER}/", f"{HEADS_FOLDER}/"),
            "sha256": _digest(),
            "meta": _json(dict),
        },
    ),
    "failures": (("id",), {"path": _text(limit=1 << 16), "reason": _text(limit=1 << 16)}),
}


def _rows(catalog: Catalog, table: str, columns: list[str]) -> Iterator[tuple[Any, ...]]:
    names = ", ".join(f'"{c}"' for c in columns)
    found = catalog.query_columns(f"SELECT {names} FROM {table}", (), width=len(columns))
    yield from zip(*found, strict=True)


def audit_catalog(catalog: Catalog) -> list[str]:
    """One problem per crafted field of every row of the catalog (at most `MAX_LISTED` per
    table and field, then a count): ``catalog table 'T' row (id=3) field 'F': what``."""
    problems: list[str] = []
    for table, (naming, checks) in _TABLES.items():
        columns = list(dict.fromkeys([*naming, *checks]))
        found: dict[str, int] = {}
        for values in _rows(catalog, table, columns):
            row = dict(zip(columns, values, strict=True))
            for field, check in checks.items():
                wrong = check(row[field])
                if wrong is None:
                    continue
                found[field] = found.get(field, 0) + 1
                if found[field] <= MAX_LISTED:
                    who = ", ".join(f"{c}={str(row[c])[:40]!r}" for c in naming)
                    problems.append(
                        f"{catalog.path}: table '{table}' row ({who}) field '{field}': {wrong}"
                    )
        for field, count in found.items():
            if count > MAX_LISTED:
                problems.append(
                    f"{catalog.path}: table '{table}' field '{field}': {count - MAX_LISTED} "
                    "more row(s) like these"
                )
    return problems
