"""doctor's findings on labelled rows: out-of-fold probabilities from folds that keep
near-duplicate groups whole (except bursts), and cleanlab's Datalab fed with them and with a
kNN graph of the cached vectors: label issues (a full ranking with scores), an outlier score,
class imbalance, non-IID row order and underperforming groups.

A *burst* is a group that holds most of its class (a class that is one series of
near-identical pictures). Kept whole in one fold, the heads of the other folds would never see
the class and flag all of it; so a burst's rows go to folds by their own key, and a class
whose rows still sit in one fold has its groups split the same way.
"""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from featcache.analysis.folds import fold_ids, one_blas_thread, out_of_fold_proba
from featcache.analysis.neighbours import VectorIndex, vector_neighbours
from featcache.errors import DataError

__all__ = ["LabelFindings", "burst_aware_folds", "label_findings", "source_order"]

LABEL_COLUMNS = ["path", "split", "given", "suggested", "score", "flagged", "key"]


@dataclass
class LabelFindings:
    """The label-issue ranking (every labelled row, most suspicious first), Datalab's other
    findings (JSON-ready), Datalab's outlier score per key, and what was skipped and why."""

    label_issues: pd.DataFrame
    datalab: dict[str, Any] = field(default_factory=dict)
    outlier_score: dict[str, float] = field(default_factory=dict)
    bursts: int = 0
    skipped: list[str] = field(default_factory=list)


def burst_aware_folds(
    keys: Sequence[str], y: np.ndarray, groups: Mapping[str, int], k: int
) -> tuple[np.ndarray, int]:
    """Fold of each row: groups whole, except bursts (a group holding more than half of its
    class's rows) and the groups of a class left in a single fold. Returns folds and the
    number of groups split."""
    group = np.array([groups.get(key, -1 - i) for i, key in enumerate(keys)])
    split: set[int] = set()
    for c in np.unique(y).tolist():
        in_class = y == c
        ids, counts = np.unique(group[in_class], return_counts=True)
        split.update(
            int(g) for g, n in zip(ids, counts, strict=True) if n > 1 and n > in_class.sum() / 2
        )
    kept = {key: g for key, g in groups.items() if g not in split}
    folds = fold_ids(keys, k, kept)
    for c in np.unique(y).tolist():
        in_class = y == c
        if in_class.sum() > 1 and len(np.unique(folds[in_class])) == 1:
            split.update(int(g) for g in np.unique(group[in_class]) if g >= 0)
    kept = {key: g for key, g in groups.items() if g not in split}
    shared = {g for g, n in zip(*np.unique(group, return_counts=True), strict=True) if n > 1}
    return fold_ids(keys, k, kept), len(split & shared)


_ARRAY_ROW = re.compile(r"^(.*)#(\d+)$")
_NUMBER = re.compile(r"(\d+)")


def source_order(paths: Sequence[str]) -> np.ndarray:
    """A row order that means something for the non-IID check: rows of an array file by
    their index in it; image files by file name, numbers compared as numbers, whatever their
    class folder (camera and export names count up in the order pictures were taken). The
    catalog's own order (sorted by folder, so by class) would be non-IID by construction."""

    def sort_key(path: str) -> tuple[Any, ...]:
        match = _ARRAY_ROW.match(path)
        if match:
            return (match.group(1), int(match.group(2)), "")
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        parts = tuple(int(p) if p.isdigit() else p for p in _NUMBER.split(name) if p)
        return ("", 0, tuple((isinstance(p, str), p) for p in parts), path)

    return np.array(sorted(range(len(paths)), key=lambda i: sort_key(paths[i])), dtype=np.intp)


def _knn_graph(X: Any, k: int) -> Any:
    """A sparse kNN graph of the rows (cosine distance of the centred vectors), as Datalab's
    `knn_graph` takes it: k neighbours per row, nearest first."""
    from scipy.sparse import csr_matrix

    nb = vector_neighbours(VectorIndex.build(X), k)
    n, k = nb.index.shape
    k = min(k, n - 1)
    distance = np.clip(1.0 - nb.similarity[:, :k].astype(np.float64), 1e-9, None)
    return csr_matrix(
        (distance.ravel(), nb.index[:, :k].ravel(), np.arange(0, n * k + 1, k)), shape=(n, n)
    )


