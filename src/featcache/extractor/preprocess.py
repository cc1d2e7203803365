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

import threading
from functools import lru_cache
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
    "preprocess_into",
    "preprocess_rgb",
]

INPUT_SIZE: Final = 227
PROFILES: Final = ("caffe", "udacity")
RESIZE_POLICIES: Final = ("squash", "crop")
#: bvlc_alexnet's ImageNet mean, per channel, in B, G, R order.
CAFFE_MEAN_BGR: Final = np.array([104.00698793, 116.66876762, 122.67891434], dtype=np.float32)
_CAFFE_MEAN: Final = (104.00698793, 116.66876762, 122.67891434)


@lru_cache(maxsize=8)
def _mean_row(mean_bgr: tuple[float, float, float], size: int) -> np.ndarray:
    """The mean tiled along one row of `size` pixels (read-only: shared by threads)."""
    row = np.tile(np.asarray(mean_bgr, dtype=np.float32), size)
    row.flags.writeable = False
    return row


def check_profile(profile: str, resize: str = "squash") -> None:
    """Raise `ConfigError` naming the field when a profile or resize policy is unknown."""
    if profile not in PROFILES:
        raise ConfigError(f"The 'profile' must be one of {list(PROFILES)}. Got {profile!r}.")
    if resize not in RESIZE_POLICIES:
        raise ConfigError(f"The 'resize' must be one of {list(RESIZE_POLICIES)}. Got {resize!r}.")


def _axis(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """TF1's source rows (or columns) of each output one, and the weight of the second."""
    src = np.arange(n_out, dtype=np.float32) * np.float32(n_in / n_out)
    lo = np.floor(src).astype(np.intp)
    hi = np.minimum(lo + 1, n_in - 1)
    return lo, hi, (src - lo).astype(np.float32)


@lru_cache(maxsize=64)
def _plan(
    in_h: int, in_w: int, height: int, width: int, channels: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The gathers and weights of one resize (read-only: shared by threads). The second
    source row of output row y is always ``min(y0 + 1, in_h - 1)``, so it is not kept."""
    y0, _, fy = _axis(height, in_h)
    x0, x1, fx = _axis(width, in_w)
    plan = (y0, fy[:, None], x0, x1, np.repeat(fx, channels)[None, :])
    for array in plan:
        array.flags.writeable = False
    return plan


_scratch = threading.local()  # per thread: the "top" rows of the image being resized


def _scratch_rows(shape: tuple[int, int]) -> np.ndarray:
    buffer: np.ndarray | None = getattr(_scratch, "rows", None)
    if buffer is None or buffer.size < shape[0] * shape[1]:
        buffer = np.empty(shape[0] * shape[1], np.float32)
        _scratch.rows = buffer
    return buffer[: shape[0] * shape[1]].reshape(shape)


def legacy_bilinear_resize(
    image: np.ndarray, height: int, width: int, out: np.ndarray | None = None
) -> np.ndarray:
    """Resize (H, W, C) float32 as TF1's ResizeBilinear (align_corners=False, no half pixels).

    Written out in NumPy so the ``udacity`` profile needs no TensorFlow to preprocess and can
    run in worker threads. Source coordinate of output pixel y is ``y * in_h / out_h``.
    With `out` (a C-contiguous (height, width, C) float32 array, e.g. a batch's row) the
    result is written there.
    """
    in_h, in_w = image.shape[:2]
    channels = image.shape[2]
    y0, fy, x0, x1, fx = _plan(in_h, in_w, height, width, channels)
    img = image.astype(np.float32, copy=False)
    if out is None:
        out = np.empty((height, width, channels), np.float32)
    # TF's per-pixel order, done separably: along x for every source row first (the "top"
    # and "bottom" values), then along y: top + (bottom - top) * fy. Same float operations,
    # fewer passes: bottom - top is the difference of two consecutive source rows (0 for
    # the last, which TF clamps), so it is taken per source row and gathered; rows are
    # handled as flat (width * channels) vectors, which NumPy loops over fast.
    left = np.take(img, x0, axis=1).reshape(in_h, -1)  # take: C-contiguous, reshape is free
    right = np.take(img, x1, axis=1).reshape(in_h, -1)
    rows = left + (right - left) * fx
    step = np.empty_like(rows)
    np.subtract(rows[1:], rows[:-1], out=step[:-1])
    step[-1] = 0.0
    flat = out.reshape(height, width * channels)
    # Into `out` and one reused scratch buffer: a fresh 600 kB temporary per image costs more
    # in page faults than the arithmetic (3x, measured on 32x32 pictures).
    np.take(step, y0, axis=0, out=flat)
    flat *= fy
    flat += np.take(rows, y0, axis=0, out=_scratch_rows(flat.shape))
    return out


def _center_square(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return rgb[top : top + side, left : left + side]


def preprocess_rgb(
    rgb: np.ndarray,
    profile: str,
    resize: str = "squash",
    *,
    size: int = INPUT_SIZE,
    mean_bgr: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """(H, W, 3) uint8 RGB → (size, size, 3) float32 network input for `profile`."""
    out = np.empty((size, size, 3), np.float32)
    return preprocess_into(rgb, out, profile, resize, mean_bgr=mean_bgr)


def preprocess_into(
    rgb: np.ndarray,
    out: np.ndarray,
    profile: str,
    resize: str = "squash",
    *,
    mean_bgr: tuple[float, float, float] | None = None,
) -> np.ndarray:
    """`preprocess_rgb` written into `out`, a C-contiguous (S, S, 3) float32 array (a row of
    the batch: no per-image array to stack); S is the network's input size (AlexNet 227,
    VGG16 and ResNet50 224). `mean_bgr` is the ``caffe`` profile's mean (default AlexNet's
    `CAFFE_MEAN_BGR`; Keras's networks: 103.939, 116.779, 123.68). Thread-safe."""
    check_profile(profile, resize)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f"expected an (H, W, 3) RGB array, got shape {rgb.shape}")
    side = out.shape[0] if out.ndim == 3 else 0
    if (
        out.shape != (side, side, 3)
        or side < 1
        or out.dtype != np.float32
        or not out.flags.c_contiguous
    ):
        side = side or INPUT_SIZE
        raise ConfigError(
            f"'out' must be a C-contiguous ({side}, {side}, 3) float32 array (the network's "
            f"input size). Got {out.shape} {out.dtype}."
        )
    if resize == "crop":
        rgb = _center_square(rgb)
    if profile == "udacity":
        pixels = rgb.astype(np.float32)
        pixels -= pixels.mean()  # the seed: im - np.mean(im)
        return legacy_bilinear_resize(pixels, side, side, out)
    # BGR first: Pillow resizes each channel alike, and swapping the small picture's channels
    # is cheaper than the network input's (a strided pass over 227x227x3).
    img = Image.fromarray(np.ascontiguousarray(rgb[:, :, ::-1], dtype=np.uint8))
    if img.size != (side, side):
        img = img.resize((side, side), Image.Resampling.BILINEAR)
    pixels = np.asarray(img).reshape(side, side * 3)
    # Rows of 681 values (the mean tiled along them) rather than 51,529 pixels of 3.
    mean = _CAFFE_MEAN if mean_bgr is None else mean_bgr
    row = _mean_row((float(mean[0]), float(mean[1]), float(mean[2])), side)
    np.subtract(pixels, row, out=out.reshape(pixels.shape), dtype=np.float32)
    return out
