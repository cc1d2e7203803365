"""The exported network as a TensorFlow module: pixels in, the head's probabilities out.

``serve(images)`` takes decoded RGB, ``uint8 [N, H, W, 3]`` (any H and W, one size per
batch), and returns ``{"probabilities": float32 [N, C]}``: the profile's resize and
preprocessing (`featcache.export.ingraph`) at the backbone's input size, the backbone up to
the head's layer (its TensorFlow network's ``portable_graph``: `AlexNet`, or the
`GraphNetwork` of VGG16 and ResNet50, built from the registry without weights), then the
head's dense layers and a softmax. ``serve_bytes``
takes encoded images (``tf.string [N]``, PNG, JPEG, GIF or BMP, sizes may differ) as TF
Serving and Vertex AI clients send them. Weights are variables, so a SavedModel keeps them
in ``variables/``. ``serve_fed(which)`` is ``serve`` with weight arrays (``fed_arrays(which)``:
the dense matrices, or every array) as inputs of their own, bound as constants only after
conversion: the converters copy every constant they are given, several times over
(`featcache.export.formats`).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from featcache.errors import ConfigError
from featcache.export.dense import Dense
from featcache.export.float16 import round_to_float16
from featcache.export.ingraph import preprocess_images
from featcache.extractor._tf import import_tensorflow
from featcache.extractor.registry import DEFAULT_BACKBONE, Backbone, backbone_named

__all__ = ["FED", "GraphSpec", "build_module", "portable_network", "used_weights"]

#: What `serve_fed` takes as inputs: the weight matrices (tf2onnx: conv kernels stay
#: constants, which it transposes for ONNX) or every weight array (OpenVINO).
FED: Final = ("matrices", "all")


@dataclass(frozen=True)
class GraphSpec:
    """What the exported graph computes: the extractor's profile and resize policy, the
    head's layer, whether its vectors were stored as float16 (rounded there alike), whether
    the caffe resize follows Pillow 13's pass order, and the backbone (a registry name)."""

    profile: str
    resize: str
    layer: str
    float16_vectors: bool = False
    pillow_order: bool = True
    backbone: str = DEFAULT_BACKBONE


def portable_network(backbone: Backbone, profile: str) -> Any:
    """`backbone`'s TensorFlow network without weights (they are given to its
    ``portable_graph``), or `ConfigError` if it has no graph to export."""
    backbone.check_profile(profile)
    network = backbone.build_tensorflow({}, profile, "float32")
    if not callable(getattr(network, "portable_graph", None)):
        raise ConfigError(
            f"backbone '{backbone.name}': its TensorFlow network has no portable_graph, so "
            "export-model cannot trace it; answer its heads with featcache predict or serve"
        )
    return network


def used_weights(
    network: Any, layer: str, weights: Mapping[str, tuple[np.ndarray, np.ndarray]], size: int
) -> tuple[str, ...]:
    """The layers of `weights` that `network`'s portable graph reads to compute `layer`
    (shallow to deep), found by tracing it once on placeholders of the arrays' shapes:
    nothing is computed, and the network's own code is the one description of its wiring."""
    tf = import_tensorflow()
    read: set[str] = set()

    def placeholders(name: str) -> tuple[Any, Any]:
        read.add(name)
        w, b = weights[name]
        return (
            tf.compat.v1.placeholder(tf.float32, np.shape(w)),
            tf.compat.v1.placeholder(tf.float32, np.shape(b)),
        )

    with tf.Graph().as_default():
        x = tf.compat.v1.placeholder(tf.float32, [None, size, size, 3])
        network.portable_graph(x, [layer], _Lazy(weights, placeholders))
    return tuple(name for name in weights if name in read)


class _Lazy(Mapping[str, tuple[Any, Any]]):
    """{layer: make(layer)} over the keys of `keys`, each made when first read."""

    def __init__(self, keys: Mapping[str, object], make: Any) -> None:
        self._keys, self._make = keys, make
        self._made: dict[str, Any] = {}

    def __getitem__(self, name: str) -> tuple[Any, Any]:
        if name not in self._made:
            self._made[name] = self._make(name)
        return self._made[name]  # type: ignore[no-any-return]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


