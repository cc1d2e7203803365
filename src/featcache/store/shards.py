"""Vector shards: 2-D ``.npy`` files under ``STORE/shards/``, written atomically, memory-mapped.

A shard is written through `featcache._io.atomic_write` (unique temporary name, fsync,
rename, folder fsync) and hashed while it is written; only then does the caller register it
in the catalog with its SHA-256 and size. A crash leaves at worst a temporary file or an
unregistered shard, both of which `FeatureStore.gc` removes. Everything outside the store
(the Ray workers included) writes shards through `ShardFiles.in_store(...).write(...)`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import json
import os
import stat
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from featcache._io import (
    TMP_PREFIX,
    atomic_write,
    atomic_write_bytes,
    describe_failure,
    file_sha256,
    move_file,
)
from featcache.errors import StoreError, UnsafePathError
from featcache.store.commands import store_command
from featcache.store.paths import contained, featcache_made, open_regular
from featcache.store.records import ShardInfo, ShardRecord

__all__ = [
    "NPY_HEADER_BYTES",
    "QUARANTINE_FOLDER",
    "SHARDS_FOLDER",
    "STORAGE_DTYPES",
    "TMP_PREFIX",
    "ShardCheck",
    "ShardFiles",
    "header_problem",
    "quarantine_note",
    "read_npy_header",
]

#: The dtypes a shard may hold (float16 halves the disk for pool5 and the conv cuts).
STORAGE_DTYPES = ("float32", "float16")

SHARDS_FOLDER = "shards"
#: Where damaged shards go instead of being deleted: ``STORE/quarantine/shards/NAME``, each
#: with ``NAME.json`` beside it (its catalog record and what was wrong).
QUARANTINE_FOLDER = "quarantine"


@dataclass(frozen=True)
class ShardCheck:
    """A shard file against its record: `problem` is None when it is intact.

    `sha256` is set when the file was hashed for this check (its mtime had changed), and
    `mtime_ns` is the file's current mtime, so the caller can remember both.
    """

    problem: str | None
    sha256: str | None = None
    size: int | None = None
    mtime_ns: int | None = None


class _HashingWriter:
    """A write-only file wrapper that hashes what goes through it (np.save writes here)."""

    def __init__(self, f: object) -> None:
        self._f = f
        self.digest = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.size += len(data)
        return self._f.write(data)  # type: ignore[attr-defined, no-any-return]


def past_end(where: str, rows: int, repair: str) -> str:
    """The message for a catalog row number past the end of its shard (`repair`: what to
    run, as `ShardFiles.repair_hint` says it)."""
    return f"{where}: a vector points past its {rows} rows; {repair}"


@dataclass(frozen=True)
class _Layout:
    """Where a shard's rows are in its file (from its ``.npy`` header)."""

    path: Path
    offset: int
    rows: int
    dim: int
    dtype: np.dtype


