"""Out of core: heads fit on `StoredRows` exactly as on the same rows in memory; train,
evaluate and export read the store in bounded pieces and give the in-memory results."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from featcache.classifier import evaluate, evaluate_head, train_head
from featcache.classifier.heads import LogRegHead, SoftmaxHead, predict_top_k, row_blocks, top_k
from featcache.errors import ConfigError
from featcache.store import DatasetRow, FeatureStore, export_vectors

FP = "b" * 64


def separable_store(path: Path, rows: int = 600, dim: int = 16, classes: int = 4) -> FeatureStore:
    """Rows of `classes` noisy clusters in shards of 50 rows; 20% test split."""
    rng = np.random.default_rng(3)
    centres = rng.normal(size=(classes, dim)).astype(np.float32) * 2
    y = rng.integers(0, classes, size=rows)
    X = (centres[y] + rng.normal(size=(rows, dim))).astype(np.float32)
    store = FeatureStore(path)
    store.register_extractor(FP, {"weights_note": "random test weights"})
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(rows)]
    for start in range(0, rows, 50):
        store.put_batch(keys[start : start + 50], {"fc7": X[start : start + 50]}, FP)
    store.add_dataset(
        "d",
        [
            DatasetRow(k, f"img/{i}.png", int(y[i]), "test" if i % 5 == 0 else "train")
            for i, k in enumerate(keys)
        ],
        [f"c{c}" for c in range(classes)],
    )
    return store


def test_softmax_fit_on_stored_rows_equals_the_fit_in_memory(tmp_path: Path) -> None:
    store = separable_store(tmp_path / "s")
    whole = store.vectors("d")
    lazy = store.lazy_vectors("d")
    in_memory = SoftmaxHead(random_state=0, epochs=5).fit(whole.X, whole.y)
    streamed = SoftmaxHead(random_state=0, epochs=5).fit(lazy.X, lazy.y)
    np.testing.assert_array_equal(streamed.coef_, in_memory.coef_)
    np.testing.assert_array_equal(streamed.intercept_, in_memory.intercept_)
    assert streamed.loss_curve_ == in_memory.loss_curve_
    assert streamed.n_features_in_ == 16
    # prediction from a row source, a block at a time, equals prediction from the array
    np.testing.assert_array_equal(streamed.predict(lazy.X), in_memory.predict(whole.X))
    np.testing.assert_allclose(streamed.predict_proba(lazy.X), in_memory.predict_proba(whole.X))
    assert in_memory.score(whole.X, whole.y) > 0.9
    with pytest.raises(ValueError, match=r"y has shape \(3,\); expected \(600,\)"):
        SoftmaxHead().fit(lazy.X, lazy.y[:3])


def test_scoring_in_blocks_matches_scoring_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    import featcache.classifier.heads as heads

    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 5)).astype(np.float32)
    y = np.arange(50) % 3
    head = SoftmaxHead(random_state=0, epochs=3).fit(X, y)
    whole = head.predict_proba(X)
    monkeypatch.setattr(heads, "_BLOCK_ROWS", 7)  # 8 blocks
    assert [start for start, _ in row_blocks(X)] == list(range(0, 50, 7))
    np.testing.assert_allclose(head.predict_proba(X), whole)
    np.testing.assert_array_equal(predict_top_k(head, X, 2), top_k(whole, 2)[0])
    assert head.decision_function(X).shape == (50, 3)


def test_train_evaluate_streamed_equal_the_in_memory_route(tmp_path: Path) -> None:
    store = separable_store(tmp_path / "s")
    result = train_head(store, "d", params={"random_state": 0, "epochs": 4}, name="h")
    whole = store.vectors("d")
    train = np.array([s == "train" for s in whole.splits])
    assert result.metrics["n_train"] + result.metrics["n_val"] == int(train.sum())
    assert result.metrics["val_accuracy"] > 0.9
    # the streamed evaluation equals evaluating the loaded head on the rows in memory
    streamed = evaluate_head(store, "h", "d", split="test")
    test = whole.split("test")
    direct = evaluate(result.estimator, test.X, test.y, class_names=whole.class_names)
    assert streamed.summary["n"] == direct.summary["n"] == 120
    assert streamed.accuracy == direct.accuracy
    assert streamed.top5_accuracy == direct.top5_accuracy
    np.testing.assert_array_equal(streamed.confusion, direct.confusion)


def test_logreg_refuses_past_its_budget_naming_softmax(tmp_path: Path) -> None:
    store = separable_store(tmp_path / "s", rows=200)
    with pytest.raises(ConfigError, match=r"past logreg_max_bytes.*--kind softmax"):
        train_head(store, "d", head="logreg", logreg_max_bytes=1000)
    fitted = train_head(store, "d", head="logreg", params={"random_state": 0}, name="lr")
    assert isinstance(fitted.estimator, LogRegHead)
    assert fitted.metrics["val_accuracy"] > 0.9


def test_export_streamed_in_batches_holds_every_row(tmp_path: Path) -> None:
    store = separable_store(tmp_path / "s", rows=230)
    whole = store.vectors("d")
    npz = export_vectors(store, "d", tmp_path / "d.npz", batch_size=64)
    with np.load(npz, allow_pickle=False) as found:
        np.testing.assert_array_equal(found["features"], whole.X)
        assert found["features"].dtype == np.float32
        assert found["keys"].tolist() == whole.keys
        assert found["paths"].tolist() == whole.paths
        np.testing.assert_array_equal(found["labels"], whole.y)
        assert found["splits"].tolist() == whole.splits
    parquet = export_vectors(store, "d", tmp_path / "d.parquet", batch_size=64)
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(parquet)
    assert meta.metadata.num_row_groups == 4  # one per batch
    assert meta.schema_arrow.metadata[b"featcache.weights_note"] == b"random test weights"
    frame = pd.read_parquet(parquet)
    assert frame["key"].tolist() == whole.keys
    np.testing.assert_array_equal(np.stack(frame["features"].to_numpy()), whole.X)
    assert frame["label_name"].tolist()[:3] == [whole.class_names[v] for v in whole.y[:3]]
