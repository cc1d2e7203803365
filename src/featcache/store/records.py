"""The store's records: named, typed rows instead of tuples."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, TypeVar

import numpy as np

from featcache.errors import NotFoundError

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "DatasetChange",
    "DatasetInfo",
    "DatasetRow",
    "FileStamp",
    "GcReport",
    "HeadRecord",
    "LabelledVectors",
    "ShardInfo",
    "ShardRecord",
    "VectorRow",
    "VerifyReport",
]


@dataclass(frozen=True)
class DatasetRow:
    """One image of a dataset: its content key, where it came from, label id and split.

    Within a dataset a row is identified by its `path` (``train.p#17`` for array rows).
    """

    key: str
    path: str
    label: int | None = None
    split: str | None = None


class FileStamp(NamedTuple):
    """What a file's stat says about its bytes: a file whose stamp is unchanged since it was
    hashed is trusted to hold the same bytes. ``ctime_ns`` is the inode change time, which
    the kernel sets on every write and which ``touch`` or ``os.utime`` cannot set back (they
    can set back ``mtime_ns``), so a file rewritten with an old mtime is hashed again."""

    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int

    @classmethod
    def of(cls, st: os.stat_result) -> FileStamp:
        return cls(st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@dataclass(frozen=True)
class VectorRow:
    """A dataset row with where its vector is stored (`shard` None when it has none)."""

    key: str
    path: str
    label: int | None
    split: str | None
    shard: str | None
    row: int | None


@dataclass(frozen=True)
class DatasetColumns:
    """A dataset's rows as columns, in dataset order: `idx` (ascending row numbers of the
    catalog), keys, paths, labels (-1 where unlabelled) and splits."""

    idx: np.ndarray
    keys: list[str]
    paths: list[str]
    labels: np.ndarray
    splits: list[str | None]


@dataclass(frozen=True)
class DatasetInfo:
    """A dataset: class names, where its rows came from, row count and rows per split.

    `splits` maps each split (``""`` for rows without one) to its number of rows.
    """

    name: str
    class_names: list[str]
    source: str
    rows: int
    splits: dict[str, int]


@dataclass(frozen=True)
class DatasetChange:
    """What writing a dataset did: rows added, updated (key, label or split), removed,
    left as they were, and the dataset's totals afterwards (`splits`: rows per split)."""

    dataset: str
    added: int
    updated: int
    removed: int
    unchanged: int
    rows: int
    splits: dict[str, int]

    def summary(self) -> str:
        """One line: ``3 added, 0 updated, 1 removed; now 12 rows (train 9, val 3)``."""
        per_split = ", ".join(f"{s or 'no split'} {n}" for s, n in self.splits.items())
        return (
            f"{self.added} added, {self.updated} updated, {self.removed} removed; "
            f"now {self.rows} rows" + (f" ({per_split})" if per_split else "")
        )


@dataclass(frozen=True)
class LabelledVectors:
    """The vectors of a dataset in dataset order; unpacks as ``keys, X, y``.

    `weights_note` says when the vectors come from random (demo) weights; `evaluate` and
    everything written from these vectors carry it.
    """

    keys: list[str]
    X: np.ndarray
    y: np.ndarray
    paths: list[str]
    splits: list[str | None]
    class_names: list[str]
    fingerprint: str
    layer: str
    dataset: str = ""
    weights_note: str | None = None

    def __iter__(self) -> Iterator[Any]:
        return iter((self.keys, self.X, self.y))

    def __len__(self) -> int:
        return len(self.keys)

    def to_pandas(self) -> pd.DataFrame:
        """A pandas DataFrame, one row per image: key, path, label, class_name, split.

        Labels are nullable integers (<NA> where unlabelled); the vectors stay in ``X``.
        """
        import pandas as pd

        names = self.class_names
        labels = self.y.tolist()
        return pd.DataFrame(
            {
                "key": self.keys,
                "path": self.paths,
                "label": pd.array([None if v < 0 else v for v in labels], dtype="Int64"),
                "class_name": [names[v] if 0 <= v < len(names) else None for v in labels],
                "split": self.splits,
            }
        )

    def split(self, name: str) -> LabelledVectors:
        """The rows whose stored split is `name` (``train``, ``val``, ``test``...), in order."""
        return rows_in_split(self, name)


@dataclass(frozen=True)
class HeadRecord:
    """A registered head version: its file (relative to the store), digest and metadata.

    A (name, version) pair names one model forever; `sha256` identifies the file's content,
    so a cache of loaded heads compares digests, not version numbers.
    """

    name: str
    version: int
    file: str
    sha256: str
    meta: dict[str, Any]
    created: float


@dataclass(frozen=True)
class ShardInfo:
    """A shard file just written: its name under ``STORE/shards/``, SHA-256 and size."""

    name: str
    sha256: str
    bytes: int


@dataclass(frozen=True)
class ShardRecord:
    """A registered shard as the catalog knows it (`sha256`/`bytes` None if unrecorded)."""

    id: int
    name: str
    fingerprint: str
    layer: str
    dtype: str
    rows: int
    dim: int
    sha256: str | None
    bytes: int | None
    mtime_ns: int | None


@dataclass
class VerifyReport:
    """What `FeatureStore.verify` found; ``ok`` when there are no problems.

    `damaged` names the registered shards whose file is missing, truncated, changed or
    holds NaN/infinity; `repaired` the ones whose vectors ``repair=True`` dropped, and
    `quarantined` where their files went (``STORE/quarantine/``: never deleted).
    `quarantine_files` counts the shard files the quarantine folder holds (from this run and
    earlier ones), for their owner to inspect or delete.
    """

    shards: int = 0
    vectors: int = 0
    problems: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    vectors_dropped: int = 0
    runtime_models: int = 0  # sound converted models in ``runtimes/``
    runtime_models_removed: list[str] = field(default_factory=list)  # damaged, by repair
    heads: int = 0  # head versions whose file is inside the store and matches its digest
    quarantined: list[str] = field(default_factory=list)
    quarantine_files: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass(frozen=True)
class GcReport:
    """What `FeatureStore.gc` removed."""

    files_removed: int
    vectors_removed: int
    bytes_freed: int
    runtime_models_removed: int = 0


class _SplitRows(Protocol):
    """Rows a dataset's split can be taken from: in-memory or lazy vectors."""

    @property
    def dataset(self) -> str: ...
    @property
    def keys(self) -> list[str]: ...
    @property
    def paths(self) -> list[str]: ...
    @property
    def splits(self) -> list[str | None]: ...
    @property
    def X(self) -> Any: ...
    @property
    def y(self) -> np.ndarray: ...


_Rows = TypeVar("_Rows", bound=_SplitRows)


def rows_in_split(rows: _Rows, name: str) -> _Rows:
    """The rows of `rows` whose stored split is `name`, in order (a copy of the same kind)."""
    mask = np.array([s == name for s in rows.splits], dtype=bool)
    if not mask.any():
        present = sorted({s or "none" for s in rows.splits})
        raise NotFoundError(
            f"dataset '{rows.dataset}' has no rows in split '{name}' "
            f"(its splits: {', '.join(present) or 'none'})"
        )
    kept = np.flatnonzero(mask).tolist()
    return replace(  # type: ignore[type-var]
        rows,
        keys=[rows.keys[i] for i in kept],
        X=rows.X[mask],
        y=rows.y[mask],
        paths=[rows.paths[i] for i in kept],
        splits=[rows.splits[i] for i in kept],
    )
