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

from featcache.analysis.folds import capped_rows, fold_ids, one_blas_thread, out_of_fold_proba
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
    group = np.array([groups.get(key, -1 - i) for i, key in enumerate(keys)], dtype=np.int64)
    y = np.asarray(y, dtype=np.int64)
    # Counts per (class, group) and per (class, fold) from one sort each, not a pass over
    # every row per class (O(rows x classes): a million rows of a thousand classes).
    class_rows = np.bincount(y)
    pairs, counts = np.unique(np.stack([y, group], axis=1), axis=0, return_counts=True)
    burst = (counts > 1) & (counts > class_rows[pairs[:, 0]] / 2)
    split: set[int] = set(pairs[burst, 1].tolist())
    kept = {key: g for key, g in groups.items() if g not in split}
    folds = fold_ids(keys, k, kept)
    class_folds = np.bincount(np.unique(np.stack([y, folds], axis=1), axis=0)[:, 0])
    lone = np.flatnonzero((class_rows > 1) & (class_folds[: len(class_rows)] == 1))
    in_lone = np.isin(y, lone) & (group >= 0)
    split.update(np.unique(group[in_lone]).tolist())
    kept = {key: g for key, g in groups.items() if g not in split}
    shared = {g for g, n in zip(*np.unique(group, return_counts=True), strict=True) if n > 1}
    return fold_ids(keys, k, kept), len(split & shared)


_ARRAY_ROW = re.compile(r"^(.*)#(\d+)$")
_NUMBER = re.compile(r"(\d+)")


def source_order(paths: Sequence[str], labels: np.ndarray | None = None) -> np.ndarray:
    """A row order that means something for the non-IID check: each class's rows in their
    recorded order (rows of an array file by their index in it; image files by file name,
    numbers compared as numbers: camera and export names count up in the order pictures were
    taken), on places drawn for the classes by a seeded shuffle. The order within each class
    is what is tested: data sorted by class (class folders, names that carry the class, an
    array file sorted by label) is not non-IID by construction, while images that drift
    within their class (later ones darker, shifted) still are. With no `labels`, the
    recorded order of all rows."""

    def sort_key(path: str) -> tuple[Any, ...]:
        match = _ARRAY_ROW.match(path)
        if match:
            return (match.group(1), int(match.group(2)), "")
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        parts = tuple(int(p) if p.isdigit() else p for p in _NUMBER.split(name) if p)
        return ("", 0, tuple((isinstance(p, str), p) for p in parts), path)

    recorded = np.array(sorted(range(len(paths)), key=lambda i: sort_key(paths[i])), np.intp)
    if labels is None or len(recorded) == 0:
        return recorded
    y = np.asarray(labels)[recorded]
    # Which class each place in the order goes to: a seeded shuffle of the labels. Each class
    # fills its places in its recorded order; if that order is random, so is the whole
    # order (Datalab's permutation test stays exact), and a fixed pattern of classes (every
    # C-th place) would itself read as non-IID.
    places = np.random.default_rng(0).permutation(y)
    order = np.empty_like(recorded)
    order[np.argsort(places, kind="stable")] = recorded[np.argsort(y, kind="stable")]
    return order


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


#: The order the non-IID check tests, as doctor.json and the summary name it.
ORDER = "order within each class (array index, else file name)"

#: Datalab's checks that read the kNN graph of the vectors (the rest read probabilities only).
KNN_CHECKS = ("outlier", "non_iid", "underperforming_group")


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
    knn_rows: int | None = None,
) -> LabelFindings:
    """Label issues and Datalab's findings on the labelled rows of (X, labels).

    X may be a `featcache.store.StoredRows`; the out-of-fold heads fit on about
    `max_fit_rows` training rows each (every row is still scored). Past `knn_rows` labelled
    rows, Datalab's kNN checks (`KNN_CHECKS`) run on a fixed random sample of that many
    rows (their kNN graph is a second neighbour search, and the non-IID permutation test
    holds 25 permuted copies of it); the label and class-imbalance checks always read
    every row."""
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

    row_paths = [paths[i] for i in labelled.tolist()]
    order = source_order(row_paths, y)
    back = np.empty_like(order)
    back[order] = np.arange(len(order))
    sampled = knn_rows is not None and len(order) > knn_rows
    checks = ("label", "class_imbalance") + (() if sampled else KNN_CHECKS)
    lab, skipped = _datalab(y[order], proba[order], Xl[order] if not sampled else None,
                            neighbours, checks)  # fmt: skip
    issues = lab.get_issues().iloc[back].reset_index(drop=True)
    if "label_score" not in issues:
        return LabelFindings(
            empty, bursts=bursts, skipped=[*skipped, "label checks: Datalab failed"]
        )
    knn_lab, knn_issues, knn_pos = lab, issues, np.arange(len(order))
    if sampled and knn_rows is not None:
        knn_lab, knn_issues, knn_pos, more = _sampled_knn_checks(
            Xl, y, proba, row_paths, knn_rows, neighbours
        )
        skipped += more

    def name(index: int) -> str:
        label = int(present[index])
        return class_names[label] if label < len(class_names) else str(label)

    names = [name(c) for c in range(len(present))]
    score = 1.0 - issues["label_score"].to_numpy(np.float64)
    ranked = np.argsort(-score, kind="stable")
    best = proba.argmax(axis=1)
    table = pd.DataFrame(
        {
            "path": [row_paths[r] for r in ranked],
            "split": [splits[labelled[r]] for r in ranked],
            "given": [names[y[r]] for r in ranked],
            "suggested": [names[best[r]] for r in ranked],
            "score": score[ranked],
            "flagged": issues["is_label_issue"].to_numpy(bool)[ranked],
            "key": [row_keys[r] for r in ranked],
        },
        columns=LABEL_COLUMNS,
    )
    outlier = {}
    if "outlier_score" in knn_issues:
        outlier = dict(
            zip([row_keys[i] for i in knn_pos], (1.0 - knn_issues["outlier_score"]).tolist(),
                strict=True)
        )  # fmt: skip
    extras = _extras(lab, knn_lab, knn_issues, knn_pos, row_paths, y, name)
    if sampled:
        extras["knn_checks"] = {"checks": list(KNN_CHECKS), "rows": len(knn_pos),
                                "of": len(order), "sampled": True}  # fmt: skip
    return LabelFindings(table, extras, outlier, bursts, skipped)


