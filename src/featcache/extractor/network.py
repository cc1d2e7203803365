"""The mapper stage's contract: a `Network` and the `Runtime` that builds it.

A network maps a preprocessed float32 NHWC batch (N, S, S, 3) (S: the backbone's input
size) to ``{layer: (N, dim) float32}``. The engines never build one themselves: they are
handed a `Runtime` (or, in tests, a bare factory), so a fake network or another runtime
plugs in without touching them.

A second runtime plugs in as one more `Runtime` value: a ``build(weights, spec)`` that
returns an object with ``forward(batch, layers)``, and optionally a ``warm_up`` that does
its slow imports (run while the weights are being read). OpenVINO's (`runtime_named`) also
has ``converted``: when its converted model is cached the weights are not needed, so
``build`` gets a function that reads them only if it must convert (and when it converts,
the same function lets the first batches be prepared while the weights are read).
A network may have ``close()``; the local engine calls it after the last batch (OpenVINO
finishes saving a converted model there).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import numpy as np

from featcache.extractor.fingerprint import ExtractorSpec
from featcache.extractor.weights import Weights

if TYPE_CHECKING:
    from featcache.store import FeatureStore

__all__ = [
    "TENSORFLOW",
    "Network",
    "NetworkFactory",
    "Runtime",
    "WeightsSource",
    "build_tensorflow",
    "runtime_named",
]


class Network(Protocol):
    """What the engines call: one batch in, the requested layers out."""

    def forward(self, batch: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]: ...


#: The weights, or a function that reads them (a runtime with a converted model may not).
WeightsSource = Weights | Callable[[], Weights]
NetworkFactory = Callable[[WeightsSource, ExtractorSpec], Network]


@dataclass(frozen=True)
class Runtime:
    """How to build a network: `build` (weights, spec) → `Network`; `warm_up` imports early;
    `converted` (spec) → the cached converted model's metadata, or None."""

    name: str
    build: NetworkFactory
    warm_up: Callable[[], object] | None = None
    converted: Callable[[ExtractorSpec], Mapping[str, Any] | None] | None = None


def build_tensorflow(weights: WeightsSource, spec: ExtractorSpec) -> Network:
    """The TensorFlow network of `spec`'s backbone (the registry's builder), for its profile
    and precision (imports TensorFlow)."""
    from featcache.errors import WeightsError
    from featcache.extractor.registry import backbone_named

    loaded = weights if isinstance(weights, Weights) else weights()
    if loaded.network != spec.network:
        raise WeightsError(
            f"{loaded.path}: {loaded.network} weights, but the extractor is a {spec.network}; "
            f"give {backbone_named(spec.network).weights_file} (or --backbone {loaded.network})"
        )
    network: Network = backbone_named(spec.network).build_tensorflow(
        loaded.layers, spec.profile, spec.precision
    )
    return network


def _import_tensorflow() -> object:
    from featcache.extractor._tf import import_tensorflow

    return import_tensorflow()


#: The reference runtime, and the default.
TENSORFLOW: Final = Runtime("tensorflow", build_tensorflow, warm_up=_import_tensorflow)


def runtime_named(
    name: str, store: FeatureStore | None = None, layers: Sequence[str] = ("fc7",)
) -> Runtime:
    """The runtime called `name`: `TENSORFLOW`, or OpenVINO with `store`'s converted models
    (its networks compile the model for `layers` when built)."""
    if name == "tensorflow":
        return TENSORFLOW
    from featcache.extractor.fingerprint import check_runtime
    from featcache.extractor.runtime_openvino import openvino_runtime

    check_runtime(name)
    return openvino_runtime(store, layers)
