"""RGB pixels → network input, per profile (decoding is `featcache.data.decode`'s job).

Profiles (DESIGN.md):

- ``caffe``: faithful to bvlc_alexnet's deploy.prototxt: BGR, the per-channel ImageNet mean
  subtracted, values 0–255, 227×227 (bilinear).
- ``udacity``: the seed program exactly: RGB, the image's own scalar mean subtracted, then
  resized to 227×227 as TF1's ``tf.image.resize_images`` did it (bilinear,
  ``align_corners=False``, no half-pixel centres).

Resize policies: ``squash`` resizes the whole image to 227×227; ``crop`` first takes the
centred square of the shorter side, so the aspect ratio is kept.
"""

from __future__ import annotations

from typing import Final

import numpy as np
from PIL import Image

from featcache.errors import ConfigError, ImageError

__all__ = [
    "CAFFE_MEAN_BGR",
    "INPUT_SIZE",
    "PROFILES",
    "RESIZE_POLICIES",
    "check_profile",
    "legacy_bilinear_resize",
    "preprocess_rgb",
]

INPUT_SIZE: Final = 227
PROFILES: Final = ("caffe", "udacity")
RESIZE_POLICIES: Final = ("squash", "crop")
#: bvlc_alexnet's ImageNet mean, per channel, in B, G, R order.
CAFFE_MEAN_BGR: Final = np.array([104.00698793, 116.66876762, 122.67891434], dtype=np.float32)


def check_profile(profile: str, resize: str = "squash") -> None:
    """Raise `ConfigError` naming the field when a profile or resize policy is unknown."""
    if profile not in PROFILES:
        raise ConfigError(f"The 'profile' must be one of {list(PROFILES)}. Got {profile!r}.")
    if resize not in RESIZE_POLICIES:
        raise ConfigError(f"The 'resize' must be one of {list(RESIZE_POLICIES)}. Got {resize!r}.")


def legacy_bilinear_resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """Resize (H, W, C) float32 as TF1's ResizeBilinear (align_corners=False, no half pixels).

    Written out in NumPy so the ``udacity`` profile needs no TensorFlow to preprocess and can
    run in worker threads. Source coordinate of output pixel y is ``y * in_h / out_h``.
    """
    in_h, in_w = image.shape[:2]

    def axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.arange(n_out, dtype=np.float32) * np.float32(n_in / n_out)
        lo = np.floor(src).astype(np.intp)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (src - lo).astype(np.float32)

    y0, y1, fy = axis(height, in_h)
    x0, x1, fx = axis(width, in_w)
    img = image.astype(np.float32, copy=False)
    channels = img.shape[2]
    # TF's per-pixel order, done separably: along x for every source row first (the "top"
    # and "bottom" values), then along y. Same float operations, a quarter of the gathers;
    # rows are handled as flat (width * channels) vectors, which NumPy loops over fast.
    left = img[:, x0].reshape(in_h, -1)
    right = img[:, x1].reshape(in_h, -1)
    rows = left + (right - left) * np.repeat(fx, channels)[None, :]
    top = rows[y0]
    out: np.ndarray = rows[y1]
    out -= top  # in place: fresh 600 kB temporaries cost more in page faults than arithmetic
    out *= fy[:, None]
    out += top
    return out.reshape(height, width, channels)


def _center_square(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return rgb[top : top + side, left : left + side]


def preprocess_rgb(rgb: np.ndarray, profile: str, resize: str = "squash") -> np.ndarray:
    """(H, W, 3) uint8 RGB → (227, 227, 3) float32 network input for `profile`."""
    check_profile(profile, resize)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    if resize == "crop":
        rgb = _center_square(rgb)
    if profile == "udacity":
        pixels = rgb.astype(np.float32)
        pixels = pixels - pixels.mean()  # the seed: im - np.mean(im)
        return legacy_bilinear_resize(pixels, INPUT_SIZE, INPUT_SIZE)
    img = Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8))
    if img.size != (INPUT_SIZE, INPUT_SIZE):
        img = img.resize((INPUT_SIZE, INPUT_SIZE), Image.Resampling.BILINEAR)
    pixels = np.asarray(img)
    out = np.empty((INPUT_SIZE, INPUT_SIZE, 3), np.float32)
    for c in range(3):  # channel by channel: BGR order, mean removed, no slow stride-3 loop
        np.subtract(pixels[:, :, 2 - c], CAFFE_MEAN_BGR[c], out=out[:, :, c], dtype=np.float32)
    return out
