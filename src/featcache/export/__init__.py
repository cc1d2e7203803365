"""Export a head with its backbone and preprocessing as one model (ONNX, SavedModel, OpenVINO),
verified against `featcache predict`.

``export_model(store, head, weights, out, ExportConfig(format="onnx"))`` writes the model
and its `verification.json`; ``reverify(path)`` checks an exported model again;
``load_model(format, path)`` runs one with its own runtime. Names load on first use: the
verifying process (`featcache.export.run`) imports its runtime and nothing of the heads or
the network, and nothing imports TensorFlow until a model is built or a SavedModel loaded.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FORMATS": "featcache.export.formats",
    "LoadedModel": "featcache.export.formats",
    "load_model": "featcache.export.formats",
    "ExportConfig": "featcache.export.api",
    "ExportResult": "featcache.export.api",
    "export_model": "featcache.export.api",
    "RESIZED_TOLERANCE": "featcache.export.verify",
    "TOLERANCE": "featcache.export.verify",
    "reverify": "featcache.export.verify",
    "SampleImage": "featcache.export.verify",
    "VERIFICATION_FILE": "featcache.export.verify",
    "compare": "featcache.export.verify",
    "read_sample": "featcache.export.verify",
    "run_fresh": "featcache.export.verify",
    "Dense": "featcache.export.dense",
    "head_layers": "featcache.export.dense",
    "model_files": "featcache.export.formats",
    "write_model": "featcache.export.formats",
    "FED": "featcache.export.graph",
    "GraphSpec": "featcache.export.graph",
    "build_module": "featcache.export.graph",
    "portable_network": "featcache.export.graph",
    "used_weights": "featcache.export.graph",
    "round_to_float16": "featcache.export.float16",
    "pillow_orders_passes": "featcache.export.ingraph",
    "preprocess_images": "featcache.export.ingraph",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'featcache.export' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
