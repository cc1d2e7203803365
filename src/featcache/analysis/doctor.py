"""`doctor`: can a dataset's held-out numbers be trusted? Exact and near duplicates, leakage
across splits, label issues and outliers, from the cached vectors and the pixel hashes.

`doctor` computes (no TensorFlow) and records the near-duplicate groups in the store (for
``train --split-groups`` and the clean test accuracy of ``evaluate``); `write_doctor` writes
``doctor.json``, one CSV and one contact sheet (PNG) per list.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from featcache._text import csv_cell
from featcache.analysis.duplicates import (
    NearDuplicateConfig,
    NearPairs,
    connected_groups,
    near_duplicate_pairs,
)
from featcache.analysis.folds import one_blas_thread
from featcache.analysis.labels import label_findings
from featcache.analysis.pixels import RowPixels
from featcache.classifier.splits import effective_splits
from featcache.data.phash import HASH_BYTES, HASH_KIND, image_hash
from featcache.errors import ConfigError, DataError
from featcache.store import FeatureStore, LabelledVectors, LazyVectors
from featcache.store.commands import shell_word, store_command

__all__ = ["DoctorConfig", "DoctorReport", "doctor", "near_duplicate_groups", "write_doctor"]

LISTS = ("exact_duplicates", "near_duplicates", "label_issues", "outliers")
#: The name of the validation rows `train` would carve out of `train` (no `val` split given).
CARVED = "val (carved from train)"


@dataclass(frozen=True)
class DoctorConfig:
    """How hard to look: folds of the label-issue heads, neighbours of the outlier score, the
    near-duplicate thresholds, and how many entries each contact sheet shows (`top`)."""

    folds: int = 5
    fold_fit_rows: int = 50_000  # each label-issue fold head fits on about this many rows
    knn_check_rows: int = 100_000  # Datalab's kNN checks past this: on a sample of this many
    outlier_neighbours: int = 10
    outlier_share: float = 0.01  # outliers listed: this share of the images, at least 50
    top: int = 24
    val_fraction: float = 0.2  # the held-out split `train` would carve (leakage of "val")
    near: NearDuplicateConfig = field(default_factory=NearDuplicateConfig)

    def __post_init__(self) -> None:
        if self.folds < 2:
            raise ConfigError(f"The 'folds' must be >= 2. Got {self.folds}.")
        if self.fold_fit_rows < 2:
            raise ConfigError(f"The 'fold_fit_rows' must be >= 2. Got {self.fold_fit_rows}.")
        if self.knn_check_rows < 3:
            raise ConfigError(f"The 'knn_check_rows' must be >= 3. Got {self.knn_check_rows}.")
        if not 1 <= self.outlier_neighbours <= self.near.neighbours:
            raise ConfigError(
                f"The 'outlier_neighbours' must be in 1..{self.near.neighbours} (the neighbours "
                f"searched). Got {self.outlier_neighbours}."
            )
        if not 0.0 < self.outlier_share <= 1.0:
            raise ConfigError(f"The 'outlier_share' must be in (0, 1]. Got {self.outlier_share}.")
        if self.top < 1:
            raise ConfigError(f"The 'top' must be >= 1. Got {self.top}.")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"The 'val_fraction' must be in [0, 1). Got {self.val_fraction}.")


@dataclass
class DoctorReport:
    """What `doctor` found. Each list is a DataFrame ranked most suspicious first."""

    dataset: str
    layer: str
    rows: int
    images: int
    exact_duplicates: pd.DataFrame
    near_duplicates: pd.DataFrame
    leakage: dict[str, float]
    leaked_rows: dict[str, int]
    split_rows: dict[str, int]
    label_issues: pd.DataFrame
    outliers: pd.DataFrame
    groups: dict[str, int]
    weights_note: str | None
    search_exact: bool
    val_carved: bool = False  # `val` is the part of train that `train` would hold out
    datalab: dict[str, Any] = field(default_factory=dict)  # cleanlab Datalab's other findings
    bursts: int = 0  # groups holding most of a class, split across the label folds
    skipped: list[str] = field(default_factory=list)  # checks not run, and why
    timings: dict[str, float] = field(default_factory=dict)
    hashes_computed: int = 0
    labelled_rows: int | None = None  # None: not counted (every row taken as labelled)
    unlabelled_next: str = ""  # the next command when no row has a label

    def as_json(self) -> dict[str, Any]:
        """doctor.json: the keys the issue fixes, then extras (counts, timings)."""
        exact = [
            {k: row[k] for k in ("keys", "paths", "splits", "labels")}
            for row in self.exact_duplicates.to_dict("records")
        ]
        near = [
            {
                "path_a": r["path_a"],
                "path_b": r["path_b"],
                "split_a": r["split_a"],
                "split_b": r["split_b"],
                "similarity": round(float(r["similarity"]), 6),
                "signal": r["signal"],
                "grouped": bool(r["grouped"]),
                "vector_similarity": round(float(r["vector_similarity"]), 6),
                "hash_similarity": _json_float(r["hash_similarity"]),
                "part_a": r["part_a"],
                "part_b": r["part_b"],
                "cross_split": bool(r["cross_split"]),
                "leaks": bool(r["leaks"]),
            }
            for r in self.near_duplicates.to_dict("records")
        ]
        issues = [
            {
                "path": r["path"],
                "given": r["given"],
                "suggested": r["suggested"],
                "score": round(float(r["score"]), 6),
                "flagged": bool(r["flagged"]),
                "split": r["split"],
            }
            for r in self.label_issues.to_dict("records")
        ]
        outliers = [
            {
                "path": r["path"],
                "score": round(float(r["score"]), 6),
                "datalab_score": _json_float(r["datalab_score"]),
                "split": r["split"],
            }
            for r in self.outliers.to_dict("records")
        ]
        return {
            "dataset": self.dataset,
            "layer": self.layer,
            "rows": self.rows,
            "exact_duplicates": exact,
            "near_duplicates": near,
            "leakage": {k: _json_float(v) for k, v in self.leakage.items()},
            "val_part": CARVED if self.val_carved else "val",
            "label_issues": issues,
            "outliers": outliers,
            "images": self.images,
            "leaked_rows": self.leaked_rows,
            "split_rows": self.split_rows,
            "groups_with_copies": self.groups_with_copies,
            "search_exact": self.search_exact,
            "hashes_computed": self.hashes_computed,
            "datalab": self.datalab,
            "bursts_split_across_folds": self.bursts,
            "skipped": self.skipped,
            "weights_note": self.weights_note,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }

    @property
    def groups_with_copies(self) -> int:
        sizes = pd.Series(list(self.groups.values())).value_counts()
        return int((sizes > 1).sum())

    def summary(self, store: str | Path = "STORE") -> list[str]:
        """A few lines: counts, leakage, and the next command to run."""
        ex = self.exact_duplicates
        near = self.near_duplicates
        lines = [
            f"doctor: dataset '{self.dataset}' [{self.layer}], {self.rows} rows, "
            f"{self.images} distinct images",
            f"  exact duplicates: {len(ex)} image(s) on {int(ex['count'].sum()) if len(ex) else 0}"
            f" rows ({int(ex['cross_split'].sum()) if len(ex) else 0} across splits, "
            f"{int(ex['conflict'].sum()) if len(ex) else 0} with conflicting labels)",
            f"  near-duplicates: {int(near['grouped'].sum()) if len(near) else 0} pair(s) grouped "
            f"(hash and vectors agree), {int(near['leaks'].sum()) if len(near) else 0} of them "
            f"across train and val/test; {int((~near['grouped']).sum()) if len(near) else 0} "
            f"closest other pair(s) listed for review; {self.groups_with_copies} group(s) of 2+ "
            "images",
        ]
        for split in ("val", "test"):
            share = self.leakage[split]
            name = CARVED if split == "val" and self.val_carved else split
            if math.isnan(share):
                lines.append(f"  leakage {name}: no {split} rows")
            else:
                lines.append(
                    f"  leakage {name}: {share:.1%} ({self.leaked_rows[split]} of "
                    f"{self.split_rows[split]} rows are in a group with an earlier part's row)"
                )
        if self.labelled_rows == 0:
            lines.append("  label issues: not checked (the dataset is unlabelled)")
        else:
            flagged = int(self.label_issues["flagged"].sum()) if len(self.label_issues) else 0
            lines.append(
                f"  label issues: {flagged} flagged by cleanlab Datalab; all "
                f"{len(self.label_issues)} labelled rows ranked, most suspicious first"
            )
        for r in self.label_issues.head(3).to_dict("records"):
            lines.append(f"    {r['path']}: given {r['given']}, suggested {r['suggested']}")
        if self.bursts:
            lines.append(
                f"  {self.bursts} group(s) holding most of a class (bursts) split across the "
                "label folds, so a head that saw the class scores them"
            )
        lines += _datalab_lines(self.datalab)
        for note in self.skipped:
            lines.append(f"  skipped: {note}")
        lines.append(f"  outliers: {len(self.outliers)} ranked, most unusual first")
        for r in self.outliers.head(3).to_dict("records"):
            lines.append(f"    {r['path']}: score {r['score']:.3f}")
        leaky = any(v > 0 for v in self.leakage.values() if not math.isnan(v))
        if self.labelled_rows == 0 and self.unlabelled_next:
            lines.append(f"next: {self.unlabelled_next}")
        elif leaky:
            lines.append(
                "next: "
                + store_command(
                    "train", str(store), "--dataset", self.dataset, "--layer", self.layer
                )
                + " --split-groups   (copies stay on one side of the "
                "held-out split; evaluate then reports the clean test accuracy)"
            )
        else:
            lines.append(
                f"next: {store_command('advise', str(store), '--dataset', self.dataset)}   "
                "(which transfer-learning case this dataset is in)"
            )
        return lines


def _datalab_lines(found: dict[str, Any]) -> list[str]:
    """Datalab's class-imbalance, non-IID and underperforming-group verdicts, one line each."""
    if not found:
        return []
    imbalance, order, weak = (
        found["class_imbalance"],
        found["non_iid"],
        found["underperforming_group"],
    )
    sample = found.get("knn_checks")
    scope = (
        [
            f"  Datalab's outlier, non-IID and underperforming-group checks: a fixed random "
            f"sample of {sample['rows']} of the {sample['of']} labelled rows"
        ]
        if sample
        else []
    )
    return [
        *scope,
        f"  class imbalance: {'FLAGGED' if imbalance['flagged'] else 'no'} (rarest class "
        f"'{imbalance['rarest_class']}', {imbalance['share']:.1%} of labelled rows)",
        f"  non-IID order: {'FLAGGED' if order['flagged'] else 'no'} (p-value "
        f"{order['p_value']}, on the {order['order']})",
        "  underperforming group: "
        + (f"FLAGGED, {len(weak['rows'])} row(s)" if weak["flagged"] else "no"),
    ]


