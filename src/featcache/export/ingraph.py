"""The profiles' preprocessing (`featcache.extractor.preprocess`) as TensorFlow ops, for the
exported graph: uint8 RGB of any size in, the network's (N, S, S, 3) float32 input out (S:
227 for AlexNet, 224 for VGG16 and ResNet50).

Resizing is written as two small matrix products (one along the width, one along the
height) whose coefficients are computed in the graph from the image's size, instead of a
resize op: every converter maps MatMul alike, while resize ops map with different pixel
conventions and no antialiasing (tf2onnx issues 1428, 1747, 2096). The coefficients are the
ones each profile's reference uses:

- ``caffe`` is Pillow's ``BILINEAR``: a triangle filter stretched by the scale when
  shrinking (antialiased), one pass per axis in Pillow's order, each rounded to uint8 as
  Pillow's 8-bit path does. Pillow sums in 22-bit fixed point, this in float32: a sum within about
  1e-5 of a half rounds the other way now and then (measured: README, "Export").
- ``udacity`` is TF1's ``resize_images`` (bilinear, no half-pixel centres), in float.

At the network's input size both matrices are the identity and the input is exact.
"""

from __future__ import annotations

from typing import Any

from featcache.extractor.preprocess import CAFFE_MEAN_BGR, INPUT_SIZE, check_profile

__all__ = ["pillow_orders_passes", "preprocess_images"]

_PILLOW_BITS = 22  # Pillow's PRECISION_BITS for 8-bit resampling (32 - 8 - 2)


def _pillow_matrix(tf: Any, n_in: Any, n_out: int) -> Any:
    """(n_out, n_in) coefficients of Pillow's bilinear filter (``precompute_coeffs``)."""
    scale = tf.cast(n_in, tf.float32) / float(n_out)
    filter_scale = tf.maximum(scale, 1.0)  # support widens only when shrinking
    centres = (tf.range(n_out, dtype=tf.float32) + 0.5) * scale
    source = tf.range(n_in, dtype=tf.float32) + 0.5
    weights = tf.nn.relu(1.0 - tf.abs(source[None, :] - centres[:, None]) / filter_scale)
    weights = weights / tf.reduce_sum(weights, axis=1, keepdims=True)
    # The fixed-point coefficients Pillow really uses (exact in float32: 22 bits).
    unit = float(1 << _PILLOW_BITS)
    return tf.floor(weights * unit + 0.5) / unit


def _legacy_matrix(tf: Any, n_in: Any, n_out: int) -> Any:
    """(n_out, n_in) coefficients of TF1's bilinear resize without half-pixel centres."""
    scale = tf.cast(n_in, tf.float32) / float(n_out)
    source = tf.range(n_out, dtype=tf.float32) * scale
    index = tf.range(n_in, dtype=tf.float32)
    weights = tf.nn.relu(1.0 - tf.abs(index[None, :] - source[:, None]))
    # At the last row the second neighbour is clamped onto the first: all weight to it.
    return weights / tf.reduce_sum(weights, axis=1, keepdims=True)


def _centre_square(tf: Any, images: Any) -> Any:
    shape = tf.shape(images)
    side = tf.minimum(shape[1], shape[2])
    top, left = (shape[1] - side) // 2, (shape[2] - side) // 2
    return images[:, top : top + side, left : left + side, :]


def _pass(tf: Any, pixels: Any, matrix: Any, axis: str, rounded: bool, size: int) -> Any:
    shape = tf.shape(pixels)
    if axis == "width":
        out = tf.einsum("nhwc,ow->nhoc", pixels, matrix(tf, shape[2], size))
    else:
        out = tf.einsum("nhwc,oh->nowc", pixels, matrix(tf, shape[1], size))
    if rounded:  # Pillow rounds (half up) and clips each pass to 0..255
        out = tf.clip_by_value(tf.floor(out + 0.5), 0.0, 255.0)
    return out


def _resize(
    tf: Any, pixels: Any, matrix: Any, *, rounded: bool, pillow_order: bool, size: int
) -> Any:
    """Along the width, then the height; with `pillow_order`, height first when Pillow (13
    and later) would: the height shrinks by more than twice as many pixels as the width.
    Rounding between the passes makes the order matter (a quarter of the pixels off by one)."""

    def one(h: Any, axis: str) -> Any:
        return _pass(tf, h, matrix, axis, rounded, size)

    width_first = one(one(pixels, "width"), "height")
    if not pillow_order:
        return width_first
    shape = tf.shape(pixels)
    shrink_h, shrink_w = shape[1] - size, shape[2] - size
    height_first = one(one(pixels, "height"), "width")
    # Both are computed and one kept (a select, not a branch: every converter maps it).
    return tf.where((shrink_h > 0) & (shrink_h > 2 * shrink_w), height_first, width_first)


def pillow_orders_passes() -> bool:
    """Whether the installed Pillow picks the order of its two passes (13 and later)."""
    from PIL import __version__

    return int(__version__.split(".")[0]) >= 13


def preprocess_images(
    tf: Any,
    images: Any,
    profile: str,
    resize: str = "squash",
    *,
    pillow_order: bool = True,
    size: int = INPUT_SIZE,
    mean_bgr: tuple[float, float, float] | None = None,
) -> Any:
    """(N, H, W, 3) uint8 RGB tensor → (N, size, size, 3) float32 network input of `profile`.

    `size` is the network's input side (AlexNet 227, VGG16 and ResNet50 224) and `mean_bgr`
    the ``caffe`` profile's mean (default AlexNet's), as the backbone's registry entry gives
    them; `pillow_order` follows Pillow 13's choice of pass order (`pillow_orders_passes`)."""
    check_profile(profile, resize)
    if resize == "crop":
        images = _centre_square(tf, images)
    pixels = tf.cast(images, tf.float32)
    if profile == "udacity":
        pixels = pixels - tf.reduce_mean(pixels, axis=[1, 2, 3], keepdims=True)
        return _resize(tf, pixels, _legacy_matrix, rounded=False, pillow_order=False, size=size)
    resized = _resize(
        tf, pixels, _pillow_matrix, rounded=True, pillow_order=pillow_order, size=size
    )
    bgr = tf.reverse(resized, axis=[3])
    mean = CAFFE_MEAN_BGR if mean_bgr is None else mean_bgr
    return bgr - tf.constant([float(m) for m in mean], tf.float32)
