"""Fit a head on a dataset's cached vectors, judge it on the held-out rows, register it.

Reads vectors from the store only; only the ``finetune`` head imports TensorFlow (in fit).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from featcache.architecture import cuts_of, describe_cuts
from featcache.classifier.finetune import Epoch, FineTuneHead, PretrainedWeights
from featcache.classifier.heads import (
    HEADS,
    LogRegHead,
    SoftmaxHead,
    build_estimator,
    make_head,
    predict_top_k,
)
from featcache.classifier.persist import describe_training, save_head
from featcache.classifier.rows import StoredRows, lazy_vectors
from featcache.classifier.splits import effective_splits
from featcache.errors import ConfigError, DataError, WeightsError
from featcache.store import FeatureStore, HeadRecord, validate_head_name

__all__ = [
    "KINDS",
    "LOGREG_MAX_BYTES",
    "TrainResult",
    "check_pretrained",
    "finetune_summary",
    "make_finetune_head",
    "train_head",
]

#: The heads `train_head` can fit.
KINDS = (*HEADS, "finetune")
#: The most memory the logreg head's training rows may take (they are held twice).
LOGREG_MAX_BYTES = 4 * 2**30


@dataclass(frozen=True)
class TrainResult:
    """The registered head, its held-out metrics and where the time went."""

    record: HeadRecord
    estimator: SoftmaxHead | LogRegHead | FineTuneHead
    metrics: dict[str, Any]
    timings: dict[str, float]


def train_head(
    store: FeatureStore,
    dataset: str,
    *,
    layer: str | None = None,
    head: str = "softmax",
    params: dict[str, Any] | None = None,
    val_fraction: float = 0.2,
    name: str | None = None,
    fingerprint: str | None = None,
    groups: Mapping[str, int] | None = None,
    weights: PretrainedWeights | None = None,
    on_epoch: Callable[[Epoch], None] | None = None,
    logreg_max_bytes: int | None = LOGREG_MAX_BYTES,
) -> TrainResult:
    """Train a `head` ("softmax", "logreg" or "finetune") on `dataset`, register it as `name`.

    `layer` defaults to fc7; for "finetune" it is the cut it trains above (its ``cut``
    parameter, pool5 by default; giving either sets both). "finetune" starts the layers above
    the cut from `weights`, which must be the file the vectors were extracted with
    (`featcache.extractor.weights.read_weights`); its vectors are read batch by batch from
    the store's shards while it trains.
    Rows split as `featcache.classifier.splits` says; the head is judged on the ``val``
    rows (accuracy, top-5 accuracy). Retraining under the same name adds a version.
    `groups` (key → near-duplicate group, as `featcache doctor` records them) keeps each
    group on one side of the carved held-out split. `on_epoch` hears of the frozen start
    and each finished "finetune" epoch (the other heads fit in one go).

    Vectors are read from the shards as the head needs them (`FeatureStore.lazy_vectors`):
    softmax and finetune stream mini-batches, so memory does not grow with the rows;
    logreg (lbfgs) reads its training rows into memory, and refuses with `ConfigError`
    naming softmax when they exceed `logreg_max_bytes` (default `LOGREG_MAX_BYTES`;
    None lifts the limit).
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"The 'val_fraction' must be in [0, 1). Got {val_fraction}.")
    name = validate_head_name(name or f"{dataset}-{head}")  # before any work
    if head == "finetune":
        params = dict(params or {})
        if layer is not None and params.setdefault("cut", layer) != layer:
            raise ConfigError(
                f"The finetune head with cut='{params['cut']}' trains on '{params['cut']}' "
                f"vectors. Got layer '{layer}'."
            )
    estimator = make_finetune_head(params) if head == "finetune" else make_head(head, params)
    if isinstance(estimator, FineTuneHead):
        layer = estimator.cut
    layer = layer or "fc7"
    timings: dict[str, float] = {}
    t = time.perf_counter()
    fit_params: dict[str, Any] = {}
    # Rows stay in the shards: heads read them a mini-batch or a block at a time.
    data = lazy_vectors(store, dataset, layer, fingerprint)
    if isinstance(estimator, FineTuneHead):
        check_cut(estimator.cut, str(store.extractor_spec(data.fingerprint).get("network", "")))
    if isinstance(estimator, FineTuneHead) and estimator.init == "pretrained":
        fit_params["pretrained"] = check_pretrained(store, data.fingerprint, weights)
    if isinstance(estimator, FineTuneHead) and on_epoch is not None:
        fit_params["on_epoch"] = on_epoch
    timings["read_vectors"] = time.perf_counter() - t
    splits = effective_splits(data.keys, data.splits, val_fraction, groups)
    labelled = data.y >= 0
    train = labelled & (splits == "train")
    held = labelled & (splits == "val")
    if not labelled.any():
        raise DataError(
            f"dataset '{dataset}' is unlabelled ({store.dataset(dataset).source}): training "
            "needs a label per image. Put the images in one subfolder per class "
            "(FOLDER/CLASS/image.png) or list them in a CSV manifest (path,label), and "
            "extract again (cached images cost only hashing). Unlabelled, the dataset "
            "still works with predict, doctor (duplicates, outliers) and export"
        )
    if train.sum() == 0:
        raise DataError(f"dataset '{dataset}' has no labelled training rows")
    if len(np.unique(data.y[train])) < 2:
        raise DataError(f"dataset '{dataset}': the training rows hold fewer than 2 classes")
    t = time.perf_counter()
    X_train: Any = data.X[train]
    if isinstance(estimator, LogRegHead):  # lbfgs needs its rows in memory
        X_train = _logreg_rows(X_train, logreg_max_bytes)
    estimator.fit(X_train, data.y[train], **fit_params)
    del X_train
    timings["fit"] = time.perf_counter() - t

    metrics: dict[str, Any] = {
        "n_train": int(train.sum()),
        "n_val": int(held.sum()),
        "train_accuracy": float((estimator.predict(data.X[train]) == data.y[train]).mean()),
    }
    if isinstance(estimator, FineTuneHead):
        metrics["finetune"] = finetune_summary(estimator)
    if not held.any():
        metrics["no_held_out"] = _why_no_held_out(splits, labelled, val_fraction, int(train.sum()))
    if held.any():
        idx = predict_top_k(estimator, data.X[held], 5)
        truth = data.y[held]
        classes = estimator.classes_
        metrics["val_accuracy"] = float((classes[idx[:, 0]] == truth).mean())
        metrics["val_top5_accuracy"] = float((classes[idx] == truth[:, None]).any(axis=1).mean())
    meta = {
        **describe_training(store, estimator, data, train),
        "head": head,
        "dataset": dataset,
        "val_fraction": val_fraction,
        "split_groups": groups is not None,
        "pretrained_sha256": getattr(estimator, "weights_sha256_", None),
        "metrics": metrics,
        "timings": timings,
    }
    record = save_head(store, name, estimator, meta)
    return TrainResult(record, estimator, metrics, timings)


