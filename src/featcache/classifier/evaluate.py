"""Judge a head: metrics, per-class report, confusion matrix.

`report_values` is the arithmetic (pure, testable by hand); `evaluate` judges any fitted
head on vectors in hand (a notebook's ``test.X, test.y``); `evaluate_head` judges a
registered head on a split of a stored dataset; `write_report` (``Evaluation.write``) writes
``summary.json``, ``per_class.csv``, ``confusion_matrix.csv`` and ``confusion_matrix.png``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import pandas as pd
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

from featcache._io import atomic_write, atomic_write_bytes
from featcache._text import csv_cell
from featcache.classifier.heads import predict_top_k, top_k
from featcache.classifier.persist import load_head
from featcache.classifier.splits import effective_splits
from featcache.errors import ConfigError, DataError
from featcache.store.featurestore import FeatureStore
from featcache.store.names import normalize_split
from featcache.store.records import LabelledVectors

__all__ = [
    "Evaluation",
    "clean_accuracy",
    "evaluate",
    "evaluate_head",
    "report_values",
    "write_report",
]


@dataclass(frozen=True)
class Evaluation:
    """Metrics of one head on one set of labelled vectors.

    ``summary`` holds every figure (as written to ``summary.json``); ``per_class`` one row per
    class (class_id, label, precision, recall, f1, support); ``confusion`` the counts, true
    classes in rows and predicted ones in columns, both in ``per_class`` order.
    """

    summary: dict[str, Any]
    per_class: pd.DataFrame
    confusion: np.ndarray

    @property
    def accuracy(self) -> float:
        return float(self.summary["accuracy"])

    @property
    def top5_accuracy(self) -> float:
        """Top-5 accuracy (top-n with n < 5 classes, where it is 1.0)."""
        key = next(k for k in self.summary if k.startswith("top") and k.endswith("_accuracy"))
        return float(self.summary[key])

    @property
    def labels(self) -> list[str]:
        """Class names in the order of ``per_class`` and of the confusion matrix's axes."""
        return [str(name) for name in self.per_class["label"]]

    def confusion_frame(self) -> pd.DataFrame:
        """The confusion matrix with class names on both axes."""
        names = self.labels
        return pd.DataFrame(
            self.confusion,
            index=pd.Index(names, name="true"),
            columns=pd.Index(names, name="predicted"),
        )

    def write(self, out_dir: str | Path) -> list[Path]:
        """Write the report files (as ``featcache evaluate --out DIR`` does); return them."""
        return write_report(self, out_dir)


def report_values(
    y_true: np.ndarray,
    proba: np.ndarray,
    classes: np.ndarray,
    class_names: list[str],
    *,
    k: int = 5,
    most_confused: int = 10,
) -> Evaluation:
    """Accuracy, top-k accuracy, per-class precision/recall/F1 and the confusion matrix.

    `proba` columns follow `classes` (label ids); names come from `class_names[id]`.
    """
    idx, _ = top_k(proba, k)
    return _report(y_true, idx, classes, class_names, k=k, most_confused=most_confused)


def _report(
    y_true: np.ndarray,
    idx: np.ndarray,
    classes: np.ndarray,
    class_names: list[str],
    *,
    k: int,
    most_confused: int = 10,
) -> Evaluation:
    """`report_values` from each row's top-k class columns (`idx`), the probabilities
    already reduced (so a large evaluation never holds one row per class per image)."""
    y_pred = classes[idx[:, 0]]
    labels = np.union1d(classes, y_true)
    names = [class_names[i] if 0 <= i < len(class_names) else str(i) for i in labels]
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0
    )
    per_class = pd.DataFrame(
        {
            "class_id": labels,
            "label": names,
            "precision": precision,
            "recall": recall,
            "f1": f1,
            "support": support,
        }
    )
    matrix = confusion_matrix(y_true, y_pred, labels=labels)
    off = matrix.copy()
    np.fill_diagonal(off, 0)
    pairs = []
    for flat in np.argsort(-off, axis=None, kind="stable")[:most_confused]:
        i, j = np.unravel_index(flat, off.shape)
        if off[i, j] == 0:
            break
        pairs.append({"true": names[i], "predicted": names[j], "count": int(off[i, j])})
    summary = {
        "n": len(y_true),
        "accuracy": float((y_pred == y_true).mean()) if len(y_true) else float("nan"),
        f"top{min(k, len(classes))}_accuracy": float(
            (classes[idx] == y_true[:, None]).any(axis=1).mean()
        ),
        "macro_f1": float(f1.mean()),
        "most_confused": pairs,
    }
    return Evaluation(summary, per_class, matrix)


