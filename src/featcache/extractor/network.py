"""The mapper stage's contract: a `Network` and the `Runtime` that builds it.

A network maps a preprocessed float32 NHWC batch (N, 227, 227, 3) to ``{layer: (N, dim)
float32}``. The engines never build one themselves: they are handed a `Runtime` (or, in
tests, a bare factory), so a fake network or another runtime plugs in without touching them.

A second runtime plugs in as one more `Runtime` value: a ``build(weights, spec)`` that
returns an object with ``forward(batch, layers)``, and optionally a ``warm_up`` that does
its slow imports (run while the weights are being read).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

import numpy as np

from featcache.extractor.fingerprint import ExtractorSpec
from featcache.extractor.weights import Weights

__all__ = ["TENSORFLOW", "Network", "NetworkFactory", "Runtime", "build_alexnet"]


class Network(Protocol):
    """What the engines call: one batch in, the requested layers out."""

    def forward(self, batch: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]: ...


NetworkFactory = Callable[[Weights, ExtractorSpec], Network]


@dataclass(frozen=True)
class Runtime:
    """How to build a network: `build` (weights, spec) → `Network`; `warm_up` imports early."""

    name: str
    build: NetworkFactory
    warm_up: Callable[[], object] | None = None


def build_alexnet(weights: Weights, spec: ExtractorSpec) -> Network:
    """A TensorFlow AlexNet for `spec`'s profile and precision (imports TensorFlow)."""
    from featcache.extractor.alexnet import AlexNet

    return AlexNet(weights.layers, spec.profile, precision=spec.precision)


def _import_tensorflow() -> object:
    from featcache.extractor._tf import import_tensorflow

    return import_tensorflow()


#: The reference runtime, and the default.
TENSORFLOW: Final = Runtime("tensorflow", build_alexnet, warm_up=_import_tensorflow)