def _logreg_rows(X: StoredRows, max_bytes: int | None) -> np.ndarray:
    """The training rows in memory for lbfgs, unless they (and the standardised copy it
    makes) would pass `max_bytes`."""
    size = 2 * X.shape[0] * X.shape[1] * 4
    if max_bytes is not None and size > max_bytes:
        raise ConfigError(
            f"The logreg head holds its {X.shape[0]} training rows in memory twice "
            f"({size / 2**30:.1f} GiB), past logreg_max_bytes ({max_bytes / 2**30:.1f} GiB); "
            "train the softmax head (--kind softmax), which streams its rows at any size, "
            "or raise the limit"
        )
    return X.read_rows(np.arange(X.shape[0]))


def make_finetune_head(params: dict[str, Any] | None = None) -> FineTuneHead:
    """A `FineTuneHead` with keyword parameters; errors name the parameter."""
    return build_estimator(FineTuneHead, params)


def check_cut(cut: str, network: str) -> None:
    """`ConfigError` unless `cut` is one a fine-tune of `network` starts from, naming the
    cuts of every network (a network featcache does not fine-tune has none)."""
    own = cuts_of(network or "alexnet")
    if cut in own:
        return
    have = f"give --from {' or '.join(own)}" if own else "featcache does not fine-tune it"
    raise ConfigError(
        f"a finetune of {network} vectors cannot start from '{cut}': {have}. Fine-tune "
        f"cuts ({describe_cuts()}); any backbone's layers train a new last layer "
        "(--kind softmax)"
    )


