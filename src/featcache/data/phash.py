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

from featcache.errors import ImageError

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


_SIDE: Final = 32  # the DCT's input is _SIDE × _SIDE
_LOW: Final = 8  # the hash keeps the _LOW × _LOW lowest frequencies


@lru_cache(maxsize=1)
def _dct_matrix(n: int = _SIDE) -> np.ndarray:
    """The orthonormal DCT-II matrix: ``D @ x`` transforms a length-n signal."""
    k = np.arange(n)[:, None]
    i = np.arange(n)[None, :]
    d = np.cos(np.pi * (2 * i + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    d[0] /= np.sqrt(2.0)
    return np.asarray(d, dtype=np.float64)


def _gray(rgb: np.ndarray) -> np.ndarray:
    """Pillow's "L" conversion of the image, as an (H, W) uint8 array."""
    if rgb.ndim == 2:
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    pixels = np.ascontiguousarray(rgb[:, :, :3], dtype=np.uint8)
    height, width = pixels.shape[:2]
    if pixels.ndim == 3 and pixels.shape[2] == 3 and height and width:
        # frombytes + tobytes: the same conversion as fromarray + asarray, at half the cost
        gray = Image.frombytes("RGB", (width, height), pixels).convert("L")
        return np.frombuffer(gray.tobytes(), np.uint8).reshape(height, width)
    return np.asarray(Image.fromarray(pixels).convert("L"))  # (H, W, 2): "LA"


def _shifted(image: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """The image's content moved one pixel towards lower, then higher indices along `axis`,
    the edge row or column repeated (``np.pad(mode="edge")`` then cropped)."""
    towards_low = np.empty_like(image)
    towards_high = np.empty_like(image)
    if axis == 0:
        towards_low[:-1], towards_low[-1] = image[1:], image[-1]
        towards_high[1:], towards_high[0] = image[:-1], image[0]
    else:
        towards_low[:, :-1], towards_low[:, -1] = image[:, 1:], image[:, -1]
        towards_high[:, 1:], towards_high[:, 0] = image[:, :-1], image[:, 0]
    return towards_low, towards_high


def _lanczos(gray: np.ndarray, width: int, height: int) -> np.ndarray:
    image = Image.frombytes("L", (gray.shape[1], gray.shape[0]), np.ascontiguousarray(gray))
    small = image.resize((width, height), Image.Resampling.LANCZOS)
    return np.frombuffer(small.tobytes(), np.uint8).reshape(height, width)


def _small_variants(gray: np.ndarray) -> tuple[np.ndarray, ...]:
    """The image and its four 1-pixel shifts, each resized to 32×32 by Pillow's Lanczos.

    Pillow's resize to the size an image already has is a copy, so a 32×32 image skips
    Pillow. Other sizes are resized one variant at a time: the two passes (horizontal,
    vertical) could be shared between shifted variants, but since Pillow 13 (PR #9549) the
    order of the passes depends on the scale factors, and sharing would tie the stored bits
    to that rule.
    """
    left, right = _shifted(gray, axis=1)
    up, down = _shifted(gray, axis=0)
    variants = (gray, left, right, up, down)
    if gray.shape == (_SIDE, _SIDE):
        return variants
    return tuple(_lanczos(variant, _SIDE, _SIDE) for variant in variants)


def _dct_hashes(variants: tuple[np.ndarray, ...]) -> bytes:
    """Each 32×32 variant's 8 bytes: its 8×8 lowest DCT frequencies above their median.

    The bits must not change (they are stored), and near-ties make them depend on the last
    bit of every coefficient (a flat image's AC coefficients are rounding noise), so the
    arithmetic stays that of one ``d @ x @ d.T`` per variant: whole 32×32 products (a smaller
    one may round differently). The stacked ``np.matmul`` makes the same BLAS call for each
    (5, 32, 32) slice as for a lone (32, 32) array (NumPy's matmul loop decides from the
    core shape and strides, which are the same).
    """
    d = _dct_matrix(_SIDE)
    pixels = np.array(variants, dtype=np.float64)  # (5, 32, 32)
    coefficients = np.matmul(np.matmul(d, pixels), d.T)
    low = coefficients[:, :_LOW, :_LOW].reshape(len(variants), _LOW * _LOW)
    # np.median of the 63 AC values is exactly the 32nd smallest (odd count, no averaging)
    median = np.partition(low[:, 1:], 31, axis=1)[:, 31:32]
    return np.packbits(low > median, axis=1).tobytes()


def image_hash(rgb: np.ndarray) -> bytes:
    """The 40-byte hash record of an (H, W, 3) or (H, W) uint8 image: five 8-byte hashes."""
    gray = _gray(rgb)
    if gray.size == 0:
        raise ImageError(
            f"an image of {gray.shape[1]}×{gray.shape[0]} pixels has no perceptual hash; "
            "give it at least one pixel"
        )
    return _dct_hashes(_small_variants(gray))


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
