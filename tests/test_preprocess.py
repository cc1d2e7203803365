"""The two profiles' pixel pipelines: RGB → network input (decoding: test_decode.py)."""

from __future__ import annotations

import numpy as np
import pytest

from featcache.errors import ConfigError, ImageError
from featcache.extractor.preprocess import (
    CAFFE_MEAN_BGR,
    legacy_bilinear_resize,
    preprocess_into,
    preprocess_rgb,
)

RGB = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3) * 3


def test_legacy_bilinear_matches_hand_computation() -> None:
    # TF1 ResizeBilinear, align_corners=False: src = dst * in/out, no half-pixel offset.
    img = np.array([[0.0, 10.0], [20.0, 30.0]], np.float32)[:, :, None]
    out = legacy_bilinear_resize(img, 4, 4)[:, :, 0]
    expected = np.array(
        [[0, 5, 10, 10], [10, 15, 20, 20], [20, 25, 30, 30], [20, 25, 30, 30]], np.float32
    )
    np.testing.assert_allclose(out, expected)


def test_udacity_profile_subtracts_the_scalar_mean_then_resizes() -> None:
    rgb = np.full((32, 32, 3), 100, np.uint8)
    rgb[:, :, 0] = 160
    out = preprocess_rgb(rgb, "udacity")
    assert out.shape == (227, 227, 3) and out.dtype == np.float32
    np.testing.assert_allclose(out[..., 0], 40.0)  # RGB order, mean 120 removed
    np.testing.assert_allclose(out[..., 1], -20.0)


def test_caffe_profile_is_bgr_minus_mean() -> None:
    rgb = np.zeros((227, 227, 3), np.uint8)
    rgb[..., 0] = 255  # red
    out = preprocess_rgb(rgb, "caffe")
    np.testing.assert_allclose(
        out[0, 0], [0 - CAFFE_MEAN_BGR[0], -CAFFE_MEAN_BGR[1], 255 - CAFFE_MEAN_BGR[2]], rtol=1e-6
    )


def test_crop_policy_keeps_the_centre_square() -> None:
    wide = np.zeros((227, 227 * 3, 3), np.uint8)
    wide[:, 227:454] = 255  # the centre square is white, the sides black
    out = preprocess_rgb(wide, "caffe", "crop")
    assert out.shape == (227, 227, 3) and (out + CAFFE_MEAN_BGR).min() > 254
    squashed = preprocess_rgb(wide, "caffe", "squash")
    assert (squashed + CAFFE_MEAN_BGR)[:, 0].max() < 1


def test_unknown_profile_is_named() -> None:
    with pytest.raises(
        ConfigError, match=r"'profile' must be one of \['caffe', 'udacity'\]. Got 'vgg'"
    ):
        preprocess_rgb(RGB, "vgg")


def test_input_must_be_rgb() -> None:
    with pytest.raises(ImageError, match=r"expected an \(H, W, 3\) RGB array, got shape \(4, 6\)"):
        preprocess_rgb(RGB[:, :, 0], "caffe")


# -- into a batch's row: the same numbers as the per-image arrays of before -----------------


def _reference(rgb: np.ndarray, profile: str) -> np.ndarray:
    """The per-image pipeline as it was before it wrote into batch rows (an oracle)."""
    from PIL import Image

    if profile == "udacity":
        img = rgb.astype(np.float32)
        img = img - img.mean()
        in_h, in_w = img.shape[:2]

        def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            src = np.arange(n_out, dtype=np.float32) * np.float32(n_in / n_out)
            lo = np.floor(src).astype(np.intp)
            return lo, np.minimum(lo + 1, n_in - 1), (src - lo).astype(np.float32)

        y0, y1, fy = axis(227, in_h)
        x0, x1, fx = axis(227, in_w)
        left, right = img[:, x0].reshape(in_h, -1), img[:, x1].reshape(in_h, -1)
        rows = left + (right - left) * np.repeat(fx, 3)[None, :]
        top, bottom = rows[y0], rows[y1]
        return (top + (bottom - top) * fy[:, None]).reshape(227, 227, 3)
    pixels = np.asarray(Image.fromarray(rgb).resize((227, 227), Image.Resampling.BILINEAR))
    out = np.empty((227, 227, 3), np.float32)
    for c in range(3):
        np.subtract(pixels[:, :, 2 - c], CAFFE_MEAN_BGR[c], out=out[:, :, c], dtype=np.float32)
    return out


SIZES = [(32, 32), (1, 1), (5, 300), (227, 227), (375, 500), (64, 31)]


@pytest.mark.parametrize("profile", ["caffe", "udacity"])
def test_rows_written_into_a_batch_equal_the_per_image_pipeline(profile: str) -> None:
    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for size in SIZES]
    batch = np.full((len(images), 227, 227, 3), np.nan, np.float32)
    for row, rgb in enumerate(images):
        preprocess_into(rgb, batch[row], profile)
        np.testing.assert_array_equal(batch[row], _reference(rgb, profile), err_msg=str(rgb.shape))
        np.testing.assert_array_equal(preprocess_rgb(rgb, profile), batch[row])


def test_threads_writing_rows_at_once_get_each_image_right() -> None:
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(4)
    images = [rng.integers(0, 256, (*SIZES[i % len(SIZES)], 3), np.uint8) for i in range(48)]
    batch = np.empty((len(images), 227, 227, 3), np.float32)
    with ThreadPoolExecutor(4) as pool:
        list(pool.map(lambda i: preprocess_into(images[i], batch[i], "udacity"), range(48)))
    for row, rgb in enumerate(images):
        np.testing.assert_array_equal(batch[row], _reference(rgb, "udacity"))


def test_a_row_that_is_not_a_contiguous_input_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"'out' must be a C-contiguous \(227, 227, 3\)"):
        preprocess_into(RGB, np.empty((227, 227, 3), np.float64), "caffe")
    strided = np.empty((227, 227, 6), np.float32)[:, :, ::2]
    with pytest.raises(ConfigError, match="C-contiguous"):
        preprocess_into(RGB, strided, "udacity")
