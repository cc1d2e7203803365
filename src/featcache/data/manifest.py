"""A CSV manifest ``path,label[,split]``; paths are relative to the CSV's folder.

Labels are class ids (integers, named by a class-names file) or class names (ids in sorted
order). Errors name the CSV's line.
"""

from __future__ import annotations

import csv
from pathlib import Path

from featcache.data.source import ImageItem, ImageSource
from featcache.errors import DataError

__all__ = ["read_manifest"]


def read_manifest(csv_path: str | Path, class_names: list[str] | None = None) -> ImageSource:
    """Read the manifest; `class_names` (from a signnames-style file) names integer labels."""
    csv_path = Path(csv_path)
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            fields = [h.strip().lower() for h in reader.fieldnames or []]
            if "path" not in fields:
                raise DataError(
                    f"{csv_path}: header must name 'path' (and 'label', optional 'split'); "
                    f"found {reader.fieldnames}"
                )
            raw = [
                ({k.strip().lower(): (v or "").strip() for k, v in row.items() if k}, n)
                for n, row in enumerate(reader, start=2)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{csv_path}: cannot read manifest ({exc})") from exc
    if not raw:
        raise DataError(f"{csv_path}: the manifest has no rows")
    labels = [row.get("label", "") for row, _ in raw]
    numeric = all(label.lstrip("-").isdigit() for label in labels if label)
    if numeric:
        names = class_names or [
            str(i) for i in range(max((int(x) for x in labels if x), default=-1) + 1)
        ]
        ids = None
    else:
        names = sorted({label for label in labels if label})
        ids = {name: i for i, name in enumerate(names)}
    items = []
    for row, line in raw:
        if not row.get("path"):
            raise DataError(f"{csv_path}, line {line}: empty path")
        label_text = row.get("label", "")
        label: int | None = None
        if label_text:
            label = int(label_text) if ids is None else ids[label_text]
            if not 0 <= label < len(names):
                raise DataError(
                    f"{csv_path}, line {line}: label {label} is outside 0..{len(names) - 1} "
                    "(the class-names file has fewer classes)"
                )
        file = (csv_path.parent / row["path"]).resolve()
        items.append(ImageItem(str(file), label, row.get("split") or None, file))
    return ImageSource(items, names, f"manifest {csv_path}")
