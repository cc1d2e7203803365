"""export-model's dense layers of a fine-tuned head are decided by the layers above its cut
(`featcache.architecture`), for every network: VGG16's block5_pool head (fc1, fc2, a new
last layer) is dense and exports its layers; a cut with a convolution or a pool above it is
refused, naming the stage and the cuts of that network that export."""

from __future__ import annotations

import numpy as np
import pytest

from featcache.classifier.finetune import FineTuneHead
from featcache.classifier.headstate import HeadState
from featcache.errors import HeadError
from featcache.export.dense import head_layers


def fitted(cut: str, layers: list[str], shapes: list[tuple[int, ...]], width: int) -> FineTuneHead:
    """A fitted-looking FineTuneHead from `cut` (layers of `shapes`) on `width` features."""
    rng = np.random.default_rng(0)
    arrays: dict[str, np.ndarray] = {"classes_": np.arange(shapes[-1][-1])}
    for i, shape in enumerate(shapes):
        arrays[f"coefs_.{i}"] = rng.standard_normal(shape).astype(np.float32)
        arrays[f"intercepts_.{i}"] = rng.standard_normal(shape[-1]).astype(np.float32)
    spatial = len(shapes[0]) == 4 or cut == "conv5"
    values = {
        "coefs_#count": len(shapes),
        "intercepts_#count": len(shapes),
        "n_features_in_": width,
        "layers_": layers,
        "input_shape_": [5, 5, width // 25] if spatial else None,
        "weights_sha256_": None,
        "n_iter_": 0,
        "best_epoch_": 0,
        "loss_curve_": [],
        "validation_losses_": [],
        "validation_scores_": [],
        "epoch_seconds_": [],
        "probe_seconds_": 0.0,
    }
    return FineTuneHead.from_state(HeadState("finetune", {"cut": cut}, arrays, values))


def test_a_vgg16_block5_pool_head_is_dense_layers_with_the_networks_relus() -> None:
    head = fitted("block5_pool", ["fc1", "fc2", "predictions"], [(12, 8), (8, 6), (6, 3)], 12)
    layers = head_layers(head)
    assert [(d.weights.shape, d.relu) for d in layers] == [
        ((12, 8), True),
        ((8, 6), True),
        ((6, 3), False),
    ]
    x = np.random.default_rng(1).standard_normal((4, 12)).astype(np.float32)
    h = x
    for d in layers:
        h = h @ d.weights + d.biases
        h = np.maximum(h, 0) if d.relu else h
    np.testing.assert_allclose(h, head.decision_function(x), rtol=1e-5, atol=1e-5)


def test_a_cut_with_a_pool_or_convolution_above_it_is_refused_naming_the_dense_cuts() -> None:
    # conv5: pool5 (no weights) then fc6, fc7, fc8 on 5x5x4 maps pooled to 2x2x4
    head = fitted("conv5", ["fc6", "fc7", "fc8"], [(16, 8), (8, 6), (6, 3)], 100)
    with pytest.raises(
        HeadError,
        match=r"from cut 'conv5' runs pool5 \(pool\) above the cut; export-model writes the "
        r"layers above a cut as dense products only: fine-tune from pool5 or fc6 to export",
    ):
        head_layers(head)
    conv = fitted("conv4", ["conv5", "fc6", "fc7", "fc8"],
                  [(3, 3, 2, 4), (16, 8), (8, 6), (6, 3)], 100)  # fmt: skip
    with pytest.raises(HeadError, match=r"runs conv5 \(conv\), pool5 \(pool\) above the cut"):
        head_layers(conv)
