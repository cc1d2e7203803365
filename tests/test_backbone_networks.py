"""VGG16 and ResNet50 in TensorFlow against the independent NumPy references
(`reference_keras`: the .h5 read there, BatchNorm from its raw arrays, im2col convolutions).

Narrow networks (1/16 of the filters, `NARROW`) on real 224x224 inputs, where the width
is not the point: one weights file, one NumPy reference and one OpenVINO conversion per
backbone for the whole module (module-scoped fixtures); `test_backbone_full.py` runs each
full network once.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import reference_keras
from conftest import NARROW, write_images
from featcache.errors import ConfigError, WeightsError
from featcache.extractor.fingerprint import ExtractorSpec
from featcache.extractor.network import build_tensorflow
from featcache.extractor.pipeline import ExtractConfig, extract
from featcache.extractor.preprocess import preprocess_rgb
from featcache.extractor.registry import backbone_named, read_backbone_weights
from featcache.extractor.weights import Weights
from featcache.store import FeatureStore, RuntimeFiles

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


@pytest.fixture(scope="module")
def narrow() -> Iterator[int]:
    """VGG16's and ResNet50's readers and demo writers expect the narrow layouts for this
    module (as conftest's `narrow_backbones` does for one test)."""
    from featcache.extractor import resnet50, vgg16

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vgg16, "LAYER_SHAPES", vgg16.vgg16_layer_shapes(NARROW))
        patch.setattr(resnet50, "LAYER_SHAPES", resnet50.resnet50_layer_shapes(NARROW))
        yield NARROW


@pytest.fixture(scope="module")
def narrow_weights(
    narrow: int, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, Weights]]:
    """Each narrow backbone's seeded RANDOM weights file (seed 1), read."""
    folder = tmp_path_factory.mktemp("narrow")
    made = {}
    for name in REFERENCE_LAYERS:
        path = backbone_named(name).write_demo_weights(folder / f"{name}.h5", 1)
        made[name] = (path, read_backbone_weights(path, name))
    return made


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return _inputs(3)[1]


@pytest.fixture(scope="module")
def reference(
    narrow_weights: dict[str, tuple[Path, Weights]], batch: np.ndarray
) -> Callable[[str], dict[str, np.ndarray]]:
    """The NumPy reference's layers for the first image, computed once per backbone."""
    found: dict[str, dict[str, np.ndarray]] = {}

    def of(name: str) -> dict[str, np.ndarray]:
        if name not in found:
            found[name] = getattr(reference_keras, name)(narrow_weights[name][0], batch[0])
        return found[name]

    return of


@pytest.fixture(scope="module")
def openvino_store(tmp_path_factory: pytest.TempPathFactory) -> FeatureStore:
    """Where the module's OpenVINO conversions are kept (one per backbone, all layers)."""
    return FeatureStore(tmp_path_factory.mktemp("ov") / "store")


@pytest.fixture(scope="module")
def openvino_network(
    narrow_weights: dict[str, tuple[Path, Weights]], openvino_store: FeatureStore
) -> Callable[[str], Any]:
    """Each backbone's OpenVINO network, converted once for all its layers and saved into
    `openvino_store` (so an extraction into that store converts nothing)."""
    from featcache.extractor.runtime_openvino import OpenVINONetwork

    made: dict[str, Any] = {}

    def of(name: str) -> Any:
        if name not in made:
            weights = narrow_weights[name][1]
            cache = RuntimeFiles(openvino_store.runtime_models.root.resolve())
            network = OpenVINONetwork(ExtractorSpec(weights.sha256, network=name), weights, cache)
            network.prepare(backbone_named(name).layer_names)
            network.close()  # written to the store
            made[name] = network
        return made[name]

    return of


def test_keras_preprocessing_is_bgr_minus_the_imagenet_mean() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    found = preprocess_rgb(rgb, "caffe", size=224, mean_bgr=(103.939, 116.779, 123.68))
    # keras.applications.imagenet_utils.preprocess_input(mode="caffe"), written out
    expected = rgb[..., ::-1].astype(np.float32) - np.array([103.939, 116.779, 123.68])
    np.testing.assert_allclose(found, expected, atol=1e-4)


@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_tensorflow_float32_matches_the_numpy_reference(
    name: str,
    narrow_weights: dict[str, tuple[Path, Weights]],
    reference: Callable[[str], dict[str, np.ndarray]],
    batch: np.ndarray,
) -> None:
    weights = narrow_weights[name][1]
    network = build_tensorflow(weights, ExtractorSpec(weights.sha256, network=name))
    layers = (*REFERENCE_LAYERS[name], "predictions")
    found = network.forward(batch, layers)
    expected = reference(name)
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


