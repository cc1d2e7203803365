"""A store's files on object storage (``s3://``, and ``gs://``, ``az://`` where fsspec has
the filesystem): shards and heads as whole objects, read by range through a local cache.

fsspec is the one filesystem interface: ``pipe_file`` writes an object whole (one PUT; an
object store shows all of it or nothing, so no temporary name and rename are needed),
``cat_file(path, start, end)`` reads a byte range (one ranged GET), ``info`` and ``find``
stat and list. Reads go through `BlockCache`: fixed-size blocks of an object kept as local
files, the least recently used evicted past a byte budget. A lookup of one vector costs one
ranged GET of one block when cold and none when warm; a streamed epoch reads each shard's
blocks once when cold and only local files when warm (if the cache holds the dataset).

Shard and head names are uuid- or digest-named and never rewritten by featcache, so a block
cached under (object, size, mtime) stays valid; an object changed outside featcache has a new
mtime (its blocks are then fetched again, and the shard is re-hashed against its record).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from featcache._io import TMP_PREFIX, atomic_write_bytes
from featcache.errors import ConfigError, HeadError, StoreError, UnsafePathError
from featcache.store.commands import store_command
from featcache.store.heads import HEAD_SUFFIX, HEADS_FOLDER, MAX_HEAD_BYTES, HeadFiles
from featcache.store.paths import featcache_name, relative_name
from featcache.store.records import ShardInfo, ShardRecord
from featcache.store.shards import (
    NPY_HEADER_BYTES,
    QUARANTINE_FOLDER,
    SHARDS_FOLDER,
    ShardCheck,
    ShardFiles,
    header_problem,
    past_end,
    quarantine_note,
    read_npy_header,
)

__all__ = [
    "BLOCK_BYTES",
    "CACHE_BYTES_ENV",
    "CACHE_DIR_ENV",
    "BlockCache",
    "BucketFiles",
    "BucketHeadFiles",
    "BucketShardFiles",
    "RangeMatrix",
    "cache_folder",
    "is_url",
    "shard_files_at",
    "store_url",
]

BLOCK_BYTES = 1 << 20
CACHE_DIR_ENV = "FEATCACHE_CACHE"
CACHE_BYTES_ENV = "FEATCACHE_CACHE_BYTES"
_DEFAULT_CACHE_BYTES = 2 << 30


def store_url(location: object) -> str | None:
    """The URL of a store on object storage, or None for a local folder.

    ``scheme://...`` other than ``file://``; a `Path` made of a URL (the CLI's path options
    fold ``s3://b/p`` to ``s3:/b/p``) is a URL too when no such folder exists.
    """
    text = str(location)
    folded = re.match(r"^([a-z][a-z0-9]+):/([^/].*)$", text)
    if isinstance(location, Path) and folded and not location.exists():
        text = f"{folded.group(1)}://{folded.group(2)}"
    match = re.match(r"^([a-z][a-z0-9]+)://(.+)$", text)
    if match is None or match.group(1) == "file":
        return None
    return text.rstrip("/")


def is_url(location: object) -> bool:
    """True for a store on object storage (see `store_url`)."""
    return store_url(location) is not None


def cache_folder(url: str) -> Path:
    """The local folder for one bucket store (block cache, failures.csv, runtime models)."""
    base = os.environ.get(CACHE_DIR_ENV) or str(Path.home() / ".cache" / "featcache")
    return Path(base) / hashlib.sha256(url.encode()).hexdigest()[:16]


def shard_files_at(location: str) -> ShardFiles:
    """The shard files of the store at `location` (a folder's absolute path or a store URL),
    for a process that writes shards without the catalog (a Ray worker): a bucket store's
    shards are written straight to the bucket, a folder store's into its folder."""
    url = store_url(location)
    if url is None:
        return ShardFiles.in_store(location)
    return BucketShardFiles(BucketFiles(url), BlockCache(cache_folder(url) / "blocks"))


class BucketFiles:
    """One store's objects under `url`, through fsspec (``pip install 'featcache[s3]'``)."""

    def __init__(self, url: str) -> None:
        try:
            import fsspec
        except ImportError as exc:
            raise ConfigError(
                f"{url}: stores on object storage need fsspec and s3fs; pip install 'featcache[s3]'"
            ) from exc
        self.url = url.rstrip("/")
        self._lock = threading.Lock()
        self._etags: dict[str, str] = {}
        try:
            self.fs: Any
            self.fs, self.root = fsspec.core.url_to_fs(self.url)
        except (ImportError, ValueError) as exc:
            raise ConfigError(
                f"{url}: no filesystem for this URL ({exc}); for s3:// pip install 'featcache[s3]'"
            ) from exc

    def version(self, name: str) -> str:
        """The ETag `stat` last saw for `name` ("" if none): an object rewritten within the
        same second with the same size keeps its (size, mtime) but not its ETag."""
        with self._lock:
            return self._etags.get(name, "")

    def full(self, name: str) -> str:
        return f"{self.root}/{name}"

    def where(self, name: str) -> str:
        return f"{self.url}/{name}"

    def put(self, name: str, payload: bytes) -> None:
        try:
            self.fs.pipe_file(self.full(name), payload)
        except Exception as exc:  # botocore and aiohttp raise their own types
            raise StoreError(f"{self.where(name)}: writing the object failed ({exc})") from exc

    def read(self, name: str, start: int | None = None, end: int | None = None) -> bytes:
        """Bytes [start, end) of object `name`; `StoreError` naming it if it cannot be read
        (`FileNotFoundError` when there is no such object)."""
        try:
            return bytes(self.fs.cat_file(self.full(name), start=start, end=end))
        except FileNotFoundError:
            raise
        except Exception as exc:  # botocore and aiohttp raise their own types
            raise StoreError(f"{self.where(name)}: reading the object failed ({exc})") from exc

    def stat(self, name: str) -> tuple[int, int]:
        """(size, mtime in ns); `FileNotFoundError` when there is no such object. The
        object's ETag is remembered for `version`."""
        info = self.fs.info(self.full(name))
        with self._lock:
            self._etags[name] = str(info.get("ETag") or info.get("etag") or "")
        modified = info.get("LastModified") or info.get("mtime") or info.get("updated")
        stamp = modified.timestamp() if hasattr(modified, "timestamp") else float(modified or 0)
        return int(info["size"]), int(stamp * 1e9)

    def remove(self, name: str) -> None:
        try:
            self.fs.rm_file(self.full(name))
        except FileNotFoundError:
            pass
        except Exception as exc:
            raise StoreError(f"{self.where(name)}: cannot remove ({exc})") from exc

    def names(self, folder: str) -> Iterator[tuple[str, float]]:
        """(name relative to `folder`, mtime) of every object under it."""
        self.fs.invalidate_cache()
        try:
            found = self.fs.find(self.full(folder), detail=True)
        except FileNotFoundError:
            return
        prefix = self.full(folder) + "/"
        for path, info in found.items():
            modified = info.get("LastModified") or info.get("mtime")
            stamp = modified.timestamp() if hasattr(modified, "timestamp") else 0.0
            yield path[len(prefix) :], float(stamp)


class BlockCache:
    """Fixed-size blocks of objects as local files, least recently used evicted past
    `max_bytes`. Safe for several threads and processes sharing the folder (files are
    written atomically; a block evicted by another process is fetched again)."""

    def __init__(self, folder: Path, *, block: int = BLOCK_BYTES, max_bytes: int | None = None):
        if max_bytes is None:
            max_bytes = int(os.environ.get(CACHE_BYTES_ENV) or _DEFAULT_CACHE_BYTES)
        if block <= 0 or max_bytes < block:
            raise ConfigError(f"The cache needs max_bytes >= block > 0. Got {max_bytes}, {block}.")
        self.folder, self.block, self.max_bytes = folder, block, max_bytes
        self.fetches = 0  # ranged GETs made (the benchmarks and tests count them)
        self._lock = threading.Lock()
        self._bytes: int | None = None

    def read(
        self, files: BucketFiles, name: str, stamp: tuple[int, int], start: int, end: int
    ) -> bytes:
        """Bytes [start, end) of object `name`, whose (size, mtime) is `stamp`."""
        size = stamp[0]
        end = min(end, size)
        if start >= end:
            return b""
        # the ETag too: LastModified has whole seconds, and a rewrite within one second
        # with the same size would otherwise be served from the old object's blocks
        version = files.version(name)
        tag = hashlib.sha256(f"{name}|{stamp[0]}|{stamp[1]}|{version}".encode()).hexdigest()[:32]
        parts = []
        for index in range(start // self.block, (end - 1) // self.block + 1):
            data = self._block(files, name, tag, index, size)
            lo = max(start - index * self.block, 0)
            hi = min(end - index * self.block, len(data))
            parts.append(data[lo:hi])
        return b"".join(parts)

    def _block(self, files: BucketFiles, name: str, tag: str, index: int, size: int) -> bytes:
        path = self.folder / tag[:2] / f"{tag}-{index}"
        try:
            data = path.read_bytes()
            os.utime(path)  # recently used
            return data
        except FileNotFoundError:
            pass
        lo = index * self.block
        data = files.read(name, lo, min(lo + self.block, size))
        self.fetches += 1
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, data)
        self._added(len(data))
        return data

    def _added(self, count: int) -> None:
        with self._lock:
            if self._bytes is None:
                self._bytes = sum(p.stat().st_size for p in self._files())
            else:
                self._bytes += count
            if self._bytes <= self.max_bytes:
                return
            entries = []
            for p in self._files():
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                entries.append((st.st_mtime, st.st_size, p))
            entries.sort()
            total = sum(e[1] for e in entries)
            for _, bytes_, p in entries:
                if total <= self.max_bytes * 3 // 4:  # evict in bulk, not block by block
                    break
                p.unlink(missing_ok=True)
                total -= bytes_
            self._bytes = total

    def _files(self) -> Iterator[Path]:
        if self.folder.is_dir():
            for p in self.folder.rglob("*"):
                if p.is_file() and not p.name.startswith(TMP_PREFIX):
                    yield p


class RangeMatrix:
    """A 2-D ``.npy`` object read lazily by rows through a `BlockCache` (``shape``,
    ``dtype``, ``matrix[rows]``, ``matrix[a:b]``, ``np.asarray(matrix)``)."""

    def __init__(
        self, files: BucketFiles, cache: BlockCache, name: str, stamp: tuple[int, int]
    ) -> None:
        self._files, self._cache, self._name, self._stamp = files, cache, name, stamp
        head = cache.read(files, name, stamp, 0, min(stamp[0], 4096))
        stream = io.BytesIO(head)
        try:
            shape, fortran, dtype = read_npy_header(stream)
        except ValueError as exc:
            raise StoreError(f"{files.where(name)}: not a .npy shard ({exc})") from exc
        if len(shape) != 2 or fortran or dtype.hasobject:
            raise StoreError(f"{files.where(name)}: shard has shape {shape}, expected 2-D")
        self.offset = stream.tell()
        self.shape: tuple[int, int] = (int(shape[0]), int(shape[1]))
        self.dtype = dtype
        self.ndim = 2
        if self.offset + self.shape[0] * self._row_bytes > stamp[0]:
            raise StoreError(f"{files.where(name)}: shard is truncated")

    @property
    def _row_bytes(self) -> int:
        return int(self.shape[1] * self.dtype.itemsize)

    def _rows(self, lo: int, hi: int) -> np.ndarray:
        data = self._cache.read(
            self._files,
            self._name,
            self._stamp,
            self.offset + lo * self._row_bytes,
            self.offset + hi * self._row_bytes,
        )
        return np.frombuffer(data, dtype=self.dtype).reshape(hi - lo, self.shape[1])

    def __getitem__(self, index: Any) -> np.ndarray:
        if isinstance(index, slice):
            lo, hi, step = index.indices(self.shape[0])
            return self._rows(lo, max(hi, lo))[::step]
        rows = np.asarray(index, dtype=np.intp).reshape(-1)
        if rows.size == 0:
            return np.empty((0, self.shape[1]), dtype=self.dtype)
        lo, hi = int(rows.min()), int(rows.max()) + 1
        return self._rows(lo, hi)[rows - lo]

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        whole = self._rows(0, self.shape[0])
        return whole if dtype is None else whole.astype(dtype)


class BucketShardFiles(ShardFiles):
    """`ShardFiles` whose shards are objects under ``URL/shards/``."""

    def __init__(self, files: BucketFiles, cache: BlockCache) -> None:
        super().__init__(Path(SHARDS_FOLDER))
        self.files, self.cache = files, cache

    def _key(self, name: str) -> str:
        """The object key of shard `name`; `UnsafePathError` if the name (from the catalog)
        would lead outside ``URL/shards/`` (see `relative_name`)."""
        relative_name(name, "shard", root=self.files.where(SHARDS_FOLDER))
        return f"{SHARDS_FOLDER}/{name}"

    def path(self, name: str) -> Path:
        raise StoreError(f"{self.where(name)}: a bucket object has no path")

    def where(self, name: str) -> str:
        # for messages: a crafted name is shown as it is, never used
        return self.files.where(f"{SHARDS_FOLDER}/{name}")

    def write(
        self, fingerprint: str, layer: str, matrix: np.ndarray, *, prefix: str = ""
    ) -> ShardInfo:
        name = f"{fingerprint[:16]}/{layer}/{prefix}{uuid.uuid4().hex}.npy"
        buffer = io.BytesIO()
        np.save(buffer, np.ascontiguousarray(matrix), allow_pickle=False)
        payload = buffer.getvalue()
        self.files.put(self._key(name), payload)
        return ShardInfo(name, hashlib.sha256(payload).hexdigest(), len(payload))

    def read_bytes(self, name: str) -> bytes:
        try:
            return self.files.read(self._key(name))
        except Exception as exc:
            raise StoreError(f"{self.where(name)}: shard unreadable ({exc})") from exc

    def put_bytes(self, name: str, payload: bytes) -> None:
        self.files.put(self._key(name), payload)

    def stat(self, name: str) -> tuple[int, int]:
        try:
            return self.files.stat(self._key(name))
        except FileNotFoundError as exc:
            raise StoreError(f"{self.where(name)}: shard object is missing") from exc

    def open(self, name: str) -> np.ndarray:
        return RangeMatrix(self.files, self.cache, self._key(name), self.stat(name))  # type: ignore[return-value]

    def _repair(self) -> str:
        fix = store_command("store verify", self.files.url, "--repair")
        return f"run '{fix}', then extract again"

    def read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        matrix = self.open(name)
        if len(rows) and int(rows.max()) >= matrix.shape[0]:
            raise StoreError(past_end(self.where(name), matrix.shape[0], self._repair()))
        return np.asarray(matrix[rows])

    def sha256(self, name: str) -> str:
        digest = hashlib.sha256()
        size = self.stat(name)[0]
        for lo in range(0, size, 8 * BLOCK_BYTES):  # streamed, not through the cache
            digest.update(self.files.read(self._key(name), lo, min(lo + 8 * BLOCK_BYTES, size)))
        return digest.hexdigest()

    def check(self, record: ShardRecord, *, rehash: bool = False) -> ShardCheck:
        where = self.where(record.name)
        try:
            size, mtime_ns = self.stat(record.name)
        except StoreError as exc:  # UnsafePathError too
            return ShardCheck(str(exc))
        if record.bytes is not None and size != record.bytes:
            return ShardCheck(
                f"{where}: shard is {size} bytes, {record.bytes} were written "
                "(truncated or overwritten)",
                size=size,
                mtime_ns=mtime_ns,
            )
        try:  # the header must agree with the record before rows are read (as on disk)
            head = self.cache.read(
                self.files, self._key(record.name), (size, mtime_ns), 0, NPY_HEADER_BYTES
            )
        except (OSError, StoreError) as exc:
            return ShardCheck(f"{where}: shard unreadable ({exc})")
        problem = header_problem(where, io.BytesIO(head), record)
        if problem is not None:
            return ShardCheck(problem, size=size, mtime_ns=mtime_ns)
        if not rehash and record.sha256 is not None and mtime_ns == record.mtime_ns:
            return ShardCheck(None)
        try:
            digest = self.sha256(record.name)
        except (OSError, StoreError) as exc:
            return ShardCheck(f"{where}: shard unreadable ({exc})")
        if record.sha256 is not None and digest != record.sha256:
            return ShardCheck(
                f"{where}: shard content changed (SHA-256 {digest[:16]}... is not the recorded "
                f"{record.sha256[:16]}...)",
                digest,
                size,
                mtime_ns,
            )
        return ShardCheck(None, digest, size, mtime_ns)

    def removable(self, name: str) -> bool:
        """Whether `remove` deletes this object: named as featcache names its shards, inside
        ``URL/shards/`` (an object someone else put there is left alone)."""
        try:
            self._key(name)
        except UnsafePathError:
            return False
        return featcache_name(name)

    def remove(self, name: str) -> None:
        if self.removable(name):
            self.files.remove(self._key(name))

    def quarantine(self, record: ShardRecord, problem: str) -> str | None:
        """Move the damaged shard object to ``URL/quarantine/shards/NAME`` (a copy, then the
        delete), its record and `problem` in ``NAME.json`` beside it; None when it stays (a
        name featcache would not have written, or one leading outside the store)."""
        if not self.removable(record.name):
            return None
        key = self._key(record.name)
        target = f"{QUARANTINE_FOLDER}/{key}"
        try:
            self.files.fs.copy(self.files.full(key), self.files.full(target))
        except FileNotFoundError:
            return None
        except Exception as exc:
            raise StoreError(f"{self.where(record.name)}: quarantining failed ({exc})") from exc
        self.files.put(f"{target}.json", quarantine_note(record, problem))
        self.files.remove(key)
        return self.files.where(target)

    def quarantined(self) -> list[str]:
        folder = f"{QUARANTINE_FOLDER}/{SHARDS_FOLDER}"
        return sorted(
            self.files.where(f"{folder}/{name}")
            for name, _ in self.files.names(folder)
            if not name.endswith(".json")
        )

    def discard(self, name: str) -> None:
        self.files.remove(self._key(name))

    def names(self) -> Iterator[tuple[str, float]]:
        for name, mtime in self.files.names(SHARDS_FOLDER):
            if name.endswith(".npy"):
                yield name, mtime


class BucketHeadFiles(HeadFiles):
    """`HeadFiles` whose files are objects under ``URL/heads/``."""

    def __init__(self, files: BucketFiles) -> None:
        super().__init__(Path("."))
        self.files = files

    def _check(self, file: str) -> str:
        prefix = f"{HEADS_FOLDER}/"
        try:
            if not isinstance(file, str) or not file.startswith(prefix):
                raise UnsafePathError(f"head file {file!r}: not under {HEADS_FOLDER}/")
            relative_name(
                file[len(prefix) :], "head file", root=self.files.where(HEADS_FOLDER), given=file
            )
        except UnsafePathError as exc:
            raise HeadError(f"{exc}; refused") from None
        return file

    def write(self, name: str, payload: bytes) -> tuple[str, str]:
        digest = hashlib.sha256(payload).hexdigest()
        file = f"{HEADS_FOLDER}/{name}/{digest[:16]}{HEAD_SUFFIX}"
        self.files.put(file, payload)
        return file, digest

    def _fetch(self, file: str, label: str) -> tuple[str, bytes]:
        where = self.files.where(self._check(file))
        try:
            size = self.files.stat(file)[0]
            if size > MAX_HEAD_BYTES:  # refused from its size: never downloaded
                raise HeadError(
                    f"{where}: head file of {size} bytes, past the {MAX_HEAD_BYTES} bytes a "
                    "head may have; not read (crafted or damaged)"
                )
            payload = self.files.read(file, 0, MAX_HEAD_BYTES + 1)
        except HeadError:
            raise
        except Exception as exc:
            raise HeadError(f"{where}: head file unreadable ({exc})") from exc
        if len(payload) > MAX_HEAD_BYTES:  # grew since its size was read
            raise HeadError(f"{where}: head file past {MAX_HEAD_BYTES} bytes; not read")
        return where, payload

    def delete(self, file: str) -> None:
        """Delete a head object featcache wrote; a name leading outside ``URL/heads/`` or
        one featcache would not have named is left alone."""
        try:
            key = self._check(file)
        except HeadError:
            return
        if featcache_name(key):
            self.files.remove(key)
