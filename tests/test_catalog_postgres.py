"""The catalog on a real PostgreSQL server: the SQLite catalog's semantics (row identity,
head versions never reused, integrity records), concurrent writers, atomic registration."""

from __future__ import annotations

import hashlib
import multiprocessing
import threading
from pathlib import Path

import numpy as np
import pytest

from featcache.errors import ConfigError, NotFoundError, StoreError
from featcache.store import DatasetRow, FeatureStore
from featcache.store.catalog_postgres import redact_url

FP = "b" * 64


def keys_of(start: int, stop: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(start, stop)]


def vectors_of(keys: list[str]) -> np.ndarray:
    return np.array([[int(k[:6], 16) % 97, len(k)] for k in keys], dtype=np.float32)


def test_rows_vectors_heads_and_integrity(tmp_path: Path, pg_catalog: str) -> None:
    store = FeatureStore(tmp_path / "s", catalog=pg_catalog)
    assert not (tmp_path / "s" / "catalog.sqlite").exists()
    store.register_extractor(FP, {"profile": "caffe"})
    keys = keys_of(0, 10)
    assert store.put_batch(keys, {"fc7": vectors_of(keys)}, FP) == 10
    assert store.put_batch(keys[5:], {"fc7": vectors_of(keys[5:]) + 1}, FP) == 0  # first wins
    np.testing.assert_array_equal(store.get(keys, FP), vectors_of(keys))
    rows = [DatasetRow(k, f"img{i}.png", i % 2, "train") for i, k in enumerate(keys)]
    change = store.add_dataset("d", rows, ["a", "b"])
    assert (change.added, change.rows) == (10, 10)
    again = store.add_dataset("d", rows, ["a", "b"], append=True)
    assert (again.added, again.unchanged, again.rows) == (0, 10, 10)  # row identity: the path
    first = store.add_head("h", b"one", {"m": 1})
    assert store.add_head("h", b"two", {}).version == 2
    store.delete_head("h", 2)
    assert store.add_head("h", b"three", {}).version == 3  # never reused
    store.promote_head("h", first.version)
    assert store.promoted_head("h") == 1
    store.put_image_hashes("dct", {keys[0]: b"\x01\x02"})
    store.put_image_hashes("dct", {keys[0]: b"\x03"})
    assert store.image_hashes(keys[:2], "dct") == {keys[0]: b"\x03"}
    store.close()

    # integrity records: a shard changed outside featcache is found by verify
    reopened = FeatureStore(tmp_path / "s", catalog=pg_catalog, create=False)
    assert reopened.verify().ok
    shard = next((tmp_path / "s" / "shards").rglob("*.npy"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 0xFF
    shard.write_bytes(bytes(data))
    report = reopened.verify()
    assert not report.ok and "content changed" in report.problems[0]
    reopened.close()


def test_one_catalog_belongs_to_one_store(tmp_path: Path, pg_catalog: str) -> None:
    FeatureStore(tmp_path / "a", catalog=pg_catalog).close()
    with pytest.raises(StoreError, match=r"belongs to the store .*/a, not .*/b"):
        FeatureStore(tmp_path / "b", catalog=pg_catalog)


def test_missing_catalog_and_bad_urls(
    tmp_path: Path, pg_catalog: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(NotFoundError, match="no featcache catalog in this database"):
        FeatureStore(tmp_path / "s", catalog=pg_catalog, create=False)
    monkeypatch.setenv("FEATCACHE_CATALOG", "mysql://root:pw@host/db")
    with pytest.raises(ConfigError, match=r"FEATCACHE_CATALOG must be a postgresql://.*\*\*\*"):
        FeatureStore(tmp_path / "s")
    monkeypatch.setenv("FEATCACHE_CATALOG", pg_catalog)
    FeatureStore(tmp_path / "s").close()  # the variable names the catalog
    assert not (tmp_path / "s" / "catalog.sqlite").exists()
    assert redact_url("postgresql://u:secret@h:5/d") == "postgresql://u:***@h:5/d"


def _writer(store: str, catalog: str, start: int, stop: int, barrier: object) -> None:
    fs = FeatureStore(store, catalog=catalog)
    barrier.wait()  # type: ignore[attr-defined]
    for lo in range(start, stop, 10):
        keys = keys_of(lo, lo + 10)
        fs.put_batch(keys, {"fc7": vectors_of(keys)}, FP)
        fs.add_dataset(
            "d",
            [DatasetRow(k, f"img{lo + i}.png", 0, None) for i, k in enumerate(keys)],
            ["a"],
            append=True,
        )
    fs.close()


@pytest.mark.slow
def test_two_writers_with_overlapping_images_lose_and_duplicate_nothing(
    tmp_path: Path, pg_catalog: str
) -> None:
    FeatureStore(tmp_path / "s", catalog=pg_catalog).close()
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    procs = [
        ctx.Process(target=_writer, args=(str(tmp_path / "s"), pg_catalog, lo, hi, barrier))
        for lo, hi in ((0, 60), (30, 90))
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    store = FeatureStore(tmp_path / "s", catalog=pg_catalog, create=False)
    rows = store.dataset_rows("d")
    assert sorted(r.path for r in rows) == sorted(f"img{i}.png" for i in range(90))
    assert store.has(keys_of(0, 90), FP) == set(keys_of(0, 90))
    np.testing.assert_array_equal(store.get(keys_of(0, 90), FP), vectors_of(keys_of(0, 90)))
    counts = store.info()["vectors"]
    assert counts == [{"fingerprint": FP, "layer": "fc7", "count": 90}]
    assert store.verify().ok  # shards that added nothing were deleted, none is unaccounted
    store.close()


def test_a_reader_never_sees_half_a_shard(tmp_path: Path, pg_catalog: str) -> None:
    writer = FeatureStore(tmp_path / "s", catalog=pg_catalog)
    reader = FeatureStore(tmp_path / "s", catalog=pg_catalog, create=False, read_only=True)
    batches = [keys_of(lo, lo + 200) for lo in range(0, 2000, 200)]
    seen: list[int] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            for keys in batches:
                seen.append(len(reader.has(keys, FP)))

    thread = threading.Thread(target=read)
    thread.start()
    for keys in batches:
        writer.put_batch(keys, {"fc7": vectors_of(keys)}, FP)
    done.set()
    thread.join()
    assert set(seen) <= {0, 200} and 200 in seen
    with pytest.raises(StoreError, match="read-only"):
        reader.add_head("h", b"x", {})
    writer.close()
    reader.close()


def test_cli_catalog_option(
    tmp_path: Path, pg_catalog: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from featcache.cli import app

    monkeypatch.setenv("FEATCACHE_CATALOG", "")  # restored after the test: the CLI sets it
    rng = np.random.default_rng(0)
    keys = keys_of(0, 60)
    y = np.arange(60) % 2
    X = (np.eye(2, 8)[y] * 3 + rng.random((60, 8))).astype(np.float32)
    with FeatureStore(tmp_path / "s", catalog=pg_catalog) as store:
        store.register_extractor(FP, {"profile": "caffe", "weights_note": "RANDOM test vectors"})
        store.put_batch(keys, {"fc7": X}, FP)
        store.add_dataset(
            "toy", [DatasetRow(k, f"{i}.png", int(y[i])) for i, k in enumerate(keys)], ["a", "b"]
        )
    runner = CliRunner()
    result = runner.invoke(
        app, ["--catalog", pg_catalog, "train", "--store", str(tmp_path / "s"), "--dataset", "toy"]
    )
    assert result.exit_code == 0, result.output
    assert "head 'toy-softmax' v1" in result.output
    result = runner.invoke(app, ["heads", "list", "--store", str(tmp_path / "s")])
    assert "toy-softmax v1" in result.output  # the option set FEATCACHE_CATALOG for the process
    result = runner.invoke(app, ["--catalog", "sqlite:///x", "heads", "list", "--store", "s"])
    assert result.exit_code == 2
    assert "--catalog must be a postgresql://" in result.output