def _datalab(
    y: np.ndarray, proba: np.ndarray, X: Any, neighbours: int, checks: Sequence[str]
) -> tuple[Any, list[str]]:
    """Datalab run on (y, proba) and, for the kNN checks, the kNN graph of X's rows (in the
    order given). Returns it and the checks it reported it could not run."""
    from cleanlab import Datalab

    lab = Datalab({"label": y}, label_name="label", verbosity=0)
    printed = io.StringIO()  # Datalab prints the checks it could not run
    graph = None if X is None else _knn_graph(X, min(neighbours, len(y) - 1))
    with one_blas_thread(), warnings.catch_warnings(), contextlib.redirect_stdout(printed):
        # cleanlab warns about what it cannot do on small data; doctor reports `skipped`.
        warnings.simplefilter("ignore")
        lab.find_issues(
            pred_probs=proba, knn_graph=graph, issue_types={check: {} for check in checks}
        )
    skipped = [
        f"Datalab: {line.strip()}" for line in printed.getvalue().splitlines()
        if line.startswith("Error in")
    ]  # fmt: skip
    return lab, skipped


def _sampled_knn_checks(
    X: Any, y: np.ndarray, proba: np.ndarray, paths: Sequence[str], rows: int, neighbours: int
) -> tuple[Any, pd.DataFrame, np.ndarray, list[str]]:
    """Datalab's kNN checks on a fixed random sample of `rows` rows, in source order (their
    own kNN graph). Returns Datalab, its issues, the sample's row numbers in that order and
    the checks it could not run."""
    sample = capped_rows(np.ones(len(y), bool), rows)
    pos = sample[source_order([paths[i] for i in sample.tolist()], y[sample])]
    # The sample's classes only: Datalab maps labels to 0..n-1 and wants as many columns.
    present, ys = np.unique(y[pos], return_inverse=True)
    ps = proba[np.ix_(pos, present)]
    ps /= ps.sum(axis=1, keepdims=True)
    lab, skipped = _datalab(ys, ps, X[pos], neighbours, KNN_CHECKS)
    return lab, lab.get_issues().reset_index(drop=True), pos, skipped


def _extras(
    lab: Any, knn_lab: Any, knn_issues: pd.DataFrame, knn_pos: np.ndarray,
    paths: Sequence[str], y: np.ndarray, name: Any,
) -> dict[str, Any]:  # fmt: skip
    """Class imbalance (from `lab`), non-IID order and underperforming groups (from
    `knn_lab`, whose issue rows are the labelled rows `knn_pos`), as doctor.json keeps them."""
    summaries = [lab.get_issue_summary()]
    if knn_lab is not lab:
        summaries.append(knn_lab.get_issue_summary())
    summary = pd.concat(summaries, ignore_index=True)
    count = dict(zip(summary.issue_type, summary.num_issues.astype(int), strict=True))

    def rows(issues: pd.DataFrame, at: np.ndarray, column: str) -> list[str]:
        if column not in issues:
            return []
        return [paths[at[i]] for i in np.flatnonzero(issues[column].to_numpy(bool))]

    info = lab.get_info("class_imbalance")
    shares = np.bincount(y) / len(y)
    rarest = int(np.argmin(shares))
    non_iid = knn_lab.get_info("non_iid")
    p_value = non_iid.get("p-value")
    every = np.arange(len(y))
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
            "rows": len(rows(lab.get_issues(), every, "is_class_imbalance_issue")),
        },
        "non_iid": {
            "flagged": count.get("non_iid", 0) > 0,
            "p_value": None if p_value is None else round(float(p_value), 6),
            "order": ORDER,
        },
        "underperforming_group": {
            "flagged": count.get("underperforming_group", 0) > 0,
            "rows": rows(knn_issues, knn_pos, "is_underperforming_group_issue"),
        },
    }
