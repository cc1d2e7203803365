"""VGG16's cut (block5_pool) through the same fine-tune code path as AlexNet's: with zero
epochs the head computes fc1 and fc2 as the extractor does, and it trains (narrow VGG16,
seeded RANDOM weights)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featcache.architecture import stages_above
from featcache.classifier.finetune import FineTuneHead
from featcache.extractor.fingerprint import ExtractorSpec
from featcache.extractor.network import build_tensorflow
from featcache.extractor.registry import backbone_named, read_backbone_weights


@pytest.mark.slow
def test_a_vgg16_block5_pool_cut_reproduces_fc1_fc2_and_trains(
    narrow_backbones: int, tmp_path: Path
) -> None:
    path = backbone_named("vgg16").write_demo_weights(tmp_path / "vgg16.h5", 1)
    weights = read_backbone_weights(path, "vgg16")
    network = build_tensorflow(weights, ExtractorSpec(weights.sha256, network="vgg16"))
    rng = np.random.default_rng(0)
    batch = rng.normal(0, 60, (12, 224, 224, 3)).astype(np.float32)
    out = network.forward(batch, ("block5_pool", "fc1", "fc2"))
    x, y = out["block5_pool"], np.arange(12) % 3
    assert [s.name for s in stages_above("block5_pool")] == ["fc1", "fc2", "predictions"]

    frozen = FineTuneHead(cut="block5_pool", epochs=0, early_stopping=False)
    frozen.fit(x, y, pretrained=weights)
    assert frozen.layers_ == ("fc1", "fc2", "predictions")
    for layer in ("fc1", "fc2"):
        got, expected = frozen.activations(x, layer), out[layer]
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), layer
    np.testing.assert_array_equal(frozen.coefs_[0], weights.layers["fc1"][0])

    tuned = FineTuneHead(cut="block5_pool", epochs=2, early_stopping=False, learning_rate=1e-2)
    tuned.fit(x, y, pretrained=weights)
    assert tuned.n_iter_ == 2 and not np.array_equal(tuned.coefs_[0], frozen.coefs_[0])
    assert tuned.predict(x).shape == (12,)
    with pytest.raises(ValueError, match="'fc1' takes .* inputs but X has 5 features"):
        FineTuneHead(cut="block5_pool", epochs=0).fit(x[:, :5], y, pretrained=weights)