def evaluate(
    head: Any,
    X: Any,
    y: Any = None,
    *,
    class_names: list[str] | None = None,
    k: int = 5,
    weights_note: str | None = None,
) -> Evaluation:
    """Judge a fitted head (`SoftmaxHead`, `LogRegHead`) on vectors `X` with label ids `y`.

    `X` may be a `LabelledVectors` (``store.vectors(...)`` or a ``.split()`` of it): then
    `y`, `class_names` and `weights_note` come from it. `class_names[id]` names the classes
    in the report; without them classes are named by their ids. `weights_note` (random
    weights) goes into the summary and every report file. Rows labelled -1 (unlabelled)
    are skipped.
    `X` may be a row source (`featcache.store.StoredRows`): it is scored a block at a time.
    """
    if not hasattr(head, "predict_proba") or not hasattr(head, "classes_"):
        raise ConfigError(
            f"evaluate needs a fitted head (SoftmaxHead, LogRegHead); got {type(head).__name__}"
            " (call .fit(X, y) first)"
        )
    if isinstance(X, LabelledVectors):
        if y is not None:
            raise ConfigError("evaluate(head, vectors): the labels come from the vectors; drop y")
        class_names = class_names if class_names is not None else X.class_names
        weights_note = weights_note or X.weights_note
        X, y = X.X, X.y
    if y is None:
        raise ConfigError("evaluate(head, X, y): give the label ids y (or a LabelledVectors)")
    y = np.asarray(y)
    if len(X) != len(y):
        raise ConfigError(f"X has {len(X)} rows but y has {len(y)} labels")
    labelled = y >= 0
    if not labelled.any():
        raise DataError("no labelled rows to evaluate on (every label is -1)")
    if not labelled.all():
        X = X[labelled] if hasattr(X, "read_rows") else np.asarray(X)[labelled]
    idx = predict_top_k(head, X, k)  # a block of rows at a time
    names = list(class_names) if class_names is not None else []
    evaluation = _report(y[labelled], idx, np.asarray(head.classes_), names, k=k)
    evaluation.summary["weights_note"] = weights_note
    return evaluation


def evaluate_head(
    store: FeatureStore,
    head_name: str,
    dataset: str,
    *,
    split: str | None = "test",
    version: int | None = None,
) -> Evaluation:
    """Evaluate a head on the rows of `dataset` in `split` (None: every labelled row).

    `split` is ``train``, ``val`` or ``test`` (``valid``/``validation`` read as ``val``).
    """
    split = normalize_split(split, where="evaluate split")
    head = load_head(store, head_name, version)
    data = store.lazy_vectors(dataset, head.layer, head.fingerprint)  # read as scored
    head.check_vectors(data.fingerprint, data.layer)
    groups = store.groups(dataset)  # near-duplicate groups, if featcache doctor recorded them
    splits = effective_splits(
        data.keys,
        data.splits,
        float(head.meta.get("val_fraction", 0.2)),
        groups if head.meta.get("split_groups") else None,
    )
    mask = data.y >= 0
    if split is not None:
        mask &= splits == split
    if not mask.any():
        present = sorted(set(splits.tolist()))
        carved = "val" in present and not any(
            (s or "").lower() in ("val", "valid", "validation") for s in data.splits
        )
        fix = ""
        if split == "test" and "val" in present:
            from featcache.store.commands import test_images_command

            held = "the rows train held out of the train split" if carved else "the val split"
            fix = (
                f". Evaluate on {held} with --split val; or give the dataset test images: "
                + test_images_command(store.location, dataset)
            )
        raise DataError(
            f"dataset '{dataset}' has no labelled rows in split '{split}' "
            f"(its splits: {', '.join(present)}"
            + ("; val: held out of train by key hash, as train did" if carved else "")
            + f"){fix}"
        )
    evaluation = evaluate(
        head.estimator,
        data.X[mask],
        data.y[mask],
        class_names=head.class_names,
        weights_note=head.meta.get("weights_note"),
    )
    evaluation.summary.update(
        clean_accuracy(data.keys, splits, mask, data.X[mask], data.y, groups, head.estimator)
    )
    evaluation.summary.update(
        {
            "head": head.name,
            "version": head.version,
            "dataset": dataset,
            "split": split,
            "fingerprint": head.fingerprint,
            "layer": head.layer,
            "weights_note": head.meta.get("weights_note"),
        }
    )
    return evaluation


