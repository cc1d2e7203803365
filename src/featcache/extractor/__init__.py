"""The frozen network and everything before it: weights, preprocessing, the extraction run.

Names load on first use: nothing here imports TensorFlow at import time (`AlexNet` does when
it is built), and the data readers, which use preprocessing, can import this package freely.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "LAYERS": "featcache.extractor.alexnet",
    "LAYER_DIMS": "featcache.extractor.alexnet",
    "PRECISIONS": "featcache.extractor.alexnet",
    "AlexNet": "featcache.extractor.alexnet",
    "check_layers": "featcache.extractor.alexnet",
    "DEFAULT_WEIGHTS_URL": "featcache.extractor.fetch",
    "fetch_weights": "featcache.extractor.fetch",
    "FINGERPRINT_VERSION": "featcache.extractor.fingerprint",
    "ExtractorSpec": "featcache.extractor.fingerprint",
    "ENGINES": "featcache.extractor.pipeline",
    "ExtractConfig": "featcache.extractor.pipeline",
    "ExtractReport": "featcache.extractor.pipeline",
    "Network": "featcache.extractor.pipeline",
    "NetworkFactory": "featcache.extractor.pipeline",
    "build_alexnet": "featcache.extractor.pipeline",
    "extract": "featcache.extractor.pipeline",
    "CAFFE_MEAN_BGR": "featcache.extractor.preprocess",
    "DEFAULT_MAX_PIXELS": "featcache.extractor.preprocess",
    "INPUT_SIZE": "featcache.extractor.preprocess",
    "PROFILES": "featcache.extractor.preprocess",
    "RESIZE_POLICIES": "featcache.extractor.preprocess",
    "check_profile": "featcache.extractor.preprocess",
    "decode_image": "featcache.extractor.preprocess",
    "legacy_bilinear_resize": "featcache.extractor.preprocess",
    "preprocess_rgb": "featcache.extractor.preprocess",
    "compute_on_ray": "featcache.extractor.ray_engine",
    "require_ray": "featcache.extractor.ray_engine",
    "DEMO_MARKER": "featcache.extractor.weights",
    "LAYER_SHAPES": "featcache.extractor.weights",
    "Weights": "featcache.extractor.weights",
    "file_sha256": "featcache.extractor.weights",
    "load_weights": "featcache.extractor.weights",
    "read_weights": "featcache.extractor.weights",
    "write_demo_weights": "featcache.extractor.weights",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'featcache.extractor' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return __all__