def _json_float(value: Any) -> float | None:
    value = float(value)
    return None if math.isnan(value) else round(value, 6)


def _hashes(
    store: FeatureStore, keys: list[str], paths: list[str]
) -> tuple[np.ndarray, np.ndarray, int]:
    """(K, 40) hashes of the distinct keys: recorded ones, the rest computed from the source
    files (and recorded). `paths[i]` is a row of key i. Returns hashes, known mask, computed."""
    found = store.image_hashes(keys, HASH_KIND)
    hashes = np.zeros((len(keys), HASH_BYTES), np.uint8)
    known = np.zeros(len(keys), bool)
    pixels = RowPixels()
    computed: dict[str, bytes] = {}
    for i, key in enumerate(keys):
        value = found.get(key)
        if value is None:
            rgb = pixels.rgb(paths[i])
            if rgb is None:
                continue  # the file is gone: this image has only its vector
            value = computed[key] = image_hash(rgb)
        hashes[i] = np.frombuffer(value, np.uint8)
        known[i] = True
    if computed:
        store.put_image_hashes(HASH_KIND, computed)
    return hashes, known, len(computed)


@dataclass(frozen=True)
class _Found:
    keys: list[str]  # distinct keys
    first: np.ndarray  # a row of each key
    inverse: np.ndarray  # each row's key index
    pairs: NearPairs
    key_group: np.ndarray
    groups: dict[str, int]
    hashes_computed: int


