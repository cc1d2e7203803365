"""Damage is found and repaired: checksums, truncation, NaN, lost catalogs, gc's refusals."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import CountingNetwork, write_images
from featcache.cli import app
from featcache.errors import StoreError
from featcache.extractor.pipeline import ExtractConfig, ExtractReport, extract
from featcache.extractor.weights import Weights
from featcache.store import DatasetRow, FeatureStore

FP = "f" * 64
STUB = Weights(Path("stub-alexnet.npy"), {}, "cd" * 32, "RANDOM stub weights for tests")
runner = CliRunner()


def cli(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def vecs(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 8), dtype=np.float32)


def shard_files(store: Path) -> list[Path]:
    return sorted((store / "shards").rglob("*.npy"))


def overwrite_row(shard: Path, row: int, values: np.ndarray, *, keep_mtime: bool) -> None:
    """Change one row of a shard in place, with other finite numbers (same size)."""
    st = shard.stat()
    matrix = np.load(shard, mmap_mode="r+")
    matrix[row] = values
    matrix.flush()
    del matrix
    if keep_mtime:  # an attacker (or a careless tool) may also put the old mtime back
        os.utime(shard, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_verify_names_a_shard_with_one_row_overwritten(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.put_batch(["a", "b"], {"fc7": vecs(2)}, FP)
    store.put_batch(["c", "d"], {"fc7": vecs(2, seed=1)}, FP)
    assert store.verify().ok
    target = shard_files(tmp_path)[0]
    overwrite_row(target, 1, np.full(8, 0.5, np.float32), keep_mtime=True)
    report = FeatureStore(tmp_path).verify()
    name = target.relative_to(tmp_path / "shards").as_posix()
    assert not report.ok and report.damaged == [name]
    assert len(report.problems) == 1 and str(target) in report.problems[0]
    assert "content changed" in report.problems[0]
    code, output = cli("store", "verify", "--store", tmp_path)
    assert code == 3 and name in output and "content changed" in output


def test_a_changed_shard_is_not_served_and_extract_recomputes_it(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.put_batch(["a", "b"], {"fc7": vecs(2)}, FP)
    overwrite_row(shard_files(tmp_path)[0], 0, np.zeros(8, np.float32), keep_mtime=False)
    fresh = FeatureStore(tmp_path)
    with pytest.raises(StoreError, match="content changed.*store verify --store .* --repair"):
        fresh.get(["a"], FP)
    assert FeatureStore(tmp_path).has(["a", "b"], FP) == set()  # so extract computes them


def test_nan_vectors_give_a_store_error_naming_the_shard(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    x = vecs(3)
    x[1, 2] = np.nan
    store.put_batch(["a", "b", "c"], {"fc7": x}, FP)
    store.add_dataset("d", [DatasetRow(k, f"{k}.png", 0) for k in "abc"], ["x"])
    shard = str(shard_files(tmp_path)[0])
    with pytest.raises(StoreError, match=rf"{shard}: NaN or infinite values in row\(s\) \[1\]"):
        store.get(["a", "b"], FP)
    with pytest.raises(StoreError, match="NaN or infinite"):
        store.vectors("d")
    np.testing.assert_array_equal(store.get(["c", "a"], FP), x[[2, 0]])
    report = store.verify()
    assert report.damaged and "NaN" in report.problems[0]


def images(folder: Path, n: int) -> Path:
    write_images(folder, n, size=8)
    return folder


def run(data: Path, store: Path, batch_size: int = 2) -> ExtractReport:
    return extract(
        data,
        STUB,
        store,
        dataset="d",
        network_factory=CountingNetwork,
        config=ExtractConfig(batch_size=batch_size),
    )


def test_truncated_shard_is_recomputed_by_extract(tmp_path: Path) -> None:
    data = images(tmp_path / "imgs", 6)
    clean = extract(data, STUB, tmp_path / "clean", dataset="d", network_factory=CountingNetwork)
    assert clean.extracted == 6
    run(data, tmp_path / "s")
    victim = shard_files(tmp_path / "s")[1]
    victim.write_bytes(victim.read_bytes()[:200])
    code, output = cli("store", "verify", "--store", tmp_path / "s")
    assert code == 3 and "truncated" in output
    again = run(data, tmp_path / "s")
    assert (again.extracted, again.cached) == (2, 4)
    assert len(again.repairs) == 1 and "truncated" in again.repairs[0]
    with FeatureStore(tmp_path / "s") as fs, FeatureStore(tmp_path / "clean") as ref:
        got, want = fs.vectors("d"), ref.vectors("d")
        assert got.keys == want.keys
        np.testing.assert_array_equal(got.X, want.X)
        assert fs.verify().ok


def test_verify_repair_drops_damaged_vectors_then_extract_recomputes(tmp_path: Path) -> None:
    data = images(tmp_path / "imgs", 4)
    run(data, tmp_path / "s")
    shard_files(tmp_path / "s")[0].unlink()
    code, output = cli("store", "verify", "--store", tmp_path / "s", "--repair")
    assert code == 0, output
    assert "repaired: shard" in output and "1 shard(s) and 2 vector(s) dropped" in output
    code, output = cli("store", "verify", "--store", tmp_path / "s")
    assert code == 0, output
    CountingNetwork.images = 0
    again = run(data, tmp_path / "s")
    assert again.extracted == 2 and CountingNetwork.images == 2
    assert FeatureStore(tmp_path / "s").vectors("d").X.shape == (4, 4096)


def test_zero_byte_catalog_makes_gc_refuse_and_keeps_every_shard(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.put_batch(["a", "b"], {"fc7": vecs(2)}, FP)
    store.put_batch(["c"], {"fc7": vecs(1)}, FP)
    store.close()
    before = shard_files(tmp_path)
    (tmp_path / "catalog.sqlite").write_bytes(b"")
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    code, output = cli("store", "gc", "--store", tmp_path, "--grace", "0")
    assert code == 1 and "catalog is empty (0 bytes)" in output
    code, output = cli("store", "verify", "--store", tmp_path)
    assert code == 1 and "refusing to treat it as a new store" in output
    assert shard_files(tmp_path) == before
    assert (tmp_path / "catalog.sqlite").stat().st_size == 0


def test_gc_refuses_when_the_catalog_lists_no_shards_but_files_exist(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.put_batch(["a", "b"], {"fc7": vecs(2)}, FP)
    store.close()
    for suffix in ("", "-wal", "-shm"):
        (tmp_path / f"catalog.sqlite{suffix}").unlink(missing_ok=True)
    FeatureStore(tmp_path).close()  # a new, empty catalog beside old shards
    code, output = cli("store", "gc", "--store", tmp_path, "--grace", "0")
    assert code == 1 and "lists no shards" in output and "1 shard file(s)" in output
    assert len(shard_files(tmp_path)) == 1


def test_gc_never_deletes_a_referenced_shard(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    store.put_batch(["a", "b"], {"fc7": vecs(2)}, FP)
    store.put_batch(["c"], {"fc7": vecs(1)}, FP)
    store.add_dataset("d", [DatasetRow("a", "a.png"), DatasetRow("c", "c.png")])
    before = shard_files(tmp_path)
    report = store.gc(grace_seconds=0)
    assert report.files_removed == 0 and report.vectors_removed == 1  # 'b': in no dataset
    assert shard_files(tmp_path) == before
    assert store.verify().ok
