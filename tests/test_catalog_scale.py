"""The catalog's million-row paths give the same answers as the row-by-row ones on small
stores: the column read under `lazy_vectors` against the paged join, positioned reads of a
few rows against the memory map, dataset writes and their checks, the key-ordered index."""

from __future__ import annotations

import hashlib
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from featcache.errors import ConfigError, NotFoundError, StoreError
from featcache.store import DatasetRow, FeatureStore
from featcache.store import featurestore as featurestore_module
from featcache.store.streaming import index_rows

FP = "a" * 64
FP2 = "c" * 64


def keys_of(start: int, stop: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(start, stop)]


def vectors_of(keys: list[str], dim: int = 6) -> np.ndarray:
    return np.array(
        [[int(k[j : j + 4], 16) / 7.0 for j in range(0, 4 * dim, 4)] for k in keys],
        dtype=np.float32,
    )


def tangled_store(folder: Path, catalog: str | None = None) -> tuple[FeatureStore, list[str]]:
    """A store whose dataset has what the fast paths must get right: vectors in several
    shards (two of them float16), a key listed at two paths, rows removed (gaps in the row
    numbers), a second extractor and layer, and unlabelled and split-less rows."""
    store = FeatureStore(folder, catalog=catalog)
    keys = keys_of(0, 40)
    for lo, hi, dtype in ((0, 12, "float32"), (12, 25, "float16"), (25, 40, "float32")):
        chunk = keys[lo:hi]
        store.put_batch(
            chunk, {"fc7": vectors_of(chunk), "fc6": vectors_of(chunk, 3)}, FP, dtype=dtype
        )
    store.put_batch(keys[:5], {"fc7": vectors_of(keys[:5]) + 1}, FP2)
    rows = [
        DatasetRow(
            k, f"img/{i:03d}.png", None if i % 9 == 0 else i % 4, ["train", "test", None][i % 3]
        )
        for i, k in enumerate(keys)
    ]
    rows.append(DatasetRow(keys[7], "copy/of-7.png", 3, "train"))  # one image at two paths
    store.add_dataset("d", rows, ["a", "b", "c", "d"])
    # remove every fifth row: the dataset's row numbers have gaps
    store.add_dataset("d", [r for i, r in enumerate(rows) if i % 5 != 1], ["a", "b", "c", "d"])
    store.add_dataset("other", rows[:5], ["a", "b", "c", "d"])
    return store, keys


