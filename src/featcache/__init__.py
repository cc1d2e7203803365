"""featcache: run a frozen AlexNet over images once, cache the vectors, train heads in seconds.

In a notebook::

    import featcache as fc
    store = fc.FeatureStore("signs.fc")
    fc.extract("signs", "bvlc_alexnet.npy", store)        # dataset "signs"
    data = store.vectors("signs")
    train, test = data.split("train"), data.split("test")
    head = fc.SoftmaxHead(random_state=0).fit(train.X, train.y)
    ev = fc.evaluate(head, test.X, test.y, class_names=data.class_names)
    record = fc.save_head(store, "signs-softmax", head, trained_on=data)
    fc.Predictor(store, "signs-softmax").predict(["stop.jpg"], top_k=3)

Public names are loaded on first use, so ``import featcache`` stays cheap and never imports
TensorFlow (nor scikit-learn) by itself.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "AlexNet": "featcache.extractor.alexnet",
    "ExtractConfig": "featcache.extractor.pipeline",
    "ExtractReport": "featcache.extractor.pipeline",
    "ExtractorSpec": "featcache.extractor.fingerprint",
    "extract": "featcache.extractor.pipeline",
    "load_weights": "featcache.extractor.weights",
    "read_weights": "featcache.extractor.weights",
    "write_demo_weights": "featcache.extractor.weights",
    "fetch_weights": "featcache.extractor.fetch",
    "doctor": "featcache.analysis.doctor",
    "advise": "featcache.analysis.advise",
    "FeatureStore": "featcache.store.featurestore",
    "DatasetRow": "featcache.store.featurestore",
    "HeadRecord": "featcache.store.featurestore",
    "LabelledVectors": "featcache.store.featurestore",
    "SoftmaxHead": "featcache.classifier.heads",
    "LogRegHead": "featcache.classifier.heads",
    "FineTuneHead": "featcache.classifier.finetune",
    "make_head": "featcache.classifier.heads",
    "train_head": "featcache.classifier.train",
    "TrainResult": "featcache.classifier.train",
    "evaluate": "featcache.classifier.evaluate",
    "evaluate_head": "featcache.classifier.evaluate",
    "Evaluation": "featcache.classifier.evaluate",
    "save_head": "featcache.classifier.persist",
    "load_head": "featcache.classifier.persist",
    "LoadedHead": "featcache.classifier.persist",
    "Prediction": "featcache.classifier.persist",
    "Predictor": "featcache.predictor",
    "ImageResult": "featcache.predictor",
    "export_vectors": "featcache.store.export",
    "export_model": "featcache.export.api",
    "ExportConfig": "featcache.export.api",
    "ExportResult": "featcache.export.api",
    "open_source": "featcache.data",
    "write_digits_folder": "featcache.data",
    "FeatcacheError": "featcache.errors",
    "ClusterError": "featcache.errors",
    "ConfigError": "featcache.errors",
    "DataError": "featcache.errors",
    "DependencyError": "featcache.errors",
    "ExportError": "featcache.errors",
    "FingerprintMismatchError": "featcache.errors",
    "HeadError": "featcache.errors",
    "ImageError": "featcache.errors",
    "ImageTooLargeError": "featcache.errors",
    "NotFoundError": "featcache.errors",
    "StoreError": "featcache.errors",
    "UnsafePickleError": "featcache.errors",
    "WeightsError": "featcache.errors",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'featcache' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # resolve once
    return value


def __dir__() -> list[str]:
    return __all__
