"""Heads on cached vectors: fit (`SoftmaxHead`, `LogRegHead`, `FineTuneHead`), train from a
store, evaluate, save and load.

Reads vectors from the store only; never imports the extractor or TensorFlow. (Imported
eagerly: ``featcache.classifier.evaluate`` is then always the function, never the module.)
"""

from featcache.classifier.cuts import Stage, conv2d, max_pool, run_stages, stages_above
from featcache.classifier.epochs import (
    EpochChoice,
    choose_epochs,
    mcnemar_p_value,
    select_epochs,
)
from featcache.classifier.evaluate import (
    Evaluation,
    clean_accuracy,
    evaluate,
    evaluate_head,
    report_values,
    write_report,
)
from featcache.classifier.finetune import (
    CUTS,
    Epoch,
    FineTuneHead,
    PretrainedWeights,
    RowSource,
)
from featcache.classifier.heads import (
    HEADS,
    LogRegHead,
    SoftmaxHead,
    build_estimator,
    make_head,
    predict_top_k,
    row_blocks,
    top_k,
)
from featcache.classifier.headstate import (
    FORMAT_VERSION,
    HeadState,
    StatefulHead,
    decode_head,
    encode_head,
    is_legacy_pickle,
)
from featcache.classifier.persist import (
    HEAD_KINDS,
    LoadedHead,
    Prediction,
    describe_training,
    head_file_bytes,
    load_head,
    parse_head_file,
    save_head,
    training_digest,
)
from featcache.classifier.rows import LazyVectors, StoredRows, lazy_vectors
from featcache.classifier.spill import SPILL_BYTES, ComputedRows
from featcache.classifier.splits import effective_splits, group_anchors, key_fraction
from featcache.classifier.train import (
    KINDS,
    LOGREG_MAX_BYTES,
    TrainResult,
    check_cut,
    check_pretrained,
    finetune_summary,
    make_finetune_head,
    train_head,
)
from featcache.classifier.upgrade import UpgradedHead, legacy_heads, upgrade_heads

__all__ = [
    "CUTS",
    "FORMAT_VERSION",
    "HEADS",
    "HEAD_KINDS",
    "KINDS",
    "LOGREG_MAX_BYTES",
    "SPILL_BYTES",
    "ComputedRows",
    "Epoch",
    "EpochChoice",
    "Evaluation",
    "FineTuneHead",
    "HeadState",
    "LazyVectors",
    "LoadedHead",
    "LogRegHead",
    "Prediction",
    "PretrainedWeights",
    "RowSource",
    "SoftmaxHead",
    "Stage",
    "StatefulHead",
    "StoredRows",
    "TrainResult",
    "UpgradedHead",
    "build_estimator",
    "check_cut",
    "check_pretrained",
    "choose_epochs",
    "clean_accuracy",
    "conv2d",
    "decode_head",
    "describe_training",
    "effective_splits",
    "encode_head",
    "evaluate",
    "evaluate_head",
    "finetune_summary",
    "group_anchors",
    "head_file_bytes",
    "is_legacy_pickle",
    "key_fraction",
    "lazy_vectors",
    "legacy_heads",
    "load_head",
    "make_finetune_head",
    "make_head",
    "max_pool",
    "mcnemar_p_value",
    "parse_head_file",
    "predict_top_k",
    "report_values",
    "row_blocks",
    "run_stages",
    "save_head",
    "select_epochs",
    "stages_above",
    "top_k",
    "train_head",
    "training_digest",
    "upgrade_heads",
    "write_report",
]