def _find_groups(
    store: FeatureStore,
    dataset: str,
    data: LabelledVectors | LazyVectors,
    config: NearDuplicateConfig,
    timings: dict[str, float],
) -> _Found:
    keys = np.array(data.keys, dtype=object)
    distinct, first, inverse = np.unique(keys, return_index=True, return_inverse=True)
    where = getattr(data.X, "where", None)
    if where is not None:
        # Distinct keys in the order their vectors lie in the shards: every pass over them
        # (mean, norms, projection, centroids) then reads each shard's rows in one piece; in
        # key order each block of rows would touch every shard (a million rows: 245).
        place = np.lexsort((where.row_of[first], where.shard_of[first]))
        rank = np.empty_like(place)
        rank[place] = np.arange(len(place))
        distinct, first, inverse = distinct[place], first[place], rank[inverse]
    key_list = [str(k) for k in distinct]
    t = time.perf_counter()
    hashes, known, computed = _hashes(store, key_list, [data.paths[i] for i in first])
    timings["hashes"] = time.perf_counter() - t
    t = time.perf_counter()
    pairs = near_duplicate_pairs(data.X[first], hashes, known, config)
    key_group = connected_groups(len(key_list), pairs.a[pairs.grouped], pairs.b[pairs.grouped])
    groups = dict(zip(key_list, key_group.tolist(), strict=True))
    store.put_groups(dataset, groups)
    timings["near_duplicates"] = time.perf_counter() - t
    return _Found(key_list, first, inverse, pairs, key_group, groups, computed)


