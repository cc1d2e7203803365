"""advise across backbones: planted vectors per (backbone, layer) are ranked as planted, the
verdict names the backbone and layer, a lacking backbone gets its extract command."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featcache.analysis.advise import Rule, advise
from featcache.cli import app
from featcache.errors import ConfigError, NotFoundError
from featcache.store import DatasetRow, FeatureStore

ALEX, VGG, RESNET = "a" * 64, "b" * 64, "e" * 64
NETWORK = {ALEX: "alexnet", VGG: "vgg16", RESNET: "resnet50"}


def make_store(
    path: Path, planted: dict[str, dict[str, float]], *, per_class: int = 40, classes: int = 4
) -> FeatureStore:
    """Dataset 'd' (a test tenth never used) with, per fingerprint, one layer per entry of
    its {layer: separation} (the class centres' scale: 0 is pure noise)."""
    rng = np.random.default_rng(0)
    n = per_class * classes
    y = np.repeat(np.arange(classes), per_class)
    keys = [hashlib.sha256(f"img{i}".encode()).hexdigest() for i in range(n)]
    store = FeatureStore(path)
    for fp, layers in planted.items():
        store.register_extractor(
            fp, {"network": NETWORK[fp], "weights_note": f"RANDOM {NETWORK[fp]} vectors"}
        )
        for layer, scale in layers.items():
            X = (rng.standard_normal((classes, 16)) * scale)[y] + rng.standard_normal((n, 16))
            store.put_batch(keys, {layer: X.astype(np.float32)}, fp)
    rows = [
        DatasetRow(k, f"pics/{i}.png", int(y[i]), "test" if i % 10 == 0 else "train")
        for i, k in enumerate(keys)
    ]
    store.add_dataset("d", rows, [f"c{c}" for c in range(classes)], source="folder pics")
    return store


def test_backbones_are_ranked_as_planted_and_the_verdict_names_one(tmp_path: Path) -> None:
    store = make_store(
        tmp_path / "s",
        {ALEX: {"fc6": 0.2, "fc7": 0.5}, VGG: {"fc1": 0.9, "fc2": 3.0}},
    )
    report = advise(store, "d", out=tmp_path / "out")
    ranked = sorted(report.layers.values(), key=lambda s: -s.cv_accuracy)
    assert [s.label for s in ranked] == ["vgg16 fc2", "vgg16 fc1", "alexnet fc7", "alexnet fc6"]
    assert report.case == 3
    assert (report.best_backbone, report.best_layer, report.use) == (
        "vgg16",
        "fc2",
        ("vgg16", "fc2"),
    )
    assert report.next_command == (
        f"featcache train --store {store.path} --dataset d --backbone vgg16 --kind softmax"
    )
    assert report.summary()[0] == "advise: dataset 'd': case 3; use vgg16 fc2"
    assert "  vgg16 fc2: cross-validated accuracy" in "\n".join(report.summary())
    # the lacking backbone and the missing layers, each with its exact command
    lacking = (
        f"featcache extract pics --store {store.path} --weights "
        "resnet50_weights_tf_dim_ordering_tf_kernels.h5 --backbone resnet50 --dataset d "
        "--layers avg_pool --append"
    )
    assert any(r.startswith("resnet50 has no vectors") and lacking in r for r in report.reasons)
    assert any(
        "--backbone vgg16 --dataset d --layers block5_pool --append" in r for r in report.reasons
    )
    assert any(
        "--backbone alexnet --dataset d --layers pool5 --append" in r for r in report.reasons
    )
    assert report.missing_layers == ["pool5", "block5_pool"]
    assert report.weights_note == "RANDOM alexnet vectors; RANDOM vgg16 vectors"

    data = json.loads((tmp_path / "out" / "advise.json").read_text())
    assert data["best_backbone"] == "vgg16" and data["use"] == {"backbone": "vgg16", "layer": "fc2"}
    assert list(data["backbones"]) == ["alexnet", "vgg16", "resnet50"]
    assert data["backbones"]["vgg16"]["measured"] is True
    assert data["backbones"]["vgg16"]["fingerprints"] == [VGG]
    assert set(data["backbones"]["vgg16"]["layers"]) == {"fc1", "fc2"}
    assert data["backbones"]["vgg16"]["layers"]["fc2"]["cv_accuracy"] == pytest.approx(
        report.layers["fc2"].cv_accuracy, abs=1e-6
    )
    assert data["backbones"]["resnet50"] == {
        "measured": False,
        "fingerprints": [],
        "layers": {},
        "missing_layers": ["avg_pool"],
        "extract_command": lacking,
    }
    assert set(data["layers"]) == {"fc6", "fc7", "fc1", "fc2"}


def test_an_earlier_layer_of_another_backbone_is_named(tmp_path: Path) -> None:
    store = make_store(
        tmp_path / "s", {VGG: {"block5_pool": 3.0, "fc1": 0.0, "fc2": 0.0}, ALEX: {"fc7": 0.0}}
    )
    report = advise(store, "d")
    assert report.use == ("vgg16", "block5_pool")
    assert report.next_command.endswith("--backbone vgg16 --layer block5_pool")
    assert any("block5_pool beats fc2 by" in r for r in report.reasons)


def test_the_printed_command_trains_the_named_backbone(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {RESNET: {"avg_pool": 3.0}, ALEX: {"fc7": 0.3}})
    path = str(store.path)
    store.close()
    runner = CliRunner()
    result = runner.invoke(app, ["advise", "--store", path, "--dataset", "d"])
    assert result.exit_code == 0, result.output
    assert "advise: dataset 'd': case 3; use resnet50 avg_pool" in result.output
    assert "RANDOM resnet50 vectors" in result.output
    command = next(line for line in result.output.splitlines() if line.startswith("next: "))[6:]
    assert command.endswith("--backbone resnet50 --kind softmax")
    followed = runner.invoke(app, command.split()[1:])
    assert followed.exit_code == 0, followed.output
    assert "[avg_pool]" in followed.output


def test_a_tie_goes_to_the_cheaper_backbone(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {VGG: {"fc2": 40.0}, ALEX: {"fc7": 40.0}})
    report = advise(store, "d")
    assert report.layers["fc2"].cv_accuracy == report.layers["fc7"].cv_accuracy == 1.0
    assert report.use == ("alexnet", "fc7")  # 0.72 GMACs an image against VGG16's 15.5
    assert report.next_command.endswith("--backbone alexnet --kind softmax")


def test_a_large_set_on_vgg16_fine_tunes_from_its_own_cut(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {VGG: {"fc2": 3.0}}, per_class=60)
    report = advise(store, "d", rule=Rule(large_per_class=50, small_per_class=20, min_rows=50))
    assert report.case == 1 and report.cut == "block5_pool"
    assert report.next_command.endswith(
        "--backbone vgg16 --kind finetune --from block5_pool --weights WEIGHTS"
    )
    assert any(
        "fine-tune vgg16's fc1, fc2, predictions from block5_pool" in r for r in report.reasons
    )
    # block5_pool is not cached: extract it first, with the backbone named
    assert report.commands[0].startswith("featcache extract ")
    assert "--backbone vgg16" in report.commands[0] and "--layers block5_pool" in report.commands[0]
    assert report.commands[1].endswith(
        "--dataset d --backbone vgg16 --kind finetune --from block5_pool --weights WEIGHTS"
    )


def test_a_large_set_on_a_backbone_without_cuts_trains_a_last_layer(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {RESNET: {"avg_pool": 3.0}}, per_class=60)
    report = advise(store, "d", rule=Rule(large_per_class=50, small_per_class=20, min_rows=50))
    assert report.case == 1 and report.cut is None
    assert report.next_command.endswith("--backbone resnet50 --kind softmax")
    assert any(
        "fine-tuning resnet50 is not in featcache (fine-tune cuts: alexnet: pool2, conv3, conv4, "
        "conv5, pool5, fc6; vgg16: block5_pool)" in r
        for r in report.reasons
    )


def test_choices_are_checked(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", {VGG: {"fc2": 3.0}})
    only = advise(store, "d", backbones=["vgg16"])
    assert list(only.backbones) == ["vgg16"] and not any("resnet50" in r for r in only.reasons)
    assert advise(store, "d", fingerprint=VGG).use == ("vgg16", "fc2")
    with pytest.raises(ConfigError, match=r"'layers' \['fc9'\] are not layers of .*vgg16: "):
        advise(store, "d", layers=["fc9"])
    with pytest.raises(ConfigError, match=r"The 'backbone' must be one of"):
        advise(store, "d", backbones=["vgg19"])
    with pytest.raises(NotFoundError, match=r"none of the layers \['fc7'\].*--backbone alexnet"):
        advise(store, "d", layers=["fc7"])
