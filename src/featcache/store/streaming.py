"""Streaming reads: a dataset's vectors as bounded batches, or as a lazy row view.

Two shapes, built on the catalog's paged row queries (`Catalog.vector_pages` for batches;
`Catalog.dataset_columns` and `Catalog.dataset_locations` for the lazy view), so no step
holds more than one page of catalog rows or one batch of vectors beyond what it returns:

- `VectorBatch`: what `FeatureStore.batches` yields, rows in dataset (catalog) order.
- `LazyVectors` / `StoredRows`: every row's labels, keys and *where* its vector lives
  (a shard index and a row, 8 bytes a row), read on demand by row numbers. Training reads
  random mini-batches through it; `blocks` streams it in order.

`FeatureStore.vectors` is the in-memory convenience built on the same reads.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featcache.store.records import DatasetColumns, LabelledVectors, VectorRow, rows_in_split

__all__ = [
    "DEFAULT_BATCH_ROWS",
    "LazyVectors",
    "Locations",
    "StoredRows",
    "VectorBatch",
]

#: Rows per batch unless told otherwise: 4096 fc7 rows are 64 MiB of float32.
DEFAULT_BATCH_ROWS = 4096

#: Reads (shard names, shard index per row, row in shard) -> (n, dim) float32.
PlaceReader = Callable[[Sequence[str], np.ndarray, np.ndarray], np.ndarray]


@dataclass(frozen=True)
class VectorBatch:
    """Consecutive rows of a dataset (or of one split), in dataset order.

    `start` is the position of the first row in the stream (0 for the first batch), so
    ``start + i`` numbers row i among all the rows streamed.
    """

    start: int
    keys: list[str]
    X: np.ndarray
    y: np.ndarray
    paths: list[str]
    splits: list[str | None]

    def __len__(self) -> int:
        return len(self.keys)


@dataclass
class Locations:
    """Where each row's vector lives: ``names[shard_of[i]]``, row ``row_of[i]``."""

    names: list[str]
    shard_of: np.ndarray
    row_of: np.ndarray


class StoredRows:
    """A read-only (n_rows, dim) float32 matrix whose rows stay in the store's shards.

    Indexing with a boolean mask or row numbers gives another lazy view; `read_rows`
    gathers the asked rows; `blocks` streams them in order, `block_rows` at a time.
    """

    def __init__(self, read: PlaceReader, where: Locations, dim: int, layer: str) -> None:
        self._read = read
        self.where = where
        self.layer = layer
        self.shape = (len(where.shard_of), dim)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"StoredRows({self.shape[0]} x {self.shape[1]} '{self.layer}' vectors)"

    def __getitem__(self, index: Any) -> StoredRows:
        """A lazy subset: `index` is a boolean mask or an array of row numbers."""
        picked = np.arange(self.shape[0])[np.asarray(index)]
        where = Locations(self.where.names, self.where.shard_of[picked], self.where.row_of[picked])
        return StoredRows(self._read, where, self.shape[1], self.layer)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of `rows` (row numbers of this view) as a (len(rows), dim) float32 array."""
        rows = np.asarray(rows, dtype=np.intp)
        if len(rows) == 0:
            return np.zeros((0, self.shape[1]), np.float32)
        return self._read(self.where.names, self.where.shard_of[rows], self.where.row_of[rows])

    def blocks(self, block_rows: int = DEFAULT_BATCH_ROWS) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (first row, block) in row order, each block at most `block_rows` rows."""
        for start in range(0, self.shape[0], block_rows):
            stop = min(start + block_rows, self.shape[0])
            yield start, self.read_rows(np.arange(start, stop))

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        # np.asarray(view) reads it whole: the in-memory convenience for small views.
        whole = self.read_rows(np.arange(self.shape[0]))
        return whole if dtype is None else whole.astype(dtype, copy=False)


