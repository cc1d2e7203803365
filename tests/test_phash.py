"""`image_hash` returns exactly the bytes of the first implementation (HASH_KIND
"dct64-shift5/v1"), kept below verbatim as the oracle: the hashes are stored, so one flipped
bit would make a stored image a stranger to its own copy."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image

from featcache.data.phash import HASH_BYTES, HASH_KIND, image_hash, image_hashes
from featcache.errors import ImageError

# --- the oracle: phash.py as first stored (HASH_KIND "dct64-shift5/v1"), verbatim ----------


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


def oracle_image_hash(rgb: np.ndarray) -> bytes:
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


# --- images -----------------------------------------------------------------------------


def blobs(rng: np.random.Generator, height: int, width: int, channels: int = 3) -> np.ndarray:
    """Smooth colour blobs: a random 4×4 picture upscaled, like the benchmark's images."""
    shape = (4, 4, channels) if channels > 1 else (4, 4)
    small = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8))
    return np.asarray(small.resize((width, height), Image.Resampling.BICUBIC))


SIZES = [
    (32, 32),
    (64, 64),
    (227, 227),
    (375, 500),
    (32, 57),
    (57, 32),
    (31, 33),
    (1, 40),
    (40, 1),
    (1, 1),
    (2, 3),
    (3, 2),
    (10, 2000),
    (2000, 10),
    (16, 16),
    (33, 32),
]


def assert_same(image: np.ndarray) -> None:
    got = image_hash(image)
    assert len(got) == HASH_BYTES
    assert got == oracle_image_hash(image), image.shape


def test_hash_kind_is_unchanged() -> None:
    assert HASH_KIND == "dct64-shift5/v1"


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_smooth_and_noisy_images_hash_as_before(height: int, width: int) -> None:
    rng = np.random.default_rng(height * 10_007 + width)
    for _ in range(6):
        assert_same(blobs(rng, height, width))
        assert_same(blobs(rng, height, width, channels=1))  # an (H, W) grayscale array
        assert_same(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_many_32x32_images_hash_as_before() -> None:
    rng = np.random.default_rng(7)
    images = [blobs(rng, 32, 32) for _ in range(200)]
    expected = np.array([np.frombuffer(oracle_image_hash(i), np.uint8) for i in images])
    np.testing.assert_array_equal(image_hashes(images), expected)


@pytest.mark.parametrize(("height", "width"), SIZES)
@pytest.mark.parametrize("value", [0, 1, 44, 128, 255])
def test_constant_images_hash_as_before(height: int, width: int, value: int) -> None:
    # every AC coefficient is rounding noise: the bits depend on the exact arithmetic
    assert_same(np.full((height, width, 3), value, np.uint8))
    assert_same(np.full((height, width), value, np.uint8))


@pytest.mark.parametrize(("height", "width"), SIZES)
def test_two_valued_and_striped_images_hash_as_before(height: int, width: int) -> None:
    rng = np.random.default_rng(height + 31 * width)
    assert_same(np.where(rng.random((height, width)) < 0.5, 0, 255).astype(np.uint8))
    half = np.zeros((height, width, 3), np.uint8)
    half[:, width // 2 :] = 200
    assert_same(half)
    assert_same(np.ascontiguousarray(half.transpose(1, 0, 2)))
    stripes = np.zeros((height, width), np.uint8)
    stripes[::2] = 90
    assert_same(stripes)
    one = np.full((height, width, 3), 17, np.uint8)
    one[height // 2, width // 2] = 18  # one pixel off a flat image
    assert_same(one)


def test_other_layouts_and_dtypes_hash_as_before() -> None:
    rng = np.random.default_rng(3)
    rgba = rng.integers(0, 256, (40, 30, 4), dtype=np.uint8)
    assert_same(rgba)  # the alpha channel is ignored
    assert_same(rng.integers(0, 256, (20, 24, 2), dtype=np.uint8))  # "LA": the L channel
    assert_same(np.asfortranarray(rng.integers(0, 256, (33, 47, 3), dtype=np.uint8)))
    assert_same(rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)[::2, ::3])  # strided view
    assert_same(np.zeros((4, 4, 3), np.float32) + 300.7)  # cast to uint8 as before
    assert_same(rng.integers(0, 256, (32, 32)).astype(np.int64))


@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0), (0, 0)])
def test_an_empty_image_is_refused(shape: tuple[int, ...]) -> None:
    with pytest.raises(ImageError, match="no perceptual hash"):
        image_hash(np.zeros(shape, np.uint8))


@settings(max_examples=150, deadline=None)
@given(
    image=arrays(
        np.uint8,
        st.tuples(st.integers(1, 70), st.integers(1, 70), st.sampled_from([3, 4])),
        elements=st.integers(0, 255),
    )
)
def test_any_image_hashes_as_before(image: np.ndarray) -> None:
    assert_same(image)
    assert_same(image[:, :, 0])


@settings(max_examples=100, deadline=None)
@given(
    side=st.integers(1, 64),
    levels=st.lists(st.integers(0, 255), min_size=1, max_size=3),
    seed=st.integers(0, 2**32 - 1),
)
def test_few_valued_images_hash_as_before(side: int, levels: list[int], seed: int) -> None:
    # few grey levels make ties among the DCT coefficients likely
    rng = np.random.default_rng(seed)
    height = int(rng.integers(1, 65))
    image = np.array(levels, np.uint8)[rng.integers(0, len(levels), (height, side))]
    assert_same(image)
