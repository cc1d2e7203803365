"""A head as the dense layers it computes, for writing into an exported graph.

Every head kind ends the same way: ``logits = h @ W + b`` after zero or more hidden layers
``h = relu(h @ W + b)``, then a softmax over the columns of ``classes_``. The layers are read
from the fitted estimator's public learned attributes (scikit-learn's convention), so a head
loaded by `featcache.classifier.persist.load_head` exports whatever file format it came from.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from featcache.architecture import CUTS, stages_above
from featcache.classifier.finetune import FineTuneHead
from featcache.classifier.heads import LogRegHead, SoftmaxHead
from featcache.errors import HeadError

__all__ = ["Dense", "head_layers"]


@dataclass(frozen=True)
class Dense:
    """``relu(x @ weights + biases)``, or without the ReLU for the last layer (the logits)."""

    weights: np.ndarray  # (inputs, outputs) float32
    biases: np.ndarray  # (outputs,) float32
    relu: bool

    def __post_init__(self) -> None:
        w, b = self.weights, self.biases
        if w.ndim != 2 or b.shape != (w.shape[1],) or {w.dtype, b.dtype} != {np.dtype(np.float32)}:
            raise HeadError(
                f"a dense layer needs float32 weights (inputs, outputs) and biases (outputs,); "
                f"got {w.dtype} {w.shape} and {b.dtype} {b.shape}"
            )


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.float32)


def head_layers(estimator: SoftmaxHead | LogRegHead | FineTuneHead) -> list[Dense]:
    """The dense layers that map the head's input vectors to its logits (columns in the order
    of ``estimator.classes_``); the softmax of the logits is `predict_proba`."""
    if isinstance(estimator, SoftmaxHead):
        return [Dense(_f32(estimator.coef_.T), _f32(estimator.intercept_), relu=False)]
    if isinstance(estimator, LogRegHead):
        # Standardisation folded in: ((x - mean) / scale) @ C.T + i = x @ (C / scale).T + ...
        coef = np.asarray(estimator.coef_, np.float64) / estimator.scale_.astype(np.float64)
        intercept = np.asarray(estimator.intercept_, np.float64) - coef @ estimator.mean_.astype(
            np.float64
        )
        if coef.shape[0] == 1:  # binary: the decision z is split as logits (-z/2, z/2)
            coef = np.concatenate([-coef / 2, coef / 2])
            intercept = np.concatenate([-intercept / 2, intercept / 2])
        return [Dense(_f32(coef.T), _f32(intercept), relu=False)]
    if isinstance(estimator, FineTuneHead):
        stages = stages_above(estimator.cut)  # the one description of the layers above it
        if any(stage.kind != "dense" for stage in stages):
            network = CUTS[estimator.cut].stages
            dense_cuts = [
                name
                for name, cut in CUTS.items()
                if cut.stages == network and all(s.kind == "dense" for s in stages_above(name))
            ]
            above = [f"{s.name} ({s.kind})" for s in stages if s.kind != "dense"]
            raise HeadError(
                f"a fine-tuned head from cut '{estimator.cut}' runs {', '.join(above)} above "
                "the cut; export-model writes the layers above a cut as dense products only: "
                f"fine-tune from {' or '.join(dense_cuts)} to export"
            )
        pairs = list(zip(estimator.coefs_, estimator.intercepts_, strict=True))
        return [
            Dense(_f32(w), _f32(b), relu=stage.relu)
            for (w, b), stage in zip(pairs, stages, strict=True)
        ]
    raise HeadError(f"cannot export a {type(estimator).__name__}: not a featcache head")