def near_duplicate_groups(
    store: FeatureStore,
    dataset: str,
    *,
    layer: str = "fc7",
    fingerprint: str | None = None,
    config: NearDuplicateConfig | None = None,
) -> dict[str, int]:
    """Find `dataset`'s near-duplicate groups (key → group), record them in the store and
    return them: the part of `doctor` that ``train --split-groups`` needs."""
    data = store.lazy_vectors(dataset, layer, fingerprint)
    return _find_groups(store, dataset, data, config or NearDuplicateConfig(), {}).groups


def _label_names(names: list[str], labels: np.ndarray) -> list[str | None]:
    return [None if y < 0 else (names[y] if y < len(names) else str(y)) for y in labels.tolist()]


def doctor(
    store: FeatureStore | str | Path,
    dataset: str,
    *,
    layer: str = "fc7",
    fingerprint: str | None = None,
    config: DoctorConfig | None = None,
    out: str | Path | None = None,
    on_stage: Callable[[str], None] | None = None,
) -> DoctorReport:
    """Examine `dataset`'s cached `layer` vectors; with `out`, also write the report files.

    Records the near-duplicate groups in the store (``FeatureStore.groups``). `on_stage`
    hears the name of each stage as it starts (progress).
    """
    stage = on_stage or (lambda _: None)
    config = config or DoctorConfig()
    if not isinstance(store, FeatureStore):
        store = FeatureStore(store, create=False)
    timings: dict[str, float] = {}
    stage("reading the vectors")
    t = time.perf_counter()
    # Vectors stay in the shards: the searches and fold heads read them a block at a time.
    data = store.lazy_vectors(dataset, layer, fingerprint)
    timings["read_vectors"] = time.perf_counter() - t
    if len(data.keys) < 3:
        raise DataError(f"dataset '{dataset}' has {len(data.keys)} row(s); doctor needs 3 or more")

    stage("pixel hashes and near-duplicates")
    found = _find_groups(store, dataset, data, config.near, timings)
    key_list, first, inverse, pairs = found.keys, found.first, found.inverse, found.pairs
    key_group, groups = found.key_group, found.groups

    t = time.perf_counter()
    splits = effective_splits(data.keys, data.splits, config.val_fraction)
    stored = np.array([(s or "train").lower() for s in data.splits], dtype=object)
    carved_rows = (splits == "val") & (stored == "train")
    parts = np.where(carved_rows, CARVED, splits)
    row_group = key_group[inverse]
    # val leaks from train; test from everything a model is built and chosen on (train, val)
    seen = {"val": ("train",), "test": ("train", "val")}
    leakage, leaked, counts = {}, {}, {}
    for split in ("val", "test"):
        before = np.zeros(len(key_list), bool)
        before[row_group[np.isin(splits, seen[split])]] = True
        rows = splits == split
        counts[split] = int(rows.sum())
        leaked[split] = int(before[row_group[rows]].sum())
        leakage[split] = leaked[split] / counts[split] if counts[split] else float("nan")
    exact = _exact_duplicates(data, inverse, splits)
    near = _near_table(data, pairs, inverse, splits, parts, config.near.review)
    timings["groups_leakage"] = time.perf_counter() - t

    stage("label issues (cleanlab, out-of-fold heads)")
    t = time.perf_counter()
    found_labels = label_findings(
        data.X, data.y, data.keys, data.paths, data.splits, data.class_names, groups,
        config.folds, config.outlier_neighbours,
        max_fit_rows=config.fold_fit_rows, knn_rows=config.knn_check_rows,
    )  # fmt: skip
    issues = found_labels.label_issues
    timings["label_issues"] = time.perf_counter() - t

    stage("outliers")
    t = time.perf_counter()
    with one_blas_thread():
        knn, centroid = _outlier_scores(pairs, data.y[first], config.outlier_neighbours)
    key_score = _either(knn, centroid)
    order = np.argsort(-key_score, kind="stable")  # a full ranking
    rows = first[order]
    outliers = pd.DataFrame(
        {
            "path": [data.paths[i] for i in rows],
            "split": [data.splits[i] for i in rows],
            "label": _label_names(data.class_names, data.y[rows]),
            "score": key_score[order],
            "knn_distance": knn[order],
            "centroid_distance": np.nan if centroid is None else centroid[order],
            "datalab_score": [found_labels.outlier_score.get(data.keys[i], np.nan) for i in rows],
            "key": [data.keys[i] for i in rows],
        }
    )
    timings["outliers"] = time.perf_counter() - t

    spec = store.extractors().get(data.fingerprint, {})
    report = DoctorReport(
        dataset=dataset,
        layer=layer,
        rows=len(data.keys),
        images=len(key_list),
        exact_duplicates=exact,
        near_duplicates=near,
        leakage=leakage,
        leaked_rows=leaked,
        split_rows=counts,
        label_issues=issues,
        outliers=outliers,
        groups=groups,
        weights_note=spec.get("weights_note"),
        search_exact=pairs.neighbours_exact,
        val_carved=bool(carved_rows.any()),
        datalab=found_labels.datalab,
        bursts=found_labels.bursts,
        skipped=found_labels.skipped,
        timings=timings,
        hashes_computed=found.hashes_computed,
        labelled_rows=int((data.y >= 0).sum()),
        unlabelled_next="" if (data.y >= 0).any() else _unlabelled_next(store, data),
    )
    stage("writing the report and contact sheets")
    if out is not None:
        t = time.perf_counter()
        write_doctor(report, out, top=config.top)
        timings["write"] = time.perf_counter() - t
    timings["total"] = sum(timings.values())
    return report


