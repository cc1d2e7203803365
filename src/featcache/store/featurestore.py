"""`FeatureStore`: vectors keyed by (image key, extractor fingerprint, layer), datasets, heads.

One directory::

    STORE/catalog.sqlite        the catalog (WAL mode)
    STORE/shards/FP/LAYER/*.npy vector shards, memory-mapped for reading, SHA-256 recorded
    STORE/heads/NAME/*.safetensors  saved heads (arrays + JSON from featcache.classifier.persist)
    STORE/failures.csv          every image that could not be extracted, with the reason
    STORE/runtimes/FP/NAME/     models converted for another runtime (OpenVINO), with digests

The store knows nothing of TensorFlow or of the heads' format: it keeps arrays and bytes.
A store the user may only read is opened read-only and answers every read.
"""

from __future__ import annotations

import csv
import io
import mmap
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from featcache._io import atomic_write_bytes
from featcache._text import csv_cell
from featcache.errors import ConfigError, HeadError, NotFoundError, StoreError
from featcache.store import maintenance
from featcache.store.audit import audit_catalog
from featcache.store.bucket import (
    BlockCache,
    BucketFiles,
    BucketHeadFiles,
    BucketShardFiles,
    cache_folder,
    is_url,
    store_url,
)
from featcache.store.catalog import Catalog
from featcache.store.commands import extract_command, shell_word, source_path, store_command
from featcache.store.heads import HEADS_FOLDER, HeadFiles
from featcache.store.location import server_catalog
from featcache.store.names import (
    HeadSpec,
    normalize_split,
    validate_dataset_name,
    validate_head_name,
)
from featcache.store.records import (
    DatasetChange,
    DatasetInfo,
    DatasetRow,
    FileStamp,
    GcReport,
    HeadRecord,
    LabelledVectors,
    ShardRecord,
    VerifyReport,
)
from featcache.store.runtime_files import RuntimeFiles
from featcache.store.shards import SHARDS_FOLDER, STORAGE_DTYPES, TMP_PREFIX, ShardFiles, past_end
from featcache.store.streaming import (
    DEFAULT_BATCH_ROWS,
    LazyVectors,
    Locations,
    StoredRows,
    VectorBatch,
    columns_index,
    index_rows,
)

# The records are defined in featcache.store.records; re-exported here for older imports.
__all__ = [
    "CATALOG_FILE",
    "MAX_OPEN_SHARDS",
    "VECTORS_MAX_BYTES",
    "DatasetChange",
    "DatasetInfo",
    "DatasetRow",
    "FeatureStore",
    "GcReport",
    "HeadRecord",
    "LabelledVectors",
    "VerifyReport",
]

CATALOG_FILE = "catalog.sqlite"
#: Shards kept memory-mapped at once by default: far under the common 1,024 open files.
MAX_OPEN_SHARDS = 64
#: At most this many rows of a shard that is not mapped are read without mapping it.
FEW_ROWS = 16
#: The most `FeatureStore.vectors` reads into memory by default (2 GiB of float32).
VECTORS_MAX_BYTES = 2 * 2**30


