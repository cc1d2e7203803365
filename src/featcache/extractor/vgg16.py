"""VGG16 as ``keras.applications.VGG16`` builds it, and its registry entry.

Thirteen 3x3 convolutions (stride 1, SAME, ReLU) in five blocks of 64, 128, 256, 512, 512
filters, each block ending in a 2x2 stride-2 max pool; ``block5_pool`` is 7x7x512 flattened
in H, W, C order (25088); ``fc1`` and ``fc2`` (4096, ReLU); ``predictions`` = softmax of the
1000 logits, as Keras's model outputs. Input: 224x224 BGR, ImageNet mean subtracted, no
scaling (``preprocess_input``'s ``caffe`` mode).

Weights: ``vgg16_weights_tf_dim_ordering_tf_kernels.h5`` (528 MB), read with h5py
(`keras_h5`), each layer's kernel and bias shape checked against `LAYER_SHAPES` (read when
the reader runs, so tests can narrow it: `vgg16_layer_shapes`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import numpy as np

from featcache.architecture import VGG16_TOP, tf_stage
from featcache.extractor.keras_h5 import random_dense, read_keras_h5, write_keras_h5
from featcache.extractor.registry import Backbone, register_backbone
from featcache.extractor.weights import Weights, file_sha256

__all__ = [
    "VGG16",
    "VGG16_FILE",
    "read_vgg16_weights",
    "vgg16_graph",
    "vgg16_layer_shapes",
    "write_vgg16_demo_weights",
]

#: Convolutions per block and their filters.
BLOCKS: Final = ((2, 64), (2, 128), (3, 256), (3, 512), (3, 512))
_CHAIN: Final = ("block5_pool", "fc1", "fc2", "predictions")
VGG16_FILE: Final = "vgg16_weights_tf_dim_ordering_tf_kernels.h5"
URL: Final = "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/" + VGG16_FILE


def vgg16_layer_shapes(divisor: int = 1, input_size: int = 224) -> dict[str, tuple[int, ...]]:
    """Each layer's kernel shape (its bias has the last dimension's length). `divisor`
    narrows every layer (tests: the same network, 1/divisor of the filters and units)."""
    shapes: dict[str, tuple[int, ...]] = {}
    depth = 3
    for block, (convs, filters) in enumerate(BLOCKS, start=1):
        for conv in range(1, convs + 1):
            width = max(1, filters // divisor)
            shapes[f"block{block}_conv{conv}"] = (3, 3, depth, width)
            depth = width
    side = input_size // 32
    units = max(1, 4096 // divisor)
    shapes["fc1"] = (side * side * depth, units)
    shapes["fc2"] = (units, units)
    shapes["predictions"] = (units, 1000)
    return shapes


#: The layout the reader checks (module state read at call time, like AlexNet's).
LAYER_SHAPES: dict[str, tuple[int, ...]] = vgg16_layer_shapes()


def vgg16_graph(
    tf: Any, x: Any, params: Mapping[str, tuple[Any, Any]], layers: tuple[str, ...]
) -> dict[str, Any]:
    """VGG16 in ``tf.nn`` ops up to the deepest of `layers`."""
    h = x
    for block, (convs, _) in enumerate(BLOCKS, start=1):
        for conv in range(1, convs + 1):
            w, b = params[f"block{block}_conv{conv}"]
            h = tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(h, w, 1, "SAME"), b))
        h = tf.nn.max_pool2d(h, ksize=2, strides=2, padding="VALID")
    out: dict[str, Any] = {"block5_pool": tf.reshape(h, [tf.shape(h)[0], -1])}
    # the dense top is the one fine-tuning trains (featcache.architecture.VGG16_TOP)
    depth = max(_CHAIN.index(name) for name in layers)
    previous = out["block5_pool"]
    for stage in VGG16_TOP[:depth]:
        w, b = params[stage.name]
        out[stage.name] = previous = tf_stage(tf, previous, stage, w, b)
    if "predictions" in out:  # Keras's model ends in the softmax
        out["predictions"] = tf.nn.softmax(tf.cast(out["predictions"], tf.float32))
    return out


def _layout() -> dict[str, list[tuple[str, tuple[int, ...]]]]:
    return {name: [("kernel", shape), ("bias", shape[-1:])] for name, shape in LAYER_SHAPES.items()}


def read_vgg16_weights(path: Path) -> Weights:
    """Read and check a VGG16 weights file (`WeightsError` naming the layer if unusable)."""
    arrays, note = read_keras_h5(path, _layout(), expected_file=VGG16_FILE)
    layers = {name: (pair[0], pair[1]) for name, pair in arrays.items()}
    return Weights(path, layers, file_sha256(path), note, network="vgg16")


def write_vgg16_demo_weights(path: Path, seed: int = 0) -> Path:
    """Seeded random VGG16 weights (He-scaled normal, small biases) in the Keras layout,
    marked as random: they are not ImageNet's, and everything computed with them says so."""
    rng = np.random.default_rng(seed)
    content = {}
    for name, shape in LAYER_SHAPES.items():
        content[name] = random_dense(rng, shape)
    note = f"seeded random VGG16 weights (seed={seed}), NOT ImageNet-trained"
    return write_keras_h5(Path(path), content, note)


def _build(weights: Mapping[str, tuple[Any, Any]], profile: str, precision: str) -> Any:
    from featcache.extractor.tfgraph import GraphNetwork

    return GraphNetwork(
        vgg16_graph, weights, VGG16.layer_names, VGG16.input_size, precision=precision
    )


VGG16: Final = register_backbone(
    Backbone(
        name="vgg16",
        layers={"block5_pool": 25088, "fc1": 4096, "fc2": 4096, "predictions": 1000},
        default_layer="fc2",
        input_size=224,
        mean_bgr=(103.939, 116.779, 123.68),
        profiles=("caffe",),
        weights_file=VGG16_FILE,
        weights_url=URL,
        weights_mb=528.0,
        read_weights=read_vgg16_weights,
        write_demo_weights=write_vgg16_demo_weights,
        build_tensorflow=_build,
        weight_shapes=lambda: LAYER_SHAPES,
        graph_stem="vgg16",
        gmacs=15.47,
        description="VGG16 (keras.applications), 224x224, 138M parameters",
        storage_float16=("block5_pool",),
    )
)
