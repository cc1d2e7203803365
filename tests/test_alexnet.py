"""The network against independent references: Caffe semantics in NumPy, and the seed program."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import reference_caffe
from conftest import REFERENCE, write_images
from featcache.errors import ConfigError
from featcache.extractor.alexnet import AlexNet
from featcache.extractor.pipeline import ExtractConfig, extract
from featcache.extractor.preprocess import preprocess_rgb
from featcache.extractor.weights import Weights

pytestmark = pytest.mark.slow
LAYERS = ("pool5", "fc6", "fc7", "fc8", "prob")


def relative_error(found: np.ndarray, expected: np.ndarray) -> float:
    return float(np.linalg.norm(found - expected) / np.linalg.norm(expected))


@pytest.fixture(scope="module")
def caffe_net(weights: Weights) -> AlexNet:
    return AlexNet(weights.layers, "caffe")


def test_caffe_profile_matches_numpy_caffe_reference(caffe_net: AlexNet, weights: Weights) -> None:
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (2, 227, 227, 3), dtype=np.uint8)
    # 227x227 input: no resize, so this also checks BGR order and mean subtraction.
    batch = np.stack([preprocess_rgb(im, "caffe") for im in images])
    np.testing.assert_allclose(batch[0], reference_caffe.caffe_input(images[0]), rtol=0, atol=1e-4)
    found = caffe_net.forward(batch, LAYERS)
    for i, image in enumerate(images):
        expected = reference_caffe.alexnet(reference_caffe.caffe_input(image), weights.layers)
        for layer in LAYERS:
            assert found[layer].dtype == np.float32
            err = relative_error(found[layer][i], expected[layer])
            assert err < 1e-4, f"{layer}: relative error {err:.2e}"
        assert (found["fc7"][i] > 0).any() and (found["fc7"][i] == 0).any()  # ReLU did work


def test_forward_shapes_and_layer_subsets(caffe_net: AlexNet) -> None:
    batch = np.zeros((3, 227, 227, 3), np.float32)
    out = caffe_net.forward(batch, ("fc6",))
    assert list(out) == ["fc6"] and out["fc6"].shape == (3, 4096)
    both = caffe_net.forward(batch, ("fc7", "pool5"))
    assert both["pool5"].shape == (3, 9216) and both["fc7"].shape == (3, 4096)
    np.testing.assert_allclose(both["pool5"], caffe_net.forward(batch, ("pool5",))["pool5"])
    assert np.allclose(caffe_net.forward(batch, ("prob",))["prob"].sum(axis=1), 1.0, atol=1e-5)


def test_network_is_frozen_and_checks_its_input(caffe_net: AlexNet) -> None:
    graph = caffe_net._compiled(("fc7",)).get_concrete_function()
    assert graph.variables == () and graph.trainable_variables == ()  # weights are constants
    with pytest.raises(ConfigError, match=r"shape \(N, 227, 227, 3\)"):
        caffe_net.forward(np.zeros((1, 224, 224, 3), np.float32))
    with pytest.raises(ConfigError, match="'layers'.*conv9"):
        caffe_net.forward(np.zeros((1, 227, 227, 3), np.float32), ("conv9",))


def test_udacity_profile_reproduces_the_seed_program(tmp_path: Path, weights_path: Path) -> None:
    seed = REFERENCE / "seed_program.py"
    if not seed.exists():
        pytest.skip("shared/reference is not beside this checkout")
    paths = write_images(tmp_path / "imgs", 10, seed=3)
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    np.save(tmp_path / "images.npy", images)
    subprocess.run(
        [
            sys.executable,
            str(seed),
            str(weights_path),
            str(tmp_path / "images.npy"),
            str(tmp_path / "seed_fc7.npy"),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    expected = np.load(tmp_path / "seed_fc7.npy")
    report = extract(
        tmp_path / "imgs", weights_path, None, config=ExtractConfig(profile="udacity", batch_size=4)
    )
    assert report.extracted == 10
    found = dict(zip(report.keys, report.vectors["fc7"], strict=True))
    from featcache.data.source import bytes_key

    for path, want in zip(paths, expected, strict=True):
        got = found[bytes_key(path.read_bytes())]
        err = relative_error(got, want)
        assert err < 1e-4, f"{path.name}: relative error {err:.2e}"
