"""The feature store: put/get, datasets, atomic shards, verify, gc, concurrent writers, export."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from featcache.errors import ConfigError, HeadError, NotFoundError, StoreError
from featcache.store import DatasetRow, FeatureStore, export_vectors

FP = "f" * 64


def keys_of(n: int, prefix: str = "k") -> list[str]:
    return [f"{prefix}{i:03d}" for i in range(n)]


def vecs(n: int, dim: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, dim), dtype=np.float32)


def test_put_get_has_round_trip(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "s")
    keys, x = keys_of(5), vecs(5)
    assert store.put_batch(keys, {"fc7": x}, FP) == 5
    assert store.has([*keys, "zzz"], FP, "fc7") == set(keys)
    assert store.has(keys, FP, "fc6") == set()
    assert store.has(keys, "0" * 64, "fc7") == set()
    got = store.get(["k003", "k000"], FP, "fc7")
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x[[3, 0]])
    with pytest.raises(NotFoundError, match="1 key.*e.g. nope"):
        store.get(["k000", "nope"], FP, "fc7")


def test_first_vector_wins_and_empty_shards_are_dropped(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.put_batch(keys_of(3), {"fc7": vecs(3, seed=1)}, FP)
    assert store.put_batch(keys_of(3), {"fc7": vecs(3, seed=2)}, FP) == 0
    assert store.put_batch(keys_of(4), {"fc7": vecs(4, seed=3)}, FP) == 1
    np.testing.assert_array_equal(store.get(keys_of(3), FP), vecs(3, seed=1))
    np.testing.assert_array_equal(store.get(["k003"], FP), vecs(4, seed=3)[3:])
    report = store.verify()
    assert report.ok and report.shards == 2 and report.vectors == 4


def test_float16_storage_halves_disk_and_reads_float32(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    x = vecs(4, dim=4096)
    store.put_batch(keys_of(4), {"fc7": x}, FP, dtype="float16")
    got = store.get(keys_of(4), FP)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, x, rtol=1e-3, atol=1e-3)
    shard = next((tmp_path / "shards").rglob("*.npy"))
    assert shard.stat().st_size < 4 * 4096 * 2 + 200
    with pytest.raises(ConfigError, match="'dtype' must be one of"):
        store.put_batch(["x"], {"fc7": x[:1]}, FP, dtype="int8")


def test_dataset_vectors_in_order_with_labels(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    x = vecs(4)
    store.put_batch(keys_of(4), {"fc7": x}, FP)
    store.register_extractor(FP, {"profile": "caffe"})
    rows = [
        DatasetRow("k002", "c.png", 1, "test"),
        DatasetRow("k000", "a.png", 0, "train"),
        DatasetRow("k002", "copy-of-c.png", 1, "train"),
    ]
    store.add_dataset("d", rows, ["cat", "dog"], source="test")
    keys, X, y = store.vectors("d", "fc7")
    assert keys == ["k002", "k000", "k002"]
    np.testing.assert_array_equal(X, x[[2, 0, 2]])
    np.testing.assert_array_equal(y, [1, 0, 1])
    data = store.vectors("d")
    assert data.splits == ["test", "train", "train"] and data.class_names == ["cat", "dog"]
    assert data.fingerprint == FP
    store.add_dataset("d", [DatasetRow("k003", "d.png", 0)], append=True)
    assert store.vectors("d").keys[-1] == "k003"
    info = store.dataset("d")
    assert (info.class_names, info.source, info.rows) == (["cat", "dog"], "", 4)
    assert info.splits == {"train": 2, "test": 1, "": 1}


def test_dataset_with_missing_vectors_names_an_image(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.put_batch(["k1"], {"fc7": vecs(1)}, FP)
    store.add_dataset("d", [DatasetRow("k1", "a.png", 0), DatasetRow("k2", "b.png", 0)], ["x"])
    with pytest.raises(NotFoundError, match=r"1 of 2 image\(s\) have no 'fc7' vector.*b\.png"):
        store.vectors("d")
    with pytest.raises(NotFoundError, match="no dataset 'e' \\(known: d\\)"):
        store.vectors("e")
    with pytest.raises(ConfigError, match="label 3 is outside 0..0"):
        store.add_dataset("bad", [DatasetRow("k1", "a.png", 3)], ["x"])


def test_several_extractors_must_be_chosen(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.put_batch(["k1"], {"fc7": vecs(1)}, FP)
    store.put_batch(["k1"], {"fc7": vecs(1, seed=4)}, "e" * 64)
    store.add_dataset("d", [DatasetRow("k1", "a.png", 0)], ["x"])
    with pytest.raises(ConfigError, match="from 2 extractors"):
        store.vectors("d")
    np.testing.assert_array_equal(store.vectors("d", fingerprint="e" * 64).X, vecs(1, seed=4))


def test_verify_finds_corrupt_and_orphan_shards_and_gc_cleans(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.put_batch(keys_of(3), {"fc7": vecs(3)}, FP)
    store.put_batch(keys_of(2, "j"), {"fc7": vecs(2)}, FP)
    store.add_dataset("d", [DatasetRow("k000", "a", 0)], ["x"])
    shards = sorted((tmp_path / "shards").rglob("*.npy"))
    orphan = shards[0].with_name(f"{'ab' * 16}.npy")  # named as featcache names shards
    orphan.write_bytes(shards[0].read_bytes())
    report = store.verify()
    assert not report.ok and "not in the catalog" in report.problems[0]
    # gc with the default grace leaves young files (a concurrent run's) alone
    assert store.gc().files_removed == 0
    result = store.gc(grace_seconds=0)
    assert not orphan.exists() and result.vectors_removed == 4 and result.files_removed == 2
    assert store.verify().ok
    np.testing.assert_array_equal(store.vectors("d").X, vecs(3)[:1])
    # a damaged registered shard
    survivor = next((tmp_path / "shards").rglob("*.npy"))
    survivor.write_bytes(survivor.read_bytes()[:100])
    fresh = FeatureStore(tmp_path)
    report = fresh.verify()
    assert not report.ok and "truncated" in report.problems[0]
    assert report.damaged == [survivor.relative_to(tmp_path / "shards").as_posix()]


def _writer(path: str, offset: int, n: int) -> None:
    store = FeatureStore(path)
    for start in range(0, n, 5):
        keys = [f"k{i:04d}" for i in range(offset + start, offset + start + 5)]
        x = np.array([[int(k[1:])] * 4 for k in keys], dtype=np.float32)
        store.put_batch(keys, {"fc7": x, "fc6": x * 2}, FP)


def test_two_processes_writing_at_once(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), off, 60)) for off in (0, 30)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = FeatureStore(tmp_path)
    keys = [f"k{i:04d}" for i in range(90)]
    assert store.has(keys, FP, "fc7") == set(keys)
    got = store.get(keys, FP, "fc6")
    np.testing.assert_array_equal(got[:, 0], np.arange(90) * 2)
    report = store.verify()
    assert report.ok, report.problems
    assert report.vectors == 180  # each key once per layer


def test_catalog_that_is_not_sqlite(tmp_path: Path) -> None:
    (tmp_path / "catalog.sqlite").write_bytes(b"not a database at all" * 100)
    with pytest.raises(StoreError, match="not a usable featcache catalog"):
        FeatureStore(tmp_path)
    with pytest.raises(NotFoundError, match="no feature store here"):
        FeatureStore(tmp_path / "nothing", create=False)


def test_failures_are_kept_with_a_csv(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.record_failures("d", [("a.png", "a.png: truncated")])
    store.record_failures("d", [("b.png", "b.png: empty file")])
    assert store.failures("d") == [("a.png", "a.png: truncated"), ("b.png", "b.png: empty file")]
    table = pd.read_csv(tmp_path / "failures.csv")
    assert list(table.columns) == ["time", "dataset", "path", "reason"]
    assert table["path"].tolist() == ["a.png", "b.png"]


def test_heads_are_versioned_and_digest_checked(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    first = store.add_head("signs", b"payload-1", {"head": "softmax"})
    second = store.add_head("signs", b"payload-2", {"head": "logreg"})
    assert (first.version, second.version) == (1, 2)
    assert store.head("signs").version == 2 and store.head("signs", 1).meta == {"head": "softmax"}
    assert store.head_bytes(store.head("signs", 1)) == b"payload-1"
    (tmp_path / second.file).write_bytes(b"payload-X")
    with pytest.raises(HeadError, match="does not match the registered"):
        store.head_bytes(store.head("signs"))
    assert store.delete_head("signs", 2) == 1
    assert [h.version for h in store.heads("signs")] == [1]
    with pytest.raises(NotFoundError, match="no head 'cars' \\(known: signs\\)"):
        store.head("cars")


def test_export_npz_and_parquet_aligned(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "s")
    x = vecs(3)
    store.put_batch(keys_of(3), {"fc7": x}, FP)
    store.add_dataset(
        "d",
        [DatasetRow(k, f"{k}.png", i % 2, "train") for i, k in enumerate(keys_of(3))],
        ["a", "b"],
    )
    with np.load(export_vectors(store, "d", tmp_path / "out.npz")) as npz:
        assert npz["keys"].tolist() == keys_of(3) and npz["features"].dtype == np.float32
        np.testing.assert_array_equal(npz["features"], x)
        np.testing.assert_array_equal(npz["labels"], [0, 1, 0])
    table = pd.read_parquet(export_vectors(store, "d", tmp_path / "out.parquet"))
    assert table["label_name"].tolist() == ["a", "b", "a"]
    assert b"featcache.weights_note" not in pq.read_schema(tmp_path / "out.parquet").metadata
    store.register_extractor(FP, {"profile": "caffe", "weights_note": "RANDOM weights"})
    metadata = pq.read_schema(export_vectors(store, "d", tmp_path / "out.parquet")).metadata
    assert metadata[b"featcache.weights_note"] == b"RANDOM weights"
    assert metadata[b"featcache.fingerprint"] == FP.encode()
    np.testing.assert_array_equal(np.stack(table["features"].to_numpy()), x)
    with pytest.raises(ConfigError, match=r"\.npz or \.parquet"):
        export_vectors(store, "d", tmp_path / "out.csv")


def test_no_temporary_files_are_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FeatureStore(tmp_path)
    x = vecs(2)
    store.put_batch(keys_of(2), {"fc7": x}, FP)
    files = [p for p in (tmp_path / "shards").rglob("*") if p.is_file()]
    assert len(files) == 1 and not files[0].name.startswith(".tmp-")
    # Exactly the shard the catalog registered is on disk, complete.
    np.testing.assert_array_equal(np.load(files[0]), x)
    np.testing.assert_array_equal(store.get(keys_of(2), FP), x)
    names = [p.name for p in files]

    def interrupted(*_: object, **__: object) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(np, "save", interrupted)  # the write fails half-way
    with pytest.raises(StoreError, match="writing a shard failed"):
        store.put_batch(keys_of(2, "j"), {"fc7": vecs(2)}, FP)
    assert [p.name for p in (tmp_path / "shards").rglob("*") if p.is_file()] == names
    assert store.has(keys_of(2, "j"), FP) == set()


def test_file_digests_are_remembered_until_the_file_changes(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "s")
    target = tmp_path / "w.bin"
    target.write_bytes(b"one")
    calls: list[Path] = []

    def digest(path: Path) -> str:
        calls.append(path)
        return path.read_bytes().decode()

    assert store.file_sha256(target, digest) == "one"
    assert FeatureStore(tmp_path / "s").file_sha256(target, digest) == "one"  # another run
    assert len(calls) == 1
    target.write_bytes(b"two!")
    assert store.file_sha256(target, digest) == "two!"
    assert len(calls) == 2


def test_a_file_rewritten_with_its_old_mtime_is_hashed_again(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "s")
    target = tmp_path / "w.bin"
    target.write_bytes(b"one")
    st = target.stat()
    calls: list[bytes] = []

    def digest(path: Path) -> str:
        calls.append(path.read_bytes())
        return path.read_bytes().decode()

    assert store.file_sha256(target, digest) == "one"
    time.sleep(0.01)  # past the kernel's timestamp tick
    target.write_bytes(b"two")  # same size
    os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns))  # `touch -d` sets mtime back
    assert store.file_sha256(target, digest) == "two"
    assert calls == [b"one", b"two"]


def test_stamps_of_an_older_catalog_gain_ctime_and_are_trusted_only_then(tmp_path: Path) -> None:
    FeatureStore(tmp_path / "s").close()
    with sqlite3.connect(tmp_path / "s" / "catalog.sqlite") as db:  # as a store made before
        db.execute("DROP TABLE file_digests")
        db.execute(
            "CREATE TABLE file_digests(path TEXT PRIMARY KEY, size INTEGER NOT NULL, "
            "mtime_ns INTEGER NOT NULL, inode INTEGER NOT NULL, sha256 TEXT NOT NULL)"
        )
    target = tmp_path / "w.bin"
    target.write_bytes(b"one")
    calls: list[Path] = []

    def digest(path: Path) -> str:
        calls.append(path)
        return "d"

    with FeatureStore(tmp_path / "s", create=False, read_only=True) as store:
        assert store.file_sha256(target, digest) == "d"  # no ctime column: nothing trusted
    with FeatureStore(tmp_path / "s") as store:  # a writable open adds the column
        store.file_sha256(target, digest)
        store.file_sha256(target, digest)
    assert len(calls) == 2
    with sqlite3.connect(tmp_path / "s" / "catalog.sqlite") as db:
        (ctime,) = db.execute("SELECT ctime_ns FROM file_digests").fetchone()
    assert ctime == target.stat().st_ctime_ns


def test_append_accepts_a_source_lacking_the_last_classes(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.add_dataset("d", [DatasetRow("k1", "a", 0)], ["0", "1"])
    store.add_dataset("d", [DatasetRow("k2", "b", 2)], ["0", "1", "2"], append=True)
    store.add_dataset("d", [DatasetRow("k3", "c", 0)], ["0"], append=True)
    assert (store.dataset("d").class_names, store.dataset("d").rows) == (["0", "1", "2"], 3)
    with pytest.raises(StoreError, match="cannot add rows with classes"):
        store.add_dataset("d", [DatasetRow("k4", "d", 0)], ["cat", "dog"], append=True)


def test_info_says_whether_this_user_may_write_the_store(tmp_path: Path) -> None:
    FeatureStore(tmp_path / "s").close()
    # info opens every store read-only; what it reports is the user's right to write
    with FeatureStore(tmp_path / "s", create=False, read_only=True) as store:
        assert store.info()["read_only"] is False
