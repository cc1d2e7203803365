"""How many epochs a fine-tune keeps: the fewest whose held-out loss is as good as the best.

`FineTuneHead` scores its held-out rows after the frozen start (epoch 0: the pretrained
layers and the linear probe) and after every epoch, row by row. On a small held-out split
the lowest mean loss is often a fluke of a few rows, and picking it would let fine-tuning
end below the frozen head. So a longer run is chosen over a shorter one only when its loss
is lower by more than `se` standard errors of the paired per-row difference: Breiman's
one-standard-error rule (Breiman et al. 1984; Hastie, Tibshirani and Friedman, *The
Elements of Statistical Learning*, 7.10) with the difference taken on the same rows, so the
rows' own difficulty cancels. Ties, and too few held-out rows to measure an error, go to
the frozen start.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["choose_epochs"]


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