def _unlabelled_next(store: FeatureStore, data: LabelledVectors | LazyVectors) -> str:
    """What works on an unlabelled dataset: predict with a head trained on the same vectors,
    or else export the vectors (to label them, or cluster them, elsewhere)."""
    heads = [
        r
        for r in store.heads()
        if r.meta.get("fingerprint") == data.fingerprint and r.meta.get("layer") == data.layer
    ]
    if heads:
        folder = os.path.commonpath([os.path.dirname(p) or "." for p in data.paths])
        return (
            store_command("predict", store.location, "--head", heads[-1].name, shell_word(folder))
            + "   (a head trained on these vectors answers every image from the cache)"
        )
    return (
        store_command(
            "export",
            store.location,
            f"--dataset {data.dataset} --layer {data.layer} --out {data.dataset}.parquet",
        )
        + "   (unlabelled: to train, put the images in one subfolder per class and extract "
        "again)"
    )


def _percentile(values: np.ndarray) -> np.ndarray:
    ranks = np.empty(len(values))
    ranks[np.argsort(values, kind="stable")] = np.arange(len(values))
    return ranks / max(1, len(values) - 1)


def _either(knn: np.ndarray, centroid: np.ndarray | None) -> np.ndarray:
    """The outlier score: the higher of the two distances' percentiles (an image is unusual
    if either says so), ties broken by the lower one. Raw distances do not mix: outliers
    that resemble each other are *closest* to their neighbours."""
    if centroid is None:
        return _percentile(knn)
    a, b = _percentile(knn), _percentile(centroid)
    score: np.ndarray = np.maximum(a, b) + 1e-3 * np.minimum(a, b)
    return score


