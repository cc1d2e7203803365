"""A frozen TensorFlow network from a graph function: weights as constants, one compiled
graph per requested layer set (the TensorFlow builder of VGG16 and ResNet50).

A backbone supplies ``graph(tf, x, params, layers) -> {layer: tensor}``, written with
``tf.nn`` ops over ``params`` ({layer: (W, b)} tensors), stopping at the deepest layer
asked for. The graph takes every shape from the weights, so the same code runs the real
network and the narrow ones tests build. TensorFlow is imported when a `GraphNetwork` is
built, never when this module is imported.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from featcache.errors import ConfigError
from featcache.extractor.alexnet import export_signature, weight_constants

__all__ = ["GraphFn", "GraphNetwork", "check_square_batch"]

GraphFn = Callable[[Any, Any, Mapping[str, tuple[Any, Any]], tuple[str, ...]], dict[str, Any]]


def check_square_batch(batch: np.ndarray, size: int) -> None:
    """Raise `ConfigError` unless `batch` is a (N, size, size, 3) network input."""
    if batch.ndim != 4 or batch.shape[1:] != (size, size, 3):
        raise ConfigError(f"The 'batch' must have shape (N, {size}, {size}, 3). Got {batch.shape}.")


class GraphNetwork:
    """`graph` with `weights` bound, for one precision; ``forward(batch, layers)`` returns
    ``{layer: (N, dim) float32}`` for a (N, input_size, input_size, 3) float32 batch."""

    def __init__(
        self,
        graph: GraphFn,
        weights: Mapping[str, tuple[np.ndarray, np.ndarray]],
        layers: Sequence[str],
        input_size: int,
        *,
        precision: str = "float32",
    ) -> None:
        tf, self._dtype, self._params = weight_constants(weights, precision)
        self.precision = precision
        self.input_size = input_size
        self.layer_names = tuple(layers)
        self._graph_fn = graph
        self._tf: Any = tf
        self._graphs: dict[tuple[str, ...], Callable[[Any], dict[str, Any]]] = {}

    def _check(self, layers: Sequence[str]) -> tuple[str, ...]:
        unknown = [name for name in layers if name not in self.layer_names]
        if unknown or not layers:
            raise ConfigError(
                f"The 'layers' must be a non-empty subset of {list(self.layer_names)}. "
                f"Got {list(layers)}."
            )
        return tuple(dict.fromkeys(layers))

    def _run(
        self, x: Any, layers: tuple[str, ...], params: Mapping[str, tuple[Any, Any]]
    ) -> dict[str, Any]:
        tf = self._tf
        out = self._graph_fn(tf, tf.cast(x, self._dtype), params, layers)
        return {name: tf.cast(out[name], tf.float32) for name in layers}

    def _compiled(self, layers: tuple[str, ...]) -> Callable[[Any], dict[str, Any]]:
        if layers not in self._graphs:
            tf = self._tf
            size = self.input_size
            spec = tf.TensorSpec([None, size, size, 3], tf.float32)
            self._graphs[layers] = tf.function(
                lambda x: self._run(x, layers, self._params),
                input_signature=[spec],
                jit_compile=False,
                autograph=False,
                reduce_retracing=True,
            )
        return self._graphs[layers]

    def export_function(self, layers: Sequence[str]) -> tuple[Any, list[tuple[str, str]]]:
        """The float32 graph for `layers` as a concrete function whose inputs after the batch
        are the weights, ``(layer, "weights" | "biases")`` in order, with every dimension
        unknown: the converted graph takes its shapes from the arrays bound to it (so one
        traced file serves the real network and narrow test ones)."""
        wanted = self._check(layers)
        if self.precision != "float32":
            raise ConfigError(
                f"export_function needs a float32 network; this one is {self.precision!r}"
            )
        tf = self._tf
        used = list(self._params)
        names, signature = export_signature(tf, self._params, used, None)

        def graph(x: Any, *flat: Any) -> dict[str, Any]:
            params = {layer: (flat[2 * i], flat[2 * i + 1]) for i, layer in enumerate(used)}
            return self._run(x, wanted, params)

        function = tf.function(graph, input_signature=signature, autograph=False)
        return function.get_concrete_function(), names

    def portable_graph(
        self, x: Any, layers: Sequence[str], params: Mapping[str, tuple[Any, Any]]
    ) -> dict[str, Any]:
        """The float32 graph on the NHWC tensor `x` (preprocessed, input_size square) with
        `params` ({layer: (weights, biases)}: tensors or variables, only the layers used),
        for tracing into an exported model (`featcache.export`); the same ops `forward`
        runs, every one of which converters map. Returns ``{layer: (N, dim) tensor}``."""
        wanted = self._check(layers)
        tf = self._tf
        out = self._graph_fn(tf, tf.cast(x, tf.float32), params, wanted)
        return {name: tf.cast(out[name], tf.float32) for name in wanted}

    def forward(self, batch: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
        """Run a (N, S, S, 3) float32 batch; return ``{layer: (N, dim) float32}``."""
        wanted = self._check(layers)
        check_square_batch(batch, self.input_size)
        # Pad to a power of two: a handful of shapes, each compiled once, serve every size.
        n = len(batch)
        size = 1 << max(0, (n - 1).bit_length())
        inputs = np.asarray(batch, dtype=np.float32)
        if size != n:
            inputs = np.concatenate([inputs, np.zeros((size - n, *inputs.shape[1:]), np.float32)])
        result = self._compiled(wanted)(inputs)
        return {name: np.asarray(result[name])[:n] for name in wanted}
