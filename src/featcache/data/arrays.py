"""Pickled arrays like the lab's ``train.p`` ({"features": N x H x W x C uint8, "labels": N})
and ``.npz`` files with ``images`` and ``labels``; read without running any code.

Friendlier than the lab's own format, and never by guessing row by row:

- images may be float (the whole array in [0, 1] is scaled by 255; in [0, 255] it is
  rounded) or any integer type in [0, 255]; anything else is refused with the fix;
- labels may be integers (ids; ``--class-names`` names them), integral floats (``3.0``) or
  strings (class names: ids in sorted order, or the ids of a ``--class-names`` file);
- without labels (an npz with ``images`` only) the dataset is unlabelled.
"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import numpy as np

from featcache._safepickle import UnpicklingFailed, safe_unpickle
from featcache.data.source import ImageItem, ImageSource
from featcache.errors import DataError

__all__ = ["read_arrays"]


def _load(path: Path) -> tuple[Any, Any]:
    """(images, labels or None)."""
    try:  # a FIFO or device under an array file's name would block or never end
        mode = path.stat().st_mode
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc})") from exc
    if not stat.S_ISREG(mode):
        raise DataError(f"{path}: not a regular file (a device, FIFO or socket); refused")
    if path.suffix.lower() == ".npz":
        try:
            with np.load(path, allow_pickle=False) as npz:
                if "images" not in npz.files:
                    raise DataError(
                        f"{path}: no 'images' array (found {npz.files}); save it with "
                        "np.savez(PATH, images=IMAGES, labels=LABELS)"
                    )
                return npz["images"], npz["labels"] if "labels" in npz.files else None
        except (OSError, ValueError) as exc:
            if "allow_pickle" in str(exc):
                raise DataError(
                    f"{path}: holds Python objects (np.savez of a list or object array), "
                    "which featcache does not unpickle; save labels as strings or integers: "
                    "np.savez(PATH, images=IMAGES, labels=np.asarray(LABELS, dtype=str))"
                ) from exc
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


def _pixels(path: Path, images: Any) -> tuple[np.ndarray, str]:
    """uint8 images, and how they were converted ("" if they were uint8 already)."""
    if not isinstance(images, np.ndarray) or images.ndim not in (3, 4):
        shape = getattr(images, "shape", None)
        dtype = getattr(images, "dtype", type(images).__name__)
        raise DataError(f"{path}: images must be an N x H x W [x C] array, got {dtype} {shape}")
    if images.dtype == np.uint8:
        return images, ""
    kind = images.dtype.kind
    if kind not in "iuf" or images.size == 0:
        raise DataError(
            f"{path}: images must be numbers (uint8 0-255, or floats), got {images.dtype}"
        )
    if kind == "f" and not np.isfinite(images).all():
        row = int(np.argwhere(~np.isfinite(images))[0][0])
        raise DataError(f"{path}: image {row} holds NaN or infinity; fix or drop that row")
    low, high = float(images.min()), float(images.max())
    where = f"{images.dtype} in [{low:g}, {high:g}]"
    if low < 0 or high > 255:
        raise DataError(
            f"{path}: images are {where}; featcache reads 0-255 or, for floats, 0-1. Rescale "
            "them, e.g. images = (images - images.min()) / (images.max() - images.min()), "
            "or undo the normalisation that made them"
        )
    if kind == "f" and high <= 1.0:
        return np.rint(images * 255.0).astype(np.uint8), f"{where}, scaled by 255"
    return np.rint(images).astype(np.uint8), f"{where}, rounded to uint8"


def _label_ids(
    path: Path, labels: Any, n: int, class_names: list[str] | None
) -> tuple[list[int | None], list[str]]:
    """Label ids per row and the class names."""
    if labels is None:
        return [None] * n, []
    labels = np.asarray(labels)
    if labels.shape != (n,):
        raise DataError(
            f"{path}: {n} images but labels of shape {labels.shape}; give one per image"
        )
    if labels.dtype.kind in "USO":
        text = [str(v) for v in labels.tolist()]
        names = class_names or sorted(set(text))
        ids = {name: i for i, name in enumerate(names)}
        unknown = [t for t in text if t not in ids]
        if unknown:
            raise DataError(
                f"{path}: label {unknown[0]!r} (row {text.index(unknown[0])}) is not a class of "
                f"the class-names file ({', '.join(names[:5])}...); drop --class-names to take "
                "the classes from the labels, or add it to the file"
            )
        return [ids[t] for t in text], names
    if labels.dtype.kind == "f":
        bad = ~np.isfinite(labels) | (labels != np.round(labels))
        if bad.any():
            row = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{path}: label {float(labels[row]):g} at row {row} is not a whole number; "
                "labels are class ids (0, 1, ...) or class names (strings)"
            )
        labels = labels.astype(np.int64)
    elif labels.dtype.kind not in "iub":
        raise DataError(f"{path}: labels must be class ids or names, got {labels.dtype}")
    labels = labels.astype(np.int64)
    if len(labels) and labels.min() < 0:
        raise DataError(f"{path}: negative label {labels.min()} at row {int(labels.argmin())}")
    count = int(labels.max()) + 1 if len(labels) else 0
    names = class_names or [str(i) for i in range(count)]
    if count > len(names):
        raise DataError(
            f"{path}: label {count - 1} but the class-names file has {len(names)} classes"
        )
    return [int(v) for v in labels.tolist()], names


def read_arrays(path: str | Path, class_names: list[str] | None = None) -> ImageSource:
    """Read a pickle or npz of images; each row's key hashes the row's (uint8) pixels."""
    path = Path(path)
    raw, labels = _load(path)
    images, converted = _pixels(path, raw)
    ids, names = _label_ids(path, labels, len(images), class_names)
    items = [ImageItem(f"{path}#{i}", ids[i], None, None, images[i]) for i in range(len(images))]
    about = ", ".join(x for x in (converted, "unlabelled" if labels is None else "") if x)
    return ImageSource(items, names, f"arrays {path}" + (f" ({about})" if about else ""))
