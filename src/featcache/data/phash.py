"""A perceptual hash of an image's pixels: resized, re-encoded or slightly shifted copies of a
picture get hashes a few bits apart, whatever the network and its weights.

The DCT hash (pHash), 64 bits: grayscale, resized to 32×32 (Lanczos), 2-D DCT-II; the 8×8
lowest frequencies compared with their median (DC left out of the median). Measured on the
digits sample (32×32, self-similar): a JPEG re-encode or a resize moves 0–6 bits, but a
1-pixel shift 8 on average, while the nearest other picture is a median 14 bits away. So each
image records five hashes (40 bytes): of itself, and of itself moved one pixel left, right, up
and down (edges repeated); two images are as close as their closest variants
(`hash_distance`), and a shifted copy is then 0–3 bits from its original. (A difference hash
beside the DCT one ranked shifted copies no better.)

``1 - 2 * distance / 64`` is the cosine of two hashes read as ±1 vectors, on the same scale
as a cosine of feature vectors.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Final

import numpy as np
from PIL import Image

__all__ = [
    "HASH_BITS",
    "HASH_BYTES",
    "HASH_KIND",
    "VARIANTS",
    "base_hash",
    "hash_distance",
    "image_hash",
    "image_hashes",
]

#: Names the algorithm in the store, so a future change of it is never mixed with this one.
HASH_KIND: Final = "dct64-shift5/v1"
HASH_BITS: Final = 64
VARIANTS: Final = 5  # the image, then moved one pixel left, right, up, down
HASH_BYTES: Final = VARIANTS * HASH_BITS // 8


@lru_cache(maxsize=1)
def _dct_matrix(n: int = 32) -> np.ndarray:
    """The orthonormal DCT-II matrix: ``D @ x`` transforms a length-n signal."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return np.asarray(d, dtype=np.float64)


def _gray(rgb: np.ndarray) -> Image.Image:
    if rgb.ndim == 2:
        return Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), mode="L")
    return Image.fromarray(np.ascontiguousarray(rgb[:, :, :3], dtype=np.uint8)).convert("L")


def _dct_hash(gray: np.ndarray) -> np.ndarray:
    small = Image.fromarray(gray).resize((32, 32), Image.Resampling.LANCZOS)
    d = _dct_matrix(32)
    low = (d @ np.asarray(small, dtype=np.float64) @ d.T)[:8, :8].ravel()
    return np.packbits(low > np.median(low[1:]))


def image_hash(rgb: np.ndarray) -> bytes:
    """The 40-byte hash record of an (H, W, 3) or (H, W) uint8 image: five 8-byte hashes."""
    gray = np.asarray(_gray(rgb))
    padded = np.pad(gray, 1, mode="edge")
    h, w = gray.shape
    variants = (
        gray,
        padded[1 : h + 1, 2 : w + 2],  # content moved one pixel left
        padded[1 : h + 1, 0:w],  # right
        padded[2 : h + 2, 1 : w + 1],  # up
        padded[0:h, 1 : w + 1],  # down
    )
    return b"".join(_dct_hash(np.ascontiguousarray(v)).tobytes() for v in variants)


def image_hashes(images: Sequence[np.ndarray]) -> np.ndarray:
    """Hash records of many images as an (N, 40) uint8 array."""
    out = np.zeros((len(images), HASH_BYTES), np.uint8)
    for i, image in enumerate(images):
        out[i] = np.frombuffer(image_hash(image), np.uint8)
    return out


def base_hash(records: np.ndarray) -> np.ndarray:
    """(N, 8) uint8: the unshifted hash of each (N, 40) record."""
    return np.asarray(records, np.uint8)[:, : HASH_BITS // 8]


def hash_distance(records: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits between images a[i] and b[i]: the least over one image's hash against the other's
    five variants, both ways."""
    words = np.ascontiguousarray(records).view(np.uint64)  # (N, 5)
    base_a, base_b = words[a, :1], words[b, :1]
    one_way = np.bitwise_count(base_a ^ words[b]).min(axis=1)
    other_way = np.bitwise_count(base_b ^ words[a]).min(axis=1)
    distance: np.ndarray = np.minimum(one_way, other_way).astype(np.int64)
    return distance
