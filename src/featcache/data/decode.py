"""Image bytes (or a decoded array) → (H, W, 3) uint8 RGB, with limits; nothing else.

Every failure of one image is an `ImageError` naming it. Pillow raises many exception types
on broken files (OSError, ValueError, TypeError, OverflowError, struct.error, SyntaxError,
EOFError, IndexError, ...), and which one depends on the format plugin and the damage, so any
`Exception` raised while opening, loading or converting one image becomes that image's error
(`MemoryError` excepted: it is the process's problem, not the file's). Runs in worker
threads; no TensorFlow, nothing from the extractor.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from featcache.errors import ImageError, ImageTooLargeError

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "array_to_rgb",
    "decode_image",
    "image_errors",
    "image_size",
]

DEFAULT_MAX_PIXELS: Final = 50_000_000
FORMATS: Final = "PNG, JPEG, BMP, GIF, WebP, TIFF"
#: The Pillow plugins tried, and only these: fewer parsers exposed to untrusted bytes, and
#: unrecognised bytes are refused sooner ("JPEG" also opens multi-picture camera JPEGs).
_PILLOW_FORMATS: Final = ("PNG", "JPEG", "BMP", "GIF", "WEBP", "TIFF")
_SIXTEEN_BIT: Final = ("I;16", "I;16B", "I;16L", "I;16N")


def _to_rgb(img: Image.Image) -> np.ndarray:
    """Any PIL mode → (H, W, 3) uint8 RGB; 16-bit and float modes are scaled, not clipped."""
    if img.mode in (*_SIXTEEN_BIT, "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode in _SIXTEEN_BIT or arr.max(initial=0) > 255 else 255.0
        return _gray_to_rgb(arr * (255.0 / top))
    if img.mode == "F":
        return _gray_to_rgb(np.asarray(img, dtype=np.float64))
    if img.mode != "RGB":
        img = img.convert("RGB")  # L, LA, P, PA, RGBA (alpha dropped), CMYK, YCbCr, 1
    return np.asarray(img, dtype=np.uint8)


def _gray_to_rgb(values: np.ndarray) -> np.ndarray:
    # NaN (possible in float TIFFs) reads as black, infinities as the ends of the range.
    clean = np.nan_to_num(values, nan=0.0, posinf=255.0, neginf=0.0)
    gray = np.clip(np.rint(clean), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)


def _check_pixels(source: str, width: int, height: int, max_pixels: int) -> None:
    if width * height > max_pixels:
        raise ImageTooLargeError(
            f"{source}: {width}x{height} = {width * height} pixels exceeds the limit of "
            f"{max_pixels} (raise max_pixels if the image is genuine)"
        )


@contextmanager
def image_errors(source: str) -> Iterator[None]:
    """Run Pillow on one image: any failure inside becomes `source`'s `ImageError` (too many
    pixels: `ImageTooLargeError`); `MemoryError` passes. Our own pixel limits apply, so
    Pillow's global decompression-bomb warning is silenced inside."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            yield
    except (ImageError, MemoryError):
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLargeError(f"{source}: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError(f"{source}: not an image in a known format ({FORMATS})") from exc
    except Exception as exc:
        # OSError ("image file is truncated") is the usual one; see the module docstring.
        raise ImageError(f"{source}: not a readable image ({type(exc).__name__}: {exc})") from exc


def image_size(data: bytes, source: str) -> tuple[int, int]:
    """(width, height) from the image's header, nothing decoded; errors as `decode_image`."""
    if not data:
        raise ImageError(f"{source}: empty file")
    with image_errors(source), Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS) as opened:
        width, height = opened.size
    return int(width), int(height)


def decode_image(data: bytes, source: str, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
    """Decode PNG/JPEG/BMP/GIF (first frame)/WebP/TIFF bytes to (H, W, 3) uint8 RGB.

    EXIF orientation is applied. Raises `ImageTooLargeError` before decoding more than
    `max_pixels` pixels, and `ImageError` naming `source` for anything else that keeps the
    bytes from becoming an image; no other exception comes out (but `MemoryError`).
    """
    if not data:
        raise ImageError(f"{source}: empty file")
    with image_errors(source):
        opened = Image.open(io.BytesIO(data), formats=_PILLOW_FORMATS)
        _check_pixels(source, *opened.size, max_pixels)
        opened.seek(0)  # first frame of an animation
        opened.load()
        # A damaged header can make the loaded frame differ from the announced size.
        _check_pixels(source, *opened.size, max_pixels)
        rgb = _to_rgb(ImageOps.exif_transpose(opened))
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] * rgb.shape[1] == 0:
        raise ImageError(f"{source}: decoded to shape {rgb.shape}, not an (H, W, 3) image")
    return rgb


def array_to_rgb(
    image: np.ndarray, source: str, *, max_pixels: int = DEFAULT_MAX_PIXELS
) -> np.ndarray:
    """A decoded uint8 array (H, W), (H, W, 1|3|4) → (H, W, 3) RGB; alpha dropped."""
    if image.dtype != np.uint8:
        raise ImageError(f"{source}: array dtype {image.dtype}, expected uint8")
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3, 4):
        raise ImageError(f"{source}: array shape {image.shape}, expected (H, W, 1|3|4)")
    _check_pixels(source, image.shape[1], image.shape[0], max_pixels)
    if image.shape[2] == 1:
        return np.repeat(image, 3, axis=2)
    return np.ascontiguousarray(image[:, :, :3])
