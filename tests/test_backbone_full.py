"""Each full network once (138M and 25.6M parameters, 224x224): VGG16's fc2 and ResNet50's
avg_pool in TensorFlow against the independent NumPy references (`reference_keras`) on
seeded RANDOM weights in the real layout; the narrow networks test everything else
(`test_backbone_networks.py`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import reference_keras
from featcache.extractor.fingerprint import ExtractorSpec
from featcache.extractor.network import build_tensorflow
from featcache.extractor.preprocess import preprocess_rgb
from featcache.extractor.registry import backbone_named, read_backbone_weights

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("name", "layer"), [("resnet50", "avg_pool"), ("vgg16", "fc2")])
def test_the_full_network(name: str, layer: str, tmp_path: Path) -> None:
    backbone = backbone_named(name)
    pictures = np.random.default_rng(9).integers(0, 256, (2, 150, 180, 3), dtype=np.uint8)
    batch = np.stack(
        [preprocess_rgb(p, "caffe", size=224, mean_bgr=backbone.mean_bgr) for p in pictures]
    )
    path = backbone.write_demo_weights(tmp_path / backbone.weights_file, 0)
    weights = read_backbone_weights(path, name)
    network = build_tensorflow(weights, ExtractorSpec(weights.sha256, network=name))
    found = network.forward(batch, (layer,))[layer]
    assert found.shape == (2, backbone.layers[layer]) and found.dtype == np.float32
    expected = reference_keras.__dict__[name](path, batch[0], dtype=np.float32)[layer]
    err = np.linalg.norm(found[0] - expected) / np.linalg.norm(expected)
    assert err < 1e-4, f"{name} {layer}: relative error {err:.2e}"
    assert np.linalg.norm(found[1] - found[0]) > 1e-3 * np.linalg.norm(found[0])  # two answers