def label_findings(
    X: Any,
    labels: np.ndarray,
    keys: Sequence[str],
    paths: Sequence[str],
    splits: Sequence[str | None],
    class_names: Sequence[str],
    groups: Mapping[str, int],
    folds: int,
    neighbours: int,
    *,
    max_fit_rows: int | None = None,
) -> LabelFindings:
    """Label issues and Datalab's findings on the labelled rows of (X, labels).

    X may be a `featcache.store.StoredRows`; each out-of-fold head fits on at most
    `max_fit_rows` of its training rows (every row is still scored)."""
    labelled = np.flatnonzero(labels >= 0)
    present, y = np.unique(labels[labelled], return_inverse=True)
    empty = pd.DataFrame(columns=LABEL_COLUMNS)
    if len(present) < 2:
        return LabelFindings(empty, skipped=[
            f"label checks: {len(present)} labelled class(es); they need 2 or more"
        ])  # fmt: skip
    smallest = int(np.bincount(y).min())
    k = min(folds, smallest)
    if k < 2:
        rare = class_names[int(present[np.argmin(np.bincount(y))])] if class_names else "?"
        return LabelFindings(empty, skipped=[
            f"label checks: class '{rare}' has {smallest} labelled row; out-of-fold "
            "probabilities need 2 or more per class"
        ])  # fmt: skip
    row_keys = [keys[i] for i in labelled.tolist()]
    fold, bursts = burst_aware_folds(row_keys, y, groups, k)
    Xl = X[labelled]
    try:
        proba = out_of_fold_proba(Xl, y, fold, max_fit_rows=max_fit_rows)
    except DataError as error:
        return LabelFindings(empty, bursts=bursts, skipped=[f"label checks: {error}"])
    proba = np.clip(proba, 1e-12, None)
    proba /= proba.sum(axis=1, keepdims=True)

    order = source_order([paths[i] for i in labelled.tolist()])
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    from cleanlab import Datalab

    lab = Datalab({"label": y[order]}, label_name="label", verbosity=0)
    printed = io.StringIO()  # Datalab prints the checks it could not run
    with one_blas_thread(), warnings.catch_warnings(), contextlib.redirect_stdout(printed):
        # cleanlab warns about what it cannot do on small data; doctor reports `skipped`.
        warnings.simplefilter("ignore")
        lab.find_issues(
            pred_probs=proba[order],
            knn_graph=_knn_graph(Xl[order], min(neighbours, len(order) - 1)),
            issue_types={
                "label": {}, "outlier": {}, "class_imbalance": {}, "non_iid": {},
                "underperforming_group": {},
            },
        )  # fmt: skip
    issues = lab.get_issues().iloc[back].reset_index(drop=True)
    skipped = [
        f"Datalab: {line.strip()}" for line in printed.getvalue().splitlines()
        if line.startswith("Error in")
    ]  # fmt: skip
    if "label_score" not in issues:
        return LabelFindings(
            empty, bursts=bursts, skipped=[*skipped, "label checks: Datalab failed"]
        )

    def name(index: int) -> str:
        label = int(present[index])
        return class_names[label] if label < len(class_names) else str(label)

    score = 1.0 - issues["label_score"].to_numpy(np.float64)
    ranked = np.argsort(-score, kind="stable")
    table = pd.DataFrame(
        {
            "path": [paths[labelled[r]] for r in ranked],
            "split": [splits[labelled[r]] for r in ranked],
            "given": [name(int(y[r])) for r in ranked],
            "suggested": [name(int(np.argmax(proba[r]))) for r in ranked],
            "score": score[ranked],
            "flagged": issues["is_label_issue"].to_numpy(bool)[ranked],
            "key": [row_keys[r] for r in ranked],
        },
        columns=LABEL_COLUMNS,
    )
    outlier = {}
    if "outlier_score" in issues:
        outlier = dict(zip(row_keys, (1.0 - issues["outlier_score"]).tolist(), strict=True))
    extras = _extras(lab, issues, labelled, paths, y, name)
    return LabelFindings(table, extras, outlier, bursts, skipped)


def _extras(
    lab: Any, issues: pd.DataFrame, labelled: np.ndarray, paths: Sequence[str],
    y: np.ndarray, name: Any,
) -> dict[str, Any]:  # fmt: skip
    """Class imbalance, non-IID order and underperforming groups, as doctor.json keeps them."""
    summary = lab.get_issue_summary()
    count = dict(zip(summary.issue_type, summary.num_issues.astype(int), strict=True))

    def rows(column: str) -> list[str]:
        if column not in issues:
            return []
        return [paths[labelled[i]] for i in np.flatnonzero(issues[column].to_numpy(bool))]

    info = lab.get_info("class_imbalance")
    shares = np.bincount(y) / len(y)
    rarest = int(np.argmin(shares))
    non_iid = lab.get_info("non_iid")
    p_value = non_iid.get("p-value")
    return {
        "summary": {
            str(t): {"score": round(float(s), 6), "issues": int(n)}
            for t, s, n in zip(summary.issue_type, summary.score, summary.num_issues, strict=True)
        },
        "class_imbalance": {
            "flagged": count.get("class_imbalance", 0) > 0,
            "rarest_class": name(rarest),
            "share": round(float(shares[rarest]), 6),
            "threshold": info.get("threshold"),
            "rows": len(rows("is_class_imbalance_issue")),
        },
        "non_iid": {
            "flagged": count.get("non_iid", 0) > 0,
            "p_value": None if p_value is None else round(float(p_value), 6),
            "order": "source order (array index, else file name)",
        },
        "underperforming_group": {
            "flagged": count.get("underperforming_group", 0) > 0,
            "rows": rows("is_underperforming_group_issue"),
        },
    }