def build_module(
    weights: Mapping[str, tuple[np.ndarray, np.ndarray]], head: Sequence[Dense], spec: GraphSpec
) -> Any:
    """A ``tf.Module`` with the ``serve`` and ``serve_bytes`` functions (imports TensorFlow)."""
    tf = import_tensorflow()
    backbone = backbone_named(spec.backbone)
    size = backbone.input_size
    # The graph is always given the module's variables (or fed arrays): the network, which
    # keeps constants of what it is given, gets no weights (a copy of them all, saved).
    network = portable_network(backbone, spec.profile)
    used = used_weights(network, spec.layer, weights, size)

    def preprocess(images: Any) -> Any:
        return preprocess_images(
            tf,
            images,
            spec.profile,
            spec.resize,
            pillow_order=spec.pillow_order,
            size=size,
            mean_bgr=backbone.mean_bgr,
        )

    # Every weight and bias array by the input name serve_fed gives it.
    arrays = {
        f"{name}_{part}": np.asarray(array, np.float32)
        for name in used
        for part, array in zip(("weights", "biases"), weights[name], strict=True)
    }
    for i, layer in enumerate(head):
        arrays.update({f"head{i}_weights": layer.weights, f"head{i}_biases": layer.biases})

    class ExportedModel(tf.Module):  # type: ignore[misc,name-defined]
        def __init__(self) -> None:
            super().__init__(name="featcache_export")
            self.backbone = {
                name: (
                    tf.Variable(np.asarray(w, np.float32), trainable=False, name=f"{name}_w"),
                    tf.Variable(np.asarray(b, np.float32), trainable=False, name=f"{name}_b"),
                )
                for name, (w, b) in ((n, weights[n]) for n in used)
            }
            self.head = [
                (
                    tf.Variable(layer.weights, trainable=False, name=f"head{i}_w"),
                    tf.Variable(layer.biases, trainable=False, name=f"head{i}_b"),
                )
                for i, layer in enumerate(head)
            ]
            self.relu = [layer.relu for layer in head]

        def _probabilities(self, inputs: Any, fed: Mapping[str, Any] | None = None) -> Any:
            """The head's probabilities for network inputs; `fed` replaces weight arrays
            (by their `fed_arrays` name) with tensors given to the function."""
            fed = fed or {}
            backbone = {
                name: (fed.get(f"{name}_weights", w), fed.get(f"{name}_biases", b))
                for name, (w, b) in self.backbone.items()
            }
            h = network.portable_graph(inputs, [spec.layer], backbone)[spec.layer]
            if spec.float16_vectors:  # the head was trained on vectors stored as float16
                h = round_to_float16(tf, h)
            for i, ((w, b), relu) in enumerate(zip(self.head, self.relu, strict=True)):
                h = tf.matmul(h, fed.get(f"head{i}_weights", w)) + fed.get(f"head{i}_biases", b)
                if relu:
                    h = tf.nn.relu(h)
            return tf.nn.softmax(h, axis=-1)

        def fed_arrays(self, which: str = "matrices") -> dict[str, np.ndarray]:
            """The weight arrays `serve_fed` takes as inputs, by input name (``fc6_weights``,
            ``fc6_biases``, ``head0_weights``, ...), float32: the 2-D matrices (the fully
            connected layers and the head's) for ``"matrices"``, every array for ``"all"``."""
            if which not in FED:
                raise ConfigError(f"The 'which' must be one of {list(FED)}. Got {which!r}.")
            if which == "all":
                return dict(arrays)
            return {n: a for n, a in arrays.items() if n.endswith("_weights") and a.ndim == 2}

        def serve_fed(self, which: str = "matrices") -> Any:
            """`serve` as a concrete function of ``images`` and then every array of
            ``fed_arrays(which)`` (in its order, each an input named by its key): bound to
            those arrays, it computes what `serve` does."""
            fed_names = list(self.fed_arrays(which))
            signature = [tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")]
            signature += [tf.TensorSpec(arrays[n].shape, tf.float32, name=n) for n in fed_names]

            def fed(images: Any, *values: Any) -> dict[str, Any]:
                inputs = preprocess(images)
                bound = dict(zip(fed_names, values, strict=True))
                return {"probabilities": self._probabilities(inputs, bound)}

            function = tf.function(fed, input_signature=signature, autograph=False)
            return function.get_concrete_function()

        @tf.function(  # type: ignore[untyped-decorator]
            input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8, name="images")],
            autograph=False,
        )
        def serve(self, images: Any) -> dict[str, Any]:
            inputs = preprocess(images)
            return {"probabilities": self._probabilities(inputs)}

        @tf.function(  # type: ignore[untyped-decorator]
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
            autograph=False,
        )
        def serve_bytes(self, image_bytes: Any) -> dict[str, Any]:
            def one(data: Any) -> Any:
                # JPEG with the accurate integer DCT: Pillow's (libjpeg's ISLOW), to the bit;
                # TensorFlow's default (fast) DCT put 84% of the pixel values up to 13 apart.
                rgb = tf.cond(
                    tf.io.is_jpeg(data),
                    lambda: tf.io.decode_jpeg(data, channels=3, dct_method="INTEGER_ACCURATE"),
                    lambda: tf.io.decode_image(data, channels=3, expand_animations=False),
                )
                rgb = tf.ensure_shape(rgb, [None, None, 3])
                return preprocess(rgb[None])[0]

            inputs = tf.map_fn(
                one,
                image_bytes,
                fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32),
            )
            return {"probabilities": self._probabilities(inputs)}

    return ExportedModel()
