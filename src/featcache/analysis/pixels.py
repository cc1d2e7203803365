"""The pixels behind a dataset row, read again from where it came from: an image file, or a
row of a pickled/npz array (rows recorded as ``FILE#INDEX``). For hashes of datasets
extracted before hashes were recorded, and for the contact sheets' thumbnails.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from featcache.data.arrays import read_arrays
from featcache.data.source import ImageItem
from featcache.errors import DataError, ImageError, StoreError
from featcache.store.paths import recorded_path

__all__ = ["RowPixels"]

_ARRAY_SUFFIXES = (".p", ".pkl", ".pickle", ".npz")


class RowPixels:
    """Reads rows' pixels as (H, W, 3) uint8; each array file is loaded once."""

    def __init__(self) -> None:
        self._arrays: dict[str, list[ImageItem]] = {}

    def rgb(self, path: str) -> np.ndarray | None:
        """The row's pixels, or None if its file is gone or unreadable."""
        try:
            return self.item(path).rgb()
        except (ImageError, DataError, StoreError, OSError, IndexError, ValueError):
            return None

    def item(self, path: str) -> ImageItem:
        """The row as an `ImageItem` (its key and pixels read on demand)."""
        recorded_path(path, "dataset row path")  # crafted rows are never opened
        file, sep, index = path.rpartition("#")
        if sep and index.isdigit() and file.lower().endswith(_ARRAY_SUFFIXES):
            items = self._arrays.get(file)
            if items is None:
                items = self._arrays[file] = read_arrays(file).items
            return items[int(index)]
        return ImageItem(path, file=Path(path))
