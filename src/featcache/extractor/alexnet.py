"""The frozen AlexNet in TensorFlow: weights as constants, one compiled graph reused per batch.

TensorFlow is imported when an `AlexNet` is built, never when this module is imported.

Wiring per profile (DESIGN.md):

=========  ================================  =================================
layer      caffe (deploy.prototxt)           udacity (the seed program)
=========  ================================  =================================
conv1      11x11 stride 4, no padding        11x11 stride 4, SAME
conv2      5x5 pad 2, group 2                5x5 SAME, group 2
conv3      3x3 pad 1                         3x3 SAME (= pad 1)
conv4/5    3x3 pad 1, group 2                3x3 SAME (= pad 1), group 2
=========  ================================  =================================

Both: ReLU, then LRN (radius 2, alpha 2e-5, beta 0.75, bias 1; fused with the pool by XLA)
and a 3x3 stride-2 max pool after conv1 and conv2; a max pool after conv5 gives pool5
(6x6x256, flattened H, W, C); fc6 and fc7 with ReLU; fc8 logits; prob = softmax(fc8).
Everything above pool2 is the same for both profiles and is built from
`featcache.architecture.ALEXNET_TOP`, the stages a fine-tune trains: one description of
them, run here, in the fine-tune's training pass and in its NumPy prediction.
Grouped convolutions use TensorFlow's native groups (the kernel's input depth is half the
input's), which equals the seed's split-and-concat.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import numpy as np

from featcache.architecture import ALEXNET_TOP, CUTS, tf_stage
from featcache.errors import ConfigError
from featcache.extractor._tf import import_tensorflow
from featcache.extractor.preprocess import INPUT_SIZE, check_profile

__all__ = [
    "CUT_DIMS",
    "LAYERS",
    "LAYER_DIMS",
    "PRECISIONS",
    "AlexNet",
    "check_batch",
    "check_layers",
    "export_signature",
    "weight_constants",
    "weight_layers",
]

#: The network's outputs (every runtime's), and the length of each one's vector.
LAYER_DIMS: Final = {"pool5": 9216, "fc6": 4096, "fc7": 4096, "fc8": 1000, "prob": 1000}
LAYERS: Final = tuple(LAYER_DIMS)
#: Deeper cuts for fine-tuning (TensorFlow runtime): 13x13 maps flattened H, W, C, as pool5.
CUT_DIMS: Final = {name: cut.dim for name, cut in CUTS.items() if cut.spatial}
#: float32 everywhere; bf16 (CPUs with AMX/AVX512-BF16, GPUs) and fp16 (GPUs) run the
#: convolutions and products in reduced precision and keep LRN and outputs in float32.
PRECISIONS: Final = ("float32", "bf16", "fp16")
#: pool2, then every layer above it (featcache.architecture), shallow to deep.
_ORDER: Final = ("pool2", *(stage.name for stage in ALEXNET_TOP))


def weight_constants(
    weights: Mapping[str, tuple[np.ndarray, np.ndarray]], precision: str
) -> tuple[Any, Any, dict[str, tuple[Any, Any]]]:
    """TensorFlow, the compute dtype of `precision` and ``{layer: (W, b)}`` as constants of
    it, for a network built on them (AlexNet, the graph networks); `ConfigError` names an
    unknown precision."""
    if precision not in PRECISIONS:
        raise ConfigError(f"The 'precision' must be one of {list(PRECISIONS)}. Got {precision!r}.")
    tf = import_tensorflow()  # deferred: importing featcache must not import TensorFlow
    dtype = {"float32": tf.float32, "bf16": tf.bfloat16, "fp16": tf.float16}[precision]
    params = {
        name: (
            tf.constant(np.asarray(w, dtype=np.float32), dtype=dtype),
            tf.constant(np.asarray(b, dtype=np.float32), dtype=dtype),
        )
        for name, (w, b) in weights.items()
    }
    return tf, dtype, params


def export_signature(
    tf: Any, params: Mapping[str, tuple[Any, Any]], used: Sequence[str], size: int | None
) -> tuple[list[tuple[str, str]], list[Any]]:
    """An exported graph's weight inputs ``(layer, "weights" | "biases")`` in order, and its
    input signature: the (N, size, size, 3) batch, then those weights (every dimension
    unknown when `size` is None, so the graph takes its shapes from the arrays bound to it)."""
    names = [(layer, part) for layer in used for part in ("weights", "biases")]
    signature = [tf.TensorSpec([None, size, size, 3], tf.float32, name="x")]
    for layer in used:
        for part, tensor in zip(("weights", "biases"), params[layer], strict=True):
            shape = tensor.shape if size is not None else [None] * len(tensor.shape)
            signature.append(tf.TensorSpec(shape, tf.float32, name=f"{layer}_{part}"))
    return names, signature


def check_batch(batch: np.ndarray) -> None:
    """Raise `ConfigError` unless `batch` is a (N, 227, 227, 3) network input."""
    if batch.ndim != 4 or batch.shape[1:] != (INPUT_SIZE, INPUT_SIZE, 3):
        raise ConfigError(
            f"The 'batch' must have shape (N, {INPUT_SIZE}, {INPUT_SIZE}, 3). Got {batch.shape}."
        )


def check_layers(layers: Sequence[str]) -> tuple[str, ...]:
    """Return `layers` as a tuple, or raise `ConfigError` naming the unknown ones."""
    unknown = [name for name in layers if name not in LAYER_DIMS and name not in CUT_DIMS]
    if unknown or not layers:
        raise ConfigError(
            f"The 'layers' must be a non-empty subset of {[*LAYERS, *CUT_DIMS]}. "
            f"Got {list(layers)}."
        )
    return tuple(dict.fromkeys(layers))


def weight_layers(layers: Sequence[str]) -> tuple[str, ...]:
    """The weights file's layers (conv1 ... fc8) the network uses to compute `layers`."""
    depth = max(_ORDER.index("fc8" if n == "prob" else n) for n in check_layers(layers))
    above = (s.name for s in ALEXNET_TOP if s.has_weights and _ORDER.index(s.name) <= depth)
    return ("conv1", "conv2", *above)


