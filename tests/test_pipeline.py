"""The extraction run with a counting fake network: caching, failures, duplicates, datasets.

Fake-network tests use `stub_weights` (no layers, a small file's digest): the fake ignores
the weights, so nothing reads or unpickles the 244 MB test file.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import STUB_NOTE, CountingNetwork, write_images
from featcache.errors import ConfigError, WeightsError
from featcache.extractor.pipeline import ExtractConfig, extract
from featcache.extractor.weights import Weights
from featcache.store import FeatureStore
from imagebytes import forged_size, samples


def test_second_run_only_hashes(
    tmp_path: Path, stub_weights: Weights, counting_network: type[CountingNetwork]
) -> None:
    write_images(tmp_path / "data", 10)
    store = FeatureStore(tmp_path / "store")
    config = ExtractConfig(batch_size=4)
    first = extract(
        tmp_path / "data",
        stub_weights,
        store,
        config=config,
        dataset="d",
        network_factory=counting_network,
    )
    assert (first.extracted, first.cached, first.failed) == (10, 0, 0)
    assert counting_network.calls == 3 and counting_network.images == 10
    assert first.weights_note == STUB_NOTE  # the weights' note reaches the report
    second = extract(
        tmp_path / "data",
        stub_weights,
        store,
        config=config,
        dataset="d",
        network_factory=counting_network,
    )
    assert (second.extracted, second.cached) == (0, 10)
    assert counting_network.calls == 3  # no new call: a cache hit costs only hashing
    assert "load_weights" not in second.timings and "network" not in second.timings
    _keys, X, y = store.vectors("d")
    assert X.shape == (10, 4096) and sorted(set(y.tolist())) == [0, 1]


def test_new_layer_or_profile_is_computed_again(
    tmp_path: Path, stub_weights: Weights, counting_network: type[CountingNetwork]
) -> None:
    write_images(tmp_path / "data", 3)
    store = FeatureStore(tmp_path / "store")
    a = extract(tmp_path / "data", stub_weights, store, network_factory=counting_network)
    b = extract(
        tmp_path / "data",
        stub_weights,
        store,
        config=ExtractConfig(layers=("fc7", "fc6")),
        network_factory=counting_network,
    )
    c = extract(
        tmp_path / "data",
        stub_weights,
        store,
        config=ExtractConfig(profile="udacity"),
        network_factory=counting_network,
    )
    assert (a.extracted, b.extracted, c.extracted) == (3, 3, 3)
    assert a.fingerprint == b.fingerprint != c.fingerprint
    assert len(store.extractors()) == 2


def test_bad_images_are_reported_and_skipped(
    tmp_path: Path, stub_weights: Weights, counting_network: type[CountingNetwork]
) -> None:
    paths = write_images(tmp_path / "data", 6)
    paths[1].write_bytes(paths[1].read_bytes()[:60])  # truncated
    paths[2].write_bytes(b"")  # empty
    (tmp_path / "data" / "a" / "notes.png").write_text("not an image")
    huge = tmp_path / "data" / "b" / "huge.png"
    huge.write_bytes(forged_size("png", paths[0].read_bytes(), 9000, 9000))
    # StripOffsets typed as text: Pillow raises TypeError, which used to stop the whole run.
    tiff = samples()["tiff/rgb"]
    at = tiff.index(b"\x11\x01\x04\x00") + 2
    broken_tiff = tmp_path / "data" / "b" / "tags.tif"
    broken_tiff.write_bytes(tiff[:at] + b"\x02\x00" + tiff[at + 2 :])
    store = FeatureStore(tmp_path / "store")
    report = extract(
        tmp_path / "data",
        stub_weights,
        store,
        dataset="d",
        config=ExtractConfig(batch_size=2, max_pixels=10_000_000),
        network_factory=counting_network,
    )
    assert (report.total, report.extracted, report.failed) == (9, 4, 5)
    reasons = dict(report.failures)
    assert "not a readable image" in reasons[str(paths[1])]
    assert "empty file" in reasons[str(paths[2])]
    assert "known format" in reasons[str(tmp_path / "data" / "a" / "notes.png")]
    assert "9000x9000 = 81000000 pixels exceeds the limit" in reasons[str(huge)]
    assert reasons[str(broken_tiff)].startswith(f"{broken_tiff}: not a readable image (TypeError")
    assert len(store.vectors("d").keys) == 4  # the rest of each batch is stored
    assert sorted(path for path, _ in store.failures("d")) == sorted(reasons)
    with open(store.path / "failures.csv", newline="") as f:
        listed = {row["path"]: row["reason"] for row in csv.DictReader(f)}
    assert listed == reasons


def test_duplicates_and_renames_are_computed_once(
    tmp_path: Path, stub_weights: Weights, counting_network: type[CountingNetwork]
) -> None:
    paths = write_images(tmp_path / "data", 3)
    shutil.copy(paths[0], tmp_path / "data" / "b" / "renamed.png")
    store = FeatureStore(tmp_path / "store")
    report = extract(
        tmp_path / "data", stub_weights, store, dataset="d", network_factory=counting_network
    )
    assert (report.total, report.extracted, report.duplicates) == (4, 3, 1)
    data = store.vectors("d")
    assert len(data.keys) == 4 and len(set(data.keys)) == 3


def test_store_none_computes_without_storing(
    tmp_path: Path, stub_weights: Weights, counting_network: type[CountingNetwork]
) -> None:
    write_images(tmp_path / "data", 5)
    report = extract(
        tmp_path / "data",
        stub_weights,
        None,
        network_factory=counting_network,
        config=ExtractConfig(layers=("fc6", "fc7"), batch_size=2),
    )
    assert report.vectors["fc7"].shape == (5, 4096) and report.vectors["fc6"].shape == (5, 4096)
    assert len(report.keys) == 5
    assert not (tmp_path / "store").exists()


def test_split_option_and_append(
    tmp_path: Path, stub_weights: Weights, counting_network: type[CountingNetwork]
) -> None:
    write_images(tmp_path / "train", 4)
    write_images(tmp_path / "test", 2, seed=9)
    store = FeatureStore(tmp_path / "store")
    extract(
        tmp_path / "train",
        stub_weights,
        store,
        dataset="d",
        split="train",
        network_factory=counting_network,
    )
    extract(
        tmp_path / "test",
        stub_weights,
        store,
        dataset="d",
        split="test",
        append=True,
        network_factory=counting_network,
    )
    assert store.vectors("d").splits == ["train"] * 4 + ["test"] * 2


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("profile", "vgg", r"'profile' must be one of \['caffe', 'udacity'\]. Got 'vgg'"),
        ("resize", "pad", r"'resize' must be one of \['squash', 'crop'\]. Got 'pad'"),
        ("precision", "int8", r"'precision' must be one of \['float32', 'bf16', 'fp16'\]"),
        ("layers", ("fc9",), r"'layers' must be a non-empty subset of \['pool5', .*\['fc9'\]"),
        ("layers", "fc7", r"'layers' must be a sequence of layer names.*the string 'fc7'"),
        ("batch_size", -1, r"'batch_size' must be an integer >= 1 \(or 0: auto\). Got -1"),
        ("batch_size", 2.5, r"'batch_size' must be an integer >= 1 \(or 0: auto\). Got 2.5"),
        ("dtype", "int8", r"'dtype' must be one of \['auto', 'float32', 'float16'\]. Got 'int8'"),
        ("workers", 0, r"'workers' must be an integer >= 1. Got 0"),
        ("max_pixels", 0, r"'max_pixels' must be an integer >= 1. Got 0"),
        ("engine", "spark", r"'engine' must be one of \['local', 'ray'\]. Got 'spark'"),
        ("ray_address", "auto", r"'ray_address' \('auto'\) is only used with engine='ray'"),
    ],
)
def test_config_names_the_bad_field_and_what_is_allowed(
    field: str, value: object, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        ExtractConfig(**{field: value})  # type: ignore[arg-type]


def test_config_defaults_and_auto_batch_size() -> None:
    assert ExtractConfig().batch_size == 64 and ExtractConfig(precision="bf16").batch_size == 128
    assert ExtractConfig(layers=["fc6", "fc7", "fc6"]).layers == ("fc6", "fc7")  # type: ignore[arg-type]
    ray = ExtractConfig(engine="ray", ray_address="head:6379")
    assert (ray.engine, ray.ray_address) == ("ray", "head:6379")


def test_bad_engine_and_weights_fail_before_work(
    tmp_path: Path, counting_network: type[CountingNetwork]
) -> None:
    write_images(tmp_path / "data", 2)
    with pytest.raises(ConfigError, match="'engine' must be one of"):
        extract(tmp_path / "data", tmp_path / "w.npy", None, engine="spark")
    (tmp_path / "w.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(WeightsError, match=r"w\.npy"):
        extract(
            tmp_path / "data",
            tmp_path / "w.npy",
            FeatureStore(tmp_path / "s"),
            network_factory=counting_network,
        )
    assert counting_network.calls == 0
    assert FeatureStore(tmp_path / "s").has(["x"], "f", "fc7") == set()


def test_import_and_cached_run_never_import_tensorflow_nor_read_the_weights(
    tmp_path: Path, stub_weights: Weights, counting_network: type[CountingNetwork]
) -> None:
    write_images(tmp_path / "data", 3)
    extract(
        tmp_path / "data",
        stub_weights,
        tmp_path / "store",
        dataset="d",
        network_factory=counting_network,
    )
    code = (
        "import sys, featcache\n"
        "assert 'tensorflow' not in sys.modules, 'import featcache imported TensorFlow'\n"
        f"r = featcache.extract({str(tmp_path / 'data')!r}, {str(stub_weights.path)!r}, "
        f"{str(tmp_path / 'store')!r}, dataset='d')\n"
        "assert r.cached == 3 and r.extracted == 0, r\n"
        "assert 'tensorflow' not in sys.modules, 'a cached run imported TensorFlow'\n"
    )
    # The stub file is no weights file: reading it would raise, so the run proves that a
    # cached run only hashes it (the digest matches the stub's fingerprint).
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.slow
def test_real_network_stores_the_same_vectors_as_a_direct_forward(
    tmp_path: Path, weights_path: Path
) -> None:
    from featcache.extractor.alexnet import AlexNet
    from featcache.extractor.preprocess import preprocess_rgb
    from featcache.extractor.weights import load_weights

    paths = write_images(tmp_path / "data", 5)
    store = FeatureStore(tmp_path / "store")
    extract(tmp_path / "data", weights_path, store, dataset="d", config=ExtractConfig(batch_size=2))
    data = store.vectors("d")
    net = AlexNet(load_weights(weights_path), "caffe")
    batch = np.stack(
        [preprocess_rgb(np.asarray(Image.open(p).convert("RGB")), "caffe") for p in paths]
    )
    direct = net.forward(batch)["fc7"]
    order = [data.paths.index(str(p)) for p in paths]
    # oneDNN picks kernels by batch size, so batches of 2 and of 5 differ in rounding only.
    err = np.linalg.norm(data.X[order] - direct, axis=1) / np.linalg.norm(direct, axis=1)
    assert err.max() < 1e-5


def test_a_known_weights_digest_is_checked_only_when_the_weights_are_read(
    tmp_path: Path, stub_weights: Weights, counting_network: type[CountingNetwork]
) -> None:
    from featcache.extractor.network import Runtime

    write_images(tmp_path / "data", 2)
    other = "0" * 64  # not the stub's digest: without a converted model, refused
    with pytest.raises(
        WeightsError, match=r"SHA-256 .* is not the 000000000000\.\.\. of extractor"
    ):
        extract(
            tmp_path / "data",
            stub_weights,
            FeatureStore(tmp_path / "s"),
            network_factory=counting_network,
            weights_sha256=other,
        )
    # A runtime whose converted model is cached gets a loader it need not call: nothing read.
    runtime = Runtime("custom", counting_network, converted=lambda spec: {"weights_note": "n"})
    report = extract(
        tmp_path / "data",
        tmp_path / "data" / "a" / "img0000.png",  # exists; never read as weights
        FeatureStore(tmp_path / "t"),
        network_factory=runtime,
        weights_sha256=other,
    )
    assert report.extracted == 2 and report.weights_note == "n"
    assert report.fingerprint == ExtractConfig().spec(other).fingerprint
    with pytest.raises(ConfigError, match="'weights_sha256' must be 64 lowercase hex"):
        extract(tmp_path / "data", stub_weights, None, weights_sha256="abc")
