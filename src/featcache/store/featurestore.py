"""`FeatureStore`: vectors keyed by (image key, extractor fingerprint, layer), datasets, heads.

One directory::

    STORE/catalog.sqlite        the catalog (WAL mode)
    STORE/shards/FP/LAYER/*.npy vector shards, memory-mapped for reading
    STORE/heads/NAME/vN.joblib  saved heads (written by featcache.classifier.persist)
    STORE/failures.csv          every image that could not be extracted, with the reason

The store knows nothing of TensorFlow or of the heads' format: it keeps arrays and bytes.
"""

from __future__ import annotations

import csv
import hashlib
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from featcache.errors import ConfigError, HeadError, NotFoundError, StoreError
from featcache.store.catalog import Catalog
from featcache.store.shards import TMP_PREFIX, ShardFiles

__all__ = [
    "STORAGE_DTYPES",
    "DatasetRow",
    "FeatureStore",
    "GcReport",
    "HeadRecord",
    "LabelledVectors",
    "VerifyReport",
]

STORAGE_DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class DatasetRow:
    """One image of a dataset: its content key, where it came from, label id and split."""

    key: str
    path: str
    label: int | None = None
    split: str | None = None


@dataclass(frozen=True)
class LabelledVectors:
    """The vectors of a dataset in dataset order; unpacks as ``keys, X, y``."""

    keys: list[str]
    X: np.ndarray
    y: np.ndarray
    paths: list[str]
    splits: list[str | None]
    class_names: list[str]
    fingerprint: str
    layer: str

    def __iter__(self) -> Iterator[Any]:
        return iter((self.keys, self.X, self.y))


@dataclass(frozen=True)
class HeadRecord:
    """A registered head version: its file (relative to the store), digest and metadata."""

    name: str
    version: int
    file: str
    sha256: str
    meta: dict[str, Any]
    created: float


@dataclass
class VerifyReport:
    """What `FeatureStore.verify` found; ``ok`` when there are no problems."""

    shards: int = 0
    vectors: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class GcReport:
    """What `FeatureStore.gc` removed."""

    files_removed: int
    vectors_removed: int
    bytes_freed: int


