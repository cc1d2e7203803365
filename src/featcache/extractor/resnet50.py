"""ResNet50 as ``keras.applications.ResNet50`` builds it (Keras's v1 layout), and its entry.

``conv1``: ZeroPadding 3, 7x7 stride-2 convolution (with bias), BatchNormalization, ReLU,
ZeroPadding 1, 3x3 stride-2 max pool. Four stages of bottleneck blocks (64, 128, 256, 512
filters; 3, 4, 6, 3 blocks): 1x1 → 3x3 (SAME) → 1x1 (4x filters), each convolution with a
bias and a BatchNormalization (epsilon 1.001e-5); the first block of a stage has a 1x1
projection shortcut, and its stride (1 in conv2, 2 after) sits on the first 1x1
convolution and the shortcut (v1, not v1.5's 3x3); ReLU after the residual sum
(``convN_blockM_out``). ``avg_pool`` averages over space (2048); ``predictions`` is the
softmax of the 1000 logits. Input: 224x224 BGR, ImageNet mean subtracted (``caffe`` mode).

Weights: ``resnet50_weights_tf_dim_ordering_tf_kernels.h5`` (98 MB), read with h5py; every
array's shape checked. Each BatchNormalization's four arrays (gamma, beta, moving mean,
moving variance) are kept as the equivalent per-channel ``(scale, offset)`` pair
(``scale = gamma / sqrt(variance + epsilon)``, ``offset = beta - mean * scale``), which is
how inference applies it, so every layer of the loaded weights is a ``(W, b)`` pair.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from featcache.errors import WeightsError
from featcache.extractor.keras_h5 import random_dense, read_keras_h5, write_keras_h5
from featcache.extractor.registry import Backbone, register_backbone
from featcache.extractor.weights import Weights, file_sha256

__all__ = [
    "BN_EPSILON",
    "RESNET50",
    "RESNET50_FILE",
    "read_resnet50_weights",
    "resnet50_graph",
    "resnet50_layer_shapes",
    "write_resnet50_demo_weights",
]

#: (stage, filters, blocks, stride of the first block)
STAGES: Final = (
    ("conv2", 64, 3, 1),
    ("conv3", 128, 4, 2),
    ("conv4", 256, 6, 2),
    ("conv5", 512, 3, 2),
)
BN_EPSILON: Final = 1.001e-5
_CHAIN: Final = ("conv4_block6_out", "conv5_block3_out", "avg_pool", "predictions")
RESNET50_FILE: Final = "resnet50_weights_tf_dim_ordering_tf_kernels.h5"
URL: Final = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/" + RESNET50_FILE


def resnet50_layer_shapes(divisor: int = 1) -> dict[str, tuple[int, ...]]:
    """Each layer's weight shape: a convolution's kernel, a BatchNormalization's channels
    (``(C,)``), the classifier's matrix. `divisor` narrows every layer (tests)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, k: int, c_in: int, c_out: int) -> None:
        shapes[f"{name}_conv"] = (k, k, c_in, c_out)
        shapes[f"{name}_bn"] = (c_out,)

    width = max(1, 64 // divisor)
    conv("conv1", 7, 3, width)
    depth = width
    for stage, filters, blocks, _ in STAGES:
        f = max(1, filters // divisor)
        for block in range(1, blocks + 1):
            name = f"{stage}_block{block}"
            if block == 1:
                conv(f"{name}_0", 1, depth, 4 * f)
            conv(f"{name}_1", 1, depth, f)
            conv(f"{name}_2", 3, f, f)
            conv(f"{name}_3", 1, f, 4 * f)
            depth = 4 * f
    shapes["predictions"] = (depth, 1000)
    return shapes


#: The layout the reader checks (module state read at call time, like AlexNet's).
LAYER_SHAPES: dict[str, tuple[int, ...]] = resnet50_layer_shapes()
_BN_PARTS: Final = ("gamma", "beta", "moving_mean", "moving_variance")


def resnet50_graph(
    tf: Any, x: Any, params: Mapping[str, tuple[Any, Any]], layers: tuple[str, ...]
) -> dict[str, Any]:
    """ResNet50 in ``tf.nn`` ops up to the deepest of `layers`."""

    def conv_bn(h: Any, name: str, stride: int = 1, padding: str = "VALID") -> Any:
        w, b = params[f"{name}_conv"]
        scale, offset = params[f"{name}_bn"]
        return tf.nn.bias_add(tf.nn.conv2d(h, w, stride, padding), b) * scale + offset

    def flat(h: Any) -> Any:
        return tf.reshape(h, [tf.shape(h)[0], -1])

    depth = max(_CHAIN.index(name) for name in layers)
    h = tf.pad(x, [[0, 0], [3, 3], [3, 3], [0, 0]])
    h = tf.nn.relu(conv_bn(h, "conv1", 2))
    h = tf.nn.max_pool2d(tf.pad(h, [[0, 0], [1, 1], [1, 1], [0, 0]]), 3, 2, "VALID")
    out: dict[str, Any] = {}
    for stage, _, blocks, stride1 in STAGES:
        for block in range(1, blocks + 1):
            name = f"{stage}_block{block}"
            stride = stride1 if block == 1 else 1
            shortcut = conv_bn(h, f"{name}_0", stride) if block == 1 else h
            y = tf.nn.relu(conv_bn(h, f"{name}_1", stride))
            y = tf.nn.relu(conv_bn(y, f"{name}_2", 1, "SAME"))
            h = tf.nn.relu(shortcut + conv_bn(y, f"{name}_3"))
        out_name = f"{stage}_block{blocks}_out"
        if out_name in _CHAIN:
            out[out_name] = flat(h)
            if _CHAIN.index(out_name) == depth:
                return out
    out["avg_pool"] = tf.reduce_mean(h, axis=[1, 2])
    if depth == _CHAIN.index("predictions"):
        w, b = params["predictions"]
        out["predictions"] = tf.nn.softmax(tf.cast(tf.matmul(out["avg_pool"], w) + b, tf.float32))
    return out


def _layout() -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    layout: dict[str, list[tuple[str, tuple[int, ...]]]] = {}
    for name, shape in LAYER_SHAPES.items():
        if name.endswith("_bn"):
            layout[name] = [(part, shape) for part in _BN_PARTS]
        else:
            layout[name] = [("kernel", shape), ("bias", shape[-1:])]
    return layout


def read_resnet50_weights(path: Path) -> Weights:
    """Read and check a ResNet50 weights file (`WeightsError` naming the layer if unusable);
    BatchNormalizations come back as (scale, offset)."""
    arrays, note = read_keras_h5(path, _layout(), expected_file=RESNET50_FILE)
    layers: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, values in arrays.items():
        if name.endswith("_bn"):
            gamma, beta, mean, variance = (v.astype(np.float64) for v in values)
            if (variance < 0).any():
                raise WeightsError(f"{path}: layer '{name}' moving_variance has negative values")
            scale = gamma / np.sqrt(variance + BN_EPSILON)
            layers[name] = (scale.astype(np.float32), (beta - mean * scale).astype(np.float32))
        else:
            layers[name] = (values[0], values[1])
    return Weights(path, layers, file_sha256(path), note, network="resnet50")


def write_resnet50_demo_weights(path: Path, seed: int = 0) -> Path:
    """Seeded random ResNet50 weights in the Keras layout, marked as random (not ImageNet's).

    He-scaled kernels, small biases; BatchNormalization statistics near (0, 1), and the
    last BatchNormalization of each block scaled down (gamma 0.2) so the residual sums stay
    in float16's range over sixteen blocks, as trained networks' do.
    """
    rng = np.random.default_rng(seed)
    content: dict[str, list[tuple[str, np.ndarray]]] = {}
    for name, shape in LAYER_SHAPES.items():
        if name.endswith("_bn"):
            gamma = np.float32(0.2 if name.endswith(("_3_bn", "_0_bn")) else 1.0)
            content[name] = [
                ("gamma", gamma * (1 + 0.1 * rng.standard_normal(shape, dtype=np.float32))),
                ("beta", 0.05 * rng.standard_normal(shape, dtype=np.float32)),
                ("moving_mean", 0.1 * rng.standard_normal(shape, dtype=np.float32)),
                ("moving_variance", rng.uniform(0.5, 1.5, shape).astype(np.float32)),
            ]
            continue
        content[name] = random_dense(rng, shape)
    note = f"seeded random ResNet50 weights (seed={seed}), NOT ImageNet-trained"
    return write_keras_h5(Path(path), content, note)


def _build(weights: Mapping[str, tuple[Any, Any]], profile: str, precision: str) -> Any:
    from featcache.extractor.tfgraph import GraphNetwork

    return GraphNetwork(
        resnet50_graph, weights, RESNET50.layer_names, RESNET50.input_size, precision=precision
    )


RESNET50: Final = register_backbone(
    Backbone(
        name="resnet50",
        layers={
            "conv4_block6_out": 200704,
            "conv5_block3_out": 100352,
            "avg_pool": 2048,
            "predictions": 1000,
        },
        default_layer="avg_pool",
        input_size=224,
        mean_bgr=(103.939, 116.779, 123.68),
        profiles=("caffe",),
        weights_file=RESNET50_FILE,
        weights_url=URL,
        weights_mb=98.0,
        read_weights=read_resnet50_weights,
        write_demo_weights=write_resnet50_demo_weights,
        build_tensorflow=_build,
        weight_shapes=lambda: LAYER_SHAPES,
        graph_stem="resnet50",
        gmacs=3.86,
        description="ResNet50 (keras.applications, v1), 224x224, 25.6M parameters",
        storage_float16=("conv4_block6_out", "conv5_block3_out"),
    )
)
