"""What every reader yields: `ImageItem` rows and an `ImageSource` with the class names."""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featcache.data.decode import DEFAULT_MAX_PIXELS, array_to_rgb, decode_image
from featcache.errors import ImageError, ImageTooLargeError

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "IMAGE_SUFFIXES",
    "ImageItem",
    "ImageSource",
    "array_key",
    "bytes_key",
    "read_bounded",
]

#: Largest input file read (``--max-file-mb``): generous for any photograph, and a bound
#: on what one file (a 4 GB sparse file, /dev/zero) can cost.
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024
_CHUNK = 1 << 20

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"})


def bytes_key(data: bytes) -> str:
    """The image key of a file: SHA-256 of its bytes, so renamed or copied files share it."""
    return hashlib.sha256(data).hexdigest()


def array_key(image: np.ndarray) -> str:
    """The image key of a decoded array: SHA-256 of its shape, dtype and bytes."""
    digest = hashlib.sha256(f"featcache-array:{image.shape}:{image.dtype.str}\n".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def read_bounded(
    path: Path, label: str, max_bytes: int, digest: hashlib._Hash | None = None
) -> bytes:
    """The bytes of a regular file of at most `max_bytes`, or only its SHA-256 into
    `digest` (then b"" is returned, so hashing holds one chunk at a time).

    A device, FIFO or socket is refused without blocking (opened O_NONBLOCK, then fstat);
    a file over the limit is `ImageTooLargeError` before any byte is read, and one that
    grows past it while being read is refused too. Errors name `label`.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    except OSError as exc:
        raise ImageError(f"{label}: cannot read ({exc.strerror or exc})") from exc
    with open(fd, "rb", buffering=0) as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ImageError(
                f"{label}: not a regular file (a device, FIFO or socket); only image files are read"
            )
        if st.st_size > max_bytes:
            raise ImageTooLargeError(
                f"{label}: {st.st_size} bytes, over the {max_bytes}-byte limit "
                "(--max-file-mb raises it)"
            )
        os.set_blocking(fd, True)
        parts, total = [], 0
        try:
            while chunk := f.read(_CHUNK):
                total += len(chunk)
                if total > max_bytes:
                    raise ImageTooLargeError(
                        f"{label}: grew past the {max_bytes}-byte limit while being read"
                    )
                if digest is None:
                    parts.append(chunk)
                else:
                    digest.update(chunk)
        except OSError as exc:
            raise ImageError(f"{label}: cannot read ({exc.strerror or exc})") from exc
    return b"".join(parts)


@dataclass(frozen=True)
class ImageItem:
    """One image to extract: a file, bytes already in memory (an upload), or an array row.

    A file is read only if it is a regular file of at most `max_bytes` (`read_bounded`).
    """

    path: str
    label: int | None = None
    split: str | None = None
    file: Path | None = None
    array: np.ndarray | None = field(default=None, repr=False, compare=False)
    data: bytes | None = field(default=None, repr=False, compare=False)
    max_bytes: int = DEFAULT_MAX_FILE_BYTES

    def key(self) -> str:
        """Hash the content (streams the file, one chunk in memory at a time)."""
        if self.array is not None:
            return array_key(self.array)
        if self.data is None and self.file is not None:
            digest = hashlib.sha256()
            read_bounded(self.file, self.path, self.max_bytes, digest)
            return digest.hexdigest()
        return bytes_key(self._read())

    def _read(self) -> bytes:
        if self.data is not None:
            return self.data
        if self.file is None:
            raise ImageError(f"{self.path}: item has no file, bytes or array")
        return read_bounded(self.file, self.path, self.max_bytes)

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