class FeatureStore:
    """A feature store in directory `path` (created if missing, unless ``create=False``)."""

    def __init__(self, path: str | Path, *, create: bool = True) -> None:
        self.path = Path(path)
        if not (self.path / "catalog.sqlite").exists():
            if not create:
                raise NotFoundError(f"{self.path}: no feature store here (no catalog.sqlite)")
            if self.path.exists() and not self.path.is_dir():
                raise StoreError(f"{self.path}: exists and is not a directory")
            self.path.mkdir(parents=True, exist_ok=True)
        self._catalog = Catalog(self.path / "catalog.sqlite")
        self._shards = ShardFiles(self.path / "shards")
        self._maps: dict[str, np.ndarray] = {}

    def close(self) -> None:
        self._maps.clear()
        self._catalog.close()

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r})"

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
        """The SHA-256 of a file, remembered by (path, size, mtime, inode) between runs.

        `compute` hashes the file when it is new or changed since it was last seen.
        """
        path = Path(path).resolve()
        st = path.stat()
        known = self._catalog.file_digest(str(path), st.st_size, st.st_mtime_ns, st.st_ino)
        if known is not None:
            return known
        digest = compute(path)
        self._catalog.remember_file_digest(str(path), st.st_size, st.st_mtime_ns, st.st_ino, digest)
        return digest

    # -- vectors ----------------------------------------------------------------------------

    def has(self, keys: Sequence[str], fingerprint: str, layer: str = "fc7") -> set[str]:
        """The subset of `keys` with a stored vector for this fingerprint and layer."""
        return self._catalog.present(list(keys), fingerprint, layer)

    def put_batch(
        self,
        keys: Sequence[str],
        vectors: Mapping[str, np.ndarray],
        fingerprint: str,
        *,
        dtype: str = "float32",
    ) -> int:
        """Store one batch: ``vectors[layer]`` has a row per key. Return the new vectors count.

        Each layer's rows go to one shard, written durably before it is registered. Keys that
        are already stored (by this or another process) keep their first vector.
        """
        if dtype not in STORAGE_DTYPES:
            raise ConfigError(f"The 'dtype' must be one of {list(STORAGE_DTYPES)}. Got {dtype!r}.")
        if len(set(keys)) != len(keys):
            raise ConfigError("put_batch: 'keys' contains duplicates; store each key once")
        added = 0
        for layer, matrix in vectors.items():
            if matrix.ndim != 2 or matrix.shape[0] != len(keys):
                raise ConfigError(
                    f"put_batch: layer '{layer}' has shape {matrix.shape}, expected "
                    f"({len(keys)}, dim)"
                )
            name = self._shards.write(fingerprint, layer, matrix.astype(dtype, copy=False))
            added += self.register_shard(name, fingerprint, layer, keys)
        return added

    def register_shard(self, name: str, fingerprint: str, layer: str, keys: Sequence[str]) -> int:
        """Register a shard written under ``shards/`` (by `put_batch`, or by a Ray worker)
        whose row i is the vector of ``keys[i]``; return how many keys were new. A shard that
        adds nothing is deleted."""
        matrix = self._shards.open(name)
        if matrix.shape[0] != len(keys):
            raise StoreError(
                f"{self._shards.path(name)}: {matrix.shape[0]} rows for {len(keys)} keys"
            )
        dtype, dim = str(matrix.dtype), int(matrix.shape[1])
        del matrix  # release the memory map before a possible delete
        new = self._catalog.register_shard(name, fingerprint, layer, dtype, list(keys), dim)
        if new == 0:
            self._shards.remove(name)
        return new

    def _map(self, name: str) -> np.ndarray:
        matrix = self._maps.get(name)
        if matrix is None:
            matrix = self._maps[name] = self._shards.open(name)
        return matrix

    def _gather(self, places: Sequence[tuple[str, int]]) -> np.ndarray:
        if not places:
            return np.zeros((0, 0), dtype=np.float32)
        by_shard: dict[str, list[int]] = {}
        for i, (name, _) in enumerate(places):
            by_shard.setdefault(name, []).append(i)
        dim = self._map(places[0][0]).shape[1]
        out = np.empty((len(places), dim), dtype=np.float32)
        for name, positions in by_shard.items():
            matrix = self._map(name)
            if matrix.shape[1] != dim:
                raise StoreError(f"{self._shards.path(name)}: width {matrix.shape[1]} != {dim}")
            rows = np.fromiter((places[i][1] for i in positions), dtype=np.intp)
            out[positions] = matrix[rows]
        return out

    def get(self, keys: Sequence[str], fingerprint: str, layer: str = "fc7") -> np.ndarray:
        """Vectors for `keys` as (N, dim) float32, in order; `NotFoundError` names a missing key."""
        where = self._catalog.locate(list(keys), fingerprint, layer)
        missing = [k for k in keys if k not in where]
        if missing:
            raise NotFoundError(
                f"{len(missing)} key(s) have no '{layer}' vector for extractor {fingerprint[:12]}, "
                f"e.g. {missing[0]}"
            )
        return self._gather([where[k] for k in keys])

    def resolve_fingerprint(self, dataset: str, layer: str, fingerprint: str | None) -> str:
        """The given fingerprint, or the only one with vectors for this dataset and layer."""
        if fingerprint is not None:
            return fingerprint
        found = self._catalog.dataset_fingerprints(dataset, layer)
        if len(found) == 1:
            return found[0]
        if not found:
            raise NotFoundError(
                f"dataset '{dataset}' has no '{layer}' vectors in {self.path}; run "
                f"'featcache extract ... --dataset {dataset} --layers {layer}'"
            )
        raise ConfigError(
            f"dataset '{dataset}' has '{layer}' vectors from {len(found)} extractors "
            f"({', '.join(fp[:12] for fp in found)}); pass fingerprint= (--fingerprint)"
        )

    def vectors(
        self, dataset: str, layer: str = "fc7", fingerprint: str | None = None
    ) -> LabelledVectors:
        """All of a dataset's vectors in dataset order, read through memory maps.

        Unpacks as ``keys, X, y``; X is (N, dim) float32, y int64 (-1 where unlabelled).
        Raises `NotFoundError` naming the first image without a vector.
        """
        names, _, _ = self.dataset(dataset)
        fp = self.resolve_fingerprint(dataset, layer, fingerprint)
        rows = self._catalog.dataset_rows(dataset, fp, layer)
        missing = [r for r in rows if r[4] is None]
        if missing:
            raise NotFoundError(
                f"dataset '{dataset}': {len(missing)} of {len(rows)} image(s) have no '{layer}' "
                f"vector for extractor {fp[:12]}, e.g. {missing[0][1]}; run extract again"
            )
        return LabelledVectors(
            keys=[r[0] for r in rows],
            X=self._gather([(r[4], r[5]) for r in rows]),
            y=np.array([-1 if r[2] is None else r[2] for r in rows], dtype=np.int64),
            paths=[r[1] for r in rows],
            splits=[r[3] for r in rows],
            class_names=names,
            fingerprint=fp,
            layer=layer,
        )

    # -- datasets ---------------------------------------------------------------------------

    def add_dataset(
        self,
        name: str,
        rows: Sequence[DatasetRow],
        class_names: Sequence[str] = (),
        *,
        source: str = "",
        append: bool = False,
    ) -> int:
        """Create or replace (or with `append`, extend) a named dataset; return rows written."""
        if not name or "/" in name:
            raise ConfigError(f"The dataset 'name' must be non-empty without '/'. Got {name!r}.")
        for i, row in enumerate(rows):
            if row.label is not None and class_names and not 0 <= row.label < len(class_names):
                raise ConfigError(
                    f"dataset '{name}' row {i} ({row.path}): label {row.label} is outside "
                    f"0..{len(class_names) - 1}"
                )
        return self._catalog.put_dataset(
            name,
            ((r.key, r.path, r.label, r.split) for r in rows),
            list(class_names),
            source,
            append=append,
        )

    def dataset(self, name: str) -> tuple[list[str], str, int]:
        """(class names, source, number of rows); `NotFoundError` lists the known datasets."""
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
        return [DatasetRow(*row) for row in self._catalog.dataset_rows(name)]

    # -- failures ---------------------------------------------------------------------------

    def record_failures(self, dataset: str | None, failures: Sequence[tuple[str, str]]) -> None:
        """Keep (path, reason) of images that could not be extracted, also in failures.csv."""
        if not failures:
            return
        self._catalog.add_failures(dataset, failures)
        report = self.path / "failures.csv"
        new = not report.exists()
        with open(report, "a", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            if new:
                writer.writerow(["time", "dataset", "path", "reason"])
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
            writer.writerows([stamp, dataset or "", path, reason] for path, reason in failures)

    def failures(self, dataset: str | None = None) -> list[tuple[str, str]]:
        return self._catalog.failures(dataset)

    # -- heads (bytes in, bytes out; featcache.classifier.persist owns the format) ----------

    def add_head(self, name: str, payload: bytes, meta: Mapping[str, Any]) -> HeadRecord:
        """Store a head file under the next version of `name`; return its record."""
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"The head 'name' must be a plain name. Got {name!r}.")
        digest = hashlib.sha256(payload).hexdigest()
        folder = self.path / "heads" / name
        folder.mkdir(parents=True, exist_ok=True)
        staged = folder / f"{TMP_PREFIX}{digest}.joblib"
        with open(staged, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        final = f"heads/{name}/{digest[:16]}.joblib"
        os.replace(staged, self.path / final)
        version = self._catalog.add_head(name, final, digest, dict(meta))
        return self.head(name, version)

    def heads(self, name: str | None = None) -> list[HeadRecord]:
        return [HeadRecord(*row) for row in self._catalog.heads(name)]

    def head(self, name: str, version: int | None = None) -> HeadRecord:
        """A head's record (the newest version unless one is given)."""
        versions = self.heads(name)
        if not versions:
            known = sorted({h.name for h in self.heads()})
            raise NotFoundError(
                f"{self.path}: no head '{name}' (known: {', '.join(known) or 'none'})"
            )
        if version is None:
            return versions[-1]
        for record in versions:
            if record.version == version:
                return record
        raise NotFoundError(f"{self.path}: head '{name}' has no version {version}")

    def head_bytes(self, record: HeadRecord) -> bytes:
        """The head file's bytes, only if their SHA-256 matches the registered digest."""
        path = self.path / record.file
        try:
            payload = path.read_bytes()
        except OSError as exc:
            raise HeadError(f"{path}: head file unreadable ({exc})") from exc
        digest = hashlib.sha256(payload).hexdigest()
        if digest != record.sha256:
            raise HeadError(
                f"{path}: SHA-256 {digest[:16]}... does not match the registered "
                f"{record.sha256[:16]}... for head '{record.name}' v{record.version}; the file "
                "was changed outside featcache and will not be unpickled"
            )
        return payload

    def delete_head(self, name: str, version: int | None = None) -> int:
        """Delete a head (all versions, or one); return how many versions went."""
        self.head(name, version)
        files = self._catalog.delete_heads(name, version)
        still_used = {h.file for h in self.heads()}
        for file in files:
            if file not in still_used:
                (self.path / file).unlink(missing_ok=True)
        return len(files)

    # -- maintenance ------------------------------------------------------------------------

    def info(self) -> dict[str, Any]:
        """A summary: datasets, extractors, vector counts per (fingerprint, layer), disk use."""
        size = sum(p.stat().st_size for p in self.path.rglob("*") if p.is_file())
        return {
            "path": str(self.path),
            "bytes": size,
            "datasets": {n: self.dataset(n)[2] for n in self.datasets()},
            "extractors": self.extractors(),
            "vectors": [
                {"fingerprint": fp, "layer": layer, "count": n}
                for fp, layer, n in self._catalog.vector_counts()
            ],
            "heads": sorted({h.name for h in self.heads()}),
            "failures": len(self.failures()),
        }

    def verify(self) -> VerifyReport:
        """Check every registered vector is readable and every shard file is accounted for."""
        report = VerifyReport()
        registered = set()
        for shard_id, name, dtype, rows, dim in self._catalog.shards():
            registered.add(name)
            report.shards += 1
            try:
                matrix = self._shards.open(name)
                if matrix.shape != (rows, dim) or str(matrix.dtype) != dtype:
                    report.problems.append(
                        f"{self._shards.path(name)}: {matrix.shape} {matrix.dtype}, registered "
                        f"as ({rows}, {dim}) {dtype}"
                    )
                    continue
                used = self._catalog.shard_rows(shard_id)
                report.vectors += len(used)
                if used and max(used) >= rows:
                    report.problems.append(
                        f"{self._shards.path(name)}: a vector points past row {rows}"
                    )
                if used and not np.isfinite(np.asarray(matrix[sorted(used)])).all():
                    report.problems.append(f"{self._shards.path(name)}: holds NaN or infinity")
            except StoreError as exc:
                report.problems.append(str(exc))
        dangling = self._catalog.dangling_vectors()
        if dangling:
            report.problems.append(f"{dangling} vector(s) point to an unregistered shard")
        for name, _ in self._shards.names():
            if name not in registered:
                report.problems.append(
                    f"{self._shards.path(name)}: shard file not in the catalog (left by an "
                    "interrupted run; 'featcache store gc' removes it)"
                )
        return report

    def gc(self, *, grace_seconds: float = 900.0) -> GcReport:
        """Remove unregistered shard files and vectors no dataset uses.

        Only what is older than `grace_seconds` goes, so a concurrent extraction's shard,
        written but not yet registered or not yet in its dataset, is left alone.
        """
        cutoff = time.time() - grace_seconds
        dropped, emptied = self._catalog.drop_unused_vectors(cutoff)
        registered = {name for _, name, _, _, _ in self._catalog.shards()}
        doomed = list(emptied)
        doomed += [n for n, mtime in self._shards.names() if n not in registered and mtime < cutoff]
        freed = 0
        for name in dict.fromkeys(doomed):
            path = self._shards.path(name)
            if path.exists():
                freed += path.stat().st_size
                self._shards.remove(name)
            self._maps.pop(name, None)
        return GcReport(files_removed=len(set(doomed)), vectors_removed=dropped, bytes_freed=freed)
