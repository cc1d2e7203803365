"""The two profiles' pixel pipelines: RGB → network input (decoding: test_decode.py)."""

from __future__ import annotations

import numpy as np
import pytest

from featcache.errors import ConfigError, ImageError
from featcache.extractor.preprocess import (
    CAFFE_MEAN_BGR,
    legacy_bilinear_resize,
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
