"""Which rows train a head, which are held out to judge it, and which are kept for testing.

Rows keep the split the dataset gives them (``valid`` and ``validation`` read as ``val``).
When the dataset has no ``val`` rows, a ``val_fraction`` of its ``train`` and split-less rows
is held out by the image key's hash, so an image always lands on the same side whatever the
order, path or run. ``test`` rows are never trained on. With near-duplicate `groups` (recorded
by `featcache doctor`), a group is held out or kept whole: its smallest key decides.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["effective_splits", "group_anchors", "key_fraction"]

_ALIASES = {"valid": "val", "validation": "val"}


def key_fraction(key: str) -> float:
    """A stable number in [0, 1) from an image key (SHA-256 hex)."""
    return int(key[:12], 16) / float(16**12)


def group_anchors(keys: Sequence[str], groups: Mapping[str, int] | None) -> list[str]:
    """Each row's deciding key: its own, or the smallest key of its near-duplicate group."""
    if not groups:
        return list(keys)
    smallest: dict[int, str] = {}
    for key in keys:
        g = groups.get(key)
        if g is not None and (g not in smallest or key < smallest[g]):
            smallest[g] = key
    return [smallest[groups[k]] if k in groups else k for k in keys]


def effective_splits(
    keys: Sequence[str],
    splits: Sequence[str | None],
    val_fraction: float,
    groups: Mapping[str, int] | None = None,
) -> np.ndarray:
    """Each row's split: ``train``, ``val``, ``test`` (or another name the dataset uses).

    With `groups` (key → near-duplicate group), the carved ``val`` split takes or leaves
    each group whole.
    """
    named = [_ALIASES.get(s.lower(), s.lower()) if s else None for s in splits]
    carve = "val" not in named
    out = []
    for key, split in zip(group_anchors(keys, groups), named, strict=True):
        if split not in (None, "train"):
            out.append(split)
        elif carve and key_fraction(key) < val_fraction:
            out.append("val")
        else:
            out.append("train")
    return np.array(out, dtype=object)
