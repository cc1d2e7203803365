"""Heads on cached vectors: fit (`SoftmaxHead`, `LogRegHead`, `FineTuneHead`), train from a
store, evaluate, save and load.

Reads vectors from the store only; never imports the extractor or TensorFlow. (Imported
eagerly: ``featcache.classifier.evaluate`` is then always the function, never the module.)
"""

from featcache.classifier.evaluate import (
    Evaluation,
    clean_accuracy,
    evaluate,
    evaluate_head,
    report_values,
    write_report,
)
from featcache.classifier.finetune import LAYER_SETS, FineTuneHead, PretrainedWeights, RowSource
from featcache.classifier.heads import (
    HEADS,
    LogRegHead,
    SoftmaxHead,
    build_estimator,
    make_head,
    top_k,
)
from featcache.classifier.persist import (
    LoadedHead,
    Prediction,
    describe_training,
    load_head,
    save_head,
    training_digest,
)
from featcache.classifier.rows import LazyVectors, StoredRows, lazy_vectors
from featcache.classifier.splits import effective_splits, group_anchors, key_fraction
from featcache.classifier.train import (
    KINDS,
    TrainResult,
    check_pretrained,
    make_finetune_head,
    train_head,
)

__all__ = [
    "HEADS",
    "KINDS",
    "LAYER_SETS",
    "Evaluation",
    "FineTuneHead",
    "LazyVectors",
    "LoadedHead",
    "LogRegHead",
    "Prediction",
    "PretrainedWeights",
    "RowSource",
    "SoftmaxHead",
    "StoredRows",
    "TrainResult",
    "build_estimator",
    "check_pretrained",
    "clean_accuracy",
    "describe_training",
    "effective_splits",
    "evaluate",
    "evaluate_head",
    "group_anchors",
    "key_fraction",
    "lazy_vectors",
    "load_head",
    "make_finetune_head",
    "make_head",
    "report_values",
    "save_head",
    "top_k",
    "train_head",
    "training_digest",
    "write_report",
]
