"""Rows of a dataset's vectors read from the store batch by batch, never gathered whole.

`StoredRows` is what `FineTuneHead` trains on: indexing it with a mask or row numbers gives
another lazy view, and `read_rows` gathers just the asked rows, as float32, from the store's
memory-mapped shards. A pool5 matrix stored in float16 is thus never copied into one float32
array (which `FeatureStore.vectors` would make, twice the size of the shards).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from featcache.errors import NotFoundError
from featcache.store import FeatureStore

__all__ = ["LazyVectors", "StoredRows", "lazy_vectors"]


class StoredRows:
    """A read-only (n_rows, dim) view of stored vectors for `keys`, in that order."""

    def __init__(
        self, store: FeatureStore, keys: Sequence[str], fingerprint: str, layer: str, dim: int
    ) -> None:
        self.store = store
        self.keys = list(keys)
        self.fingerprint = fingerprint
        self.layer = layer
        self.shape = (len(self.keys), dim)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"StoredRows({self.shape[0]} x {self.shape[1]} '{self.layer}' vectors)"

    def __getitem__(self, index: Any) -> StoredRows:
        """A lazy subset: `index` is a boolean mask or an array of row numbers."""
        picked = np.arange(len(self.keys))[np.asarray(index)]
        return StoredRows(
            self.store, [self.keys[i] for i in picked], self.fingerprint, self.layer, self.shape[1]
        )

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """The vectors of `rows` (row numbers of this view) as a (len(rows), dim) float32 array."""
        return self.store.get([self.keys[i] for i in rows], self.fingerprint, self.layer)


@dataclass(frozen=True)
class LazyVectors:
    """Like `featcache.store.LabelledVectors`, with X a `StoredRows` instead of an array."""

    keys: list[str]
    X: StoredRows
    y: np.ndarray
    paths: list[str]
    splits: list[str | None]
    class_names: list[str]
    fingerprint: str
    layer: str
    dataset: str = ""

    def __len__(self) -> int:
        return len(self.keys)


def lazy_vectors(
    store: FeatureStore, dataset: str, layer: str, fingerprint: str | None = None
) -> LazyVectors:
    """A dataset's vectors in dataset order, to be read batch by batch.

    Raises `NotFoundError` naming the first image without a vector, as `vectors` does.
    """
    names = store.dataset(dataset).class_names
    fp = store.resolve_fingerprint(dataset, layer, fingerprint)
    rows = store.dataset_rows(dataset)
    keys = [r.key for r in rows]
    present = store.has(keys, fp, layer)
    missing = [r for r in rows if r.key not in present]
    if missing or not rows:
        example = missing[0].path if missing else "none"
        raise NotFoundError(
            f"dataset '{dataset}': {len(missing)} of {len(rows)} image(s) have no '{layer}' "
            f"vector for extractor {fp[:12]}, e.g. {example}; run extract again"
        )
    dim = int(store.get(keys[:1], fp, layer).shape[1])
    return LazyVectors(
        keys=keys,
        X=StoredRows(store, keys, fp, layer, dim),
        y=np.array([-1 if r.label is None else r.label for r in rows], dtype=np.int64),
        paths=[r.path for r in rows],
        splits=[r.split for r in rows],
        class_names=names,
        fingerprint=fp,
        layer=layer,
        dataset=dataset,
    )
