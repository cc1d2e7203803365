"""k-fold fits on cached vectors, shared by `doctor` (out-of-fold probabilities) and `advise`
(cross-validated accuracy per layer and a learning curve).

Folds come from the image key's hash, like the held-out split of `train`: an image lands in
the same fold whatever the order or run, and with `groups` a whole near-duplicate group lands
in one fold (its smallest key decides), so no copy is judged by a head that saw its twin.
The heads are featcache's own `SoftmaxHead` (float32, seconds on GTSRB-sized data).

X may be an array or a `featcache.store.StoredRows`: fold heads then stream their rows from
the store's shards and score the held-out fold a block at a time. With `max_fit_rows`, the
fold heads fit on one fixed random sample of the rows (about `max_fit_rows` rows outside
each fold), read from the shards once into memory: the time and memory of k fits stop
growing with the dataset, and their epochs do not re-read scattered rows from the shards;
every row is still scored.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from featcache.classifier.splits import group_anchors, key_fraction
from featcache.errors import ConfigError, DataError

if TYPE_CHECKING:
    from featcache.classifier.heads import SoftmaxHead

__all__ = [
    "FoldScores",
    "capped_rows",
    "cross_validate",
    "fold_ids",
    "one_blas_thread",
    "out_of_fold_proba",
    "subset_fraction",
]


def fold_ids(
    keys: Sequence[str], k: int = 5, groups: Mapping[str, int] | None = None
) -> np.ndarray:
    """Fold number (0..k-1) of every row, from the key's hash (or its group's smallest key)."""
    if k < 2:
        raise ConfigError(f"The number of folds must be >= 2. Got {k}.")
    return np.array([int(key_fraction(a) * k) for a in group_anchors(keys, groups)], dtype=np.intp)


def subset_fraction(keys: Sequence[str]) -> np.ndarray:
    """A second stable number in [0, 1) per key, independent of the fold, for nested subsets
    of the training rows (the learning curve): rows with a value below f form fraction f."""
    return np.array([int(key[12:24], 16) / float(16**12) for key in keys])


def _head() -> SoftmaxHead:
    """A fold head: the library's defaults, fixed seed (sklearn is imported here, not above)."""
    from featcache.classifier.heads import SoftmaxHead

    return SoftmaxHead(random_state=0)


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Single-threaded BLAS and LAPACK within: most products here are small or thin, and two
    threads on one of them spend their time waiting for each other, worse still on a shared
    machine (measured: a 144x144 eigh 0.42 s, a digits head 12.5 s against 1.0 s)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):
        yield


@dataclass(frozen=True)
class _SampleRows:
    """Rows `rows` of an in-memory array, as a row source (``shape``, ``read_rows``): a fold
    head streams its mini-batches from the sample without a copy of its training part."""

    array: np.ndarray
    rows: np.ndarray

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), self.array.shape[1]

    def __len__(self) -> int:
        return len(self.rows)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        block: np.ndarray = self.array[self.rows[rows]]
        return block