def _outlier_scores(
    pairs: NearPairs, labels: np.ndarray, k: int
) -> tuple[np.ndarray, np.ndarray | None]:
    """Two distances per distinct image, each 1 - a cosine: to its `k` nearest neighbours
    (mean), and to the nearest class centroid. Outliers that resemble one another (pure
    noise through a network looks alike) are each other's neighbours, so the first misses
    them when they are many; the second does not, and misses an odd picture within a
    class. `_either` combines them (recall of each alone: README, "doctor")."""
    sims = pairs.knn_similarity[:, :k]
    valid = np.isfinite(sims)
    knn = 1.0 - np.where(valid, sims, 0.0).sum(axis=1) / np.maximum(valid.sum(axis=1), 1)
    present = np.unique(labels[labels >= 0])
    if len(present) < 2:
        return knn, None
    vi = pairs.vectors
    n, d = vi.X.shape
    sums = np.zeros((len(present), d))
    blocks = []
    for start in range(0, n, 4096):
        block = vi.unit_block(start, min(n, start + 4096))
        lab = labels[start : start + 4096]
        for j, c in enumerate(present.tolist()):
            sums[j] += block[lab == c].sum(axis=0, dtype=np.float64)
        blocks.append((start, block.shape[0]))
    centroids = (sums / np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)).astype(
        np.float32
    )
    nearest = np.empty(n)
    for start, size in blocks:
        nearest[start : start + size] = (vi.unit_block(start, start + size) @ centroids.T).max(
            axis=1
        )
    return knn, 1.0 - nearest


def _exact_duplicates(
    data: LabelledVectors | LazyVectors, inverse: np.ndarray, splits: np.ndarray
) -> pd.DataFrame:
    counts = np.bincount(inverse)
    entries = []
    names = _label_names(data.class_names, data.y)
    # Rows grouped by key in one stable sort (a scan of every row per copied key is O(n²)).
    by_key = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    for key_index in np.flatnonzero(counts > 1).tolist():
        rows = by_key[starts[key_index] : starts[key_index + 1]].tolist()
        labels = [names[r] for r in rows]
        row_splits = [str(splits[r]) for r in rows]
        entries.append(
            {
                "keys": [data.keys[r] for r in rows],
                "paths": [data.paths[r] for r in rows],
                "splits": row_splits,
                "labels": labels,
                "count": len(rows),
                "conflict": len({lab for lab in labels if lab is not None}) > 1,
                "cross_split": len(set(row_splits)) > 1,
            }
        )
    columns = ["keys", "paths", "splits", "labels", "count", "conflict", "cross_split"]
    table = pd.DataFrame(entries, columns=columns)
    if len(table):
        table = table.sort_values(
            ["conflict", "cross_split", "count"], ascending=False, kind="stable"
        ).reset_index(drop=True)
    return table


