"""Streaming reads: `FeatureStore.batches` and `lazy_vectors` give exactly what `vectors`
gives, in bounded pieces; `vectors` refuses past its size limit naming them; shards are read
through a bounded LRU of open maps."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from featcache.errors import ConfigError, NotFoundError
from featcache.store import DatasetRow, FeatureStore, VectorBatch

FP = "a" * 64


def make_store(
    path: Path, *, rows: int = 103, shard_rows: int = 10, dim: int = 6, **kwargs: object
) -> FeatureStore:
    """A store with `rows` fc7 and pool5 vectors in shards of `shard_rows` rows, written out
    of dataset order (the dataset lists them shuffled), splits train/val/test/none."""
    rng = np.random.default_rng(0)
    store = FeatureStore(path, **kwargs)  # type: ignore[arg-type]
    keys = [f"k{i:04d}" for i in range(rows)]
    fc7 = rng.normal(size=(rows, dim)).astype(np.float32)
    pool5 = rng.normal(size=(rows, dim + 3)).astype(np.float32)
    for start in range(0, rows, shard_rows):
        part = slice(start, start + shard_rows)
        store.put_batch(keys[part], {"fc7": fc7[part], "pool5": pool5[part]}, FP)
    order = rng.permutation(rows)
    splits = ["train", "val", "test", None]
    store.add_dataset(
        "d",
        [
            DatasetRow(keys[i], f"img/{i}.png", int(i % 3) if i % 7 else None, splits[i % 4])
            for i in order
        ],
        ["a", "b", "c"],
    )
    return store


def joined(batches: list[VectorBatch]) -> tuple[list[str], np.ndarray, np.ndarray, list[str]]:
    keys = [k for b in batches for k in b.keys]
    X = np.concatenate([b.X for b in batches])
    y = np.concatenate([b.y for b in batches])
    paths = [p for b in batches for p in b.paths]
    return keys, X, y, paths


def test_batches_equal_vectors(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    for layer in ("fc7", "pool5"):
        whole = store.vectors("d", layer)
        for batch_size in (1, 7, 10, 103, 500):
            batches = list(store.batches("d", layer, batch_size=batch_size))
            assert all(len(b) <= batch_size for b in batches)
            assert [b.start for b in batches] == list(range(0, 103, batch_size))
            keys, X, y, paths = joined(batches)
            assert keys == whole.keys and paths == whole.paths
            assert X.dtype == np.float32 and X.shape == whole.X.shape
            np.testing.assert_array_equal(X, whole.X)
            np.testing.assert_array_equal(y, whole.y)
            assert [s for b in batches for s in b.splits] == whole.splits


def test_batches_of_one_split_equal_the_split_in_memory(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    for split in ("train", "val", "test"):
        part = store.vectors("d").split(split)
        batches = list(store.batches("d", split=split, batch_size=8))
        keys, X, y, _ = joined(batches)
        assert keys == part.keys and {s for b in batches for s in b.splits} == {split}
        np.testing.assert_array_equal(X, part.X)
        np.testing.assert_array_equal(y, part.y)


def test_batches_accept_split_aliases_and_refuse_bad_arguments(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    assert [b.keys for b in store.batches("d", split="validation")] == [
        b.keys for b in store.batches("d", split="val")
    ]
    with pytest.raises(ConfigError, match=r"'batch_size' must be an integer >= 1\. Got 0"):
        store.batches("d", batch_size=0)
    with pytest.raises(NotFoundError, match=r"no dataset 'nope' \(known: d\)"):
        store.batches("nope")
    with pytest.raises(NotFoundError, match=r"dataset 'd' has no 'fc8' vectors"):
        store.batches("d", "fc8")


def test_a_row_without_a_vector_is_named_before_the_first_batch(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    rows = store.dataset_rows("d")
    store.add_dataset("d", [*rows, DatasetRow("nokey", "img/new.png", 0, "train")], ["a", "b", "c"])
    with pytest.raises(NotFoundError, match=r"1 of 104 image\(s\) have no 'fc7' vector.*img/new"):
        store.batches("d")
    with pytest.raises(NotFoundError, match=r"1 of 104 image\(s\).*img/new\.png"):
        store.lazy_vectors("d")
    # the split without the new row still streams
    assert sum(len(b) for b in store.batches("d", split="val")) == 26


def test_lazy_vectors_read_any_rows_and_stream_blocks(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    whole = store.vectors("d", "pool5")
    lazy = store.lazy_vectors("d", "pool5")
    assert lazy.keys == whole.keys and lazy.X.shape == whole.X.shape == (103, 9)
    np.testing.assert_array_equal(lazy.y, whole.y)
    rows = np.random.default_rng(1).choice(103, size=40, replace=False)
    np.testing.assert_array_equal(lazy.X.read_rows(rows), whole.X[rows])
    starts = [start for start, _ in lazy.X.blocks(25)]
    assert starts == [0, 25, 50, 75, 100]
    np.testing.assert_array_equal(np.concatenate([b for _, b in lazy.X.blocks(25)]), whole.X)
    test = lazy.split("test")
    np.testing.assert_array_equal(np.asarray(test.X), whole.split("test").X)
    mask = whole.y == 2
    np.testing.assert_array_equal(lazy.X[mask].read_rows(np.arange(mask.sum())), whole.X[mask])


def test_vectors_refuse_past_max_bytes_naming_the_streaming_api(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s")
    assert store.vectors("d", max_bytes=103 * 6 * 4).X.shape == (103, 6)
    with pytest.raises(ConfigError, match=r"past vectors\(\)'s max_bytes.*store\.batches"):
        store.vectors("d", max_bytes=103 * 6 * 4 - 1)
    assert store.vectors("d", max_bytes=None).X.shape == (103, 6)


def open_npy_files() -> int:
    fd_dir = Path("/proc/self/fd")
    found = 0
    for fd in fd_dir.iterdir():
        try:
            found += os.readlink(fd).endswith(".npy")
        except OSError:
            continue
    return found


@pytest.mark.skipif(not Path("/proc/self/fd").exists(), reason="needs /proc")
def test_open_shards_stay_within_the_lru(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", rows=120, shard_rows=4, max_open_shards=3)
    before = open_npy_files()
    whole = store.vectors("d")  # 30 shards x 2 layers on disk, 30 read
    assert whole.X.shape == (120, 6)
    assert open_npy_files() - before <= 3
    keys = whole.keys[::7]
    np.testing.assert_array_equal(store.get(keys, FP), whole.X[::7])
    assert open_npy_files() - before <= 3
    store.close()
    assert open_npy_files() == before
    with pytest.raises(ConfigError, match=r"'max_open_shards' must be an integer >= 1\. Got 0"):
        FeatureStore(tmp_path / "s", max_open_shards=0)


def test_datasets_generation_is_a_counter_every_dataset_write_moves(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", rows=12)
    other = FeatureStore(tmp_path / "s")  # another connection sees the writes
    first = store.datasets_generation()
    assert other.datasets_generation() == first
    store.vectors("d")  # reads change nothing
    assert store.datasets_generation() == first
    store.add_dataset("e", [DatasetRow("k0000", "x.png", None, None)])
    assert other.datasets_generation() == first + 1
    store.add_dataset("e", [DatasetRow("k0001", "y.png", None, None)], append=True)
    store.add_dataset("d", store.dataset_rows("d")[:3], ["a", "b", "c"])
    assert other.datasets_generation() == first + 3
    # the counter is one 'meta' row, bumped in each dataset write's transaction
    found = store._catalog.query("SELECT value FROM meta WHERE key='datasets_generation'")
    assert int(found[0][0]) == first + 3
