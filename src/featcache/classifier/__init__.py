"""Heads on cached vectors: fit (`SoftmaxHead`, `LogRegHead`), train from a store, evaluate,
save and load.

Reads vectors from the store only; never imports the extractor or TensorFlow. Names load on
first use, so importing this package does not import scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "HEADS": "featcache.classifier.heads",
    "LogRegHead": "featcache.classifier.heads",
    "SoftmaxHead": "featcache.classifier.heads",
    "make_head": "featcache.classifier.heads",
    "top_k": "featcache.classifier.heads",
    "effective_splits": "featcache.classifier.splits",
    "key_fraction": "featcache.classifier.splits",
    "TrainResult": "featcache.classifier.train",
    "train_head": "featcache.classifier.train",
    "Evaluation": "featcache.classifier.evaluate",
    "evaluate": "featcache.classifier.evaluate",
    "evaluate_head": "featcache.classifier.evaluate",
    "report_values": "featcache.classifier.evaluate",
    "write_report": "featcache.classifier.evaluate",
    "LoadedHead": "featcache.classifier.persist",
    "Prediction": "featcache.classifier.persist",
    "describe_training": "featcache.classifier.persist",
    "load_head": "featcache.classifier.persist",
    "save_head": "featcache.classifier.persist",
    "training_digest": "featcache.classifier.persist",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'featcache.classifier' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
