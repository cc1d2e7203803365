"""Rows computed once and read many times, in bounded memory: `ComputedRows`.

The fine-tune's linear probe fits a `SoftmaxHead` on the frozen fc7 of every training row,
which the layers above the cut compute once (16 KB a row: 16 GB at a million rows). Up to
`max_memory_bytes` the rows stay in one array; past it they are appended to a raw float32
file in a temporary folder and read back a mini-batch at a time (the pages of each read are
dropped from this process after the copy), so memory stays bounded by a batch. The file is
deleted when the `with` block ends.
"""

from __future__ import annotations

import mmap
import shutil
import tempfile
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import numpy as np

__all__ = ["SPILL_BYTES", "ComputedRows"]

#: Computed rows kept in memory up to this many bytes; more go to a temporary file.
SPILL_BYTES = 256 * 2**20


class ComputedRows:
    """A (n_rows, width) float32 matrix written in order by `append`, then read as a row
    source (``shape``, ``read_rows``: what `SoftmaxHead.fit` streams from).

    `width` is taken from the first block appended. `folder` is where a spilled file goes
    (the system's temporary folder by default: TMPDIR).
    """

    def __init__(
        self,
        n_rows: int,
        *,
        max_memory_bytes: int = SPILL_BYTES,
        folder: str | Path | None = None,
    ) -> None:
        if n_rows < 1:
            raise ValueError(f"The 'n_rows' must be at least 1. Got {n_rows}.")
        self.n_rows = n_rows
        self.max_memory_bytes = max_memory_bytes
        self.folder = folder
        self.width = 0
        self.filled = 0
        self._array: np.ndarray | None = None
        self._tmpdir: Path | None = None
        self._path = Path()
        self._file: BinaryIO | None = None
        self._map: np.memmap | None = None

    @property
    def spilled(self) -> bool:
        """True when the rows live in a temporary file rather than in memory."""
        return self._tmpdir is not None

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.width)

    def __enter__(self) -> ComputedRows:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Release the rows (and delete the spilled file)."""
        if self._file is not None:
            self._file.close()
            self._file = None
        self._map = None
        self._array = None
        if self._tmpdir is not None:
            shutil.rmtree(self._tmpdir, ignore_errors=True)
            self._tmpdir = None

    def append(self, block: np.ndarray) -> None:
        """Write the next rows (a (k, width) array); the first block fixes the width."""
        block = np.ascontiguousarray(block, dtype=np.float32)
        if block.ndim != 2 or (self.width and block.shape[1] != self.width):
            raise ValueError(f"block of shape {block.shape}; expected (k, {self.width or 'w'})")
        if self.filled + len(block) > self.n_rows:
            raise ValueError(f"{self.filled + len(block)} rows appended to {self.n_rows}")
        if not self.width:
            self.width = int(block.shape[1])
            if self.n_rows * self.width * 4 <= self.max_memory_bytes:
                self._array = np.empty((self.n_rows, self.width), np.float32)
            else:
                self._tmpdir = Path(tempfile.mkdtemp(prefix="featcache-rows-", dir=self.folder))
                self._path = self._tmpdir / "rows.f32"
                self._file = open(self._path, "wb")  # noqa: SIM115 (closed in close)
        if self._array is not None:
            self._array[self.filled : self.filled + len(block)] = block
        elif self._file is not None:
            self._file.write(block.tobytes())
        self.filled += len(block)

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        """The rows `rows` as a (len(rows), width) float32 array (a copy)."""
        if self.filled != self.n_rows:
            raise ValueError(f"only {self.filled} of {self.n_rows} rows were appended")
        rows = np.asarray(rows, dtype=np.intp)
        if self._array is not None:
            picked: np.ndarray = self._array[rows]
            return picked
        if self._map is None:
            if self._file is not None:
                self._file.close()
                self._file = None
            self._map = np.memmap(self._path, np.float32, "r", shape=(self.n_rows, self.width))
        out = np.array(self._map[rows])
        mapping = getattr(self._map, "_mmap", None)
        if mapping is not None and hasattr(mmap, "MADV_DONTNEED"):
            mapping.madvise(mmap.MADV_DONTNEED)  # mapped pages count in RSS; the copy is out
        return out
