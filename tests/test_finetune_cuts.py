"""Fine-tuning from any cut, never worse than the frozen start, and repeatable: the NumPy and
TensorFlow passes above each cut against the extractor's own layers, the linear probe as the
start, epoch 0 kept when fine-tuning does not help, and the same head from two processes."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from conftest import write_images
from featcache.architecture import ALEXNET_TOP
from featcache.classifier.cuts import (
    CUTS,
    conv2d,
    max_pool,
    pretrained_params,
    run_stages,
    stages_above,
)
from featcache.classifier.finetune import Epoch, FineTuneHead
from featcache.classifier.heads import SoftmaxHead
from featcache.errors import ConfigError
from featcache.extractor.config import ExtractConfig
from featcache.extractor.weights import Weights

ALEXNET_CUTS = [name for name, cut in CUTS.items() if cut.stages == ALEXNET_TOP]


@dataclass(frozen=True)
class TinyNet:
    """A stand-in weights file with AlexNet's layer names and grouping at tiny sizes: conv3
    gives 4 channels; conv4 (group 2) 6; conv5 (group 2) 4; pool5 is 2x2x4 on 5x5 maps."""

    sha256: str = "a" * 64
    layers: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def tiny_net(seed: int = 1) -> TinyNet:
    rng = np.random.default_rng(seed)
    shapes = {
        "conv3": (3, 3, 3, 4),
        "conv4": (3, 3, 2, 6),
        "conv5": (3, 3, 3, 4),
        "fc6": (16, 6),
        "fc7": (6, 6),
    }
    return TinyNet(
        layers={
            name: (
                rng.standard_normal(shape, dtype=np.float32) * 0.4,
                rng.uniform(0, 0.2, shape[-1]).astype(np.float32),
            )
            for name, shape in shapes.items()
        }
    )


def tiny_conv3_data(n: int = 48, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`n` non-negative 5x5x4 maps (flattened) in 3 classes, told apart by one channel."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    maps = rng.uniform(0, 1, (n, 5, 5, 4)).astype(np.float32)
    maps[..., 0] += y[:, None, None] * 0.8
    return maps.reshape(n, -1), y


# -- NumPy, no TensorFlow ----------------------------------------------------------------------


def test_numpy_grouped_convolution_and_pool_equal_direct_sums() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 4, 5, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 2, 6)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    got = conv2d(x, w, b, padding=1, groups=2)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    expected = np.zeros((2, 4, 5, 6))
    for o in range(6):
        g = o // 3  # output channels 0-2 read inputs 0-1, 3-5 read 2-3
        for i, j in np.ndindex(4, 5):
            window = padded[:, i : i + 3, j : j + 3, 2 * g : 2 * g + 2]
            expected[:, i, j, o] = np.einsum("nhwc,hwc->n", window, w[..., o]) + b[o]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    pooled = max_pool(np.arange(2 * 7 * 7 * 1, dtype=np.float32).reshape(2, 7, 7, 1))
    assert pooled.shape == (2, 3, 3, 1)
    assert pooled[0, :, :, 0].tolist() == [[16, 18, 20], [30, 32, 34], [44, 46, 48]]


def test_cuts_name_the_layers_they_train_and_refuse_misfits() -> None:
    assert [s.name for s in stages_above("conv4")] == ["conv5", "pool5", "fc6", "fc7", "fc8"]
    assert stages_above("pool2")[0].name == "conv3"
    assert set(CUTS) == {"pool2", "conv3", "conv4", "conv5", "pool5", "fc6", "block5_pool"}
    with pytest.raises(ValueError, match=r"'cut' must be one of .*Got 'fc7'"):
        stages_above("fc7")
    net = tiny_net()
    with pytest.raises(ValueError, match=r"'conv4' vectors are square maps of 6 channels.*99"):
        pretrained_params(stages_above("conv4"), net.layers, "conv4", 99)
    with pytest.raises(ValueError, match="'fc6' takes 16 inputs but the layer below gives 36"):
        pretrained_params(stages_above("conv5"), net.layers, "conv5", 7 * 7 * 4)
    with pytest.raises(ValueError, match="'fc6' takes 16 inputs but X has 36 features"):
        pretrained_params(stages_above("pool5"), net.layers, "pool5", 36)
    with pytest.raises(ConfigError, match=r"\['conv4'\] are extracted by the 'tensorflow'"):
        ExtractConfig(layers=("conv4",), runtime="openvino")
    assert ExtractConfig(layers=("conv4", "fc7")).storage_dtype("conv4") == "float16"


def test_each_backbone_names_its_cuts_and_a_finetune_of_another_is_refused() -> None:
    from featcache.architecture import cuts_of, describe_cuts
    from featcache.classifier.train import check_cut

    assert cuts_of("alexnet") == ("pool2", "conv3", "conv4", "conv5", "pool5", "fc6")
    assert cuts_of("vgg16") == ("block5_pool",) and cuts_of("resnet50") == ()
    assert describe_cuts() == "alexnet: pool2, conv3, conv4, conv5, pool5, fc6; vgg16: block5_pool"
    check_cut("conv4", "alexnet")
    check_cut("block5_pool", "vgg16")
    with pytest.raises(ConfigError, match=r"of vgg16 vectors cannot start from 'pool5': give "
                       r"--from block5_pool\. Fine-tune cuts \(alexnet: pool2, "):  # fmt: skip
        check_cut("pool5", "vgg16")
    with pytest.raises(ConfigError, match=r"of resnet50 vectors cannot start from 'pool5': "
                       r"featcache does not fine-tune it\..*\(--kind softmax\)"):  # fmt: skip
        check_cut("pool5", "resnet50")


# -- TensorFlow --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def every_layer(
    weights: Weights, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, np.ndarray]:
    """The extractor's vectors of 3 images at every cut and above (seeded RANDOM weights)."""
    from featcache.extractor.pipeline import extract

    folder = tmp_path_factory.mktemp("cuts") / "data"
    write_images(folder, 3)
    layers = (*ALEXNET_CUTS, "fc7")
    return extract(folder, weights, None, config=ExtractConfig(layers=layers)).vectors


