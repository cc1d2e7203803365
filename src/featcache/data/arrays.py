"""Pickled arrays like the lab's ``train.p`` ({"features": N x H x W x C uint8, "labels": N})
and ``.npz`` files with ``images`` and ``labels``; read without running any code."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from featcache._safepickle import UnpicklingFailed, safe_unpickle
from featcache.data.source import ImageItem, ImageSource
from featcache.errors import DataError

__all__ = ["read_arrays"]


def _load(path: Path) -> tuple[Any, Any]:
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = {"images", "labels"} - set(npz.files)
                if missing:
                    raise DataError(
                        f"{path}: missing array(s) {sorted(missing)}; found {npz.files}"
                    )
                return npz["images"], npz["labels"]
        except (OSError, ValueError) as exc:
            raise DataError(f"{path}: not a readable .npz ({exc})") from exc
    try:
        with open(path, "rb") as f:
            obj = safe_unpickle(f, path)
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    except UnpicklingFailed as exc:
        raise DataError(f"{path}: truncated or corrupt pickle ({exc})") from exc
    if not isinstance(obj, dict) or "features" not in obj or "labels" not in obj:
        found = sorted(map(str, obj)) if isinstance(obj, dict) else type(obj).__name__
        raise DataError(f"{path}: expected a dict with 'features' and 'labels', found {found}")
    return obj["features"], obj["labels"]


def read_arrays(path: str | Path, class_names: list[str] | None = None) -> ImageSource:
    """Read a pickle or npz of uint8 images; each row's key hashes the row's pixels."""
    path = Path(path)
    images, labels = _load(path)
    if not isinstance(images, np.ndarray) or images.ndim not in (3, 4) or images.dtype != np.uint8:
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise DataError(f"{path}: images must be uint8 N x H x W [x C], got {dtype} {shape}")
    labels = np.asarray(labels)
    if labels.shape != (len(images),) or labels.dtype.kind not in "iu":
        raise DataError(
            f"{path}: labels must be {len(images)} integers, got {labels.dtype} {labels.shape}"
        )
    if len(labels) and labels.min() < 0:
        raise DataError(f"{path}: negative label {labels.min()} at row {int(labels.argmin())}")
    count = int(labels.max()) + 1 if len(labels) else 0
    names = class_names or [str(i) for i in range(count)]
    if count > len(names):
        raise DataError(
            f"{path}: label {count - 1} but the class-names file has {len(names)} classes"
        )
    items = [
        ImageItem(f"{path}#{i}", int(labels[i]), None, None, images[i]) for i in range(len(images))
    ]
    return ImageSource(items, names, f"arrays {path}")