class FeatureStore:
    """A feature store in directory `path` (created if missing, unless ``create=False``).

    `read_only`: None (default) opens read-only exactly when the user may not write the
    store; True never writes (nothing is created or migrated); False requires write access.

    `catalog`: a ``postgresql://`` URL puts the catalog on that server instead of
    ``catalog.sqlite`` in the folder (default: the ``FEATCACHE_CATALOG`` environment variable,
    else SQLite). One catalog belongs to one store: it records the store it was made for.

    `max_open_shards`: shard files kept memory-mapped at once (an LRU; default
    `MAX_OPEN_SHARDS`), so reading any number of shards needs that many open files at most.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        create: bool = True,
        read_only: bool | None = None,
        catalog: str | None = None,
        max_open_shards: int = MAX_OPEN_SHARDS,
    ) -> None:
        if (
            isinstance(max_open_shards, bool)
            or not isinstance(max_open_shards, int)
            or max_open_shards < 1
        ):
            raise ConfigError(
                f"The 'max_open_shards' must be an integer >= 1. Got {max_open_shards!r}."
            )
        #: Where the store is: its folder, or its URL on object storage.
        self.location = store_url(path) or str(Path(path))
        server = server_catalog(catalog)
        if is_url(path):
            # Objects on a bucket; this host keeps a block cache and its converted runtime
            # models in a local folder (`path`).
            files = BucketFiles(self.location)
            self.path = cache_folder(self.location)
            self.path.mkdir(parents=True, exist_ok=True)
            self._shards: ShardFiles = BucketShardFiles(files, BlockCache(self.path / "blocks"))
            self._heads: HeadFiles = BucketHeadFiles(files)
        else:
            self.path = Path(path)
            self._shards = ShardFiles(self.path / SHARDS_FOLDER)
            self._heads = HeadFiles(self.path)
        self._runtimes = RuntimeFiles.in_store(self.path)
        if is_url(path):
            if server is None:
                raise ConfigError(
                    f"{self.location}: a store on object storage keeps its catalog on a "
                    "server; give --catalog postgresql://... (or FEATCACHE_CATALOG)"
                )
            self._catalog = Catalog(
                server, read_only=bool(read_only), create=create, store=self.location
            )
        elif server is not None:
            self._catalog = self._open_server_catalog(server, create=create, read_only=read_only)
        else:
            self._catalog = self._open_local_catalog(create=create, read_only=read_only)
        #: Shards kept memory-mapped at once (each holds a file descriptor and a mapping).
        self.max_open_shards = max_open_shards
        self._maps: OrderedDict[str, np.ndarray] = OrderedDict()
        self._maps_lock = threading.Lock()
        self._intact_ids: set[int] = set()  # shards checked by this instance
        self._intact_names: set[str] = set()
        self._check_lock = threading.Lock()
        #: Problems with shards this instance found (and, when writable, dropped) while
        #: looking keys up; their images are then computed again by the next extraction.
        self.repairs: list[str] = []
        if self._catalog.migrated_from is not None:
            self._record_missing_checksums()

    def _open_server_catalog(self, url: str, *, create: bool, read_only: bool | None) -> Catalog:
        """The catalog on a database server; the store's files stay under `path`."""
        if self.path.exists() and not self.path.is_dir():
            raise StoreError(f"{self.path}: exists and is not a directory")
        if create and not read_only:
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot create the store ({exc})") from exc
        if read_only is None:
            read_only = self.path.exists() and not os.access(self.path, os.W_OK)
        return Catalog(url, read_only=read_only, create=create, store=str(self.path.resolve()))

    def _open_local_catalog(self, *, create: bool, read_only: bool | None) -> Catalog:
        """The SQLite catalog in the store's folder (created with the folder if missing)."""
        catalog = self.path / CATALOG_FILE
        if catalog.exists() and catalog.stat().st_size == 0:
            self._refuse_empty_catalog(catalog)
        if not catalog.exists():
            if not create or read_only:
                raise NotFoundError(
                    f"{self.path}: no feature store here (no {CATALOG_FILE}); check the path, "
                    "or make one: "
                    f"featcache extract IMAGES --store {shell_word(str(self.path))} "
                    "--weights WEIGHTS"
                )
            if self.path.exists() and not self.path.is_dir():
                raise StoreError(f"{self.path}: exists and is not a directory")
            try:
                self.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot create the store ({exc})") from exc
        writable = os.access(self.path, os.W_OK) and _writable_or_new(catalog)
        if read_only is None:
            read_only = not writable
        elif not read_only and not writable:
            raise StoreError(
                f"{self.path}: the store is read-only for this user and this command writes "
                "to it; run it as a user who may write the store's folder"
            )
        return Catalog(catalog, read_only=read_only)

    def _refuse_empty_catalog(self, catalog: Path) -> None:
        # A zero-byte catalog beside shards or heads is a lost catalog, not a new store:
        # treating it as new would let gc delete every shard.
        if any(self._shards.names()) or (self.path / HEADS_FOLDER).exists():
            raise StoreError(
                f"{catalog}: the catalog is empty (0 bytes) but the store holds shard or head "
                "files; refusing to treat it as a new store. Restore catalog.sqlite from a "
                "backup, or move the folder aside and extract again"
            )

    def _record_missing_checksums(self) -> None:
        for record in self._catalog.shards():
            if record.sha256 is None:
                check = self._shards.check(record)
                if check.problem is None and check.sha256 is not None:
                    self._catalog.record_shard_file(
                        record.id, check.sha256, check.size or 0, check.mtime_ns or 0
                    )

    @property
    def read_only(self) -> bool:
        """True when the catalog was opened read-only (writes raise `StoreError`)."""
        return self._catalog.read_only

    def _require_writable(self, what: str) -> None:
        # files are written before the catalog would refuse: say why before either
        if self.read_only:
            raise StoreError(
                f"{self.path}: the store is read-only here, so {what} cannot be stored; run "
                "this as a user who may write the store's folder"
            )

    def close(self) -> None:
        with self._maps_lock:
            self._maps.clear()
        self._catalog.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeatureStore({self.location!r})"

    # -- extractors -------------------------------------------------------------------------

    def register_extractor(self, fingerprint: str, spec: Mapping[str, Any]) -> None:
        """Record what a fingerprint stands for (network, profile, weights, precision...)."""
        self._catalog.register_extractor(fingerprint, dict(spec))

    def extractors(self) -> dict[str, dict[str, Any]]:
        """Every registered fingerprint with its spec."""
        return self._catalog.extractors()

    def extractor_spec(self, fingerprint: str) -> dict[str, Any]:
        spec = self._catalog.extractors().get(fingerprint)
        if spec is None:
            raise NotFoundError(f"{self.path}: no extractor with fingerprint {fingerprint}")
        return spec

    def file_sha256(self, path: str | Path, compute: Callable[[Path], str]) -> str:
        """The SHA-256 of a file, remembered by its path and `FileStamp` (size, mtime, inode
        change time, inode) between runs.

        `compute` hashes the file when it is new or changed since it was last seen (a
        read-only store computes it without remembering).
        """
        path = Path(path).resolve()
        stamp = FileStamp.of(path.stat())
        known = self._catalog.file_digest(str(path), stamp)
        if known is not None:
            return known
        digest = compute(path)
        if not self.read_only:
            self._catalog.remember_file_digest(str(path), stamp, digest)
        return digest

    def known_file_digests(self, stamps: Mapping[str, FileStamp]) -> dict[str, str]:
        """{path: SHA-256} for the files whose `FileStamp` in `stamps` is the one recorded
        when they were last hashed (`remember_file_digests`): unchanged files whose bytes
        need not be read again (`featcache.extractor.keys`)."""
        return self._catalog.file_digests(dict(stamps))

    def remember_file_digests(self, records: Mapping[str, tuple[FileStamp, str]]) -> None:
        """Record {path: (stamp, SHA-256)} of files just hashed."""
        self._require_writable("file digests")
        self._catalog.remember_file_digests(dict(records))

    # -- vectors ----------------------------------------------------------------------------

    def has(self, keys: Sequence[str], fingerprint: str, layer: str = "fc7") -> set[str]:
        """The subset of `keys` with an intact stored vector for this fingerprint and layer.

        Each shard involved is checked once per store object (its size, and its SHA-256
        when its mtime changed). Keys in a damaged shard are left out, so extraction
        computes them again; when the store is writable, the damaged shard is unregistered
        and its file moved to ``STORE/quarantine/`` first (the problem is kept in
        `repairs`).
        """
        where = self._catalog.shard_ids(list(keys), fingerprint, layer)
        todo = set(where.values()) - self._intact_ids
        damaged = self._check_shards(self._catalog.shards(ids=sorted(todo))) if todo else []
        if damaged and not self.read_only:
            self._forget_damaged(damaged)
        bad = {record.id for record, _ in damaged}
        return {key for key, shard_id in where.items() if shard_id not in bad}

    def stored_dtypes(self, keys: Sequence[str], fingerprint: str, layer: str) -> set[str]:
        """The dtypes (``"float32"``, ``"float16"``) the vectors of `keys` are stored in:
        what `get` reads them back from (float16 vectors come back rounded)."""
        ids = sorted(set(self._catalog.shard_ids(list(keys), fingerprint, layer).values()))
        return {record.dtype for record in self._catalog.shards(ids=ids)} if ids else set()

    def _check_shards(self, records: Sequence[ShardRecord]) -> list[tuple[ShardRecord, str]]:
        """(record, problem) for the damaged shards among `records` (intact ones are
        remembered, so each is checked once per store object)."""
        damaged = []
        with self._check_lock:
            for record in records:
                if record.id in self._intact_ids:
                    continue
                check = self._shards.check(record)
                if check.problem is not None:
                    damaged.append((record, check.problem))
                    continue
                if check.sha256 is not None and not self.read_only:
                    self._catalog.record_shard_file(
                        record.id, check.sha256, check.size or 0, check.mtime_ns or 0
                    )
                self._intact_ids.add(record.id)
                self._intact_names.add(record.name)
        return damaged

    def _forget_damaged(self, damaged: Sequence[tuple[ShardRecord, str]]) -> None:
        """Unregister damaged shards and move their files to quarantine (never deleted)."""
        self._catalog.forget_shards([record.id for record, _ in damaged])
        for record, problem in damaged:
            with self._maps_lock:
                self._maps.pop(record.name, None)
            self._intact_names.discard(record.name)
            where = self._shards.quarantine(record, problem)
            kept = f"; the file was moved to {where} (nothing deleted)" if where else ""
            self.repairs.append(f"{problem}{kept}; its vectors will be computed again")

    def put_batch(
        self,
        keys: Sequence[str],
        vectors: Mapping[str, np.ndarray],
        fingerprint: str,
        *,
        dtype: str = "float32",
    ) -> int:
        """Store one batch: ``vectors[layer]`` has a row per key. Return the new vectors count.

        Each layer's rows go to one shard, written durably before it is registered with its
        SHA-256. Keys that are already stored (by this or another process) keep their first
        vector. A write that fails (a full disk) registers nothing of its shard.
        """
        if dtype not in STORAGE_DTYPES:
            raise ConfigError(f"The 'dtype' must be one of {list(STORAGE_DTYPES)}. Got {dtype!r}.")
        self._require_writable("vectors")
        if len(set(keys)) != len(keys):
            raise ConfigError("put_batch: 'keys' contains duplicates; store each key once")
        added = 0
        for layer, matrix in vectors.items():
            if matrix.ndim != 2 or matrix.shape[0] != len(keys):
                raise ConfigError(
                    f"put_batch: layer '{layer}' has shape {matrix.shape}, expected "
                    f"({len(keys)}, dim)"
                )
            shard = self._shards.write(fingerprint, layer, matrix.astype(dtype, copy=False))
            added += self.register_shard(shard.name, fingerprint, layer, keys, sha256=shard.sha256)
        return added

    def register_shard(
        self,
        name: str,
        fingerprint: str,
        layer: str,
        keys: Sequence[str],
        *,
        sha256: str | None = None,
    ) -> int:
        """Register a shard written by `ShardFiles.write` (in `put_batch`, or by a Ray worker)
        whose row i is the vector of ``keys[i]``; return how many keys were new.

        `sha256` is the checksum the writer computed (`ShardInfo.sha256`); without it the
        file is hashed here. A shard that adds nothing, or whose registration fails, is
        deleted.
        """
        matrix = self._shards.open(name)
        if matrix.shape[0] != len(keys):
            raise StoreError(
                f"{self._shards.where(name)}: {matrix.shape[0]} rows for {len(keys)} keys"
            )
        dtype, dim = str(matrix.dtype), int(matrix.shape[1])
        del matrix  # release the memory map before a possible delete
        size, mtime_ns = self._shards.stat(name)
        record = ShardRecord(
            id=0,
            name=name,
            fingerprint=fingerprint,
            layer=layer,
            dtype=dtype,
            rows=len(keys),
            dim=dim,
            sha256=sha256 or self._shards.sha256(name),
            bytes=size,
            mtime_ns=mtime_ns,
        )
        try:
            new = self._catalog.register_shard(record, list(keys))
        except StoreError:
            self._shards.remove(name)  # nothing half-written stays behind
            raise
        if new == 0:
            self._shards.remove(name)
        return new

    def discard_unregistered(self, prefix: str) -> list[str]:
        """Remove shard files whose file name starts with `prefix`, and temporaries of such
        files, that the catalog does not hold; return their names.

        A writer that tags its shards (a Ray run, with its run identity) calls this when it
        ends, for shards its workers wrote but never reported (they died in between).
        `StoreError` if one cannot be removed.
        """
        if not prefix:
            raise ConfigError("discard_unregistered: give the prefix that marks the shards")
        registered = {record.name for record in self._catalog.shards()}
        removed = []
        for name, _ in self._shards.names():
            base = name.rsplit("/", 1)[-1]
            # A temporary is named .tmp-PID-RANDOM-<final name>.
            ours = base.startswith(prefix) or (base.startswith(TMP_PREFIX) and f"-{prefix}" in base)
            if name in registered or not ours:
                continue
            self._shards.discard(name)
            removed.append(name)
        return removed

    def _map(self, name: str) -> np.ndarray:
        """The memory map of shard `name`, through the LRU of open shards.

        Each map holds one file descriptor and one kernel mapping, so at most
        `max_open_shards` stay open; the least recently used is dropped (closed once no
        read still holds it).
        """
        with self._maps_lock:
            matrix = self._maps.get(name)
            if matrix is not None:
                self._maps.move_to_end(name)
                return matrix
        self._require_intact(name)
        matrix = self._shards.open(name)
        with self._maps_lock:
            self._maps[name] = matrix
            while len(self._maps) > self.max_open_shards:
                self._maps.popitem(last=False)
        return matrix

    def _repair_hint(self) -> str:
        fix = store_command("store verify", self.location, "--repair")
        return f"run '{fix}', then extract again"

    def _require_intact(self, name: str) -> None:
        """Check shard `name` against its record once per store object; `StoreError` if
        it is damaged."""
        if name in self._intact_names:
            return
        for _, problem in self._check_shards(self._catalog.shards([name])):
            raise StoreError(f"{problem}; {self._repair_hint()}")

    def _gather(self, names: Sequence[str], shard_of: np.ndarray, row_of: np.ndarray) -> np.ndarray:
        """Rows ``row_of[i]`` of shards ``names[shard_of[i]]`` as (n, dim) float32, in order;
        each shard is read once per call."""
        if len(shard_of) == 0:
            return np.zeros((0, 0), dtype=np.float32)
        order = np.argsort(shard_of, kind="stable")
        cuts = np.flatnonzero(np.diff(shard_of[order])) + 1
        out: np.ndarray | None = None
        for positions in np.split(order, cuts):
            name = names[int(shard_of[positions[0]])]
            rows = row_of[positions]
            block = self._read_rows(name, rows)
            if out is None:
                out = np.empty((len(shard_of), block.shape[1]), dtype=np.float32)
            if block.shape[1] != out.shape[1]:
                raise StoreError(
                    f"{self._shards.where(name)}: width {block.shape[1]} != {out.shape[1]}"
                )
            if not np.isfinite(block).all():
                bad = sorted({int(r) for r in rows[~np.isfinite(block).all(axis=1)]})
                raise StoreError(
                    f"{self._shards.where(name)}: NaN or infinite values in row(s) {bad[:5]}; "
                    + self._repair_hint()
                )
            out[positions] = block
        assert out is not None  # shard_of is not empty
        return out

    def _read_rows(self, name: str, rows: np.ndarray) -> np.ndarray:
        """Rows of one shard as float32: a few rows of a shard that is not mapped are read
        with positioned reads (no map to set up, fault in and give back: a cached lookup
        costs the same in a store of 10 shards or 10,000); more go through the LRU's map."""
        with self._maps_lock:
            mapped = name in self._maps
        if not mapped and len(rows) <= FEW_ROWS:
            self._require_intact(name)
            return np.asarray(self._shards.read_rows(name, rows), dtype=np.float32)
        matrix = self._map(name)
        if rows.max() >= matrix.shape[0]:
            raise StoreError(
                past_end(self._shards.where(name), matrix.shape[0], self._repair_hint())
            )
        block = np.asarray(matrix[rows], dtype=np.float32)
        _release_pages(matrix)
        del matrix  # the LRU alone decides how long a map stays open
        return block

    def read_locations(self, where: Locations) -> np.ndarray:
        """The vectors at `where` (from `lazy_vectors`), as (n, dim) float32 in order."""
        return self._gather(where.names, where.shard_of, where.row_of)

    def get(self, keys: Sequence[str], fingerprint: str, layer: str = "fc7") -> np.ndarray:
        """Vectors for `keys` as (N, dim) float32, in order; `NotFoundError` names a missing key.

        A damaged shard, or a NaN or infinite value, raises `StoreError` naming the shard.
        """
        where = self._catalog.locate(list(keys), fingerprint, layer)
        missing = [k for k in keys if k not in where]
        if missing:
            raise NotFoundError(
                f"{len(missing)} key(s) have no '{layer}' vector for extractor {fingerprint[:12]}, "
                f"e.g. {missing[0]}"
            )
        names: dict[str, int] = {}
        shard_of = np.array([names.setdefault(where[k][0], len(names)) for k in keys], np.int32)
        row_of = np.array([where[k][1] for k in keys], np.int32)
        return self._gather(list(names), shard_of, row_of)

    def dataset_network(
        self, dataset: str, fingerprints: Iterable[str] | None = None
    ) -> str | None:
        """The network (backbone) that made `dataset`'s vectors (those of `fingerprints`, or
        of any layer), or None if there are none or several."""
        found = (
            fingerprints
            if fingerprints is not None
            else self._catalog.dataset_fingerprints(dataset)
        )
        specs = self.extractors()
        networks = {specs.get(fp, {}).get("network") for fp in found}
        return networks.pop() if len(networks) == 1 else None

    def resolve_fingerprint(self, dataset: str, layer: str, fingerprint: str | None) -> str:
        """The given fingerprint, or the only one with vectors for this dataset and layer."""
        if fingerprint is not None:
            return fingerprint
        found = self._catalog.dataset_fingerprints(dataset, layer)
        if len(found) == 1:
            return found[0]
        if not found:
            extract = extract_command(
                self.location,
                dataset,
                layer,
                source=source_path(self.dataset(dataset).source),
                network=self.dataset_network(dataset),
            )
            raise NotFoundError(
                f"dataset '{dataset}' has no '{layer}' vectors in {self.location}; run '{extract}'"
            )
        raise ConfigError(
            f"dataset '{dataset}' has '{layer}' vectors from {len(found)} extractors "
            f"({', '.join(fp[:12] for fp in found)}); pass fingerprint= (--fingerprint)"
        )

    def dataset_layers(self, dataset: str) -> tuple[int, dict[tuple[str, str], int]]:
        """What a dataset has cached: (its distinct image keys, {(fingerprint, layer): keys
        with a vector}); a (fingerprint, layer) is complete when the two counts agree."""
        self.dataset(dataset)
        keys, found = self._catalog.dataset_layers(dataset)
        return keys, {(fp, layer): count for fp, layer, count in found}

    def _missing_error(
        self, dataset: str, layer: str, fp: str, missing: int, rows: int, example: str | None
    ) -> NotFoundError:
        return NotFoundError(
            f"dataset '{dataset}': {missing} of {rows} image(s) have no '{layer}' vector for "
            f"extractor {fp[:12]}, e.g. {example or 'none'}; run extract again"
        )

    def batches(
        self,
        dataset: str,
        layer: str = "fc7",
        fingerprint: str | None = None,
        *,
        split: str | None = None,
        batch_size: int = DEFAULT_BATCH_ROWS,
    ) -> Iterator[VectorBatch]:
        """Stream a dataset's rows (or one `split`'s) in dataset order, `batch_size` at a time.

        Each `VectorBatch` holds keys, float32 vectors, labels (-1 where unlabelled), paths
        and splits; memory stays bounded by one batch at any dataset size. Every row is
        checked to have a vector before the first batch (`NotFoundError` names one that
        does not); a damaged shard raises `StoreError` when its batch is read.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"The 'batch_size' must be an integer >= 1. Got {batch_size!r}.")
        self.dataset(dataset)
        split = normalize_split(split, where="split")
        fp = self.resolve_fingerprint(dataset, layer, fingerprint)
        rows, missing, example = self._catalog.missing_vectors(dataset, fp, layer, split=split)
        if missing:
            raise self._missing_error(dataset, layer, fp, missing, rows, example)
        return self._stream(dataset, fp, layer, split, batch_size)

    def _stream(
        self, dataset: str, fp: str, layer: str, split: str | None, batch_size: int
    ) -> Iterator[VectorBatch]:
        start = 0
        for page in self._catalog.vector_pages(dataset, fp, layer, split=split, page=batch_size):
            index = index_rows(iter([page]))
            if index.missing:  # rows rewritten since the check above
                raise self._missing_error(
                    dataset, layer, fp, index.missing, len(page), index.first_missing
                )
            yield VectorBatch(
                start=start,
                keys=index.keys,
                X=self.read_locations(index.where),
                y=index.labels,
                paths=index.paths,
                splits=index.splits,
            )
            start += len(page)

    def lazy_vectors(
        self, dataset: str, layer: str = "fc7", fingerprint: str | None = None
    ) -> LazyVectors:
        """A dataset's rows in dataset order with their vectors left in the shards.

        Keys, labels, paths and splits are read (about 250 bytes a row); ``X`` is a
        `StoredRows` read on demand (``read_rows``, ``blocks``). `NotFoundError` names the
        first image without a vector, as `vectors` does.
        """
        found = self.dataset(dataset)
        fp = self.resolve_fingerprint(dataset, layer, fingerprint)
        index = columns_index(
            self._catalog.dataset_columns(dataset),
            self._catalog.dataset_locations(dataset, fp, layer),
            self._shard_names,
        )
        if index.missing or not index.keys:
            raise self._missing_error(
                dataset, layer, fp, index.missing, len(index.keys), index.first_missing
            )
        dim = self._catalog.shards([index.where.names[0]])[0].dim
        return LazyVectors(
            keys=index.keys,
            X=StoredRows(self._gather, index.where, dim, layer),
            y=index.labels,
            paths=index.paths,
            splits=index.splits,
            class_names=found.class_names,
            fingerprint=fp,
            layer=layer,
            dataset=dataset,
            weights_note=self.extractors().get(fp, {}).get("weights_note"),
        )

    def _shard_names(self, ids: list[int]) -> dict[int, str]:
        return {record.id: record.name for record in self._catalog.shards(ids=ids)}

    def vectors(
        self,
        dataset: str,
        layer: str = "fc7",
        fingerprint: str | None = None,
        *,
        max_bytes: int | None = VECTORS_MAX_BYTES,
    ) -> LabelledVectors:
        """All of a dataset's vectors in dataset order, in memory: for small data.

        Unpacks as ``keys, X, y``; X is (N, dim) float32, y int64 (-1 where unlabelled).
        Past `max_bytes` of float32 vectors (default `VECTORS_MAX_BYTES`, 2 GiB) it raises
        `ConfigError` naming `batches` and `lazy_vectors`, which read in bounded memory;
        ``max_bytes=None`` lifts the limit. Raises `NotFoundError` naming the first image
        without a vector, `StoreError` naming a damaged shard.
        """
        lazy = self.lazy_vectors(dataset, layer, fingerprint)
        size = lazy.X.shape[0] * lazy.X.shape[1] * 4
        if max_bytes is not None and size > max_bytes:
            raise ConfigError(
                f"dataset '{dataset}': its {lazy.X.shape[0]} '{layer}' vectors take "
                f"{size / 2**30:.1f} GiB in memory, past vectors()'s max_bytes "
                f"({max_bytes / 2**30:.1f} GiB); read them in bounded memory with "
                "store.batches(...) or store.lazy_vectors(...), or pass max_bytes=None"
            )
        return lazy.to_memory()

    # -- perceptual hashes and near-duplicate groups (written by featcache.analysis) --------

    def put_image_hashes(self, kind: str, hashes: Mapping[str, bytes]) -> None:
        """Record a perceptual hash of each key's pixels, computed by algorithm `kind`."""
        self._catalog.put_image_hashes(kind, hashes.items())

    def image_hashes(self, keys: Sequence[str], kind: str) -> dict[str, bytes]:
        """The recorded `kind` hashes of those `keys` that have one."""
        return self._catalog.image_hashes(list(keys), kind)

    def put_groups(self, dataset: str, groups: Mapping[str, int]) -> None:
        """Record the near-duplicate group of every key of `dataset` (replacing earlier ones)."""
        self.dataset(dataset)
        self._catalog.put_groups(dataset, groups.items())

    def groups(self, dataset: str) -> dict[str, int] | None:
        """The recorded near-duplicate groups of `dataset`, or None if there are none or the
        dataset changed after they were recorded."""
        groups, created, updated = self._catalog.groups(dataset)
        if not groups or created < updated:
            return None
        return groups

    # -- datasets ---------------------------------------------------------------------------

    def add_dataset(
        self,
        name: str,
        rows: Sequence[DatasetRow],
        class_names: Sequence[str] = (),
        *,
        source: str = "",
        append: bool = False,
        split: str | None = None,
    ) -> DatasetChange:
        """Write rows into a named dataset; a row is identified by its `path`.

        - ``append=True``: new paths are added, known ones updated (key, label, split);
          nothing is removed.
        - `split` given (without append): only that split's rows are replaced, so commands
          writing different splits can run in any order.
        - neither: the dataset is replaced.

        Writing the same rows again changes nothing. Return what changed and the totals.
        """
        validate_dataset_name(name)
        split = normalize_split(split, where="split")
        checked = _checked_rows(name, rows, len(class_names))
        if not self.read_only and name in self._catalog.dataset_names():
            self._adopt_relative_rows(name, checked)
        return self._catalog.put_dataset(
            name,
            checked,
            list(class_names),
            source,
            append=append,
            split=split,
        )

    def _adopt_relative_rows(self, name: str, rows: Sequence[DatasetRow]) -> None:
        """Rows recorded before image paths were made absolute stay the same rows: a row
        whose relative path is the end of an incoming absolute path, with the same image
        key, takes that absolute path in place (its position kept), so extracting the same
        folder again neither duplicates it nor drops and re-adds it."""
        old = self._catalog.relative_paths(name)
        if not old:
            return
        by_key: dict[str, list[str]] = {}
        for row in rows:
            if row.path.startswith("/"):
                by_key.setdefault(row.key, []).append(row.path)
        taken = {row.path for row in rows}
        renamed: dict[str, str] = {}
        used: set[str] = set()  # absolute paths already given (a set: old stores are large)
        for path, key in old:
            tail = "/" + os.path.normpath(path)
            match = [p for p in by_key.get(key, ()) if p.endswith(tail)]
            if len(match) == 1 and path not in taken and match[0] not in used:
                renamed[path] = match[0]
                used.add(match[0])
        if renamed:
            self._catalog.rename_paths(name, renamed)

    def dataset(self, name: str) -> DatasetInfo:
        """A dataset's class names, source, row count and rows per split.

        `NotFoundError` lists the known datasets.
        """
        found = self._catalog.dataset(name)
        if found is None:
            known = self._catalog.dataset_names()
            raise NotFoundError(
                f"{self.path}: no dataset '{name}' (known: {', '.join(known) or 'none'})"
            )
        return found

    def datasets(self) -> list[str]:
        return self._catalog.dataset_names()

    def dataset_rows(self, name: str) -> list[DatasetRow]:
        self.dataset(name)
        return self._catalog.dataset_rows(name)

    def paths_of(self, keys: Sequence[str]) -> dict[str, str]:
        """``{key: path}`` for the `keys` that some dataset row holds; unknown keys are left out.

        A key in several rows (the same image in two datasets, or twice in one) gets the row
        of the most recently updated dataset; a tie goes to the dataset name first in sort
        order, then to the row first in dataset order.
        """
        return self._catalog.paths_of(keys)

    def datasets_generation(self) -> int:
        """A number that changes whenever any dataset's rows change (for caches of paths).

        A counter the catalog keeps on every dataset write: reading it costs one indexed
        lookup at any store size.
        """
        return self._catalog.datasets_generation()

    # -- failures ---------------------------------------------------------------------------

    def record_failures(self, dataset: str | None, failures: Sequence[tuple[str, str]]) -> None:
        """Keep (path, reason) of images that could not be extracted, one row per path (a
        failure recorded again replaces the earlier one), also in failures.csv."""
        if not failures:
            return
        self._catalog.add_failures(dataset, failures)
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["time", "dataset", "path", "reason"])
        for when, name, path, reason in self._catalog.failure_rows():
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(when))
            # paths and reasons come from file names: never a cell a spreadsheet evaluates
            writer.writerow([stamp, csv_cell(name or ""), csv_cell(path), csv_cell(reason)])
        # written whole and renamed: a planted symlink named failures.csv is replaced, never
        # written through
        atomic_write_bytes(self.path / "failures.csv", buffer.getvalue().encode())

    def failures(self, dataset: str | None = None) -> list[tuple[str, str]]:
        return self._catalog.failures(dataset)

    # -- heads (bytes in, bytes out; featcache.classifier.persist owns the format) ----------

    def add_head(self, name: str, payload: bytes, meta: Mapping[str, Any]) -> HeadRecord:
        """Store a head file under a new version of `name` (never one used before, also
        after `delete_head`); return its record."""
        validate_head_name(name)
        self._require_writable(f"head '{name}'")
        file, digest = self._heads.write(name, payload)
        try:
            version = self._catalog.add_head(name, file, digest, dict(meta))
        except StoreError:
            if file not in {h.file for h in self.heads()}:
                self._heads.delete(file)
            raise
        return self.head(name, version)

    def heads(self, name: str | None = None) -> list[HeadRecord]:
        return self._catalog.heads(name)

    def head(self, name: str | HeadSpec, version: int | None = None) -> HeadRecord:
        """A head's record, with its file's SHA-256 (a cache of loaded heads compares that
        digest to see a change).

        `name` is ``NAME`` (the newest version, or `version`), ``NAME@N`` (version N) or
        ``NAME@promoted`` (the version promoted last), as a string or a `HeadSpec`.
        """
        spec = name if isinstance(name, HeadSpec) else HeadSpec.parse(name, version)
        versions = self.heads(spec.name)
        if not versions:
            known = sorted({h.name for h in self.heads()})
            raise NotFoundError(
                f"{self.path}: no head '{spec.name}' (known: {', '.join(known) or 'none'})"
            )
        if spec.follow == "newest":
            return versions[-1]
        wanted = spec.version
        if spec.follow == "promoted":
            wanted = self.promoted_head(spec.name)
            if wanted is None:
                raise NotFoundError(
                    f"{self.location}: head '{spec.name}' has no promoted version; run '"
                    + store_command(
                        "heads promote", self.location, f"{spec.name}@{versions[-1].version}"
                    )
                    + f"' or use --head {spec.name} (its newest version)"
                )
        for record in versions:
            if record.version == wanted:
                return record
        raise NotFoundError(
            f"{self.path}: head '{spec.name}' has no version {wanted} (it has "
            f"{', '.join(str(r.version) for r in versions)})"
        )

    def head_bytes(self, record: HeadRecord) -> bytes:
        """The head file's bytes, only if their SHA-256 matches the registered digest."""
        try:
            label = f"'{record.name}' v{record.version}"
            return self._heads.read(record.file, record.sha256, label)
        except HeadError as exc:
            fix = store_command("heads delete", self.location, f"{record.name}@{record.version}")
            raise HeadError(f"{exc} ('{fix}' removes the version)") from exc

    def replace_head_file(self, record: HeadRecord, payload: bytes) -> HeadRecord:
        """Store `payload` as the file of head version `record` (a format conversion: the
        version keeps its number and metadata); the old file goes once nothing names it.
        Return the new record."""
        self._require_writable(f"head '{record.name}'")
        file, digest = self._heads.write(record.name, payload)
        old = self._catalog.replace_head_file(record.name, record.version, file, digest)
        if old != file and old not in {h.file for h in self.heads()}:
            self._heads.delete(old)
        return self.head(record.name, record.version)

    def delete_head(self, name: str | HeadSpec, version: int | None = None) -> int:
        """Delete a head: every version of ``NAME``, or one (``NAME@N``, ``NAME@promoted``,
        or `version`); return how many versions went.

        Their version numbers stay used: the next `add_head` of `name` gets a new one.
        """
        spec = name if isinstance(name, HeadSpec) else HeadSpec.parse(name, version)
        record = self.head(spec)
        only = None if spec.follow == "newest" else record.version
        files = self._catalog.delete_heads(spec.name, only)
        still_used = {h.file for h in self.heads()}
        for file in files:
            if file not in still_used:
                self._heads.delete(file)
        return len(files)

    def promote_head(self, name: str | HeadSpec, version: int | None = None) -> HeadRecord:
        """Mark a head version (``NAME@N``, or ``NAME`` and `version`) as promoted: what
        ``--head NAME@promoted`` names from then on."""
        spec = name if isinstance(name, HeadSpec) else HeadSpec.parse(name, version)
        if spec.follow != "pinned":
            raise ConfigError(
                f"say which version of head '{spec.name}' to promote: {spec.name}@VERSION "
                f"(e.g. {spec.name}@1)"
            )
        record = self.head(spec)
        self._catalog.promote_head(record.name, record.version)
        return record

    def promoted_head(self, name: str) -> int | None:
        """The version of `name` promoted last that still exists, or None."""
        return self._catalog.promoted_head(name)

    # -- runtime models (files in, files out; the runtime that converts them owns the format)

    @property
    def runtime_models(self) -> RuntimeFiles:
        """The runtime-model cache (``runtimes/``): find, publish, check and remove models."""
        return self._runtimes

    # -- maintenance (featcache.store.maintenance) ------------------------------------------

    def info(self) -> dict[str, Any]:
        """A summary: datasets (rows, rows per split), extractors, vector counts per
        (fingerprint, layer), heads, failures, disk use."""
        return maintenance.info(self.path, self._catalog)

    def verify(self, *, repair: bool = False) -> VerifyReport:
        """Re-hash every shard and read back every vector; name what is damaged.

        With `repair`, damaged shards' vectors are dropped (the next extract computes them).
        """
        with self._maps_lock:  # release the memory maps before a possible delete
            self._maps.clear()
        # every crafted row is listed (table, row, field, what) and verify carries on
        crafted = audit_catalog(self._catalog)
        try:
            report = maintenance.verify(
                self._catalog, self._shards, repair=repair, store=self.location
            )
        except StoreError as exc:  # a crafted value the shard checks could not get past
            report = VerifyReport(problems=[str(exc)])
        report.problems[:0] = crafted
        report.quarantine_files = len(self._shards.quarantined())
        self._intact_ids.clear()
        self._intact_names.clear()
        runtimes = self._runtimes.audit(self.location, repair=repair)
        report.runtime_models = runtimes.models
        report.problems += runtimes.problems
        if repair:
            report.runtime_models_removed = [str(folder) for folder in runtimes.damaged]
        gc = store_command("store gc", self.location)
        report.problems += [
            f"{path}: temporary file (being written, or left by a killed command; '{gc}' "
            "removes it once older than --grace)"
            for path in maintenance.stale_temporaries(self.path, time.time() + 1)
        ]
        try:
            heads = self.heads()
        except StoreError as exc:  # crafted metadata: listed by the audit above
            heads = []
            if not crafted:
                report.problems.append(str(exc))
        for record in heads:
            try:  # the file is resolved inside heads/ and read only if it is a regular file
                payload = self.head_bytes(record)
            except HeadError as exc:
                report.problems.append(str(exc))
                continue
            if payload[:1] == b"\x80":  # a pickle's PROTO opcode: never loaded
                report.problems.append(
                    f"head '{record.name}' v{record.version} ({self.path / record.file}): an old "
                    "pickled head, refused by every command; if you trust this store, "
                    f"'{store_command('heads upgrade', self.location)}' converts it"
                )
                continue
            report.heads += 1
        return report

    def gc(self, *, grace_seconds: float = 900.0) -> GcReport:
        """Remove unregistered shard files, vectors no dataset uses, and runtime models of
        extractors left without vectors.

        Only what is older than `grace_seconds` goes, so a concurrent extraction's shard,
        written but not yet registered or not yet in its dataset, is left alone. A shard
        the catalog references is never deleted; with no shard registered while shard files
        exist (a lost catalog), gc refuses with `StoreError`.
        """
        with self._maps_lock:
            self._maps.clear()
        report = maintenance.gc(self._catalog, self._shards, grace_seconds=grace_seconds)
        # Runtime models of extractors left without vectors go too (a conversion in progress
        # is younger than the grace period).
        live = {fingerprint for fingerprint, _, _ in self._catalog.vector_counts()}
        models, freed = self._runtimes.collect(live, time.time() - grace_seconds)
        files = 0
        for path in maintenance.stale_temporaries(self.path, time.time() - grace_seconds):
            try:
                size = path.lstat().st_size
                path.unlink()
            except OSError:
                continue
            files, freed = files + 1, freed + size
        return replace(
            report,
            files_removed=report.files_removed + files,
            bytes_freed=report.bytes_freed + freed,
            runtime_models_removed=models,
        )