class AlexNet:
    """A frozen AlexNet for one weights file, profile and precision.

    ``forward(batch, layers)`` takes a preprocessed float32 NHWC batch of 227x227x3 and returns
    ``{layer: (N, dim) float32}``. One graph per requested layer set is traced once and reused.
    """

    def __init__(
        self,
        weights: Mapping[str, tuple[np.ndarray, np.ndarray]],
        profile: str = "caffe",
        *,
        precision: str = "float32",
    ) -> None:
        check_profile(profile)
        tf, self._dtype, self._params = weight_constants(weights, precision)
        self.profile = profile
        self.precision = precision
        self._tf: Any = tf
        self._graphs: dict[tuple[str, ...], Callable[[Any], dict[str, Any]]] = {}
        self._fused_lrn_pool = tf.function(self._lrn_pool_graph, jit_compile=True, autograph=False)

    def _conv(
        self,
        x: Any,
        name: str,
        stride: int,
        padding: str | int,
        params: Mapping[str, tuple[Any, Any]] | None = None,
    ) -> Any:
        tf = self._tf
        w, b = (self._params if params is None else params)[name]
        pad: Any = padding
        if isinstance(padding, int):
            pad = [[0, 0], [padding, padding], [padding, padding], [0, 0]]
        return tf.nn.relu(tf.nn.bias_add(tf.nn.conv2d(x, w, stride, pad), b))

    def _lrn_pool(self, x: Any) -> Any:
        return self._fused_lrn_pool(x)

    def _lrn_pool_graph(self, x: Any) -> Any:
        """LRN then the 3x3 stride-2 max pool, written out so XLA fuses it into one pass.

        out_c = x_c * (1 + alpha * sum_{c-2..c+2} x^2) ** -0.75, alpha = 2e-5 (TF's
        per-element alpha; Caffe's 1e-4 / 5), computed in float32 whatever the precision.
        TensorFlow's own LRN kernel measured 3x slower than this fused form on the CPU.
        """
        tf = self._tf
        x32 = tf.cast(x, tf.float32)
        depth = x.shape[-1]
        padded = tf.pad(tf.square(x32), [[0, 0], [0, 0], [0, 0], [2, 2]])
        window = sum(padded[..., i : i + depth] for i in range(5))
        inv = tf.math.rsqrt(1.0 + 2e-05 * window)  # v ** -0.75 = v ** -0.5 * v ** -0.25
        normed = x32 * inv * tf.sqrt(inv)
        return self._pool(tf.cast(normed, self._dtype))

    def _pool(self, x: Any) -> Any:
        return self._tf.nn.max_pool2d(x, ksize=3, strides=2, padding="VALID")

    def _graph(
        self,
        x: Any,
        layers: tuple[str, ...],
        params: Mapping[str, tuple[Any, Any]] | None = None,
        lrn_pool: Callable[[Any], Any] | None = None,
    ) -> dict[str, Any]:
        tf = self._tf
        params = self._params if params is None else params
        lrn_pool = self._lrn_pool if lrn_pool is None else lrn_pool
        caffe = self.profile == "caffe"
        h = tf.cast(x, self._dtype)
        # The seed's SAME on 227 with k=11, s=4 pads 4 on every side; explicit padding is
        # the same arithmetic and measured 10% faster in oneDNN.
        h = lrn_pool(self._conv(h, "conv1", 4, "VALID" if caffe else 4, params))
        out: dict[str, Any] = {}
        h = out["pool2"] = lrn_pool(self._conv(h, "conv2", 1, 2 if caffe else "SAME", params))
        # Above pool2, the stages fine-tuning trains (featcache.architecture, the one
        # description of them), up to the deepest layer asked for: fc6 alone skips fc7, fc8.
        depth = max(_ORDER.index("fc8" if name == "prob" else name) for name in layers)
        for stage in ALEXNET_TOP:
            if _ORDER.index(stage.name) > depth:
                break
            w, b = params[stage.name] if stage.has_weights else (None, None)
            h = out[stage.name] = tf_stage(tf, h, stage, w, b)
        for name in (*CUT_DIMS, "pool5"):  # spatial layers flattened H, W, C, when asked for
            if name in layers:
                out[name] = tf.reshape(out[name], [-1, int(np.prod(out[name].shape[1:]))])
        if "prob" in layers:
            out["prob"] = tf.nn.softmax(tf.cast(out["fc8"], tf.float32))
        return {name: tf.cast(out[name], tf.float32) for name in layers}

    def _compiled(self, layers: tuple[str, ...]) -> Callable[[Any], dict[str, Any]]:
        if layers not in self._graphs:
            tf = self._tf
            spec = tf.TensorSpec([None, INPUT_SIZE, INPUT_SIZE, 3], tf.float32)
            self._graphs[layers] = tf.function(
                lambda x: self._graph(x, layers),
                input_signature=[spec],
                # XLA measured slower on CPU: 105 vs 126 img/s (fp32), 90 vs 180 (bf16).
                jit_compile=False,
                autograph=False,  # plain dataflow: nothing for autograph to convert
                reduce_retracing=True,
            )
        return self._graphs[layers]

    def export_function(self, layers: Sequence[str]) -> tuple[Any, list[tuple[str, str]]]:
        """`forward`'s graph for `layers` as a concrete function, for other runtimes to convert.

        Returns the function and the names of its inputs after the batch, ``(layer,
        "weights" | "biases")`` in order (float32, to be bound to the weights file's arrays;
        only the layers the graph uses). Its outputs are ``{layer: tensor}``. Weights are
        inputs rather than constants, so the graph is small: OpenVINO's converter took 5.6 s
        on the 244 MB of constants and 1.1 s without them. LRN is TensorFlow's own op here,
        which converters map to a native LRN (the XLA-fused form is for TensorFlow alone);
        in float32 the two agree to 2e-6 relative. Only a float32 network exports: the
        target runtime applies its own reduced precision.
        """
        wanted = check_layers(layers)
        if self.precision != "float32":
            raise ConfigError(
                f"export_function needs a float32 AlexNet; this one is {self.precision!r}"
            )
        tf = self._tf
        depth = max(_ORDER.index("fc8" if name == "prob" else name) for name in wanted)
        used = [name for name in self._params if name not in _ORDER[depth + 1 :]]
        names, signature = export_signature(tf, self._params, used, INPUT_SIZE)

        def graph(x: Any, *flat: Any) -> dict[str, Any]:
            params = {layer: (flat[2 * i], flat[2 * i + 1]) for i, layer in enumerate(used)}
            return self.portable_graph(x, wanted, params)

        function = tf.function(graph, input_signature=signature, autograph=False)
        return function.get_concrete_function(), names

    def portable_graph(
        self,
        x: Any,
        layers: Sequence[str],
        params: Mapping[str, tuple[Any, Any]] | None = None,
    ) -> dict[str, Any]:
        """`forward`'s graph on the float32 NHWC tensor `x` (227x227x3, preprocessed), in
        ops every converter maps (TensorFlow's own LRN: a native LRN in ONNX and OpenVINO),
        for tracing into an exported model. `params` ({layer: (weights, biases)}, tensors
        or variables; default this network's constants) needs only the layers used.
        Returns ``{layer: (N, dim) float32 tensor}``.
        """
        tf = self._tf

        def lrn_pool(h: Any) -> Any:
            normed = tf.nn.local_response_normalization(
                h, depth_radius=2, bias=1.0, alpha=2e-05, beta=0.75
            )
            return self._pool(normed)

        return self._graph(x, check_layers(layers), params, lrn_pool)

    def forward(self, batch: np.ndarray, layers: Sequence[str] = ("fc7",)) -> dict[str, np.ndarray]:
        """Run a (N, 227, 227, 3) float32 batch; return ``{layer: (N, dim) float32}``."""
        wanted = check_layers(layers)
        check_batch(batch)
        # Pad to a power of two: a handful of shapes, each compiled once, serve every size.
        n = len(batch)
        size = 1 << max(0, (n - 1).bit_length())
        inputs = np.asarray(batch, dtype=np.float32)
        if size != n:
            inputs = np.concatenate([inputs, np.zeros((size - n, *inputs.shape[1:]), np.float32)])
        result = self._compiled(wanted)(inputs)
        return {name: np.asarray(result[name])[:n] for name in wanted}
