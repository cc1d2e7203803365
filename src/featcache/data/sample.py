"""The bundled sample: scikit-learn's digits (1,797 real 8x8 scans), written as an image folder.

Digits are upscaled to 32x32 (the traffic-sign size) and split 80/20 into ``train/`` and
``test/`` by a seeded shuffle, so the demo runs the same layout a user would bring.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["write_digits_folder"]


def write_digits_folder(
    root: str | Path,
    *,
    size: int = 32,
    test_fraction: float = 0.2,
    seed: int = 0,
    limit: int | None = None,
) -> Path:
    """Write ``root/{train,test}/<digit>/<n>.png``; return `root`. `limit` keeps the first N."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = digits.images if limit is None else digits.images[:limit]
    order = np.random.default_rng(seed).permutation(len(images))
    n_test = round(len(images) * test_fraction)
    root = Path(root)
    for rank, index in enumerate(order):
        split = "test" if rank < n_test else "train"
        folder = root / split / str(int(digits.target[index]))
        folder.mkdir(parents=True, exist_ok=True)
        pixels = (images[index] * (255.0 / 16.0)).astype(np.uint8)  # digits range 0..16
        Image.fromarray(pixels).resize((size, size), Image.Resampling.BILINEAR).save(
            folder / f"{index:04d}.png"
        )
    return root
