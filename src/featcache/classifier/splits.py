"""Which rows train a head, which are held out to judge it, and which are kept for testing.

Rows keep the split the dataset gives them (``valid`` and ``validation`` read as ``val``).
When the dataset has no ``val`` rows, a ``val_fraction`` of its ``train`` and split-less rows
is held out by the image key's hash, so an image always lands on the same side whatever the
order, path or run. ``test`` rows are never trained on.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["effective_splits", "key_fraction"]

_ALIASES = {"valid": "val", "validation": "val"}


def key_fraction(key: str) -> float:
    """A stable number in [0, 1) from an image key (SHA-256 hex)."""
    return int(key[:12], 16) / float(16**12)


def effective_splits(
    keys: Sequence[str], splits: Sequence[str | None], val_fraction: float
) -> np.ndarray:
    """Each row's split: ``train``, ``val``, ``test`` (or another name the dataset uses)."""
    named = [_ALIASES.get(s.lower(), s.lower()) if s else None for s in splits]
    carve = "val" not in named
    out = []
    for key, split in zip(keys, named, strict=True):
        if split not in (None, "train"):
            out.append(split)
        elif carve and key_fraction(key) < val_fraction:
            out.append("val")
        else:
            out.append("train")
    return np.array(out, dtype=object)
