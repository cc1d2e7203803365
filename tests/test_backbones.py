"""The backbone registry and the Keras HDF5 weights files (no TensorFlow here)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

import reference_keras
from featcache.errors import ConfigError, WeightsError
from featcache.extractor import resnet50, vgg16
from featcache.extractor.config import ExtractConfig, storage_dtype
from featcache.extractor.fingerprint import ExtractorSpec
from featcache.extractor.keras_h5 import write_keras_h5
from featcache.extractor.registry import backbone_named, backbone_names, read_backbone_weights

SHA = "0" * 64


def test_alexnet_fingerprints_are_those_of_existing_stores() -> None:
    # Pinned before the registry existed: every AlexNet store made so far keeps its vectors.
    assert ExtractConfig().spec(SHA).fingerprint == (
        "dcdf6eeca154c3feb402d7c9866c0f2b1d8282573ac43c78b1ed844ed91c88ac"
    )
    assert ExtractorSpec(SHA).fingerprint == ExtractConfig(backbone="alexnet").spec(SHA).fingerprint
    assert ExtractorSpec(SHA).as_dict()["network"] == "alexnet"


def test_registry_lists_each_backbone_with_its_keras_layers() -> None:
    assert backbone_names() == ("alexnet", "vgg16", "resnet50")
    assert backbone_named("vgg16").layer_names == ("block5_pool", "fc1", "fc2", "predictions")
    assert backbone_named("resnet50").layer_names == (
        "conv4_block6_out",
        "conv5_block3_out",
        "avg_pool",
        "predictions",
    )
    assert backbone_named("alexnet").layer_names == ("pool5", "fc6", "fc7", "fc8", "prob")
    assert {backbone_named(n).input_size for n in ("vgg16", "resnet50")} == {224}
    assert backbone_named("vgg16").mean_bgr == (103.939, 116.779, 123.68)
    with pytest.raises(ConfigError, match=r"'backbone' must be one of \['alexnet', 'vgg16'"):
        backbone_named("vgg19")


def test_config_takes_each_backbones_default_layer_and_refuses_others() -> None:
    assert ExtractConfig().layers == ("fc7",)
    assert ExtractConfig(backbone="vgg16").layers == ("fc2",)
    assert ExtractConfig(backbone="resnet50").layers == ("avg_pool",)
    assert ExtractConfig(backbone="resnet50").input_size == 224
    with pytest.raises(ConfigError, match=r"subset of .*backbone 'vgg16'\)\. Got \['fc7'\]"):
        ExtractConfig(backbone="vgg16", layers=("fc7",))
    with pytest.raises(ConfigError, match=r"'profile' must be one of \['caffe'\] for backbone"):
        ExtractConfig(backbone="resnet50", profile="udacity")
    with pytest.raises(ConfigError, match="'backbone' must be one of"):
        ExtractConfig(backbone="VGG16")


def test_each_backbone_has_its_own_fingerprint() -> None:
    prints = {ExtractConfig(backbone=name).spec(SHA).fingerprint for name in backbone_names()}
    assert len(prints) == 3
    assert ExtractConfig(backbone="vgg16").spec(SHA).as_dict()["network"] == "vgg16"


def test_auto_storage_keeps_the_large_maps_in_float16() -> None:
    for layer in ("pool5", "block5_pool", "conv4_block6_out", "conv5_block3_out"):
        assert storage_dtype("auto", layer) == "float16"
    for layer in ("fc7", "fc2", "avg_pool", "predictions"):
        assert storage_dtype("auto", layer) == "float32"


def test_full_layouts_match_keras_applications() -> None:
    vgg = vgg16.vgg16_layer_shapes()
    assert vgg["block1_conv1"] == (3, 3, 3, 64) and vgg["fc1"] == (25088, 4096)
    assert sum(int(np.prod(s)) + s[-1] for s in vgg.values()) == 138_357_544  # Keras's count
    res = resnet50.resnet50_layer_shapes()
    assert res["conv1_conv"] == (7, 7, 3, 64) and res["conv5_block3_3_conv"] == (1, 1, 512, 2048)
    assert res["conv3_block1_0_conv"] == (1, 1, 256, 512) and "conv3_block2_0_conv" not in res
    convs = sum(int(np.prod(s)) + s[-1] for n, s in res.items() if not n.endswith("_bn"))
    bns = sum(4 * s[0] for n, s in res.items() if n.endswith("_bn"))
    assert convs + bns == 25_636_712  # ResNet50's parameters, BN statistics included


@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_demo_weights_round_trip_in_the_keras_layout(
    name: str, narrow_backbones: int, tmp_path: Path
) -> None:
    backbone = backbone_named(name)
    path = backbone.write_demo_weights(tmp_path / f"{name}.h5", 3)
    weights = read_backbone_weights(path, name)
    assert weights.network == name and weights.is_demo and "NOT ImageNet" in str(weights.demo_note)
    module = vgg16 if name == "vgg16" else resnet50
    assert list(weights.layers) == list(module.LAYER_SHAPES)
    # Keras's own layout, read as the independent reference reads it (weight_names order).
    raw = reference_keras.read_h5(path)
    with h5py.File(path, "r") as f:
        names = [n.decode() if isinstance(n, bytes) else n for n in f.attrs["layer_names"]]
        assert names == list(module.LAYER_SHAPES)
    first = "block1_conv1" if name == "vgg16" else "conv1_conv"
    np.testing.assert_array_equal(weights.layers[first][0], raw[first][0].astype(np.float32))
    if name == "resnet50":  # BatchNormalization kept as inference's (scale, offset)
        gamma, beta, mean, variance = raw["conv1_bn"]
        scale = gamma / np.sqrt(variance + 1.001e-5)
        np.testing.assert_allclose(weights.layers["conv1_bn"][0], scale, rtol=1e-6)
        np.testing.assert_allclose(weights.layers["conv1_bn"][1], beta - mean * scale, atol=1e-6)
    assert read_backbone_weights(path, name).sha256 == weights.sha256
    assert backbone.write_demo_weights(tmp_path / "again.h5", 3).read_bytes() != b""


def _narrow_arrays(name: str) -> dict[str, list[tuple[str, np.ndarray]]]:
    module = vgg16 if name == "vgg16" else resnet50
    out: dict[str, list[tuple[str, np.ndarray]]] = {}
    for layer, shape in module.LAYER_SHAPES.items():
        if layer.endswith("_bn"):
            parts = ("gamma", "beta", "moving_mean", "moving_variance")
            out[layer] = [(p, np.ones(shape, np.float32)) for p in parts]
        else:
            out[layer] = [("kernel", np.zeros(shape, np.float32)), ("bias", np.zeros(shape[-1]))]
    return out


def test_a_wrong_shape_is_refused_naming_the_layer(narrow_backbones: int, tmp_path: Path) -> None:
    arrays = _narrow_arrays("vgg16")
    arrays["fc1"][0] = ("kernel", np.zeros((7, 7), np.float32))
    path = write_keras_h5(tmp_path / "bad.h5", arrays, None)
    with pytest.raises(WeightsError, match=r"bad\.h5: layer 'fc1' kernel has shape \(7, 7\)"):
        read_backbone_weights(path, "vgg16")


def test_a_missing_layer_or_array_is_refused(narrow_backbones: int, tmp_path: Path) -> None:
    arrays = _narrow_arrays("resnet50")
    del arrays["conv3_block2_2_conv"]
    path = write_keras_h5(tmp_path / "gone.h5", arrays, None)
    with pytest.raises(WeightsError, match=r"missing layer\(s\) \['conv3_block2_2_conv'\]"):
        read_backbone_weights(path, "resnet50")
    arrays = _narrow_arrays("resnet50")
    arrays["conv1_bn"] = arrays["conv1_bn"][:2]
    path = write_keras_h5(tmp_path / "short.h5", arrays, None)
    with pytest.raises(WeightsError, match=r"layer 'conv1_bn' has 2 array\(s\).*expected 4"):
        read_backbone_weights(path, "resnet50")


def test_a_negative_variance_or_nan_is_refused(narrow_backbones: int, tmp_path: Path) -> None:
    arrays = _narrow_arrays("resnet50")
    arrays["conv2_block1_1_bn"][3] = (
        "moving_variance",
        -np.ones(arrays["conv2_block1_1_bn"][3][1].shape),
    )
    path = write_keras_h5(tmp_path / "neg.h5", arrays, None)
    with pytest.raises(WeightsError, match="'conv2_block1_1_bn' moving_variance has negative"):
        read_backbone_weights(path, "resnet50")
    arrays = _narrow_arrays("vgg16")
    arrays["fc2"][1] = ("bias", np.full(arrays["fc2"][1][1].shape, np.nan))
    path = write_keras_h5(tmp_path / "nan.h5", arrays, None)
    with pytest.raises(WeightsError, match="layer 'fc2' bias contains NaN"):
        read_backbone_weights(path, "vgg16")


def test_a_truncated_file_is_refused_naming_the_first_layer_lost(
    narrow_backbones: int, tmp_path: Path
) -> None:
    path = backbone_named("vgg16").write_demo_weights(tmp_path / "vgg16.h5", 0)
    with h5py.File(path, "r") as f:  # cut inside fc1's kernel
        start = f["fc1"]["fc1/kernel:0"].id.get_offset()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(path.read_bytes()[: start + 100])
    with pytest.raises(WeightsError, match=r"cut\.h5: the file is truncated .*layer 'fc1'"):
        read_backbone_weights(cut, "vgg16")


def test_other_files_are_refused_with_what_was_expected(tmp_path: Path) -> None:
    text = tmp_path / "model.h5"
    text.write_bytes(b"<html>Access denied</html>")
    with pytest.raises(WeightsError, match=r"not an HDF5 file; expected vgg16_weights_tf_dim"):
        read_backbone_weights(text, "vgg16")
    with pytest.raises(WeightsError, match=r"no such weights file; get resnet50_weights_tf"):
        read_backbone_weights(tmp_path / "absent.h5", "resnet50")
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(WeightsError, match="empty"):
        read_backbone_weights(empty, "resnet50")
    # AlexNet's .npy is not VGG16's file, and says so
    with pytest.raises(WeightsError, match="not an HDF5 file"):
        read_backbone_weights(Path(__file__), "vgg16")