def paged_lazy(store: FeatureStore, dataset: str, fp: str, layer: str) -> tuple[Any, ...]:
    """What `lazy_vectors` read before: the paged join in dataset order, row by row."""
    index = index_rows(store._catalog.vector_pages(dataset, fp, layer, page=7))
    X = store.read_locations(index.where) if not index.missing else None
    return index.keys, index.paths, index.labels.tolist(), index.splits, X


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_lazy_vectors_equal_the_paged_join(
    tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    catalog = request.getfixturevalue("pg_catalog") if backend == "postgres" else None
    store, _ = tangled_store(tmp_path / "s", catalog)
    with store:
        for dataset, fp, layer in (("d", FP, "fc7"), ("d", FP, "fc6"), ("other", FP2, "fc7")):
            lazy = store.lazy_vectors(dataset, layer, fp)
            want_keys, want_paths, want_labels, want_splits, want_X = paged_lazy(
                store, dataset, fp, layer
            )
            assert lazy.keys == want_keys
            assert lazy.paths == want_paths
            assert lazy.y.tolist() == want_labels
            assert lazy.splits == want_splits
            assert lazy.y.dtype == np.int64
            np.testing.assert_array_equal(np.asarray(lazy.X), want_X)
            np.testing.assert_array_equal(lazy.X.read_rows(np.array([3, 0, 3])), want_X[[3, 0, 3]])
        assert "copy/of-7.png" in store.lazy_vectors("d", "fc7", FP).paths
        # the only extractor with fc6 vectors; two with fc7 for 'other' must be named
        assert store.resolve_fingerprint("d", "fc6", None) == FP
        with pytest.raises(ConfigError, match=r"from 2 extractors \(aaaaaaaaaaaa, cccccccccccc\)"):
            store.lazy_vectors("other", "fc7")


def test_rows_without_a_vector_and_dangling_vectors_are_missing(tmp_path: Path) -> None:
    store, keys = tangled_store(tmp_path / "s")
    with store:
        # the second extractor has vectors for 4 of the dataset's 33 rows only
        assert paged_lazy(store, "d", FP2, "fc7")[4] is None  # the paged join: missing too
        with pytest.raises(NotFoundError, match=r"dataset 'd': 29 of 33 image\(s\) have no"):
            store.lazy_vectors("d", "fc7", FP2)
        # a vector whose shard is no longer registered counts as missing, as before
        catalog = store._catalog
        shard_id = catalog.query(
            "SELECT shard_id FROM vectors WHERE key = ? AND fingerprint = ? AND layer = 'fc7'",
            (keys[0], FP),
        )[0][0]
        with catalog.transaction() as db:
            db.execute("DELETE FROM shards WHERE id = ?", (shard_id,))
        with pytest.raises(NotFoundError, match=r"10 of 33 image\(s\) .* e\.g\. img/000\.png"):
            store.lazy_vectors("d", "fc7", FP)


def test_positioned_reads_equal_the_memory_map(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store, keys = tangled_store(tmp_path / "s")
    with store, monkeypatch.context() as patch:
        patch.setattr(featurestore_module, "FEW_ROWS", 0)  # every read through the map
        everything = store.get(keys, FP)
    with store:
        assert everything.dtype == np.float32
        for key_rows in ([1], [13, 30], [39, 0, 12, 24, 25]):  # a few: positioned reads
            fresh = FeatureStore(tmp_path / "s")
            np.testing.assert_array_equal(
                fresh.get([keys[i] for i in key_rows], FP), everything[key_rows]
            )
            fresh.close()
        np.testing.assert_allclose(everything[13], vectors_of([keys[13]])[0], rtol=1e-3)


def test_positioned_reads_check_the_shard_and_its_rows(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "s")
    keys = keys_of(0, 3)
    store.put_batch(keys, {"fc7": vectors_of(keys)}, FP)
    with store._catalog.transaction() as db:  # a catalog row past the end of its shard
        db.execute("UPDATE vectors SET row = 9 WHERE key = ?", (keys[2],))
    with pytest.raises(StoreError, match=r"\.npy: a vector points past its 3 rows; run"):
        store.get([keys[2]], FP)
    shard = next((tmp_path / "s" / "shards").rglob("*.npy"))
    shard.write_bytes(shard.read_bytes()[:-8])  # truncated: the first check finds it
    fresh = FeatureStore(tmp_path / "s")
    with pytest.raises(StoreError, match=r"shard is \d+ bytes, \d+ were written"):
        fresh.get([keys[0]], FP)


def test_dataset_writes_check_labels_and_splits_naming_the_row(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "s")
    rows = [DatasetRow(k, f"{i}.png", i % 2, "Valid") for i, k in enumerate(keys_of(0, 6))]
    change = store.add_dataset("d", rows, ["a", "b"])
    assert change.splits == {"val": 6}  # 'Valid' is stored as 'val'
    assert {r.split for r in store.dataset_rows("d")} == {"val"}
    again = store.add_dataset("d", rows, ["a", "b"])
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 6)
    bad_label = [*rows[:3], DatasetRow("k", "x.png", 2, None), *rows[3:]]
    with pytest.raises(
        ConfigError, match=r"dataset 'd' row 3 \(x\.png\): label 2 is outside 0\.\.1"
    ):
        store.add_dataset("d", bad_label, ["a", "b"])
    bad_split = [*rows[:4], DatasetRow("k", "y.png", None, "holdout")]
    with pytest.raises(ConfigError, match=r"dataset 'd' row 4 \(y\.png\): The split must be one"):
        store.add_dataset("d", bad_split, ["a", "b"])
    # a row removed by a write does not give its number to a row that write adds
    change = store.add_dataset("d", [*rows[:-1], DatasetRow("n", "new.png", 0, "val")], ["a", "b"])
    assert (change.added, change.removed, change.unchanged) == (1, 1, 5)
    idx = store._catalog.query("SELECT idx FROM dataset_rows WHERE path = 'new.png'")[0][0]
    assert idx == 6
    store.close()


def test_old_catalogs_get_the_key_ordered_index(tmp_path: Path) -> None:
    FeatureStore(tmp_path / "s").close()
    db = sqlite3.connect(tmp_path / "s" / "catalog.sqlite")
    db.execute("DROP INDEX dataset_rows_keys")
    db.execute("CREATE INDEX dataset_rows_key ON dataset_rows(key)")  # what older stores have
    db.commit()
    db.close()
    FeatureStore(tmp_path / "s").close()
    db = sqlite3.connect(tmp_path / "s" / "catalog.sqlite")
    names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    plan = db.execute(
        "EXPLAIN QUERY PLAN SELECT r.idx, v.shard_id, v.row FROM dataset_rows r "
        "JOIN vectors v ON v.key = r.key AND v.fingerprint = ? AND v.layer = ? "
        "WHERE r.dataset = ?",
        (FP, "fc7", "d"),
    ).fetchall()
    db.close()
    assert "dataset_rows_keys" in names and "dataset_rows_key" not in names
    assert "COVERING INDEX dataset_rows_keys" in str(plan)  # the join runs in key order
