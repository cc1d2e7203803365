"""The Ray engine on a local 2-CPU cluster: same vectors as the local engine, same store."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import write_images
from featcache.errors import DependencyError
from featcache.extractor.pipeline import ExtractConfig, extract
from featcache.store import FeatureStore
from featcache.store.shards import ShardFiles

pytestmark = [
    pytest.mark.slow,
    pytest.mark.ray,
    # Ray's own modules warn about their internals; ours must not.
    pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.*"),
    pytest.mark.filterwarnings("ignore::FutureWarning:ray.*"),
    pytest.mark.filterwarnings("ignore::ResourceWarning"),
]


@pytest.fixture(scope="module")
def cluster() -> Iterator[None]:
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture
def images(tmp_path: Path) -> Path:
    paths = write_images(tmp_path / "data", 20, seed=11)
    paths[3].write_bytes(b"not a png")
    return tmp_path / "data"


def test_ray_matches_local_engine(
    cluster: None, images: Path, weights_path: Path, tmp_path: Path
) -> None:
    config = ExtractConfig(batch_size=8, workers=2)
    on_ray = FeatureStore(tmp_path / "ray")
    local = FeatureStore(tmp_path / "local")
    r = extract(images, weights_path, on_ray, config=config, dataset="d", engine="ray")
    s = extract(images, weights_path, local, config=config, dataset="d")
    assert (r.extracted, r.failed) == (s.extracted, s.failed) == (19, 1)
    assert r.failures == s.failures  # reported exactly as by the local engine
    assert r.fingerprint == s.fingerprint
    a, b = on_ray.vectors("d"), local.vectors("d")
    assert a.keys == b.keys
    np.testing.assert_allclose(a.X, b.X, rtol=1e-5, atol=1e-5)
    report = on_ray.verify()
    assert report.ok and report.vectors == 19  # each key once
    again = extract(images, weights_path, on_ray, config=config, dataset="d", engine="ray")
    assert (again.extracted, again.cached) == (0, 19)


def test_ray_resumes_after_an_interrupted_run(
    cluster: None, images: Path, weights_path: Path, tmp_path: Path
) -> None:
    store = FeatureStore(tmp_path / "st")
    config = ExtractConfig(batch_size=4, workers=2, layers=("fc6", "fc7"))
    # What a killed run leaves: some shards registered, one written but never registered.
    first = [p for p in sorted(images.rglob("*.png")) if p.name != "img0003.png"][:6]
    partial = extract(
        _as_folder(tmp_path / "part", first), weights_path, store, config=config, engine="ray"
    )
    assert partial.extracted == 6
    ShardFiles(store.path / "shards").write(partial.fingerprint, "fc7", np.ones((2, 4096)))
    resumed = extract(images, weights_path, store, config=config, dataset="d", engine="ray")
    assert (resumed.cached, resumed.extracted, resumed.failed) == (6, 13, 1)
    assert not store.verify().ok  # the orphan is reported until gc
    store.gc(grace_seconds=0)
    report = store.verify()
    assert report.ok and report.vectors == 2 * 19


def _as_folder(root: Path, files: list[Path]) -> Path:
    (root / "x").mkdir(parents=True)
    for p in files:
        (root / "x" / p.name).write_bytes(p.read_bytes())
    return root


def test_without_ray_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, images: Path, weights_path: Path, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(DependencyError, match=r'pip install "featcache\[ray\]"'):
        extract(images, weights_path, FeatureStore(tmp_path / "s"), engine="ray")


def test_ray_reads_the_parquet_export(
    cluster: None, images: Path, weights_path: Path, tmp_path: Path
) -> None:
    import ray

    from featcache.store import export_vectors

    store = FeatureStore(tmp_path / "st")
    extract(images, weights_path, store, dataset="d", engine="ray", config=ExtractConfig(workers=2))
    path = export_vectors(store, "d", tmp_path / "d.parquet")
    rows = ray.data.read_parquet(str(path)).take_all()
    assert len(rows) == 19
    by_key = {r["key"]: np.asarray(r["features"]) for r in rows}
    data = store.vectors("d")
    np.testing.assert_array_equal(by_key[data.keys[0]], data.X[0])