def _near_table(
    data: LabelledVectors | LazyVectors,
    pairs: NearPairs,
    inverse: np.ndarray,
    splits: np.ndarray,
    parts: np.ndarray,
    review: int,
) -> pd.DataFrame:
    """The grouped pairs, then the `review` closest pairs that are not grouped; one line per
    pair of rows. Grouped pairs across train, val and test (they make the leakage figures)
    come first, then other grouped ones, each by similarity."""
    names = _label_names(data.class_names, data.y)
    rows_of: dict[int, list[int]] = {}
    for row, key_index in enumerate(inverse.tolist()):
        rows_of.setdefault(key_index, []).append(row)
    shown = np.flatnonzero(pairs.grouped)
    shown = np.concatenate([shown, np.flatnonzero(~pairs.grouped)[:review]])
    records = []
    for i in shown.tolist():
        a, b, vec, hsh = int(pairs.a[i]), int(pairs.b[i]), pairs.vector[i], pairs.hash[i]
        grouped = bool(pairs.grouped[i])
        # grouped: both signals did it; listed only: the one that brought the pair close
        closer = "vector" if math.isnan(hsh) or vec >= hsh else "hash"
        signal = "hash+vector" if grouped else closer
        for ra in rows_of[a]:
            for rb in rows_of[b]:
                sides = {str(splits[ra]), str(splits[rb])}
                records.append(
                    {
                        "path_a": data.paths[ra],
                        "path_b": data.paths[rb],
                        "split_a": data.splits[ra],
                        "split_b": data.splits[rb],
                        "label_a": names[ra],
                        "label_b": names[rb],
                        "similarity": float(pairs.similarity[i]),
                        "signal": signal,
                        "vector_similarity": float(vec),
                        "hash_similarity": float(hsh),
                        "part_a": str(parts[ra]),
                        "part_b": str(parts[rb]),
                        "cross_split": len(sides) > 1,
                        "grouped": grouped,
                        "leaks": grouped and len(sides) > 1 and sides <= {"train", "val", "test"},
                        "key_a": data.keys[ra],
                        "key_b": data.keys[rb],
                    }
                )
    columns = [
        "path_a", "path_b", "split_a", "split_b", "label_a", "label_b", "similarity", "signal",
        "vector_similarity", "hash_similarity", "part_a", "part_b", "cross_split", "grouped",
        "leaks", "key_a", "key_b",
    ]  # fmt: skip
    table = pd.DataFrame(records, columns=columns)
    if len(table):
        table = table.sort_values(
            ["leaks", "grouped", "similarity"], ascending=False, kind="stable"
        ).reset_index(drop=True)
    return table


def write_doctor(report: DoctorReport, out: str | Path, *, top: int = 24) -> list[Path]:
    """Write doctor.json, a CSV per list and a contact sheet (PNG) per list into `out`."""
    from featcache.analysis.sheets import contact_sheet

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "doctor.json"]
    written[0].write_text(json.dumps(report.as_json(), indent=2) + "\n")
    pixels = RowPixels()
    for name in LISTS:
        table: pd.DataFrame = getattr(report, name)
        csv_path = folder / f"{name}.csv"
        # paths and class names come from the store: no cell a spreadsheet evaluates
        table.map(csv_cell).to_csv(csv_path, index=False, float_format="%.6f")
        png_path = folder / f"{name}.png"
        contact_sheet(name, table.head(top), png_path, pixels, report)
        written += [csv_path, png_path]
    return written