def _fit_all(
    X: Any,
    y: np.ndarray,
    jobs: list[tuple[np.ndarray, np.ndarray]],
    sample: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Fit one head per (train mask, held-out mask); return (classes, held-out probabilities).

    With `sample` (sorted row numbers), heads fit only on the sample's rows of their train
    mask, and the sample is read once into memory. Fits run two at a time with
    single-threaded BLAS (`one_blas_thread`): a head's products are small (a batch of rows
    times a few dozen classes). NumPy releases the GIL in them.
    """
    held_in: np.ndarray | None = None  # the sample's vectors, read once
    if sample is not None:
        held_in = X.read_rows(sample) if hasattr(X, "read_rows") else np.asarray(X[sample])

    def one(job: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        train, held = job
        if held_in is None or sample is None:
            rows = np.flatnonzero(train)
            head = _head().fit(X[rows], y[rows])
        else:
            picked = np.flatnonzero(train[sample])
            head = _head().fit(_SampleRows(held_in, picked), y[sample[picked]])
        return head.classes_, head.predict_proba(X[held])

    workers = max(1, min(2, os.cpu_count() or 1, len(jobs)))
    with one_blas_thread(), ThreadPoolExecutor(workers) as pool:
        return list(pool.map(one, jobs))


def capped_rows(mask: np.ndarray, cap: int | None, seed: int = 0) -> np.ndarray:
    """The row numbers of `mask`, or a fixed random `cap` of them (sorted), if more."""
    rows = np.flatnonzero(mask)
    if cap is None or len(rows) <= cap:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size=cap, replace=False))


def out_of_fold_proba(
    X: Any, y: np.ndarray, folds: np.ndarray, *, max_fit_rows: int | None = None
) -> np.ndarray:
    """(N, n_classes) probabilities, each row's from a head trained without its fold (with
    `max_fit_rows`, on the rows of one fixed random sample outside the fold: about that
    many).

    Columns follow ``0..y.max()``; a class absent from a fold's training rows gets 0 there.
    """
    n_classes = int(y.max()) + 1
    proba = np.zeros((len(y), n_classes), np.float64)
    jobs = []
    for f in np.unique(folds):
        held = folds == f
        if len(np.unique(y[~held])) < 2:
            raise DataError("a fold's training rows hold fewer than 2 classes; too few rows")
        jobs.append((~held, held))
    sample = None
    if max_fit_rows is not None and len(jobs) > 1:
        # one sample for every fold: about `max_fit_rows` of it lies outside each fold
        size = -(-max_fit_rows * len(jobs) // (len(jobs) - 1))
        if size < len(y):
            sample = capped_rows(np.ones(len(y), bool), size)
            for train, _ in jobs:
                if len(np.unique(y[sample[train[sample]]])) < 2:
                    raise DataError(
                        f"a fold's {max_fit_rows} sampled training rows hold fewer than 2 "
                        "classes; raise max_fit_rows"
                    )
    fitted = _fit_all(X, y, jobs, sample)
    for (_, held), (classes, part) in zip(jobs, fitted, strict=True):
        proba[np.ix_(held, classes)] = part
    return proba


@dataclass(frozen=True)
class FoldScores:
    """Accuracy on each held-out fold; `mean` and `std` across folds."""

    scores: list[float]
    rows: int  # training rows per fit, on average

    @property
    def mean(self) -> float:
        return float(np.mean(self.scores))

    @property
    def std(self) -> float:
        return float(np.std(self.scores))


def cross_validate(
    X: Any,
    y: np.ndarray,
    folds: np.ndarray,
    *,
    fractions: Sequence[float] = (1.0,),
    subset: np.ndarray | None = None,
    skip_small: bool = False,
) -> list[FoldScores]:
    """k-fold accuracy of heads trained on each of `fractions` of each fold's training rows
    (the rows whose `subset` value is below it; the held-out fold is always whole). All
    fits of all fractions share one pool of workers. A fraction with fewer than two classes
    in every fold's training rows raises `DataError`, or with `skip_small` is left out of
    the list returned."""
    jobs, owner = [], []
    for i, fraction in enumerate(fractions):
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(f"The 'fraction' must be in (0, 1]. Got {fraction}.")
        for f in np.unique(folds):
            held = folds == f
            train = ~held
            if fraction < 1.0:
                if subset is None:
                    raise ConfigError("cross_validate: fractions below 1 need 'subset'")
                train &= subset < fraction
            if len(np.unique(y[train])) < 2:
                continue  # too few rows at this fraction to fit anything
            jobs.append((train, held))
            owner.append(i)
    results = _fit_all(X, y, jobs)
    out = []
    for i, fraction in enumerate(fractions):
        scores, sizes = [], []
        for (train, held), (classes, proba), o in zip(jobs, results, owner, strict=True):
            if o == i:
                scores.append(float((classes[np.argmax(proba, axis=1)] == y[held]).mean()))
                sizes.append(int(train.sum()))
        if not scores and skip_small:
            continue
        if not scores:
            raise DataError(f"too few rows for a {fraction:g} fraction of each fold")
        out.append(FoldScores(scores, int(np.mean(sizes))))
    return out