@dataclass(frozen=True)
class LazyVectors:
    """Like `LabelledVectors`, with X a `StoredRows` read on demand instead of an array."""

    keys: list[str]
    X: StoredRows
    y: np.ndarray
    paths: list[str]
    splits: list[str | None]
    class_names: list[str]
    fingerprint: str
    layer: str
    dataset: str = ""
    weights_note: str | None = None  # set when the vectors come from random (demo) weights

    def __len__(self) -> int:
        return len(self.keys)

    def split(self, name: str) -> LazyVectors:
        """The rows whose stored split is `name`, in order (still lazy)."""
        return rows_in_split(self, name)

    def to_memory(self) -> LabelledVectors:
        """Every vector read into one array (what `FeatureStore.vectors` returns)."""
        X = np.empty(self.X.shape, np.float32)
        for start, block in self.X.blocks():
            X[start : start + len(block)] = block
        return LabelledVectors(
            keys=self.keys,
            X=X,
            y=self.y,
            paths=self.paths,
            splits=self.splits,
            class_names=self.class_names,
            fingerprint=self.fingerprint,
            layer=self.layer,
            dataset=self.dataset,
            weights_note=self.weights_note,
        )


@dataclass
class RowIndex:
    """A dataset's rows collected from paged catalog queries (see `index_rows`)."""

    keys: list[str]
    paths: list[str]
    labels: np.ndarray
    splits: list[str | None]
    where: Locations
    missing: int
    first_missing: str | None


def index_rows(pages: Iterator[list[VectorRow]]) -> RowIndex:
    """Collect paged catalog rows into per-row metadata and compact `Locations`.

    Each row costs its key, path and split strings plus 16 bytes (label and location);
    rows without a vector are counted (`missing`, the first one's path).
    """
    names: dict[str, int] = {}
    keys: list[str] = []
    paths: list[str] = []
    splits: list[str | None] = []
    labels: list[np.ndarray] = []
    shard_parts: list[np.ndarray] = []
    row_parts: list[np.ndarray] = []
    missing, first_missing = 0, None
    for page in pages:
        shard_of = np.empty(len(page), np.int32)
        row_of = np.empty(len(page), np.int32)
        for i, r in enumerate(page):
            if r.shard is None or r.row is None:
                missing += 1
                first_missing = first_missing or r.path
                shard_of[i] = row_of[i] = -1
            else:
                shard_of[i] = names.setdefault(r.shard, len(names))
                row_of[i] = r.row
        keys += [r.key for r in page]
        paths += [r.path for r in page]
        splits += [r.split for r in page]
        labels.append(np.array([-1 if r.label is None else r.label for r in page], np.int64))
        shard_parts.append(shard_of)
        row_parts.append(row_of)

    def joined(parts: list[np.ndarray], dtype: type) -> np.ndarray:
        return np.concatenate(parts) if parts else np.zeros(0, dtype)

    where = Locations(list(names), joined(shard_parts, np.int32), joined(row_parts, np.int32))
    return RowIndex(keys, paths, joined(labels, np.int64), splits, where, missing, first_missing)


def columns_index(
    columns: DatasetColumns,
    located: tuple[np.ndarray, np.ndarray, np.ndarray],
    names_of: Callable[[list[int]], dict[int, str]],
) -> RowIndex:
    """Join a dataset's columns with the (idx, shard id, row) arrays of where its vectors
    are (`Catalog.dataset_locations`, in any order) into a `RowIndex`, in numpy.

    `names_of` maps shard ids to shard names; a row whose shard is not registered (a
    dangling vector) counts as missing, as a row without a vector does.
    """
    idx, ids_of_rows, rows = located
    shard_id = np.full(len(columns.idx), -1, np.int64)
    row_of = np.full(len(columns.idx), -1, np.int32)
    at = np.searchsorted(columns.idx, idx)
    shard_id[at] = ids_of_rows
    row_of[at] = rows
    ids = np.unique(shard_id[shard_id >= 0])
    names = names_of(ids.tolist())
    known = np.array([int(i) in names for i in ids], dtype=bool)
    # shard index of each id among the registered ones; -1 for a dangling id
    number = np.where(known, np.cumsum(known) - 1, -1)
    shard_of = np.full(len(columns.idx), -1, np.int32)
    stored = shard_id >= 0
    shard_of[stored] = number[np.searchsorted(ids, shard_id[stored])]
    row_of[shard_of < 0] = -1
    missing = np.flatnonzero(shard_of < 0)
    where = Locations([names[int(i)] for i in ids[known]], shard_of, row_of)
    return RowIndex(
        keys=columns.keys,
        paths=columns.paths,
        labels=columns.labels,
        splits=columns.splits,
        where=where,
        missing=len(missing),
        first_missing=columns.paths[int(missing[0])] if len(missing) else None,
    )
