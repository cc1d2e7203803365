"""The Ray engine on a local 2-CPU cluster: same vectors as the local engine, same store,
bounded retries when workers die, and a store that verifies after they do."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from conftest import CountingNetwork, write_images
from featcache.errors import ConfigError, DependencyError
from featcache.extractor.pipeline import ExtractConfig, extract
from featcache.store import FeatureStore
from featcache.store.shards import ShardFiles
from ray_faults import DiesOnBlankImage, dies_after_first_shard

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
    # Workers import the fake networks of ray_faults.py, beside this file.
    before = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), before]))
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    finally:
        if before is None:
            del os.environ["PYTHONPATH"]
        else:
            os.environ["PYTHONPATH"] = before
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
    assert resumed.ray is not None and resumed.ray.leftovers_removed == 0  # not its own
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


def test_a_worker_dying_after_writing_a_shard_leaves_a_store_that_verifies(
    cluster: None, images: Path, weights_path: Path, tmp_path: Path
) -> None:
    config = ExtractConfig(batch_size=4, workers=2, layers=("fc6", "fc7"))
    marker = tmp_path / "died"
    store = FeatureStore(tmp_path / "ray")
    events: list[str] = []
    r = extract(
        images,
        weights_path,
        store,
        config=config,
        dataset="d",
        engine="ray",
        network_factory=dies_after_first_shard(marker),
        on_ray_event=lambda event: events.append(event.kind),
    )
    assert marker.exists()  # a worker did die between writing its fc6 shard and reporting it
    assert r.ray is not None
    assert (r.ray.retries, r.ray.batches_given_up, r.ray.leftovers_removed) == (1, 0, 1)
    assert "retry" in events
    assert (r.extracted, r.failed) == (19, 1)
    report = store.verify()
    assert report.ok, report.problems
    assert report.vectors == 2 * 19
    local = FeatureStore(tmp_path / "local")
    extract(
        images, weights_path, local, config=config, dataset="d", network_factory=CountingNetwork
    )
    for layer in config.layers:
        a, b = store.vectors("d", layer=layer), local.vectors("d", layer=layer)
        assert a.keys == b.keys
        np.testing.assert_array_equal(a.X, b.X)


def test_a_batch_that_kills_every_worker_is_given_up_after_the_retries(
    cluster: None, images: Path, weights_path: Path, tmp_path: Path
) -> None:
    blank = images / "a" / "img0000.png"
    from PIL import Image

    Image.new("RGB", (32, 32), (0, 0, 0)).save(blank)
    store = FeatureStore(tmp_path / "st")
    r = extract(
        images,
        weights_path,
        store,
        config=ExtractConfig(batch_size=4, workers=2, ray_max_retries=1),
        dataset="d",
        engine="ray",
        network_factory=DiesOnBlankImage,
    )
    assert r.ray is not None
    assert (r.ray.retries, r.ray.batches_given_up) == (1, 1)
    given_up = [(path, reason) for path, reason in r.failures if "Ray worker died" in reason]
    assert len(given_up) == 4  # the blank image's batch of 4
    assert any(path.endswith("img0000.png") for path, _ in given_up)
    assert "2 times" in given_up[0][1] and "--ray-max-retries" in given_up[0][1]
    assert (r.extracted, r.failed) == (15, 5)  # and img0003, which is no PNG
    assert store.verify().ok
    assert len(store.vectors("d").keys) == 15


@pytest.mark.parametrize(
    ("address", "match"),
    [
        ("ray://10.0.0.5:10001", "ray job submit"),
        ("http://10.0.0.5:8265", "not a URL"),
        ("10.0.0.5", "HOST:PORT"),
    ],
)
def test_address_forms_that_cannot_work_are_refused(address: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ExtractConfig(engine="ray", ray_address=address)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="ray_max_retries"):
        ExtractConfig(ray_max_retries=-1)
    with pytest.raises(ConfigError, match="ray_timeout"):
        ExtractConfig(ray_timeout=0)
    assert ExtractConfig(engine="ray", ray_address=" local ").ray_address is None
    assert ExtractConfig(engine="ray", ray_address="127.0.0.1:6379").ray_address == "127.0.0.1:6379"
