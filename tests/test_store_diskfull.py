"""A full disk: a clear error, nothing half-written registered, and the re-run resumes.

The disk is filled by simulation: ``os.fsync`` raising ENOSPC (where a full disk shows up
for buffered writes), and SQLite's ``max_page_count`` making the catalog full.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from conftest import CountingNetwork, write_images
from featcache import _io
from featcache.errors import StoreError
from featcache.extractor.pipeline import ExtractConfig, extract
from featcache.extractor.weights import Weights
from featcache.store import FeatureStore

FP = "f" * 64
STUB = Weights(Path("stub-alexnet.npy"), {}, "34" * 32, "RANDOM stub weights for tests")


def disk_full_after(monkeypatch: pytest.MonkeyPatch, good_writes: int) -> None:
    """Let `good_writes` fsyncs of files succeed, then fail every one with ENOSPC."""
    real = os.fsync
    calls = {"n": 0}

    def fsync(fd: int) -> None:
        if not os.path.isdir(f"/proc/self/fd/{fd}"):
            calls["n"] += 1
            if calls["n"] > good_writes:
                raise OSError(errno.ENOSPC, "No space left on device")
        real(fd)

    monkeypatch.setattr(_io.os, "fsync", fsync)


def shard_files(store: Path) -> list[Path]:
    return sorted((store / "shards").rglob("*")) if (store / "shards").exists() else []


def test_shard_write_on_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = FeatureStore(tmp_path)
    x = np.random.default_rng(0).random((4, 8), dtype=np.float32)
    disk_full_after(monkeypatch, 0)
    with pytest.raises(StoreError, match="disk is full while writing a shard") as caught:
        store.put_batch(["a", "b", "c", "d"], {"fc7": x}, FP)
    assert "nothing half-written was kept or registered" in str(caught.value)
    assert "run the command again" in str(caught.value)
    assert [p for p in shard_files(tmp_path) if p.is_file()] == []  # no temporary file left
    assert store.has(["a", "b", "c", "d"], FP) == set()
    monkeypatch.undo()
    assert store.put_batch(["a", "b", "c", "d"], {"fc7": x}, FP) == 4


def test_extract_on_a_full_disk_then_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_images(tmp_path / "imgs", 8, size=8)
    config = ExtractConfig(batch_size=2)
    clean = tmp_path / "clean"
    extract(tmp_path / "imgs", STUB, clean, dataset="d", network_factory=CountingNetwork)
    disk_full_after(monkeypatch, 2)  # two batches fit
    with pytest.raises(StoreError, match="disk is full"):
        extract(
            tmp_path / "imgs",
            STUB,
            tmp_path / "s",
            dataset="d",
            network_factory=CountingNetwork,
            config=config,
        )
    monkeypatch.undo()
    with FeatureStore(tmp_path / "s") as fs:
        assert fs.verify().ok
    again = extract(
        tmp_path / "imgs",
        STUB,
        tmp_path / "s",
        dataset="d",
        network_factory=CountingNetwork,
        config=config,
    )
    assert (again.cached, again.extracted) == (4, 4)
    with FeatureStore(tmp_path / "s") as fs, FeatureStore(clean) as ref:
        np.testing.assert_array_equal(fs.vectors("d").X, ref.vectors("d").X)


def test_full_catalog_says_so_and_registers_nothing(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    catalog = store._catalog  # the test reaches in to make SQLite's file full
    pages = catalog.query("PRAGMA page_count")[0][0]
    catalog.query(f"PRAGMA max_page_count={pages + 1}")
    keys = [f"key-{i:05d}-{'x' * 40}" for i in range(3000)]
    x = np.zeros((3000, 2), dtype=np.float32)
    with pytest.raises(StoreError, match="disk is full while writing the catalog") as caught:
        store.put_batch(keys, {"fc7": x}, FP)
    assert "cannot rollback" not in str(caught.value)
    assert "nothing half-written" in str(caught.value)
    assert [p for p in shard_files(tmp_path) if p.is_file()] == []  # its shard went too
    assert store.has(keys[:10], FP) == set()
    catalog.query("PRAGMA max_page_count=1073741823")
    assert store.put_batch(keys, {"fc7": x}, FP) == 3000
    assert store.verify().ok