@pytest.mark.slow
@pytest.mark.parametrize("cut", ALEXNET_CUTS)
def test_each_cut_reproduces_the_extractors_layers_above_it(
    cut: str, every_layer: dict[str, np.ndarray], weights: Weights
) -> None:
    """A fine-tune from `cut` with zero epochs computes every layer above it as the
    extractor does (relative 1e-4), through the head's NumPy pass and its TensorFlow pass."""
    x = every_layer[cut]
    head = FineTuneHead(cut=cut, epochs=0, early_stopping=False)
    head.fit(x, np.array([0, 1, 0]), pretrained=weights)
    above = [s.name for s in stages_above(cut)[:-1]]
    for layer in above:
        if layer not in every_layer:
            continue  # pool5 of a conv5 cut is checked through fc6
        expected = every_layer[layer]
        got = head.activations(x, layer)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max(), layer
    assert head.layers_ == tuple(s.name for s in stages_above(cut) if s.has_weights)
    for (w, b), kept_w, kept_b in zip(
        [weights.layers[name] for name in head.layers_[:-1]],
        head.coefs_,
        head.intercepts_,
        strict=False,
    ):
        np.testing.assert_array_equal(kept_w, w)
        np.testing.assert_array_equal(kept_b, b)


@pytest.mark.slow
def test_zero_epochs_is_the_frozen_start_the_softmax_heads_solution(
    every_layer: dict[str, np.ndarray], weights: Weights
) -> None:
    y = np.array([0, 1, 1])
    head = FineTuneHead(epochs=0, early_stopping=False).fit(
        every_layer["pool5"], y, pretrained=weights
    )
    probe = SoftmaxHead(random_state=0).fit(every_layer["fc7"], y)
    assert head.best_epoch_ == 0 and head.n_iter_ == 0
    np.testing.assert_allclose(head.coefs_[-1], probe.coef_.T, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(
        head.predict_proba(every_layer["pool5"]),
        probe.predict_proba(every_layer["fc7"]),
        atol=1e-4,
    )


@pytest.mark.slow
def test_a_conv_cut_trains_every_layer_and_tensorflow_equals_numpy() -> None:
    from featcache.classifier._finetune_tf import Trainer, TrainerConfig
    from featcache.classifier.finetune import _stage_input_stats

    net = tiny_net()
    x, y = tiny_conv3_data()
    stages = stages_above("conv3")
    params, shape = pretrained_params(stages, net.layers, "conv3", x.shape[1])
    assert shape == (5, 5, 4)
    rng = np.random.default_rng(2)
    params.append((rng.standard_normal((6, 3)).astype(np.float32), np.zeros(3, np.float32)))
    stats = _stage_input_stats(x, stages, params, shape)
    config = TrainerConfig(1e-2, 1e-3, 5e-4, 0.0, "float32", seed=0)
    trainer = Trainer(stages, [(w, b, True) for w, b in params], stats, shape, config)
    for _ in range(5):
        trainer.step(x, y.astype(np.int32))
    trained = trainer.weights()
    folded = list(zip(trained[0::2], trained[1::2], strict=True))
    ours = run_stages(x, stages, folded, shape)
    np.testing.assert_allclose(trainer.logits(x), ours, rtol=1e-4, atol=1e-4)
    before = [p[0] for p in params]
    assert all(not np.allclose(a, b) for a, b in zip(trained[0::2], before, strict=True))

    progress: list[Epoch] = []
    head = FineTuneHead(cut="conv3", epochs=3, batch_size=8, validation_fraction=0.25)
    head.fit(x, y, pretrained=net, on_epoch=progress.append)
    choosing, refit = progress[: head.n_iter_ + 1], progress[head.n_iter_ + 1 :]
    assert [p.epoch for p in choosing] == list(range(head.n_iter_ + 1))
    assert [p.epoch for p in refit] == list(range(1, head.best_epoch_ + 1))
    assert all(p.refit for p in refit) and not any(p.refit for p in choosing)
    assert progress[0].loss is None and progress[1].loss == head.loss_curve_[0]
    assert [p.val_loss for p in choosing] == head.validation_losses_
    assert len(head.validation_scores_) == head.n_iter_ + 1
    assert head.coefs_[0].shape == (3, 3, 2, 6)  # conv4 above conv3, group 2
    assert head.predict(x).shape == (48,)


@pytest.mark.slow
def test_fine_tuning_that_does_not_help_keeps_the_frozen_start() -> None:
    net = tiny_net()
    x, y = tiny_conv3_data()
    frozen = FineTuneHead(cut="conv3", epochs=0).fit(x, y, pretrained=net)
    wild = FineTuneHead(cut="conv3", epochs=2, learning_rate=50.0, pretrained_learning_rate=50.0)
    wild.fit(x, y, pretrained=net)
    assert wild.best_epoch_ == 0 and wild.n_iter_ >= 1
    assert min(wild.validation_losses_[1:]) > wild.validation_losses_[0]
    for a, b in zip(
        wild.coefs_ + wild.intercepts_, frozen.coefs_ + frozen.intercepts_, strict=True
    ):
        np.testing.assert_array_equal(a, b)


_TWICE = """
import hashlib, sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_finetune_cuts import tiny_conv3_data, tiny_net
from featcache.classifier.finetune import FineTuneHead
x, y = tiny_conv3_data()
head = FineTuneHead(cut="conv3", epochs=2, batch_size=8).fit(x, y, pretrained=tiny_net())
digest = hashlib.sha256()
for a in head.coefs_ + head.intercepts_:
    digest.update(np.ascontiguousarray(a).tobytes())
print(digest.hexdigest())
"""


@pytest.mark.slow
def test_the_same_fit_in_another_process_gives_the_same_bits() -> None:
    x, y = tiny_conv3_data()
    head = FineTuneHead(cut="conv3", epochs=2, batch_size=8).fit(x, y, pretrained=tiny_net())
    digest = hashlib.sha256()
    for a in head.coefs_ + head.intercepts_:
        digest.update(np.ascontiguousarray(a).tobytes())
    script = _TWICE.format(tests=str(Path(__file__).parent))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=300
    )
    assert done.stdout.strip().splitlines()[-1] == digest.hexdigest()


def test_a_head_file_saved_before_cuts_still_loads() -> None:
    from featcache.classifier.headstate import HeadState

    rng = np.random.default_rng(0)
    state = HeadState(
        "finetune",
        {"layers": "fc7,fc8", "random_state": 0},
        {
            "classes_": np.arange(3),
            "coefs_.0": rng.standard_normal((12, 8)).astype(np.float32),
            "coefs_.1": rng.standard_normal((8, 3)).astype(np.float32),
            "intercepts_.0": np.zeros(8, np.float32),
            "intercepts_.1": np.zeros(3, np.float32),
        },
        {
            "coefs_#count": 2,
            "intercepts_#count": 2,
            "n_features_in_": 12,
            "layers_": ["fc7", "fc8"],
            "weights_sha256_": None,
            "n_iter_": 1,
            "best_epoch_": 1,
            "loss_curve_": [0.5],
            "validation_scores_": [],
            "epoch_seconds_": [0.1],
        },
    )
    head = FineTuneHead.from_state(state)
    assert head.cut == "fc6" and head.input_shape_ is None
    assert head.predict(rng.standard_normal((4, 12)).astype(np.float32)).shape == (4,)
