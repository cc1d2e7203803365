"""doctor and advise in bounded memory: neighbour search and fold heads read a `StoredRows`
block by block and find what they find on the same rows in memory; fold heads can be capped;
advise measures a fixed sample of a large dataset and reports its interval."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from featcache.analysis import (
    NearDuplicateConfig,
    advise,
    capped_rows,
    fold_ids,
    near_duplicate_pairs,
    out_of_fold_proba,
)
from featcache.analysis.advise import accuracy_interval, sample_rows
from featcache.errors import ConfigError
from featcache.store import DatasetRow, FeatureStore

FP = "d" * 64


def clustered_store(path: Path, rows: int = 240, dim: int = 12) -> FeatureStore:
    """Three noisy classes in shards of 20 rows, a few exact copies (near duplicates)."""
    rng = np.random.default_rng(5)
    centres = rng.normal(size=(3, dim)).astype(np.float32) * 3
    y = np.arange(rows) % 3
    X = (centres[y] + rng.normal(size=(rows, dim))).astype(np.float32)
    X[10] = X[11] * 1.001  # a near-duplicate pair
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(rows)]
    store = FeatureStore(path)
    for start in range(0, rows, 20):
        store.put_batch(keys[start : start + 20], {"fc7": X[start : start + 20]}, FP)
    store.add_dataset(
        "d",
        [DatasetRow(k, f"img/{i}.png", int(y[i]), "train") for i, k in enumerate(keys)],
        ["a", "b", "c"],
    )
    return store


@pytest.mark.parametrize("cell_rows", [4096, 64])  # exact search, and the cell index
def test_near_duplicate_search_on_stored_rows_equals_in_memory(
    tmp_path: Path, cell_rows: int
) -> None:
    store = clustered_store(tmp_path / "s")
    whole, lazy = store.vectors("d"), store.lazy_vectors("d")
    config = NearDuplicateConfig(cell_rows=cell_rows)
    in_memory = near_duplicate_pairs(whole.X, None, None, config)
    streamed = near_duplicate_pairs(lazy.X, None, None, config)
    assert in_memory.neighbours_exact == streamed.neighbours_exact == (cell_rows == 4096)
    np.testing.assert_array_equal(streamed.a, in_memory.a)
    np.testing.assert_array_equal(streamed.b, in_memory.b)
    np.testing.assert_allclose(streamed.vector, in_memory.vector, rtol=1e-6)
    np.testing.assert_array_equal(streamed.knn_index, in_memory.knn_index)
    assert (10, 11) in set(zip(streamed.a.tolist(), streamed.b.tolist(), strict=True))


def test_out_of_fold_heads_stream_and_can_be_capped(tmp_path: Path) -> None:
    store = clustered_store(tmp_path / "s")
    whole, lazy = store.vectors("d"), store.lazy_vectors("d")
    folds = fold_ids(whole.keys, 3)
    in_memory = out_of_fold_proba(whole.X, whole.y, folds)
    streamed = out_of_fold_proba(lazy.X, lazy.y, folds)
    np.testing.assert_allclose(streamed, in_memory, rtol=1e-5, atol=1e-7)
    capped = out_of_fold_proba(lazy.X, lazy.y, folds, max_fit_rows=60)
    assert capped.shape == in_memory.shape  # every row still scored
    assert (capped.argmax(axis=1) == whole.y).mean() > 0.9
    rows = capped_rows(np.arange(100) % 2 == 0, 10)
    assert len(rows) == 10 and (rows % 2 == 0).all() and (np.diff(rows) > 0).all()
    np.testing.assert_array_equal(rows, capped_rows(np.arange(100) % 2 == 0, 10))


def test_advise_measures_a_fixed_sample_of_a_large_dataset(tmp_path: Path) -> None:
    store = clustered_store(tmp_path / "s")
    keys = store.lazy_vectors("d").keys
    picked = sample_rows(keys, np.ones(len(keys), bool), 90)
    assert len(picked) == 90 and np.array_equal(picked, sample_rows(keys, np.ones(240, bool), 90))
    report = advise(store, "d", layers=["fc7"], folds=3, max_rows=90)
    assert report.sampled == 90 and report.rows == 240  # rows per class: the whole dataset
    assert report.per_class_min == 80
    fc7 = report.layers["fc7"]
    assert fc7.scored == 90
    found = report.as_json()
    low, high = accuracy_interval(fc7.cv_accuracy, 90)
    assert found["sampled_rows"] == 90
    assert found["layers"]["fc7"]["interval95"] == [round(low, 6), round(high, 6)]
    assert any("on 90 rows" in reason for reason in report.reasons)  # the decision's interval
    assert any("fixed sample of 90 of its 240" in line for line in report.summary())
    whole = advise(store, "d", layers=["fc7"], folds=3)
    assert whole.sampled == 0 and "interval95" not in whole.as_json()["layers"]["fc7"]
    with pytest.raises(ConfigError, match=r"'max_rows' must be >= 6"):
        advise(store, "d", layers=["fc7"], folds=3, max_rows=5)