class ShardFiles:
    """The shard folder of one store: write, open, check and list shard files by name."""

    def __init__(self, root: Path) -> None:
        self.root = root
        # shards are never rewritten in place: a header read once stays true (a changed
        # file is a damaged shard, which the store's check finds and removes)
        self._layouts: dict[str, _Layout] = {}

    @classmethod
    def in_store(cls, store_dir: str | Path) -> ShardFiles:
        """The shard folder of the store in `store_dir` (for writers outside the store)."""
        return cls(Path(store_dir) / SHARDS_FOLDER)

    def path(self, name: str) -> Path:
        """The shard's path; `UnsafePathError` if `name` (from the catalog) would lead
        outside the shard folder."""
        return contained(self.root, name, "shard")

    def read_bytes(self, name: str) -> bytes:
        """A shard file's bytes (to copy it); `StoreError` naming it if it is unreadable."""
        try:
            return self.path(name).read_bytes()
        except OSError as exc:
            raise StoreError(f"{self.root / name}: shard unreadable ({exc})") from exc

    def put_bytes(self, name: str, payload: bytes) -> None:
        """Write a copied shard file under its own name, durably."""
        path = self.path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(path, payload)
        except OSError as exc:
            raise StoreError(describe_failure(path, "writing a shard", exc)) from exc

    def where(self, name: str) -> str:
        """Where the shard is, for messages (a path here, a URL for a bucket)."""
        return str(self.root / name)

    def stat(self, name: str) -> tuple[int, int]:
        """(size, mtime in ns) of a shard file; `StoreError` naming it if it is missing."""
        try:
            st = self.path(name).stat()
        except OSError as exc:
            raise StoreError(f"{self.root / name}: shard file is missing ({exc})") from exc
        return st.st_size, st.st_mtime_ns

    def write(
        self, fingerprint: str, layer: str, matrix: np.ndarray, *, prefix: str = ""
    ) -> ShardInfo:
        """Write `matrix` durably; return its name (relative to the root), SHA-256 and size.

        `prefix` starts the file name (a Ray run's identity, so that run can tell the shards
        its workers left behind from another run's). A full disk (or any other write error)
        raises `StoreError` and leaves no file.
        """
        folder = self.root / fingerprint[:16] / layer
        name = f"{prefix}{uuid.uuid4().hex}.npy"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with atomic_write(folder / name) as f:
                writer = _HashingWriter(f)
                np.save(writer, np.ascontiguousarray(matrix), allow_pickle=False)
        except OSError as exc:
            raise StoreError(describe_failure(folder / name, "writing a shard", exc)) from exc
        relative = f"{fingerprint[:16]}/{layer}/{name}"
        return ShardInfo(relative, writer.digest.hexdigest(), writer.size)

    def open(self, name: str) -> np.ndarray:
        """Memory-map a shard read-only; raise `StoreError` naming it if it is unreadable."""
        path = self.path(name)
        try:
            matrix: np.ndarray = np.load(path, mmap_mode="r", allow_pickle=False)
        except OSError as exc:
            raise self._unreadable(path, exc) from exc
        except ValueError as exc:
            raise self._unparseable(path, exc) from exc
        if matrix.ndim != 2:
            raise StoreError(f"{path}: shard has shape {matrix.shape}, expected 2-D")
        return matrix

    def _repair(self) -> str:
        fix = store_command("store verify", str(self.root.parent), "--repair")
        return f"run '{fix}', then extract again"

    def read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows of a shard read with positioned reads, no memory map and no descriptor kept
        (for a few rows, cheaper than mapping the file); `StoreError` naming it if it is
        unreadable or a row is past its end."""
        layout = self._layouts.get(name) or self._read_layout(name)
        if len(rows) and int(rows.max()) >= layout.rows:
            raise StoreError(past_end(str(layout.path), layout.rows, self._repair()))
        width = layout.dim * layout.dtype.itemsize
        out = np.empty((len(rows), layout.dim), dtype=layout.dtype)
        try:
            fd = os.open(layout.path, os.O_RDONLY)
        except OSError as exc:
            raise self._unreadable(layout.path, exc) from exc
        try:
            for i, row in enumerate(rows.tolist()):
                data = os.pread(fd, width, layout.offset + row * width)
                if len(data) != width:
                    raise StoreError(
                        f"{layout.path}: registered shard is truncated; {self._repair()}"
                    )
                out[i] = np.frombuffer(data, dtype=layout.dtype)
        except OSError as exc:
            raise self._unreadable(layout.path, exc) from exc
        finally:
            os.close(fd)
        return out

    def _read_layout(self, name: str) -> _Layout:
        path = self.path(name)
        try:
            with open(path, "rb") as f:
                shape, fortran, dtype = read_npy_header(f)
                offset = f.tell()
        except OSError as exc:
            raise self._unreadable(path, exc) from exc
        except ValueError as exc:
            raise self._unparseable(path, exc) from exc
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise StoreError(f"{path}: shard has shape {shape}, expected 2-D")
        layout = _Layout(path, offset, int(shape[0]), int(shape[1]), dtype)
        self._layouts[name] = layout
        return layout

    def _unparseable(self, path: Path, exc: ValueError) -> StoreError:
        return StoreError(f"{path}: registered shard is unreadable ({exc}); {self._repair()}")

    def _unreadable(self, path: Path, exc: OSError) -> StoreError:
        if exc.errno in (errno.EMFILE, errno.ENFILE):  # the shard is fine: the process is not
            return StoreError(
                f"{path}: cannot open the shard: too many open files ({exc.strerror}); "
                "raise the limit (ulimit -n) or open the store with a smaller "
                "max_open_shards"
            )
        return StoreError(
            f"{path}: registered shard is missing or unreadable ({exc}); {self._repair()}"
        )

    def sha256(self, name: str) -> str:
        """The SHA-256 of a shard file; `StoreError` naming it if it cannot be read."""
        try:
            return file_sha256(self.path(name))
        except OSError as exc:
            raise StoreError(f"{self.path(name)}: shard unreadable ({exc})") from exc

    def check(self, record: ShardRecord, *, rehash: bool = False) -> ShardCheck:
        """Compare a shard file with its record: present, same size, same SHA-256.

        The file is hashed when `rehash` is set, when its mtime differs from the recorded
        one, or when no checksum is recorded; otherwise the size check is all it costs.
        """
        try:
            path = self.path(record.name)
        except UnsafePathError as exc:
            return ShardCheck(str(exc))
        try:
            st = path.stat()
        except OSError as exc:
            return ShardCheck(f"{path}: shard file is missing ({exc.strerror or exc})")
        if not stat.S_ISREG(st.st_mode):
            return ShardCheck(f"{path}: not a regular file (a device, FIFO or socket); refused")
        if record.bytes is not None and st.st_size != record.bytes:
            return ShardCheck(
                f"{path}: shard is {st.st_size} bytes, {record.bytes} were written (truncated "
                "or overwritten)",
                size=st.st_size,
                mtime_ns=st.st_mtime_ns,
            )
        problem = self._header_problem(path, record)
        if problem is not None:
            return ShardCheck(problem, size=st.st_size, mtime_ns=st.st_mtime_ns)
        if not rehash and record.sha256 is not None and st.st_mtime_ns == record.mtime_ns:
            return ShardCheck(None)
        try:
            digest = self.sha256(record.name)
        except StoreError as exc:
            return ShardCheck(str(exc))
        if record.sha256 is not None and digest != record.sha256:
            return ShardCheck(
                f"{path}: shard content changed (SHA-256 {digest[:16]}... is not the recorded "
                f"{record.sha256[:16]}...)",
                digest,
                st.st_size,
                st.st_mtime_ns,
            )
        return ShardCheck(None, digest, st.st_size, st.st_mtime_ns)

    def _header_problem(self, path: Path, record: ShardRecord) -> str | None:
        """What is wrong with the shard's .npy header against its record (`header_problem`),
        or None."""
        try:
            fd = open_regular(path)
            with os.fdopen(fd, "rb") as f:
                return header_problem(str(path), f, record)
        except OSError as exc:
            if exc.errno in (errno.EMFILE, errno.ENFILE):  # the process is short, not the file
                raise self._unreadable(path, exc) from exc
            return f"{path}: not a readable .npy shard ({exc})"
        except UnsafePathError as exc:  # a FIFO
            return f"{path}: not a readable .npy shard ({exc})"

    def removable(self, name: str) -> bool:
        """Whether `remove` deletes this file: one featcache wrote, inside the folder."""
        try:
            return featcache_made(self.path(name))
        except UnsafePathError:
            return False

    def remove(self, name: str) -> None:
        """Delete a shard file featcache wrote; a name leading outside the folder, a symlink
        or a file featcache would not have named is left alone."""
        self._layouts.pop(name, None)
        if not self.removable(name):
            return
        with contextlib.suppress(OSError):  # a read-only folder: verify and gc report it
            self.path(name).unlink(missing_ok=True)

    def quarantine(self, record: ShardRecord, problem: str) -> str | None:
        """Move the damaged shard `record` names to ``STORE/quarantine/shards/`` (its record
        and `problem` in a ``.json`` beside it) instead of deleting it: whatever it holds is
        kept for its owner to inspect. Return where it went, or None when it stays where it
        is (a file featcache would not have named, a symlink, or a name or quarantine folder
        leading outside the store); `StoreError` if it cannot be moved."""
        self._layouts.pop(record.name, None)
        if not self.removable(record.name):
            return None
        store_dir = self.root.parent
        relative = f"{QUARANTINE_FOLDER}/{SHARDS_FOLDER}/{record.name}"
        try:  # checked before the folders are made, and after: a planted symlink leads nowhere
            target = contained(store_dir, relative, "quarantine")
            target.parent.mkdir(parents=True, exist_ok=True)
            target = contained(store_dir, relative, "quarantine")
        except UnsafePathError:
            return None  # the file stays where it is, unregistered
        except OSError as exc:
            raise StoreError(describe_failure(target.parent, "quarantining a shard", exc)) from exc
        try:
            moved = move_file(self.path(record.name), target)
            atomic_write_bytes(
                moved.with_name(moved.name + ".json"), quarantine_note(record, problem)
            )
        except FileNotFoundError:
            return None  # nothing left to keep (a missing shard)
        except OSError as exc:
            raise StoreError(describe_failure(target, "quarantining a shard", exc)) from exc
        return str(moved)

    def quarantined(self) -> list[str]:
        """The shard files in ``STORE/quarantine/shards/`` (not their ``.json`` notes);
        symlinked folders are not entered."""
        folder = self.root.parent / QUARANTINE_FOLDER / SHARDS_FOLDER
        if not folder.is_dir() or folder.is_symlink() or folder.parent.is_symlink():
            return []
        found = []
        for here, dirs, files in os.walk(folder):  # never follows symlinked folders
            found += [str(Path(here) / f) for f in files if not f.endswith(".json")]
            dirs[:] = [d for d in dirs if not (Path(here) / d).is_symlink()]
        return sorted(found)

    def discard(self, name: str) -> None:
        """Delete the shard file `name` (or a temporary of one) that a writer of this store
        left unregistered; `StoreError` if it cannot be removed."""
        path = self.path(name)
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise StoreError(f"{path}: cannot remove ({exc})") from exc

    def names(self) -> Iterator[tuple[str, float]]:
        """Yield (relative name, mtime) of every ``.npy`` file under the shard root,
        temporaries too; symlinked folders are not entered, symlinks not listed."""
        if not self.root.is_dir() or self.root.is_symlink():
            return
        for folder, dirs, files in os.walk(self.root):  # never follows symlinked folders
            for file in files:
                path = Path(folder) / file
                if not file.endswith(".npy") or path.is_symlink():
                    continue
                try:
                    yield path.relative_to(self.root).as_posix(), path.lstat().st_mtime
                except FileNotFoundError:  # removed meanwhile (another process's rename or gc)
                    continue
            dirs[:] = [d for d in dirs if not (Path(folder) / d).is_symlink()]


def quarantine_note(record: ShardRecord, problem: str) -> bytes:
    """The ``.json`` kept beside a quarantined shard: its catalog record and the problem."""
    return json.dumps(
        {"record": dataclasses.asdict(record), "problem": problem, "moved": time.time()},
        indent=1,
        sort_keys=True,
    ).encode()


#: Bytes enough for any .npy header numpy reads (it refuses headers past 10,000 bytes).
NPY_HEADER_BYTES = 16384


def header_problem(where: str, f: BinaryIO, record: ShardRecord) -> str | None:
    """What is wrong with the .npy header at the start of `f` against the shard's catalog
    `record` (shape, C order, a little-endian float32/float16 dtype), or None. A crafted
    header could claim any shape or dtype (object arrays, strings, Fortran order, terabytes):
    the record decides what may be read, and the header must agree with it before a byte of
    data is mapped."""
    try:
        shape, fortran, dtype = read_npy_header(f)
    except ValueError as exc:  # numpy caps headers at 10 kB
        return f"{where}: not a readable .npy shard ({exc})"
    known = record.dtype in STORAGE_DTYPES
    if not known or dtype != np.dtype(record.dtype).newbyteorder("<") or dtype.hasobject:
        return (
            f"{where}: shard holds dtype {dtype.str}, its record says {record.dtype!r} "
            f"(allowed: {', '.join(STORAGE_DTYPES)})"
        )
    if fortran or shape != (record.rows, record.dim):
        return (
            f"{where}: shard header says shape {shape}{' in Fortran order' * fortran}, its "
            f"record says ({record.rows}, {record.dim}) in C order"
        )
    return None


def read_npy_header(f: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype[Any]]:
    """(shape, fortran order, dtype) of the .npy file `f` is at the start of; `f` is left at
    the first byte of the array. `ValueError` when it is not a .npy header."""
    major, _ = np.lib.format.read_magic(f)
    read_header = (
        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    )
    shape, fortran, dtype = read_header(f)
    return shape, fortran, dtype
