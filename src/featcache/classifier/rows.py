"""Rows of a dataset's vectors read from the store batch by batch, never gathered whole.

`StoredRows` (from `featcache.store.streaming`) is what the heads train on out of core:
indexing it with a mask or row numbers gives another lazy view, and `read_rows` gathers just
the asked rows, as float32, from the store's memory-mapped shards. A pool5 matrix stored in
float16 is thus never copied into one float32 array.
"""

from __future__ import annotations

from featcache.store import FeatureStore, LazyVectors, StoredRows

__all__ = ["LazyVectors", "StoredRows", "lazy_vectors"]


def lazy_vectors(
    store: FeatureStore, dataset: str, layer: str, fingerprint: str | None = None
) -> LazyVectors:
    """A dataset's vectors in dataset order, to be read batch by batch
    (`FeatureStore.lazy_vectors`)."""
    return store.lazy_vectors(dataset, layer, fingerprint)
