"""k-fold fits on cached vectors, shared by `doctor` (out-of-fold probabilities) and `advise`
(cross-validated accuracy per layer and a learning curve).

Folds come from the image key's hash, like the held-out split of `train`: an image lands in
the same fold whatever the order or run, and with `groups` a whole near-duplicate group lands
in one fold (its smallest key decides), so no copy is judged by a head that saw its twin.
The heads are featcache's own `SoftmaxHead` (float32, seconds on GTSRB-sized data).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from featcache.classifier.splits import group_anchors, key_fraction
from featcache.errors import ConfigError, DataError

if TYPE_CHECKING:
    from featcache.classifier.heads import SoftmaxHead

__all__ = ["FoldScores", "cross_validate", "fold_ids", "out_of_fold_proba", "subset_fraction"]


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


def out_of_fold_proba(X: np.ndarray, y: np.ndarray, folds: np.ndarray) -> np.ndarray:
    """(N, n_classes) probabilities, each row's from a head trained without its fold.

    Columns follow ``0..y.max()``; a class absent from a fold's training rows gets 0 there.
    """
    n_classes = int(y.max()) + 1
    proba = np.zeros((len(y), n_classes), np.float64)
    for f in np.unique(folds):
        held = folds == f
        train = ~held
        if len(np.unique(y[train])) < 2:
            raise DataError("a fold's training rows hold fewer than 2 classes; too few rows")
        head = _head()
        head.fit(X[train], y[train])
        part = head.predict_proba(X[held])
        proba[np.ix_(held, head.classes_)] = part
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
    X: np.ndarray,
    y: np.ndarray,
    folds: np.ndarray,
    *,
    fraction: float = 1.0,
    subset: np.ndarray | None = None,
) -> FoldScores:
    """k-fold accuracy of a head trained on `fraction` of each fold's training rows (the rows
    whose `subset` value is below it; the held-out fold is always whole)."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"The 'fraction' must be in (0, 1]. Got {fraction}.")
    scores, sizes = [], []
    for f in np.unique(folds):
        held = folds == f
        train = ~held
        if fraction < 1.0 and subset is not None:
            train &= subset < fraction
        if len(np.unique(y[train])) < 2:
            continue  # too few rows at this fraction to fit anything
        head = _head()
        head.fit(X[train], y[train])
        scores.append(float((head.predict(X[held]) == y[held]).mean()))
        sizes.append(int(train.sum()))
    if not scores:
        raise DataError(f"too few rows for a {fraction:g} fraction of each fold")
    return FoldScores(scores, int(np.mean(sizes)))
