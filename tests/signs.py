"""Sign pictures with vectors by class, made without TensorFlow: real PNG files in
root/data/CLASS/NNN.png (or under `folder`) and, for each, a 16-d 'fc7' vector drawn around
its class's centre (seeded RANDOM numbers, not network features)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from featcache.store import DatasetRow
from service_fakes import png

CLASSES = ("stop", "yield", "priority")


@dataclass(frozen=True)
class Signs:
    """The images' keys (SHA-256 of the files), dataset rows and vectors, in order."""

    keys: list[str]
    rows: list[DatasetRow]
    vectors: np.ndarray  # (count, 16) float32, non-negative like fc7


def write_signs(folder: Path, count: int, *, test_every: int, seed: int = 0) -> Signs:
    """`count` PNGs cycling through `CLASSES`; every `test_every`-th row is in 'test'."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((len(CLASSES), 16)).astype(np.float32) * 3
    keys, rows, vectors = [], [], []
    for i in range(count):
        data = png(i)
        label = i % len(CLASSES)
        path = folder / CLASSES[label] / f"{i:03d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        keys.append(hashlib.sha256(data).hexdigest())
        vectors.append(centres[label] + rng.standard_normal(16).astype(np.float32))
        split = "test" if i % test_every == 0 else "train"
        rows.append(DatasetRow(keys[-1], str(path), label, split))
    return Signs(keys, rows, np.maximum(np.array(vectors), 0))
