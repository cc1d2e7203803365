"""Heads on cached vectors: fit (`SoftmaxHead`, `LogRegHead`), train from a store, evaluate,
save and load.

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
from featcache.classifier.heads import HEADS, LogRegHead, SoftmaxHead, make_head, top_k
from featcache.classifier.persist import (
    LoadedHead,
    Prediction,
    describe_training,
    load_head,
    save_head,
    training_digest,
)
from featcache.classifier.splits import effective_splits, group_anchors, key_fraction
from featcache.classifier.train import TrainResult, train_head

__all__ = [
    "HEADS",
    "Evaluation",
    "LoadedHead",
    "LogRegHead",
    "Prediction",
    "SoftmaxHead",
    "TrainResult",
    "clean_accuracy",
    "describe_training",
    "effective_splits",
    "evaluate",
    "evaluate_head",
    "group_anchors",
    "key_fraction",
    "load_head",
    "make_head",
    "report_values",
    "save_head",
    "top_k",
    "train_head",
    "training_digest",
    "write_report",
]
