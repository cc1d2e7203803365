"""A store on object storage (moto's S3 server) with its catalog on PostgreSQL: the same
vectors, heads and answers as a local store; range reads through the block cache; verify
and gc on the bucket."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import fsspec
import numpy as np
import pytest

from conftest import write_images
from featcache.classifier.evaluate import evaluate_head
from featcache.classifier.persist import load_head
from featcache.classifier.train import train_head
from featcache.errors import ConfigError
from featcache.extractor.pipeline import extract
from featcache.store import DatasetRow, FeatureStore
from featcache.store.bucket import BlockCache, store_url

FP = "c" * 64


def keys_of(n: int) -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]


def test_store_url_and_catalog_needed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert store_url("s3://b/p/") == "s3://b/p"
    assert store_url(Path("s3://b/p")) == "s3://b/p"  # the CLI's Path options fold '//'
    assert store_url(tmp_path) is None and store_url("file:///x") is None
    monkeypatch.delenv("FEATCACHE_CATALOG", raising=False)
    with pytest.raises(ConfigError, match=r"s3://b/p: a store on object storage .*--catalog"):
        FeatureStore("s3://b/p")


def test_vectors_heads_and_the_block_cache(bucket: str, pg_catalog: str, tmp_path: Path) -> None:
    keys = keys_of(300)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((300, 512)).astype(np.float32)
    store = FeatureStore(bucket, catalog=pg_catalog)
    assert repr(store) == f"FeatureStore({bucket!r})"
    store.register_extractor(FP, {"profile": "caffe"})
    for lo in range(0, 300, 100):
        store.put_batch(keys[lo : lo + 100], {"fc7": X[lo : lo + 100]}, FP)
    store.add_dataset(
        "d", [DatasetRow(k, f"{i}.png", i % 2) for i, k in enumerate(keys)], ["a", "b"]
    )
    head = store.add_head("h", b"head bytes", {"m": 1})
    store.close()
    assert not list(tmp_path.glob("**/catalog.sqlite"))
    objects = fsspec.filesystem("s3").find(bucket.removeprefix("s3://"))
    assert sum(o.endswith(".npy") for o in objects) == 3 and any("heads/h/" in o for o in objects)

    shutil.rmtree(tmp_path / "cache")  # writing read each shard's header back: start cold
    cold = FeatureStore(bucket, catalog=pg_catalog, create=False)
    cache: BlockCache = cold._shards.cache  # type: ignore[attr-defined]
    np.testing.assert_array_equal(cold.get([keys[150]], FP), X[[150]])
    assert cache.fetches == 1  # a 200 kB shard is one block: header and row in one GET
    np.testing.assert_array_equal(cold.vectors("d").X, X)
    assert cold.head_bytes(cold.head("h")) == b"head bytes" and head.version == 1
    cold.close()
    warm = FeatureStore(bucket, catalog=pg_catalog, create=False)
    np.testing.assert_array_equal(warm.vectors("d").X, X)
    assert warm._shards.cache.fetches == 0  # type: ignore[attr-defined]
    warm.close()


def test_the_cache_stays_within_its_budget(bucket: str, pg_catalog: str, tmp_path: Path) -> None:
    keys = keys_of(64)
    X = np.arange(64 * 8192, dtype=np.float32).reshape(64, 8192)  # 2 MB: 3 blocks
    with FeatureStore(bucket, catalog=pg_catalog) as store:
        store.put_batch(keys, {"fc7": X}, FP)
        cache = BlockCache(tmp_path / "small", block=1 << 18, max_bytes=1 << 19)
        store._shards.cache = cache  # type: ignore[attr-defined]
        np.testing.assert_array_equal(store.get([keys[40]], FP), X[[40]])
        assert cache.fetches == 2  # the header's block and the row's: 2 ranged GETs of 9
        np.testing.assert_array_equal(store.get(keys, FP), X)
        held = sum(p.stat().st_size for p in (tmp_path / "small").rglob("*") if p.is_file())
        assert 0 < held <= 1 << 19


def test_verify_and_gc_on_the_bucket(bucket: str, pg_catalog: str) -> None:
    keys = keys_of(20)
    s3 = fsspec.filesystem("s3")
    with FeatureStore(bucket, catalog=pg_catalog) as store:
        store.put_batch(keys, {"fc7": np.ones((20, 4), np.float32)}, FP)
        store.add_dataset("d", [DatasetRow(k, f"{i}.png") for i, k in enumerate(keys)])
        assert store.verify().ok
        # named as a dead worker's shard is (a uuid): gc removes only what featcache names
        stray = bucket.removeprefix("s3://") + "/shards/" + FP[:16] + "/fc7/" + "ab" * 16 + ".npy"
        s3.pipe_file(stray, b"left by a dead worker")
        report = store.verify()
        assert (
            not report.ok
            and f"{'ab' * 16}.npy: shard file not in the catalog" in report.problems[0]
        )
        assert store.gc(grace_seconds=0).files_removed == 1
        assert not s3.exists(stray) and store.verify().ok
        (shard,) = [o for o in s3.find(bucket.removeprefix("s3://")) if o.endswith(".npy")]
        data = bytearray(s3.cat_file(shard))
        data[-1] ^= 0xFF
        s3.pipe_file(shard, bytes(data))
        report = store.verify()
        assert not report.ok and "content changed" in report.problems[0]


@pytest.mark.slow
def test_extract_train_evaluate_like_a_local_store(
    bucket: str, pg_catalog: str, tmp_path: Path, stub_weights: object, counting_network: type
) -> None:
    write_images(tmp_path / "data", 40, classes=("a", "b"))
    results = []
    for where, catalog in ((tmp_path / "local", None), (bucket, pg_catalog)):
        store = FeatureStore(where, catalog=catalog)
        extract(
            tmp_path / "data",
            stub_weights,
            store,
            dataset="d",  # type: ignore[arg-type]
            network_factory=counting_network,
        )
        again = extract(
            tmp_path / "data",
            stub_weights,
            store,
            dataset="d",  # type: ignore[arg-type]
            network_factory=counting_network,
        )
        assert (again.extracted, again.cached) == (0, 40)  # resumes like a local store
        train_head(store, "d", name="h", params={"random_state": 0})
        vectors = store.vectors("d")
        head = load_head(store, "h")
        results.append(
            (
                vectors.X,
                head.estimator.predict_proba(vectors.X),
                evaluate_head(store, "h", "d", split=None),
            )
        )
        store.close()
    (X0, p0, e0), (X1, p1, e1) = results
    np.testing.assert_array_equal(X0, X1)
    np.testing.assert_allclose(p0, p1)
    np.testing.assert_array_equal(e0.confusion, e1.confusion)
