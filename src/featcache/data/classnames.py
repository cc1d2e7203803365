"""Read a class-names file like the lab's ``signnames.csv`` (``ClassId,SignName``)."""

from __future__ import annotations

import csv
from pathlib import Path

from featcache.errors import DataError

__all__ = ["read_class_names"]


def read_class_names(path: str | Path) -> list[str]:
    """Return names indexed by class id; ids must be 0..N-1, each once, in any order."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read class names ({exc})") from exc
    if not rows or len(rows[0]) < 2:
        raise DataError(f"{path}: expected a header like 'ClassId,SignName' and one row per class")
    names: dict[int, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if not row or not "".join(row).strip():
            continue
        if len(row) < 2:
            raise DataError(f"{path}, line {line}: expected 'id,name', got {row!r}")
        try:
            class_id = int(row[0])
        except ValueError as exc:
            raise DataError(f"{path}, line {line}: class id {row[0]!r} is not an integer") from exc
        if class_id in names:
            raise DataError(f"{path}, line {line}: class id {class_id} appears twice")
        names[class_id] = row[1].strip()
    if sorted(names) != list(range(len(names))):
        raise DataError(f"{path}: class ids must be 0..{len(names) - 1} without gaps")
    return [names[i] for i in range(len(names))]
