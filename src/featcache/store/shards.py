"""Vector shards: 2-D ``.npy`` files under ``STORE/shards/``, written atomically, memory-mapped.

A shard is written to a temporary name in its final folder, flushed, fsynced, renamed, and
the folder fsynced; only then does the caller register it in the catalog. A crash leaves at
worst a temporary file or an unregistered shard, both of which `FeatureStore.gc` removes.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from featcache.errors import StoreError

__all__ = ["ShardFiles"]

TMP_PREFIX = ".tmp-"


class ShardFiles:
    """The shard folder of one store: write, open and list shard files by relative name."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, name: str) -> Path:
        return self.root / name

    def write(self, fingerprint: str, layer: str, matrix: np.ndarray) -> str:
        """Write `matrix` durably; return its name relative to the shard root."""
        folder = self.root / fingerprint[:16] / layer
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{uuid.uuid4().hex}.npy"
        tmp = folder / f"{TMP_PREFIX}{name}"
        try:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(matrix), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, folder / name)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"{folder / name}: cannot write shard ({exc})") from exc
        _fsync_dir(folder)
        return f"{fingerprint[:16]}/{layer}/{name}"

    def open(self, name: str) -> np.ndarray:
        """Memory-map a shard read-only; raise `StoreError` naming it if it is unreadable."""
        path = self.path(name)
        try:
            matrix: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"{path}: registered shard is missing or unreadable ({exc}); "
                "run 'featcache store verify' and re-extract"
            ) from exc
        if matrix.ndim != 2:
            raise StoreError(f"{path}: shard has shape {matrix.shape}, expected 2-D")
        return matrix

    def remove(self, name: str) -> None:
        self.path(name).unlink(missing_ok=True)

    def names(self) -> Iterator[tuple[str, float]]:
        """Yield (relative name, mtime) of every file under the shard root, temporaries too."""
        if not self.root.exists():
            return
        for path in self.root.rglob("*.npy"):
            yield path.relative_to(self.root).as_posix(), path.stat().st_mtime


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