def check_pretrained(
    store: FeatureStore, fingerprint: str, weights: PretrainedWeights | None
) -> PretrainedWeights:
    """`weights`, if they are the file whose digest is in the vectors' extractor fingerprint.

    Raises `ConfigError` without weights and `WeightsError` naming both digests for another
    file: the layers above the cut must continue exactly the network that computed it.
    """
    expected = str(store.extractor_spec(fingerprint).get("weights_sha256", ""))
    if weights is None:
        raise ConfigError(
            "The finetune head starts the layers above the cut from the weights file the "
            f"vectors were extracted with (SHA-256 {expected[:12]}...): pass it (--weights W)."
        )
    if weights.sha256 != expected:
        where = getattr(weights, "path", "the given weights")
        raise WeightsError(
            f"{where}: SHA-256 {weights.sha256[:12]}... is not the {expected[:12]}... of the "
            f"weights that extracted these vectors (extractor {fingerprint[:12]}); pass that "
            "file, or extract again with this one"
        )
    return weights


def finetune_summary(head: FineTuneHead) -> dict[str, Any]:
    """What fine-tuning did: the epochs run to choose on the head's own held-out rows, the
    number chosen (0: the frozen start, the pretrained layers and the linear probe) and
    refitted on every training row, and the chosen epoch's held-out loss and accuracy
    against the frozen start's and the lowest loss's; McNemar's test of the loss rule's
    choice against the frozen start (rows fixed, broken, p-value), when it was run."""
    summary: dict[str, Any] = {
        "cut": head.cut,
        "trained_layers": list(head.layers_),
        "epochs_run": head.n_iter_,
        "epoch_kept": head.best_epoch_,
        "epoch_seconds": [round(s, 3) for s in head.epoch_seconds_],
        "refit_seconds": round(head.refit_seconds_, 3),
        "selection_se": float(head.selection_se),
        "selection_significance": float(head.selection_significance),
    }
    choice = getattr(head, "selection_", None)
    if choice is not None:
        summary.update(
            epochs_by_loss=choice.by_loss,
            held_out_fixed=choice.fixed,
            held_out_broken=choice.broken,
            p_value=choice.p_value,
        )
    if head.validation_scores_:
        kept = head.best_epoch_
        lowest = int(np.argmin(head.validation_losses_))
        summary.update(
            frozen_val_loss=head.validation_losses_[0],
            frozen_val_accuracy=head.validation_scores_[0],
            kept_val_loss=head.validation_losses_[kept],
            kept_val_accuracy=head.validation_scores_[kept],
            lowest_val_loss_epoch=lowest,
            lowest_val_loss=head.validation_losses_[lowest],
            gain_points=100 * (head.validation_scores_[kept] - head.validation_scores_[0]),
        )
    return summary


def _why_no_held_out(
    splits: np.ndarray, labelled: np.ndarray, val_fraction: float, n_train: int
) -> str:
    """Why a head got no held-out score, in words that say what to change."""
    val_rows = int((splits == "val").sum())
    if val_rows:
        return f"its {val_rows} val row(s) are unlabelled"
    if val_fraction == 0:
        return "it has no val split and val_fraction (--val-fraction) is 0"
    return (
        f"it has no val split, and none of its {n_train} training rows fell in the held-out "
        f"{val_fraction:.0%} (rows are held out by image hash: with this few rows, raise "
        "val_fraction (--val-fraction) or extract a val split)"
    )