def clean_accuracy(
    keys: list[str],
    splits: np.ndarray,
    mask: np.ndarray,
    X: Any,
    y: np.ndarray,
    groups: dict[str, int] | None,
    estimator: Any,
) -> dict[str, Any]:
    """Accuracy on the evaluated rows (`mask`; `X` holds their vectors, an array or a
    `featcache.store.StoredRows`) that have no exact or
    near duplicate among the training rows ("clean"), from the groups `featcache doctor`
    recorded; None without them."""
    if groups is None or any(k not in groups for k in keys):
        return {"clean_accuracy": None, "clean_n": 0}
    row_group = np.array([groups[k] for k in keys])
    in_train = set(row_group[(splits == "train") & (y >= 0)].tolist())
    clean = np.array([g not in in_train for g in row_group[mask].tolist()], dtype=bool)
    if not clean.any():
        return {"clean_accuracy": None, "clean_n": 0}
    predicted = estimator.predict(X[clean])
    return {
        "clean_accuracy": float((predicted == y[mask][clean]).mean()),
        "clean_n": int(clean.sum()),
    }


def write_report(evaluation: Evaluation, out_dir: str | Path) -> list[Path]:
    """Write the summary (JSON), per-class and confusion CSVs and a confusion PNG.

    Each file is written atomically: a reader sees the old report file or the new one whole.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [
        out / "summary.json",
        out / "per_class.csv",
        out / "confusion_matrix.csv",
        out / "confusion_matrix.png",
    ]
    atomic_write_bytes(paths[0], (json.dumps(evaluation.summary, indent=2) + "\n").encode())
    # class names come from the store: no cell a spreadsheet would evaluate as a formula
    per_class = evaluation.per_class.map(csv_cell).to_csv(index=False, float_format="%.6f")
    atomic_write_bytes(paths[1], per_class.encode())
    confusion = evaluation.confusion_frame()
    confusion.index = pd.Index([csv_cell(x) for x in confusion.index], name="true")
    confusion.columns = pd.Index([csv_cell(x) for x in confusion.columns], name="predicted")
    atomic_write_bytes(paths[2], confusion.to_csv().encode())
    with atomic_write(paths[3]) as f:
        _plot_confusion(evaluation, f)
    return paths


def _plot_confusion(evaluation: Evaluation, out: BinaryIO) -> None:
    # The object API, not pyplot: no global backend state, safe in threads and servers.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    matrix = evaluation.confusion.astype(float)
    names = [n if len(n) <= 28 else n[:27] + "…" for n in evaluation.labels]
    rows = matrix.sum(axis=1, keepdims=True)
    normalised = np.divide(matrix, rows, out=np.zeros_like(matrix), where=rows > 0)
    n = len(names)
    side = max(6.0, 0.28 * n + 3.0)
    fig = Figure(figsize=(side + 1.5, side), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(normalised, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of the true class")
    font = 9 if n <= 20 else 6
    ax.set_xticks(range(n), names, rotation=90, fontsize=font)
    ax.set_yticks(range(n), names, fontsize=font)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    summary = evaluation.summary
    ax.set_title(
        f"{summary.get('head', '')} on {summary.get('dataset', '')} "
        f"[{summary.get('split') or 'all'}]: accuracy {summary['accuracy']:.3f}, n={summary['n']}",
        fontsize=10,
    )
    weights_note = summary.get("weights_note")
    if weights_note:  # on the picture itself: a PNG travels without its summary.json
        fig.text(0.01, 0.005, weights_note, fontsize=7, color="darkred", wrap=True)
    if n <= 20:  # counts are legible only on small matrices
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    colour = "white" if normalised[i, j] > 0.5 else "black"
                    ax.text(
                        j,
                        i,
                        str(int(matrix[i, j])),
                        ha="center",
                        va="center",
                        fontsize=7,
                        color=colour,
                    )
    fig.tight_layout(rect=(0, 0.03 if weights_note else 0, 1, 1))
    metadata = {"Description": weights_note} if weights_note else None
    fig.savefig(out, format="png", metadata=metadata)
