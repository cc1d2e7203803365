"""The frozen network and everything before it: weights, preprocessing, the extraction run.

Names load on first use: nothing here imports TensorFlow at import time (`AlexNet` does when
it is built), and the data readers, which use preprocessing, can import this package freely.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "input_buffer": "featcache.extractor.stages",
    "preprocess_into": "featcache.extractor.preprocess",
    "write_graphs": "featcache.extractor.graphdef",
    "trace_graph": "featcache.extractor.graphdef",
    "shipped_graph": "featcache.extractor.graphdef",
    "ShippedGraph": "featcache.extractor.graphdef",
    "GRAPHS": "featcache.extractor.graphdef",
    "AlexNet": "featcache.extractor.alexnet",
    "LAYERS": "featcache.extractor.alexnet",
    "LAYER_DIMS": "featcache.extractor.alexnet",
    "PRECISIONS": "featcache.extractor.alexnet",
    "check_batch": "featcache.extractor.alexnet",
    "check_layers": "featcache.extractor.alexnet",
    "Clock": "featcache.extractor.clock",
    "AUTO_BATCH_SIZE": "featcache.extractor.config",
    "ENGINES": "featcache.extractor.config",
    "ExtractConfig": "featcache.extractor.config",
    "OPENVINO_BATCH_SIZE": "featcache.extractor.config",
    "storage_dtype": "featcache.extractor.config",
    "DEFAULT_WEIGHTS_URL": "featcache.extractor.fetch",
    "fetch_weights": "featcache.extractor.fetch",
    "ExtractorSpec": "featcache.extractor.fingerprint",
    "FINGERPRINT_VERSION": "featcache.extractor.fingerprint",
    "RUNTIMES": "featcache.extractor.fingerprint",
    "check_runtime": "featcache.extractor.fingerprint",
    "PREFETCH": "featcache.extractor.local_engine",
    "run_local": "featcache.extractor.local_engine",
    "Network": "featcache.extractor.network",
    "NetworkFactory": "featcache.extractor.network",
    "Runtime": "featcache.extractor.network",
    "TENSORFLOW": "featcache.extractor.network",
    "WeightsSource": "featcache.extractor.network",
    "build_alexnet": "featcache.extractor.network",
    "runtime_named": "featcache.extractor.network",
    "extract": "featcache.extractor.pipeline",
    "CAFFE_MEAN_BGR": "featcache.extractor.preprocess",
    "INPUT_SIZE": "featcache.extractor.preprocess",
    "PROFILES": "featcache.extractor.preprocess",
    "RESIZE_POLICIES": "featcache.extractor.preprocess",
    "check_profile": "featcache.extractor.preprocess",
    "legacy_bilinear_resize": "featcache.extractor.preprocess",
    "preprocess_rgb": "featcache.extractor.preprocess",
    "RayRunSummary": "featcache.extractor.ray_connect",
    "RaySession": "featcache.extractor.ray_connect",
    "check_address": "featcache.extractor.ray_connect",
    "require_ray": "featcache.extractor.ray_connect",
    "compute_on_ray": "featcache.extractor.ray_engine",
    "shard_prefix": "featcache.extractor.ray_engine",
    "Batch": "featcache.extractor.ray_pool",
    "Outcome": "featcache.extractor.ray_pool",
    "PoolEvent": "featcache.extractor.ray_pool",
    "PoolStats": "featcache.extractor.ray_pool",
    "RayActorPool": "featcache.extractor.ray_pool",
    "ExtractReport": "featcache.extractor.report",
    "OpenVINONetwork": "featcache.extractor.runtime_openvino",
    "PERFORMANCE_HINT": "featcache.extractor.runtime_openvino",
    "REQUEST_BATCH": "featcache.extractor.runtime_openvino",
    "convert_alexnet": "featcache.extractor.runtime_openvino",
    "find_converted": "featcache.extractor.runtime_openvino",
    "has_bf16": "featcache.extractor.runtime_openvino",
    "model_name": "featcache.extractor.runtime_openvino",
    "openvino_runtime": "featcache.extractor.runtime_openvino",
    "require_openvino": "featcache.extractor.runtime_openvino",
    "BatchResult": "featcache.extractor.stages",
    "EngineResult": "featcache.extractor.stages",
    "Failed": "featcache.extractor.stages",
    "Keyed": "featcache.extractor.stages",
    "MapFn": "featcache.extractor.stages",
    "MemoryWriter": "featcache.extractor.stages",
    "PreparedBatch": "featcache.extractor.stages",
    "Progress": "featcache.extractor.stages",
    "ShardWriter": "featcache.extractor.stages",
    "StoreWriter": "featcache.extractor.stages",
    "Writer": "featcache.extractor.stages",
    "batches": "featcache.extractor.stages",
    "for_storage": "featcache.extractor.stages",
    "forward": "featcache.extractor.stages",
    "key_items": "featcache.extractor.stages",
    "prepare": "featcache.extractor.stages",
    "prepare_batch": "featcache.extractor.stages",
    "prepare_hashed": "featcache.extractor.stages",
    "run_batch": "featcache.extractor.stages",
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
