"""What every reader yields: `ImageItem` rows and an `ImageSource` with the class names."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache.data.decode import DEFAULT_MAX_PIXELS, array_to_rgb, decode_image
from featcache.errors import ImageError

__all__ = ["IMAGE_SUFFIXES", "ImageItem", "ImageSource", "array_key", "bytes_key"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def bytes_key(data: bytes) -> str:
    """The image key of a file: SHA-256 of its bytes, so renamed or copied files share it."""
    return hashlib.sha256(data).hexdigest()


def array_key(image: np.ndarray) -> str:
    """The image key of a decoded array: SHA-256 of its shape, dtype and bytes."""
    digest = hashlib.sha256(f"featcache-array:{image.shape}:{image.dtype.str}\n".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class ImageItem:
    """One image to extract: a file, bytes already in memory (an upload), or an array row."""

    path: str
    label: int | None = None
    split: str | None = None
    file: Path | None = None
    array: np.ndarray | None = field(default=None, repr=False, compare=False)
    data: bytes | None = field(default=None, repr=False, compare=False)

    def key(self) -> str:
        """Hash the content (reads the file)."""
        if self.array is not None:
            return array_key(self.array)
        return bytes_key(self._read())

    def _read(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.file is None:
            raise ImageError(f"{self.path}: item has no file, bytes or array")
        try:
            return self.file.read_bytes()
        except OSError as exc:
            raise ImageError(f"{self.path}: cannot read ({exc.strerror or exc})") from exc

    def rgb(self, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> np.ndarray:
        """Decode to (H, W, 3) uint8 RGB; raise `ImageError` naming the path."""
        if self.array is None:
            return decode_image(self._read(), self.path, max_pixels=max_pixels)
        return array_to_rgb(self.array, self.path, max_pixels=max_pixels)


@dataclass(frozen=True)
class ImageSource:
    """A readable dataset: its items in a stable order and the class names (id = index)."""

    items: list[ImageItem]
    class_names: list[str]
    description: str
