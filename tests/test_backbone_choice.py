"""Which backbone's vectors a head trains on: the default layer per backbone, the only
backbone a dataset holds, and errors that name the extract command (planted vectors, no
TensorFlow)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featcache.cli import app
from featcache.errors import ConfigError, NotFoundError
from featcache.extractor.stored import extract_command, resolve_vectors, stored_layers
from featcache.store import DatasetRow, FeatureStore

ALEX, VGG, VGG2, RESNET = "a" * 64, "b" * 64, "d" * 64, "e" * 64
NETWORK = {ALEX: "alexnet", VGG: "vgg16", VGG2: "vgg16", RESNET: "resnet50"}


def make_store(path: Path, held: dict[str, tuple[str, ...]], *, rows: int = 24) -> FeatureStore:
    """Dataset 'd' (two separable classes) with vectors of each fingerprint's `held` layers;
    a spec without ``network`` (stores made before the registry) is AlexNet's."""
    rng = np.random.default_rng(0)
    y = np.arange(rows) % 2
    keys = [hashlib.sha256(f"img{i}".encode()).hexdigest() for i in range(rows)]
    store = FeatureStore(path)
    for fp, layers in held.items():
        spec = {"profile": "caffe", "weights_note": "RANDOM test vectors"}
        if fp != ALEX:
            spec["network"] = NETWORK[fp]
        store.register_extractor(fp, spec)
        for layer in layers:
            X = rng.standard_normal((rows, 6)) + 4 * y[:, None]
            store.put_batch(keys, {layer: X.astype(np.float32)}, fp)
    store.add_dataset(
        "d",
        [DatasetRow(k, f"pics/{i}.png", int(y[i]), "train") for i, k in enumerate(keys)],
        ["cat", "dog"],
        source="folder pics",  # as the folder reader describes it
    )
    return store


def test_holdings_list_backbones_and_layers_in_registry_order(tmp_path: Path) -> None:
    store = make_store(
        tmp_path / "s", {RESNET: ("avg_pool",), VGG: ("fc2", "block5_pool"), ALEX: ("fc7",)}
    )
    held = stored_layers(store, "d")
    assert held.keys == 24
    assert [s.label for s in held.layers] == [
        "alexnet/fc7",
        "vgg16/block5_pool",
        "vgg16/fc2",
        "resnet50/avg_pool",
    ]
    assert held.backbones == ("alexnet", "vgg16", "resnet50")
    assert all(s.complete and s.keys == 24 for s in held.layers)
    assert [s.fingerprint for s in held.of("vgg16", "fc2")] == [VGG]


def test_each_backbone_trains_on_its_own_default_layer(tmp_path: Path) -> None:
    store = make_store(
        tmp_path / "s", {ALEX: ("fc6", "fc7"), VGG: ("fc1", "fc2"), RESNET: ("avg_pool",)}
    )
    chosen = {
        name: (s.layer, s.fingerprint)
        for name in ("alexnet", "vgg16", "resnet50")
        for s in [resolve_vectors(store, "d", backbone=name)]
    }
    assert chosen == {
        "alexnet": ("fc7", ALEX),
        "vgg16": ("fc2", VGG),
        "resnet50": ("avg_pool", RESNET),
    }
    # unnamed: AlexNet when several are held (what train did before backbones)
    assert resolve_vectors(store, "d").fingerprint == ALEX
    # a layer names its backbone; a fingerprint does too
    assert resolve_vectors(store, "d", layer="fc1").fingerprint == VGG
    assert resolve_vectors(store, "d", fingerprint=RESNET).layer == "avg_pool"


def test_the_only_backbone_held_is_the_default(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {VGG: ("fc2",)})
    found = resolve_vectors(store, "d")
    assert (found.backbone, found.layer, found.fingerprint) == ("vgg16", "fc2", VGG)


def test_missing_backbone_names_the_extract_command(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {ALEX: ("fc7",)})
    command = extract_command(
        store=str(store.path), dataset="d", backbone="resnet50", layers=("avg_pool",), source="pics"
    )
    assert command == (
        f"featcache extract pics --store {store.path} --weights "
        "resnet50_weights_tf_dim_ordering_tf_kernels.h5 --backbone resnet50 --dataset d "
        "--layers avg_pool --append"
    )
    with pytest.raises(NotFoundError, match=r"no resnet50 'avg_pool' vectors.*has: alexnet/fc7"):
        resolve_vectors(store, "d", backbone="resnet50")
    with pytest.raises(NotFoundError) as caught:
        resolve_vectors(store, "d", backbone="resnet50")
    assert str(caught.value).endswith(command)


def test_ambiguous_or_wrong_choices_are_refused(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {VGG: ("fc2",), VGG2: ("fc2",), RESNET: ("avg_pool",)})
    with pytest.raises(ConfigError, match=r"2 backbones \(vgg16, resnet50\).*--backbone"):
        resolve_vectors(store, "d")
    with pytest.raises(ConfigError, match=r"vgg16 'fc2' vectors from 2 extractors.*--fingerprint"):
        resolve_vectors(store, "d", backbone="vgg16")
    assert resolve_vectors(store, "d", fingerprint=VGG2).fingerprint == VGG2
    with pytest.raises(ConfigError, match=r"is a resnet50 extractor; --backbone says vgg16"):
        resolve_vectors(store, "d", backbone="vgg16", fingerprint=RESNET)
    with pytest.raises(
        ConfigError, match=r"subset of \['block5_pool', 'fc1', 'fc2'.*Got \['fc7'\]"
    ):
        resolve_vectors(store, "d", backbone="vgg16", layer="fc7")
    with pytest.raises(ConfigError, match=r"The 'backbone' must be one of"):
        resolve_vectors(store, "d", backbone="vgg19")


def test_cli_train_backbone_without_layer(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {ALEX: ("fc7",), VGG: ("fc2",)})
    store.close()
    runner = CliRunner()
    base = ["train", "--store", str(tmp_path / "s"), "--dataset", "d"]
    trained = runner.invoke(app, [*base, "--backbone", "vgg16", "--name", "v"])
    assert trained.exit_code == 0, trained.output
    assert "[fc2]" in trained.output
    assert "training on vgg16 'fc2' vectors (the dataset also has alexnet: --backbone)" in (
        trained.output
    )
    with FeatureStore(tmp_path / "s") as fs:
        assert fs.head("v").meta["layer"] == "fc2" and fs.head("v").meta["fingerprint"] == VGG
    plain = runner.invoke(app, [*base, "--name", "a"])
    assert plain.exit_code == 0 and "[fc7]" in plain.output
    missing = runner.invoke(app, [*base, "--backbone", "resnet50"])
    assert missing.exit_code != 0
    assert "no resnet50 'avg_pool' vectors" in missing.output
    assert "--backbone resnet50 --dataset d --layers avg_pool --append" in missing.output


def test_cli_doctor_reads_the_backbones_default_layer(tmp_path: Path) -> None:
    make_store(tmp_path / "s", {VGG: ("fc2",)}).close()
    runner = CliRunner()
    base = ["doctor", "--store", str(tmp_path / "s"), "--dataset", "d"]
    done = runner.invoke(app, [*base, "--out", str(tmp_path / "doc")])
    assert done.exit_code == 0, done.output
    assert "doctor: dataset 'd' [fc2]" in done.output
    missing = runner.invoke(app, [*base, "--backbone", "alexnet"])
    assert (
        missing.exit_code != 0 and "--backbone alexnet --dataset d --layers fc7" in missing.output
    )
