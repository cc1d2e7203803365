"""`featcache store copy`: folder + SQLite -> bucket + PostgreSQL -> folder + SQLite, with
every identity kept and the copy verified."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featcache.cli import app
from featcache.errors import StoreError
from featcache.store import DatasetRow, FeatureStore, copy_store

FP = "d" * 64


def make_source(path: Path) -> np.ndarray:
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(30)]
    X = np.random.default_rng(0).standard_normal((30, 16)).astype(np.float32)
    with FeatureStore(path) as store:
        store.register_extractor(FP, {"profile": "caffe", "weights_note": "RANDOM"})
        store.put_batch(keys[:20], {"fc7": X[:20]}, FP)
        store.put_batch(keys[10:], {"fc7": X[10:] + 100}, FP)  # rows 0-9 of it stay unused
        rows = [
            DatasetRow(k, f"{i}.png", i % 3, "train" if i % 2 else "test")
            for i, k in enumerate(keys)
        ]
        store.add_dataset("d", rows[::-1], ["a", "b", "c"])
        store.add_head("h", b"one", {"m": 1})
        store.add_head("h", b"two", {"m": 2})
        store.add_head("h", b"three", {"m": 3})
        store.delete_head("h", 3)
        store.promote_head("h", 1)
        store.put_image_hashes("dct", {keys[0]: b"\x01"})
        store.record_failures("d", [("bad.png", "truncated")])
    expected = X.copy()
    expected[20:] += 100
    return expected


def check(store: FeatureStore, expected: np.ndarray) -> None:
    vectors = store.vectors("d")
    np.testing.assert_array_equal(vectors.X, expected[::-1])
    assert vectors.paths[0] == "29.png" and vectors.splits[0] == "train"
    assert [h.version for h in store.heads("h")] == [1, 2] and store.promoted_head("h") == 1
    assert store.head_bytes(store.head("h", 2)) == b"two"
    assert store.add_head("h", b"four", {}).version == 4  # 3 was used: never again
    assert store.image_hashes([vectors.keys[-1]], "dct") == {vectors.keys[-1]: b"\x01"}
    assert store.failures() == [("bad.png", "truncated")]


def test_copy_both_ways_through_a_bucket(
    tmp_path: Path, bucket: str, pg_catalog: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = make_source(tmp_path / "src")
    runner = CliRunner()
    monkeypatch.setenv("FEATCACHE_CATALOG", "")
    result = runner.invoke(
        app,
        [
            "store",
            "copy",
            "--store",
            str(tmp_path / "src"),
            "--to",
            bucket,
            "--dst-catalog",
            pg_catalog,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "copied 2 shard(s)" in result.output and "30 vector(s)" in result.output
    assert result.output.rstrip().endswith("verified")
    with FeatureStore(bucket, catalog=pg_catalog, create=False) as remote:
        assert remote.verify().ok
    result = runner.invoke(
        app,
        [
            "store",
            "copy",
            "--store",
            bucket,
            "--to",
            str(tmp_path / "back"),
            "--src-catalog",
            pg_catalog,
        ],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "back" / "catalog.sqlite").exists()
    with FeatureStore(tmp_path / "back") as back:
        check(back, expected)
    with FeatureStore(bucket, catalog=pg_catalog, create=False) as remote:
        check(remote, expected)


def test_copy_refuses_a_store_that_is_not_empty(tmp_path: Path) -> None:
    make_source(tmp_path / "a")
    make_source(tmp_path / "b")
    with (
        FeatureStore(tmp_path / "a") as a,
        FeatureStore(tmp_path / "b") as b,
        pytest.raises(StoreError, match="the destination store is not empty"),
    ):
        copy_store(a, b)


def test_copy_finds_a_damaged_source(tmp_path: Path) -> None:
    make_source(tmp_path / "a")
    shard = sorted((tmp_path / "a" / "shards").rglob("*.npy"))[0]
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    with FeatureStore(tmp_path / "a") as a, FeatureStore(tmp_path / "b") as b:
        report = copy_store(a, b)
    assert not report.ok and "content changed" in report.problems[0]