def test_bf16_stays_close_to_float32(
    narrow_weights: dict[str, tuple[Path, Weights]], batch: np.ndarray
) -> None:
    weights = narrow_weights["resnet50"][1]
    out = {
        precision: build_tensorflow(
            weights, ExtractorSpec(weights.sha256, precision=precision, network="resnet50")
        ).forward(batch, ("avg_pool",))["avg_pool"]
        for precision in ("float32", "bf16")
    }
    err = relative_error(out["bf16"], out["float32"])
    assert 0 < err < 0.05


def test_weights_of_another_backbone_are_refused(
    narrow_weights: dict[str, tuple[Path, Weights]],
) -> None:
    weights = narrow_weights["vgg16"][1]
    with pytest.raises(WeightsError, match=r"vgg16 weights, but the extractor is a resnet50"):
        build_tensorflow(weights, ExtractorSpec(weights.sha256, network="resnet50"))


needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason='pip install "featcache[openvino]"'
)


@needs_openvino
@pytest.mark.parametrize("name", ["vgg16", "resnet50"])
def test_openvino_float32_matches_the_numpy_reference(
    name: str,
    openvino_network: Callable[[str], Any],
    reference: Callable[[str], dict[str, np.ndarray]],
    batch: np.ndarray,
) -> None:
    """The shipped traced graph (weights of unknown shape bound at conversion), no TensorFlow."""
    network = openvino_network(name)
    layers = backbone_named(name).layer_names
    found = network.forward(batch, layers)
    expected = reference(name)
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


@needs_openvino
def test_openvino_extraction_shares_the_float32_cache_and_the_converted_model(
    tmp_path: Path,
    narrow_weights: dict[str, tuple[Path, Weights]],
    openvino_network: Callable[[str], Any],
    openvino_store: FeatureStore,
) -> None:
    openvino_network("vgg16")  # converted for every layer, kept in the store
    kept = sorted(p.name for p in openvino_store.path.rglob("openvino-*") if p.is_dir())
    write_images(tmp_path / "pics", 3)
    path = narrow_weights["vgg16"][0]
    tf_report = extract(tmp_path / "pics", path, None, config=ExtractConfig(backbone="vgg16"))
    ov_config = ExtractConfig(backbone="vgg16", runtime="openvino")
    ov_report = extract(tmp_path / "pics", path, openvino_store, config=ov_config)
    assert ov_report.fingerprint == tf_report.fingerprint  # float32: the same numbers
    data = openvino_store.vectors("pics", "fc2")
    order = np.argsort(data.keys)
    expected = tf_report.vectors["fc2"][np.argsort(tf_report.keys)]
    err = np.linalg.norm(data.X[order] - expected) / np.linalg.norm(expected)
    assert err < 1e-5
    # fc2 came from the model converted for all four layers: nothing was converted again
    assert "openvino-block5_pool+fc1+fc2+predictions-float32" in kept
    assert sorted(p.name for p in openvino_store.path.rglob("openvino-*") if p.is_dir()) == kept
    assert not any(name.startswith("openvino-fc2") for name in kept)


@needs_openvino
def test_openvino_bf16_stays_close_to_float32(
    narrow_weights: dict[str, tuple[Path, Weights]],
    openvino_network: Callable[[str], Any],
    batch: np.ndarray,
) -> None:
    """ResNet50 (BatchNorm folded into scale and offset) in OpenVINO's bf16, where the CPU
    has it: close to its float32, not equal."""
    from featcache.extractor.runtime_openvino import OpenVINONetwork, has_bf16, require_openvino

    if not has_bf16(require_openvino().Core()):
        pytest.skip("this CPU has no bf16 for OpenVINO")
    weights = narrow_weights["resnet50"][1]
    spec = ExtractorSpec(weights.sha256, precision="bf16", network="resnet50", runtime="openvino")
    bf16 = OpenVINONetwork(spec, weights).forward(batch, ("avg_pool",))["avg_pool"]
    float32 = openvino_network("resnet50").forward(batch, ("avg_pool",))["avg_pool"]
    assert bf16.dtype == np.float32 and bf16.shape == float32.shape
    cosine = (bf16 * float32).sum(1) / (
        np.linalg.norm(bf16, axis=1) * np.linalg.norm(float32, axis=1)
    )
    assert cosine.min() > 0.999
    assert 0 < relative_error(bf16, float32) < 0.05