def _checked_rows(name: str, rows: Sequence[DatasetRow], classes: int) -> Sequence[DatasetRow]:
    """`rows` with labels checked against `classes` (when known) and splits normalised;
    checked once per distinct split and over the labels at once (a million rows take a
    second, not the ten a row-by-row check took)."""

    def where(i: int) -> str:
        return f"dataset '{name}' row {i} ({rows[i].path})"

    if classes:
        labels = [row.label for row in rows]
        known = [label for label in labels if label is not None]
        if known and (min(known) < 0 or max(known) >= classes):
            i = next(
                i
                for i, label in enumerate(labels)
                if label is not None and not 0 <= label < classes
            )
            raise ConfigError(f"{where(i)}: label {labels[i]} is outside 0..{classes - 1}")
    given = [row.split for row in rows]
    normal: dict[str | None, str | None] = {}
    for value in set(given):
        try:
            normal[value] = normalize_split(value, where="")
        except ConfigError:
            normalize_split(value, where=where(given.index(value)))  # raises naming the row
            raise
    if all(normal[value] == value for value in normal):
        return rows
    return [DatasetRow(r.key, r.path, r.label, normal[r.split]) for r in rows]


def _release_pages(matrix: np.ndarray) -> None:
    """Drop a shard map's pages from this process (they stay in the OS page cache): mapped
    pages count in RSS, so without this a reader's RSS would grow to every open shard's
    size (`max_open_shards` x shard bytes) instead of the rows it copied out."""
    mapping = getattr(matrix, "_mmap", None)
    if mapping is not None and hasattr(mapping, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        mapping.madvise(mmap.MADV_DONTNEED)


def _writable_or_new(catalog: Path) -> bool:
    return not catalog.exists() or os.access(catalog, os.W_OK)
