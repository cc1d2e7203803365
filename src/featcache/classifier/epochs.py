"""How many epochs a fine-tune keeps, and whether it keeps any: decided on held-out rows.

`FineTuneHead` scores its held-out rows after the frozen start (epoch 0: the pretrained
layers and the linear probe) and after every epoch, row by row: each row's log loss and
whether it is classified right. Two questions, two rules, both fixed before any test-set
figure was looked at:

1. **How many epochs, if any** (`choose_epochs`): on a small held-out split the lowest mean
   loss is often a fluke of a few rows, so a longer run is chosen over a shorter one only
   when its loss is lower by more than `se` standard errors of the paired per-row
   difference: Breiman's one-standard-error rule (Breiman et al. 1984; Hastie, Tibshirani
   and Friedman, *The Elements of Statistical Learning*, 7.10), the difference taken on the
   same rows so their own difficulty cancels.

2. **Does fine-tuning beat the frozen start at all** (`select_epochs`): a lower loss is not
   a better classifier. The user's question is accuracy, and the frozen start is the frozen
   head's own solution, so fine-tuning is kept only when its candidate classifies the
   held-out rows significantly better than the frozen start, by McNemar's test on the
   paired right/wrong outcomes (the rows each gets right that the other gets wrong), exact
   and one-sided at `significance` (0.05). Dietterich (1998, "Approximate statistical tests
   for comparing supervised classification learning algorithms", *Neural Computation*
   10(7)) found McNemar's test the one test with an acceptable type I error when each
   learner can be trained only once, which is the case here (a fine-tune costs minutes to
   hours; the k-fold alternatives he and Nadeau and Bengio (2003) studied need many
   trainings, and pooling the folds' rows into one standard error, as tried here before,
   understates the variance and passed small gains that did not carry over to the test
   set). The exact conditional test (the binomial tail of the fixed rows among the rows
   that changed) is the conservative form: wrongly fine-tuning costs the user accuracy,
   wrongly keeping the frozen head only a gain not taken.

Ties, too few held-out rows to measure an error, and no row that changed go to the frozen
start. With `significance` 1 the test never objects (the loss rule alone decides).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["EpochChoice", "choose_epochs", "mcnemar_p_value", "select_epochs"]


@dataclass(frozen=True)
class EpochChoice:
    """What `select_epochs` decided: `epochs` to keep (0: the frozen start); `by_loss`, the
    number the one-standard-error rule chose on held-out loss; `fixed` and `broken`, the
    held-out rows that candidate classifies right where the frozen start is wrong, and the
    reverse; `p_value`, McNemar's exact one-sided p-value of that difference (1.0 when the
    loss rule chose 0)."""

    epochs: int
    by_loss: int
    fixed: int
    broken: int
    p_value: float

    def __post_init__(self) -> None:
        if min(self.epochs, self.by_loss, self.fixed, self.broken) < 0:
            raise ValueError(f"epoch counts and row counts cannot be negative: {self}")
        if self.epochs not in (0, self.by_loss):
            raise ValueError(f"epochs {self.epochs} must be 0 or by_loss {self.by_loss}")
        if not 0.0 <= self.p_value <= 1.0:
            raise ValueError(f"p_value {self.p_value} is not in [0, 1]")


def choose_epochs(per_row_losses: Sequence[np.ndarray], se: float = 1.0) -> int:
    """The number of epochs to keep, given each candidate's held-out loss per row
    (candidate 0 is the frozen start, k after k epochs; all on the same rows, in the same
    order): the fewest epochs k whose mean loss exceeds the lowest mean loss by at most `se`
    standard errors of the per-row differences (`se` 0: the lowest loss, the fewest epochs
    on a tie). With one held-out row no error can be measured, and 0 is chosen (`se` > 0)."""
    if not per_row_losses:
        raise ValueError("no candidate epochs to choose from")
    losses = [np.asarray(loss, dtype=np.float64) for loss in per_row_losses]
    rows = len(losses[0])
    if rows < 1 or any(loss.shape != (rows,) for loss in losses):
        raise ValueError(f"every candidate needs one loss per held-out row ({rows})")
    means = [float(loss.mean()) for loss in losses]
    lowest = int(np.argmin(means))
    if rows < 2 and se > 0:
        return 0
    for k in range(lowest):
        diff = losses[k] - losses[lowest]
        error = float(diff.std(ddof=1)) / np.sqrt(rows) if rows > 1 else 0.0
        if float(diff.mean()) <= se * error:
            return k
    return lowest


def mcnemar_p_value(fixed: int, broken: int) -> float:
    """McNemar's exact one-sided p-value that a classifier beats another on paired rows:
    the chance of at least `fixed` of the `fixed + broken` rows that changed going its way
    if each went either way with probability 1/2 (scipy's binomial test). 1.0 when no row
    changed."""
    if fixed < 0 or broken < 0:
        raise ValueError(f"row counts cannot be negative: fixed {fixed}, broken {broken}")
    if fixed + broken == 0:
        return 1.0
    from scipy.stats import binomtest

    return float(binomtest(fixed, fixed + broken, 0.5, alternative="greater").pvalue)


def select_epochs(
    per_row_losses: Sequence[np.ndarray],
    per_row_correct: Sequence[np.ndarray],
    *,
    se: float = 1.0,
    significance: float = 0.05,
) -> EpochChoice:
    """The epochs to keep, given each candidate's held-out loss and right/wrong per row
    (candidate 0 the frozen start; same rows, same order): the loss rule's choice
    (`choose_epochs` with `se`) if McNemar's test finds it classifies the rows better than
    the frozen start at `significance`, else 0."""
    if not 0.0 < significance <= 1.0:
        raise ValueError(f"significance must be in (0, 1]; got {significance}")
    if len(per_row_correct) != len(per_row_losses):
        raise ValueError(
            f"{len(per_row_correct)} right/wrong rows for {len(per_row_losses)} candidates"
        )
    by_loss = choose_epochs(per_row_losses, se)
    frozen = np.asarray(per_row_correct[0], dtype=bool)
    candidate = np.asarray(per_row_correct[by_loss], dtype=bool)
    if frozen.shape != candidate.shape or frozen.shape != np.shape(per_row_losses[0]):
        raise ValueError(
            f"every candidate needs one right/wrong per held-out row ({len(per_row_losses[0])})"
        )
    fixed = int(np.sum(candidate & ~frozen))
    broken = int(np.sum(frozen & ~candidate))
    p_value = mcnemar_p_value(fixed, broken) if by_loss else 1.0
    keep = by_loss if by_loss and p_value <= significance else 0
    return EpochChoice(keep, by_loss, fixed, broken, p_value)
