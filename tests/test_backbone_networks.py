"""VGG16 and ResNet50 in TensorFlow against the independent NumPy references
(`reference_keras`: the .h5 read there, BatchNorm from its raw arrays, im2col convolutions).

Narrow networks (1/16 of the filters, `narrow_backbones`) on real 224x224 inputs, where
the width is not the point; `test_full_networks_once` runs each full network once.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import reference_keras
from featcache.errors import ConfigError, WeightsError
from featcache.extractor.fingerprint import ExtractorSpec
from featcache.extractor.network import build_tensorflow
from featcache.extractor.preprocess import preprocess_rgb
from featcache.extractor.registry import backbone_named, read_backbone_weights

pytestmark = pytest.mark.slow
REFERENCE_LAYERS = {
    "vgg16": ("block5_pool", "fc1", "fc2"),
    "resnet50": ("conv4_block6_out", "conv5_block3_out", "avg_pool"),
}


def relative_error(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(found - expected) / np.linalg.norm(expected))


def _inputs(count: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Random pictures of another size, and their network inputs (resized, BGR, mean off)."""
    rng = np.random.default_rng(seed)
    pictures = rng.integers(0, 256, (count, 150, 180, 3), dtype=np.uint8)
    mean = backbone_named("vgg16").mean_bgr
    batch = np.stack([preprocess_rgb(p, "caffe", size=224, mean_bgr=mean) for p in pictures])
    return pictures, batch


def test_keras_preprocessing_is_bgr_minus_the_imagenet_mean() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    found = preprocess_rgb(rgb, "caffe", size=224, mean_bgr=(103.939, 116.779, 123.68))
    # keras.applications.imagenet_utils.preprocess_input(mode="caffe"), written out
    expected = rgb[..., ::-1].astype(np.float32) - np.array([103.939, 116.779, 123.68])
    np.testing.assert_allclose(found, expected, atol=1e-4)


@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_tensorflow_float32_matches_the_numpy_reference(
    name: str, narrow_backbones: int, tmp_path: Path
) -> None:
    path = backbone_named(name).write_demo_weights(tmp_path / f"{name}.h5", 1)
    weights = read_backbone_weights(path, name)
    network = build_tensorflow(weights, ExtractorSpec(weights.sha256, network=name))
    _, batch = _inputs(2)
    layers = (*REFERENCE_LAYERS[name], "predictions")
    found = network.forward(batch, layers)
    expected = getattr(reference_keras, name)(path, batch[0])
    for layer in REFERENCE_LAYERS[name]:
        assert found[layer].dtype == np.float32
        err = relative_error(found[layer][0], expected[layer])
        assert err < 1e-4, f"{name} {layer}: relative error {err:.2e}"
    assert relative_error(found[layer][1], found[layer][0]) > 1e-3  # two images, two answers
    if name == "vgg16":  # ReLU did work
        assert (found["fc2"] > 0).any() and (found["fc2"] == 0).any()
    np.testing.assert_allclose(found["predictions"].sum(axis=1), 1.0, atol=1e-5)
    # a shallower request stops early and gives the same numbers
    alone = network.forward(batch[:1], (REFERENCE_LAYERS[name][0],))
    np.testing.assert_allclose(
        alone[REFERENCE_LAYERS[name][0]][0], found[REFERENCE_LAYERS[name][0]][0], rtol=1e-5
    )
    with pytest.raises(ConfigError, match=r"must have shape \(N, 224, 224, 3\)"):
        network.forward(np.zeros((1, 227, 227, 3), np.float32), layers)
    with pytest.raises(ConfigError, match="non-empty subset"):
        network.forward(batch, ("fc7",))


def test_bf16_stays_close_to_float32(narrow_backbones: int, tmp_path: Path) -> None:
    path = backbone_named("resnet50").write_demo_weights(tmp_path / "r.h5", 1)
    weights = read_backbone_weights(path, "resnet50")
    _, batch = _inputs(2)
    out = {
        precision: build_tensorflow(
            weights, ExtractorSpec(weights.sha256, precision=precision, network="resnet50")
        ).forward(batch, ("avg_pool",))["avg_pool"]
        for precision in ("float32", "bf16")
    }
    err = relative_error(out["bf16"], out["float32"])
    assert 0 < err < 0.05


def test_weights_of_another_backbone_are_refused(narrow_backbones: int, tmp_path: Path) -> None:
    path = backbone_named("vgg16").write_demo_weights(tmp_path / "v.h5", 1)
    weights = read_backbone_weights(path, "vgg16")
    with pytest.raises(WeightsError, match=r"vgg16 weights, but the extractor is a resnet50"):
        build_tensorflow(weights, ExtractorSpec(weights.sha256, network="resnet50"))


def test_full_networks_once(tmp_path: Path) -> None:
    """The real sizes: 138M and 25.6M parameters, 224x224, two images each; VGG16's fc2 and
    ResNet50's avg_pool against the references on the first image."""
    _, batch = _inputs(2, seed=9)
    for name, layer in (("resnet50", "avg_pool"), ("vgg16", "fc2")):
        path = backbone_named(name).write_demo_weights(tmp_path / f"{name}.h5", 0)
        weights = read_backbone_weights(path, name)
        found = build_tensorflow(weights, ExtractorSpec(weights.sha256, network=name)).forward(
            batch, (layer,)
        )[layer]
        assert found.shape == (2, backbone_named(name).layers[layer])
        expected = getattr(reference_keras, name)(path, batch[0], dtype=np.float32)[layer]
        err = relative_error(found[0], expected)
        assert err < 1e-4, f"{name} {layer}: relative error {err:.2e}"
        assert relative_error(found[1], found[0]) > 1e-3  # two images, two answers
        del weights, found
        path.unlink()


needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason='pip install "featcache[openvino]"'
)


@needs_openvino
@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_openvino_float32_matches_the_numpy_reference(
    name: str, narrow_backbones: int, tmp_path: Path
) -> None:
    """The shipped traced graph (weights of unknown shape bound at conversion), no TensorFlow."""
    from featcache.extractor.runtime_openvino import OpenVINONetwork

    path = backbone_named(name).write_demo_weights(tmp_path / f"{name}.h5", 1)
    weights = read_backbone_weights(path, name)
    network = OpenVINONetwork(ExtractorSpec(weights.sha256, network=name), weights)
    _, batch = _inputs(3)
    layers = backbone_named(name).layer_names
    found = network.forward(batch, layers)
    expected = getattr(reference_keras, name)(path, batch[0])
    for layer in REFERENCE_LAYERS[name]:
        err = relative_error(found[layer][0], expected[layer])
        assert err < 1e-4, f"openvino {name} {layer}: relative error {err:.2e}"
    assert found["predictions"].shape == (3, 1000)
    assert network.conversions == [layers]
    # one converted model serves a subset of its layers, with the same numbers
    alone = network.forward(batch[1:2], (REFERENCE_LAYERS[name][-1],))
    np.testing.assert_allclose(
        alone[REFERENCE_LAYERS[name][-1]][0], found[REFERENCE_LAYERS[name][-1]][1], rtol=1e-6
    )
    assert network.conversions == [layers]
