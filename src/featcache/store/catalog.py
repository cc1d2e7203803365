"""The SQLite catalog of a store (``catalog.sqlite``, WAL mode): every query lives here.

Tables: ``extractors`` (fingerprint → spec), ``shards`` (file, fingerprint, layer, dtype,
shape, SHA-256, size), ``vectors`` ((key, fingerprint, layer) → shard row), ``datasets`` and
``dataset_rows`` ((key, path, label, split) per dataset, one row per path), ``failures``,
``file_digests``, ``heads`` (versioned head files), ``head_versions`` (the last version
each head name ever had, so versions are never reused), ``image_hashes`` ((key, kind) →
perceptual hash of the pixels) and ``dataset_groups`` (near-duplicate group of each key of a
dataset, as `featcache doctor` last found them); `featcache.store.schema` creates and
migrates them.

Writes take SQLite's write lock up front (``BEGIN IMMEDIATE``), so processes that share a
store queue instead of failing half-way. A catalog opened read-only (``mode=ro``, or
``immutable=1`` when its folder cannot be written) answers every query and refuses writes.

The same catalog lives on PostgreSQL when it is given as a ``postgresql://`` URL: the
statements here are written once, in SQL both accept, and `featcache.store.catalog_postgres`
holds what differs (placeholders, column types, the write lock).
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from featcache._io import describe_failure
from featcache.errors import NotFoundError, StoreError
from featcache.store.catalog_postgres import (
    POSTGRES_TABLES,
    PostgresConnection,
    foreign_postgres_schema,
    is_postgres_url,
    redact_url,
)
from featcache.store.records import (
    DatasetChange,
    DatasetColumns,
    DatasetInfo,
    DatasetRow,
    FileStamp,
    HeadRecord,
    ShardRecord,
    VectorRow,
)
from featcache.store.schema import (
    GENERATION_KEY,
    SCHEMA_VERSION,
    bump_generation,
    create_or_migrate,
    dedupe_rows,
    foreign_schema,
    has_stamp_ctime,
    schema_version,
)

__all__ = ["Catalog"]

_SPLIT_COUNTS = "SELECT COALESCE(split, ''), COUNT(*) FROM dataset_rows WHERE dataset=? GROUP BY 1"
# Keys per IN (...) query: SQLite allows 999 bound parameters before 3.32, 32,766 since.
_MAX_PARAMS = 5000 if sqlite3.sqlite_version_info >= (3, 32, 0) else 500
# SQLite's page cache (KiB; pages are allocated only as used): the interior pages of the
# vectors and dataset_rows indexes at a million rows, so key lookups do not re-read them.
_CACHE_KIB = 65536
_FETCH_ROWS = 65536  # rows per fetch of a query read as columns
_SHARD_COLUMNS = "id, name, fingerprint, layer, dtype, rows, dim, sha256, bytes, mtime_ns"


class Catalog:
    """A connection to one store's catalog, safe to share between threads.

    ``read_only=True`` opens it with ``mode=ro`` (falling back to ``immutable=1`` when SQLite
    cannot create its WAL index beside a catalog in an unwritable folder); writes then raise
    `StoreError` saying the store is read-only.
    """

    def __init__(
        self,
        path: Path | str,
        *,
        timeout: float = 60.0,
        read_only: bool = False,
        create: bool = True,
        store: str | None = None,
    ) -> None:
        self.read_only = read_only
        self._lock = threading.RLock()
        self.migrated_from: int | None = None
        self._db: Any = None  # a sqlite3.Connection, or a PostgresConnection
        self._errors: tuple[type[Exception], ...] = (sqlite3.DatabaseError,)
        if is_postgres_url(path):
            self.path: Path | str = redact_url(str(path))
            self._open_postgres(str(path), timeout, create=create, store=store)
            return
        path = Path(path)
        self.path = path
        try:
            if read_only:
                self._db = self._open_read_only(timeout)
            else:
                self._db = sqlite3.connect(
                    path, timeout=timeout, isolation_level=None, check_same_thread=False
                )
                self._enable_wal(timeout)
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
                foreign_schema(self._db, path)  # before a write could fire a planted trigger
                self._create_or_migrate()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not a usable featcache catalog ({exc})") from exc
        except StoreError:
            if self._db is not None:
                self._db.close()
            raise

    def _open_postgres(self, url: str, timeout: float, *, create: bool, store: str | None) -> None:
        """Connect to a catalog on PostgreSQL; create its tables (unless read-only or not
        `create`) and check that it is `store`'s catalog (one catalog belongs to one store)."""
        pg = PostgresConnection(url, timeout=timeout, read_only=self.read_only)
        self._errors = pg.errors
        self._db = pg
        try:
            exists = pg.has_table("meta")
            if exists:  # before a write of ours could fire a planted trigger or rule
                foreign_postgres_schema(pg, str(self.path))
            if not exists and (self.read_only or not create):
                raise NotFoundError(
                    f"{self.path}: no featcache catalog in this database; create the store "
                    "first (featcache extract ... --catalog URL)"
                )
            if not self.read_only:
                with self.transaction() as db:
                    create_or_migrate(db, self.path, tables=POSTGRES_TABLES)
                    if store is not None:
                        db.execute(
                            "INSERT INTO meta VALUES('store', ?) ON CONFLICT DO NOTHING", (store,)
                        )
            self._check_schema(self._db)
            owner = self.query("SELECT value FROM meta WHERE key='store'")
        except BaseException:
            pg.close()
            raise
        if store is not None and owner and owner[0][0] != store:
            pg.close()
            raise StoreError(
                f"{self.path}: this catalog belongs to the store {owner[0][0]}, not {store}; "
                "give each store its own database (or schema: ?options=-csearch_path%3DNAME)"
            )

    def _open_read_only(self, timeout: float) -> sqlite3.Connection:
        assert isinstance(self.path, Path)  # the SQLite branch of __init__
        uri = f"file:{quote(str(self.path.resolve()))}?mode=ro"
        last: sqlite3.OperationalError | None = None
        # mode=ro needs the WAL index (-shm) to exist or be creatable; immutable=1 does not.
        for suffix in ("", "&immutable=1"):
            db = sqlite3.connect(
                uri + suffix,
                uri=True,
                timeout=timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            try:
                self._check_schema(db)
                foreign_schema(db, self.path)
                db.execute(f"PRAGMA cache_size=-{_CACHE_KIB}")
                return db
            except sqlite3.OperationalError as exc:
                db.close()
                last = exc
            except StoreError:
                db.close()
                raise
        raise StoreError(f"{self.path}: cannot open the catalog read-only ({last})") from last

    def _check_schema(self, db: Any) -> None:
        found = schema_version(db, self.path)
        if found != SCHEMA_VERSION:
            raise StoreError(
                f"{self.path}: catalog schema {found} is not the supported {SCHEMA_VERSION}; "
                "open the store once with write access to upgrade it"
            )

    def _create_or_migrate(self) -> None:
        with self.transaction() as db:
            self.migrated_from = create_or_migrate(db, self.path)

    def _enable_wal(self, timeout: float) -> None:
        # Switching a new database to WAL takes an exclusive lock, and SQLite does not wait
        # for it through the busy handler: two processes creating one store at once must retry.
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        """One write transaction holding SQLite's write lock from its start.

        A failure rolls back what the transaction did and raises `StoreError` with the cause
        (a full disk says so); SQLite's own automatic rollback is not mistaken for the cause.
        """
        with self._lock:
            if self.read_only:
                raise StoreError(
                    f"{self.path}: the store is read-only here (opened without write access); "
                    "run this command as a user who may write the store's folder"
                )
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except self._errors as exc:
                raise StoreError(
                    describe_failure(self.path, "locking the catalog for writing", exc)
                ) from exc
            try:
                yield self._db
                self._db.execute("COMMIT")
            except BaseException as exc:
                self._rollback()
                if isinstance(exc, self._errors):
                    raise StoreError(
                        describe_failure(self.path, "writing the catalog", exc)
                    ) from exc
                raise

    def _rollback(self) -> None:
        # SQLite may already have rolled back (a full disk does); then there is nothing to undo.
        if self._db.in_transaction:
            # the error that led here is the one to report, not a failed rollback
            with contextlib.suppress(*self._errors):
                self._db.execute("ROLLBACK")

    def query_columns(self, sql: str, params: Sequence[Any], *, width: int) -> list[list[Any]]:
        """The `width` columns of a query's rows as lists, read `_FETCH_ROWS` at a time
        (never a list of every row's tuple at once)."""
        columns: list[list[Any]] = [[] for _ in range(width)]
        with self._lock:
            try:
                cursor = self._db.execute(sql, params)
                while batch := cursor.fetchmany(_FETCH_ROWS):
                    for column, values in zip(columns, zip(*batch, strict=True), strict=True):
                        column += values
            except self._errors as exc:
                raise StoreError(f"{self.path}: query failed ({exc})") from exc
        return columns

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return list(self._db.execute(sql, params).fetchall())
            except self._errors as exc:
                raise StoreError(f"{self.path}: query failed ({exc})") from exc

    # -- extractors -------------------------------------------------------------------------

    def register_extractor(self, fingerprint: str, spec: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO extractors VALUES(?, ?, ?) ON CONFLICT DO NOTHING",
                (fingerprint, json.dumps(spec, sort_keys=True), time.time()),
            )

    def extractors(self) -> dict[str, dict[str, Any]]:
        rows = self.query("SELECT fingerprint, spec FROM extractors ORDER BY created")
        return {
            fp: _json_field(spec, f"{self.path}: extractor {fp!r} spec", dict) for fp, spec in rows
        }

    # -- vectors and shards -----------------------------------------------------------------

    def locate(
        self, keys: Sequence[str], fingerprint: str, layer: str
    ) -> dict[str, tuple[str, int]]:
        """Map each stored key to (shard name, row)."""
        where: dict[str, tuple[str, int]] = {}
        for chunk in _key_chunks(keys):
            marks = ",".join("?" * len(chunk))
            for key, name, row in self.query(
                "SELECT v.key, s.name, v.row FROM vectors v JOIN shards s ON s.id = v.shard_id "
                f"WHERE v.fingerprint=? AND v.layer=? AND v.key IN ({marks})",
                (fingerprint, layer, *chunk),
            ):
                where[key] = (name, _vector_row(row, f"{self.path}: vector of key {key!r}"))
        return where

    def shard_ids(self, keys: Sequence[str], fingerprint: str, layer: str) -> dict[str, int]:
        """Map each stored key to the id of its shard."""
        found: dict[str, int] = {}
        for chunk in _key_chunks(keys):
            marks = ",".join("?" * len(chunk))
            found.update(
                self.query(
                    "SELECT key, shard_id FROM vectors WHERE fingerprint=? AND layer=? "
                    f"AND key IN ({marks})",
                    (fingerprint, layer, *chunk),
                )
            )
        return found

    def register_shard(
        self,
        shard: ShardRecord,
        keys: Sequence[str],
    ) -> int:
        """Register a written shard and its keys in one transaction; return how many were new.

        Keys another writer registered first keep their vectors. A shard that adds nothing is
        unregistered again in the same transaction (the caller deletes its file).
        """
        with self.transaction() as db:
            shard_id, added = self._insert_shard(
                db, shard, len(keys), [(key, row) for row, key in enumerate(keys)]
            )
            if added == 0:
                db.execute("DELETE FROM shards WHERE id=?", (shard_id,))
        return added

    @staticmethod
    def _insert_shard(
        db: Any, shard: ShardRecord, rows: int, vectors: Sequence[tuple[str, int]]
    ) -> tuple[int, int]:
        """Insert a shard of `rows` rows and its (key, row) vectors (a key already stored
        keeps its vector); return (the shard's id, the vectors added)."""
        shard_id = db.execute(
            "INSERT INTO shards(name, fingerprint, layer, dtype, rows, dim, created, sha256, "
            "bytes, mtime_ns) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
            (
                shard.name,
                shard.fingerprint,
                shard.layer,
                shard.dtype,
                rows,
                shard.dim,
                time.time(),
                shard.sha256,
                shard.bytes,
                shard.mtime_ns,
            ),
        ).fetchone()[0]
        before = db.total_changes
        db.executemany(
            "INSERT INTO vectors VALUES(?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(key, shard.fingerprint, shard.layer, shard_id, row) for key, row in vectors],
        )
        return int(shard_id), int(db.total_changes - before)

    def vector_counts(self) -> list[tuple[str, str, int]]:
        return self.query(
            "SELECT fingerprint, layer, COUNT(*) FROM vectors GROUP BY fingerprint, layer"
        )

    def shards(
        self, names: Sequence[str] | None = None, *, ids: Sequence[int] | None = None
    ) -> list[ShardRecord]:
        """Every registered shard (or those among `names`, or `ids`), in registration order."""
        if names is None and ids is None:
            rows = self.query(f"SELECT {_SHARD_COLUMNS} FROM shards ORDER BY id")
        else:
            column, values = ("name", names) if names is not None else ("id", ids or [])
            rows = []
            for chunk in _chunks(values):
                marks = ",".join("?" * len(chunk))
                rows += self.query(
                    f"SELECT {_SHARD_COLUMNS} FROM shards WHERE {column} IN ({marks})",
                    tuple(chunk),
                )
        return [ShardRecord(*row) for row in rows]

    def record_shard_file(self, shard_id: int, sha256: str, size: int, mtime_ns: int) -> None:
        """Remember a shard's checksum, size and mtime (after hashing it)."""
        with self.transaction() as db:
            db.execute(
                "UPDATE shards SET sha256=?, bytes=?, mtime_ns=? WHERE id=?",
                (sha256, size, mtime_ns, shard_id),
            )

    def shard_rows(self, shard_id: int) -> list[int]:
        found = self.query("SELECT row FROM vectors WHERE shard_id=?", (shard_id,))
        where = f"{self.path}: a vector of shard id {shard_id}"
        return [_vector_row(r[0], where) for r in found]

    def forget_shards(self, shard_ids: Sequence[int]) -> int:
        """Unregister shards and their vectors (their keys are then computed again)."""
        if not shard_ids:
            return 0
        with self.transaction() as db:
            before = db.total_changes
            for shard_id in shard_ids:
                db.execute("DELETE FROM vectors WHERE shard_id=?", (shard_id,))
            dropped = int(db.total_changes - before)
            db.executemany("DELETE FROM shards WHERE id=?", [(i,) for i in shard_ids])
        return dropped

    def dangling_vectors(self) -> int:
        return int(
            self.query(
                "SELECT COUNT(*) FROM vectors v LEFT JOIN shards s ON s.id = v.shard_id "
                "WHERE s.id IS NULL"
            )[0][0]
        )

    def drop_dangling_vectors(self) -> int:
        with self.transaction() as db:
            before = db.total_changes
            db.execute("DELETE FROM vectors WHERE shard_id NOT IN (SELECT id FROM shards)")
            return int(db.total_changes - before)

    def drop_unused_vectors(self, older_than: float) -> tuple[int, list[str]]:
        """Delete vectors of keys no dataset lists (in shards older than `older_than`).

        Return the number of vectors deleted and the names of shards left with none.
        """
        with self.transaction() as db:
            before = db.total_changes
            db.execute(
                "DELETE FROM vectors WHERE key NOT IN (SELECT key FROM dataset_rows) "
                "AND shard_id IN (SELECT id FROM shards WHERE created < ?)",
                (older_than,),
            )
            dropped = db.total_changes - before
            empty = [
                r[0]
                for r in db.execute(
                    "SELECT name FROM shards WHERE id NOT IN (SELECT shard_id FROM vectors)"
                )
            ]
            db.execute("DELETE FROM shards WHERE id NOT IN (SELECT shard_id FROM vectors)")
        return dropped, empty

    # -- datasets ---------------------------------------------------------------------------

    def put_dataset(
        self,
        name: str,
        rows: Sequence[DatasetRow],
        class_names: Sequence[str],
        source: str,
        *,
        append: bool,
        split: str | None,
    ) -> DatasetChange:
        """Write rows into a dataset, one row per path (see `FeatureStore.add_dataset`)."""
        incoming: dict[str, tuple[str, int | None, str | None]] = {}
        for row in rows:
            # a path listed twice: its first row counts
            incoming.setdefault(row.path, (row.key, row.label, row.split))
        now = time.time()
        with self.transaction() as db:
            found = db.execute("SELECT class_names FROM datasets WHERE name=?", (name,)).fetchone()
            if found is not None and (append or split is not None):
                recorded = _class_names(found[0], f"{self.path}: dataset {name!r}")
                class_names = _merged_classes(name, recorded, list(class_names))
            # path -> (path, idx, key, label, split)
            existing = {
                r[0]: r
                for r in db.execute(
                    # in idx order: the table's own order (another index would read it at random)
                    "SELECT path, idx, key, label, split FROM dataset_rows WHERE dataset=? "
                    "ORDER BY idx",
                    (name,),
                )
            }
            if append:
                doomed: list[int] = []
            else:
                doomed = [
                    old[1]
                    for path, old in existing.items()
                    if path not in incoming and (split is None or old[4] == split)
                ]
            # new rows number on after every row the dataset had, removed ones included
            next_idx = 1 + int(
                db.execute(
                    "SELECT COALESCE(MAX(idx), -1) FROM dataset_rows WHERE dataset=?", (name,)
                ).fetchone()[0]
            )
            db.executemany(
                "DELETE FROM dataset_rows WHERE dataset=? AND idx=?", [(name, i) for i in doomed]
            )
            added, updated, unchanged = [], [], 0
            for path, new in incoming.items():
                old = existing.get(path)
                if old is None:
                    added.append((name, next_idx, new[0], path, new[1], new[2]))
                    next_idx += 1
                elif old[2:] != new:
                    updated.append((*new, name, old[1]))
                else:
                    unchanged += 1
            db.execute(
                "INSERT INTO datasets VALUES(?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "class_names=excluded.class_names, source=excluded.source, "
                "updated=excluded.updated",
                (name, json.dumps(list(class_names)), source, now, now),
            )
            bump_generation(db)
            db.executemany("INSERT INTO dataset_rows VALUES(?, ?, ?, ?, ?, ?)", added)
            db.executemany(
                "UPDATE dataset_rows SET key=?, label=?, split=? WHERE dataset=? AND idx=?",
                updated,
            )
            splits = _split_counts(db.execute(_SPLIT_COUNTS, (name,)).fetchall())
        return DatasetChange(
            dataset=name,
            added=len(added),
            updated=len(updated),
            removed=len(doomed),
            unchanged=unchanged,
            rows=sum(splits.values()),
            splits=splits,
        )

    def dataset(self, name: str) -> DatasetInfo | None:
        """A dataset's record with its rows per split, or None."""
        found = self.query("SELECT class_names, source FROM datasets WHERE name=?", (name,))
        if not found:
            return None
        splits = _split_counts(self.query(_SPLIT_COUNTS, (name,)))
        classes = _class_names(found[0][0], f"{self.path}: dataset {name!r}")
        return DatasetInfo(name, classes, found[0][1], sum(splits.values()), splits)

    def relative_paths(self, name: str) -> list[tuple[str, str]]:
        """(path, key) of a dataset's rows recorded under a relative path (by a featcache
        before paths were made absolute)."""
        found = self.query(
            "SELECT path, key FROM dataset_rows WHERE dataset=? AND substr(path, 1, 1) <> '/'",
            (name,),
        )
        return [(str(path), str(key)) for path, key in found]

    def rename_paths(self, name: str, renamed: dict[str, str]) -> None:
        """Give rows of dataset `name` new paths (old -> new), keeping their place."""
        with self.transaction() as db:
            db.executemany(
                "UPDATE dataset_rows SET path=? WHERE dataset=? AND path=?",
                [(new, name, old) for old, new in renamed.items()],
            )
            bump_generation(db)

    def dataset_names(self) -> list[str]:
        return [r[0] for r in self.query("SELECT name FROM datasets ORDER BY name")]

    def dataset_rows(self, name: str) -> list[DatasetRow]:
        """The rows of a dataset in dataset order."""
        return [
            DatasetRow(*r)
            for r in self.query(
                "SELECT key, path, label, split FROM dataset_rows WHERE dataset=? ORDER BY idx",
                (name,),
            )
        ]

    def paths_of(self, keys: Sequence[str]) -> dict[str, str]:
        """The stored path of each key found in any dataset (see `FeatureStore.paths_of`)."""
        found: dict[str, str] = {}
        for chunk in _key_chunks(keys):
            marks = ", ".join("?" * len(chunk))
            # one probe of the (dataset, key) index per dataset and key: CROSS JOIN makes
            # SQLite loop over the (few) datasets outside
            for key, path in self.query(
                "SELECT r.key, r.path FROM datasets d CROSS JOIN dataset_rows r "
                f"WHERE r.dataset = d.name AND r.key IN ({marks}) "
                "ORDER BY d.updated DESC, r.dataset, r.idx",
                tuple(chunk),
            ):
                found.setdefault(key, path)  # the first row in that order wins
        return found

    def datasets_generation(self) -> int:
        """A counter of writes to datasets, bumped in each write's transaction (O(1) to read).

        A read-only catalog made before the counter existed answers with a hash of the row
        count and the newest update instead (what writers changed before it).
        """
        found = self.query("SELECT value FROM meta WHERE key = ?", (GENERATION_KEY,))
        if found:
            return int(found[0][0])
        count, rows, newest = self.query(
            "SELECT (SELECT COUNT(*) FROM datasets), (SELECT COUNT(*) FROM dataset_rows), "
            "(SELECT COALESCE(MAX(updated), 0) FROM datasets)"
        )[0]
        return -abs(hash((int(count), int(rows), float(newest))))

    def dataset_columns(self, name: str) -> DatasetColumns:
        """Every row of a dataset in dataset order, as columns."""
        idx, keys, paths, labels, splits = self.query_columns(
            # in idx order: the table's own order (another index would read it at random)
            "SELECT idx, key, path, COALESCE(label, -1), split FROM dataset_rows "
            "WHERE dataset = ? ORDER BY idx",
            (name,),
            width=5,
        )
        where = f"{self.path}: dataset {name!r}"
        return DatasetColumns(
            _integers(idx, f"{where} idx", -(2**63), 2**63 - 1),
            keys,
            paths,
            _integers(labels, f"{where} label", -1, _MAX_ROW),
            splits,
        )

    def dataset_locations(
        self, name: str, fingerprint: str, layer: str
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(idx, shard id, row) arrays of the rows of a dataset that have a vector, in no
        particular order.

        On SQLite the (dataset, key, idx, split) index covers the query, so the rows come in
        key order and the probes into the vectors table (keyed by key) walk its pages in
        order: at a million rows several times faster than joining in dataset order.
        """
        layout = np.dtype([("idx", np.int64), ("shard_id", np.int64), ("row", np.int64)])
        with self._lock:
            try:
                cursor = self._db.execute(
                    "SELECT r.idx, v.shard_id, v.row FROM dataset_rows r "
                    "JOIN vectors v ON v.key = r.key AND v.fingerprint = ? AND v.layer = ? "
                    "WHERE r.dataset = ?",
                    (fingerprint, layer, name),
                )
                found = np.fromiter(cursor, dtype=layout)  # 24 bytes a row, no tuples kept
            except self._errors as exc:
                raise StoreError(f"{self.path}: query failed ({exc})") from exc
            except (TypeError, ValueError, OverflowError) as exc:  # text or a blob in a column
                raise StoreError(
                    f"{self.path}: dataset {name!r}: a row number of its vectors is not an "
                    f"integer ({exc}); the catalog was crafted or damaged"
                ) from exc
        bad = (found["row"] < 0) | (found["row"] >= _MAX_ROW)
        if bad.any():
            raise StoreError(
                f"{self.path}: dataset {name!r}: a vector's row is {int(found['row'][bad][0])}, "
                f"outside 0..{_MAX_ROW - 1}; the catalog was crafted or damaged"
            )
        return found["idx"], found["shard_id"], found["row"]

    def vector_pages(
        self,
        name: str,
        fingerprint: str,
        layer: str,
        *,
        split: str | None = None,
        page: int = 8192,
    ) -> Iterator[list[VectorRow]]:
        """`vector_rows` page by page (at most `page` rows each), only `split`'s rows if given.

        Keyset pagination on the (dataset, idx) primary key: each page is one indexed range
        query, so memory stays bounded by `page` at any dataset size.
        """
        sql = (
            "SELECT r.idx, r.key, r.path, r.label, r.split, s.name, v.row FROM dataset_rows r "
            "LEFT JOIN vectors v ON v.key = r.key AND v.fingerprint = ? AND v.layer = ? "
            "LEFT JOIN shards s ON s.id = v.shard_id WHERE r.dataset = ? AND r.idx > ? "
            + ("AND r.split = ? " if split is not None else "")
            + "ORDER BY r.idx LIMIT ?"
        )
        after = -1
        while True:
            params: tuple[Any, ...] = (fingerprint, layer, name, after)
            found = self.query(
                sql, (*params, split, page) if split is not None else (*params, page)
            )
            if not found:
                return
            after = int(found[-1][0])
            _check_page(found, f"{self.path}: dataset {name!r}")
            yield [VectorRow(*r[1:]) for r in found]
            if len(found) < page:
                return

    def missing_vectors(
        self, name: str, fingerprint: str, layer: str, *, split: str | None = None
    ) -> tuple[int, int, str | None]:
        """(rows, rows without a vector, the first such row's path) of a dataset (or split)."""
        where = "r.dataset = ?" + (" AND r.split = ?" if split is not None else "")
        params = (name,) if split is None else (name, split)
        total = int(self.query(f"SELECT COUNT(*) FROM dataset_rows r WHERE {where}", params)[0][0])
        found = self.query(
            "SELECT COUNT(*), MIN(r.idx) FROM dataset_rows r LEFT JOIN vectors v ON v.key = r.key "
            "AND v.fingerprint = ? AND v.layer = ? LEFT JOIN shards s ON s.id = v.shard_id "
            f"WHERE {where} AND s.id IS NULL",
            (fingerprint, layer, *params),
        )
        missing, first = int(found[0][0]), found[0][1]
        path = None
        if first is not None:
            path = str(
                self.query(
                    "SELECT path FROM dataset_rows WHERE dataset = ? AND idx = ?", (name, first)
                )[0][0]
            )
        return total, missing, path

    def dataset_fingerprints(self, name: str, layer: str | None = None) -> list[str]:
        """The extractors with `layer` vectors (any layer's if None) for rows of `name`."""
        on, params = ("AND v.layer = ?", (layer,)) if layer is not None else ("", ())
        # each candidate (few: the store's extractors with shards of that layer) stops at
        # its first row with a vector, instead of joining every row
        candidates = [
            str(r[0])
            for r in self.query(
                "SELECT DISTINCT fingerprint FROM shards "
                + ("WHERE layer = ? " if layer is not None else "")
                + "ORDER BY fingerprint",
                params,
            )
        ]
        return [
            fp
            for fp in candidates
            if self.query(
                "SELECT 1 FROM dataset_rows r JOIN vectors v ON v.key = r.key "
                f"AND v.fingerprint = ? {on} WHERE r.dataset = ? LIMIT 1",
                (fp, *params, name),
            )
        ]

    def dataset_layers(self, name: str) -> tuple[int, list[tuple[str, str, int]]]:
        """(distinct keys of the dataset, [(fingerprint, layer, keys with a vector)])."""
        keys = self.query(
            "SELECT COUNT(DISTINCT key) FROM dataset_rows WHERE dataset = ?", (name,)
        )[0][0]
        found = self.query(
            "SELECT v.fingerprint, v.layer, COUNT(DISTINCT r.key) FROM dataset_rows r "
            "JOIN vectors v ON v.key = r.key WHERE r.dataset = ? "
            "GROUP BY v.fingerprint, v.layer ORDER BY v.fingerprint, v.layer",
            (name,),
        )
        return int(keys), [(str(fp), str(layer), int(count)) for fp, layer, count in found]

    def dedupe_dataset_rows(self) -> int:
        """Merge rows that share a (dataset, path); return how many were removed."""
        with self.transaction() as db:
            return dedupe_rows(db)

    # -- failures ---------------------------------------------------------------------------

    def add_failures(self, dataset: str | None, failures: Sequence[tuple[str, str]]) -> None:
        """Record why each path failed, replacing what an earlier run recorded for it: one
        row per (dataset, path)."""
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "DELETE FROM failures WHERE dataset IS ? AND path=?",
                [(dataset, path) for path, _ in failures],
            )
            db.executemany(
                "INSERT INTO failures(dataset, path, reason, time) VALUES(?, ?, ?, ?)",
                [(dataset, path, reason, now) for path, reason in failures],
            )

    def failure_rows(self) -> list[tuple[float, str | None, str, str]]:
        """(time, dataset, path, reason) of every recorded failure, oldest first."""
        return self.query("SELECT time, dataset, path, reason FROM failures ORDER BY id")

    def failures(self, dataset: str | None = None) -> list[tuple[str, str]]:
        if dataset is None:
            return self.query("SELECT path, reason FROM failures ORDER BY id")
        return self.query(
            "SELECT path, reason FROM failures WHERE dataset=? ORDER BY id", (dataset,)
        )

    # -- file digests (weights files: hashing 244 MB on every run is measurable) -----------

    @functools.cached_property
    def _stamps_have_ctime(self) -> bool:
        # a catalog made before stamps had ctime_ns and opened read-only: nothing is trusted
        with self._lock:
            try:
                return has_stamp_ctime(self._db)
            except self._errors as exc:
                raise StoreError(f"{self.path}: query failed ({exc})") from exc

    def file_digest(self, path: str, stamp: FileStamp) -> str | None:
        """The SHA-256 recorded for `path` if its stamp then was `stamp`, else None."""
        return self.file_digests({path: stamp}).get(path)

    def remember_file_digest(self, path: str, stamp: FileStamp, sha256: str) -> None:
        self.remember_file_digests({path: (stamp, sha256)})

    def file_digests(self, stamps: dict[str, FileStamp]) -> dict[str, str]:
        """{path: SHA-256} of the `stamps` paths recorded with exactly that stamp."""
        found: dict[str, str] = {}
        if not self._stamps_have_ctime:
            return found
        paths = list(stamps)
        for chunk in _chunks(paths):
            marks = ",".join("?" * len(chunk))
            for path, size, mtime_ns, ctime_ns, inode, sha256 in self.query(
                "SELECT path, size, mtime_ns, ctime_ns, inode, sha256 FROM file_digests "
                f"WHERE path IN ({marks})",
                tuple(chunk),
            ):
                if tuple(stamps[path]) == (size, mtime_ns, ctime_ns, inode):
                    found[path] = str(sha256)
        return found

    def remember_file_digests(self, records: dict[str, tuple[FileStamp, str]]) -> None:
        """Record {path: (stamp, SHA-256)} in one transaction."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO file_digests(path, size, mtime_ns, ctime_ns, inode, sha256) "
                "VALUES(?, ?, ?, ?, ?, ?) ON CONFLICT(path) DO UPDATE SET size=excluded.size, "
                "mtime_ns=excluded.mtime_ns, ctime_ns=excluded.ctime_ns, "
                "inode=excluded.inode, sha256=excluded.sha256",
                [
                    (path, s.size, s.mtime_ns, s.ctime_ns, s.inode, digest)
                    for path, (s, digest) in records.items()
                ],
            )

    # -- heads ------------------------------------------------------------------------------

    def add_head(self, name: str, file: str, sha256: str, meta: dict[str, Any]) -> int:
        """Register a head file under a version `name` never had before; return it."""
        with self.transaction() as db:
            last, newest = db.execute(
                "SELECT COALESCE((SELECT last FROM head_versions WHERE name=?), 0), "
                "COALESCE((SELECT MAX(version) FROM heads WHERE name=?), 0)",
                (name, name),
            ).fetchone()
            version = 1 + max(int(last), int(newest))
            db.execute(
                "INSERT INTO head_versions VALUES(?, ?) ON CONFLICT(name) DO UPDATE SET "
                "last=excluded.last",
                (name, version),
            )
            # the file name is stored as given: names are data, never format strings
            db.execute(
                "INSERT INTO heads VALUES(?, ?, ?, ?, ?, ?)",
                (name, version, file, sha256, json.dumps(meta), time.time()),
            )
        return version

    def heads(self, name: str | None = None) -> list[HeadRecord]:
        sql = "SELECT name, version, file, sha256, meta, created FROM heads"
        rows = (
            self.query(sql + " WHERE name=? ORDER BY version", (name,))
            if name
            else self.query(sql + " ORDER BY name, version")
        )
        return [
            HeadRecord(n, v, f, s, _json_field(m, f"{self.path}: head {n!r} v{v} meta", dict), c)
            for n, v, f, s, m, c in rows
        ]

    def replace_head_file(self, name: str, version: int, file: str, sha256: str) -> str:
        """Point a head version at a converted file (same model, new format); return the
        file it named before."""
        with self.transaction() as db:
            found = db.execute(
                "SELECT file FROM heads WHERE name=? AND version=?", (name, version)
            ).fetchone()
            if found is None:
                raise NotFoundError(f"{self.path}: no head '{name}' v{version}")
            db.execute(
                "UPDATE heads SET file=?, sha256=? WHERE name=? AND version=?",
                (file, sha256, name, version),
            )
        return str(found[0])

    def delete_heads(self, name: str, version: int | None) -> list[str]:
        """Unregister a head's versions (all, or one); their numbers stay used."""
        with self.transaction() as db:
            if version is None:
                rows = db.execute("SELECT file FROM heads WHERE name=?", (name,)).fetchall()
                db.execute("DELETE FROM heads WHERE name=?", (name,))
            else:
                rows = db.execute(
                    "SELECT file FROM heads WHERE name=? AND version=?", (name, version)
                ).fetchall()
                db.execute("DELETE FROM heads WHERE name=? AND version=?", (name, version))
        return [r[0] for r in rows]

    # -- head promotions (a history: the newest promotion of a version that still exists) --

    def promote_head(self, name: str, version: int) -> None:
        with self.transaction() as db:
            db.execute("INSERT INTO head_promotions VALUES(?, ?, ?)", (name, version, time.time()))

    def promoted_head(self, name: str) -> int | None:
        # a store opened read-only may predate the table (made by any writable open)
        if not self._has_table("head_promotions"):
            return None
        found = self.query(
            "SELECT p.version FROM head_promotions p JOIN heads h "
            "ON h.name = p.name AND h.version = p.version "
            "WHERE p.name = ? ORDER BY p.rowid DESC LIMIT 1",
            (name,),
        )
        return int(found[0][0]) if found else None

    # -- perceptual hashes and near-duplicate groups (featcache.analysis) -----------------

    def put_image_hashes(self, kind: str, hashes: Iterable[tuple[str, bytes]]) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO image_hashes VALUES(?, ?, ?) ON CONFLICT(key, kind) DO UPDATE SET "
                "hash=excluded.hash",
                ((key, kind, value) for key, value in hashes),
            )

    def _has_table(self, name: str) -> bool:
        # A read-only catalog made before a table was added lacks it: read it as empty.
        return bool(
            self.query("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,))
        )

    def image_hashes(self, keys: Sequence[str], kind: str) -> dict[str, bytes]:
        found: dict[str, bytes] = {}
        if not self._has_table("image_hashes"):
            return found
        for chunk in _key_chunks(keys):
            marks = ",".join("?" * len(chunk))
            for key, value in self.query(
                f"SELECT key, hash FROM image_hashes WHERE kind=? AND key IN ({marks})",
                (kind, *chunk),
            ):
                found[key] = bytes(value)
        return found

    def put_groups(self, dataset: str, groups: Iterable[tuple[str, int]]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.execute("DELETE FROM dataset_groups WHERE dataset=?", (dataset,))
            db.executemany(
                "INSERT INTO dataset_groups VALUES(?, ?, ?, ?)",
                ((dataset, key, grp, now) for key, grp in groups),
            )

    def groups(self, dataset: str) -> tuple[dict[str, int], float, float]:
        """(key → group, when recorded, when the dataset last changed); empty if never."""
        if not self._has_table("dataset_groups"):
            return {}, 0.0, 0.0
        rows = self.query(
            "SELECT key, grp, created FROM dataset_groups WHERE dataset=?", (dataset,)
        )
        updated = self.query("SELECT updated FROM datasets WHERE name=?", (dataset,))
        created = max((float(r[2]) for r in rows), default=0.0)
        changed = float(updated[0][0]) if updated else 0.0
        return {str(r[0]): int(r[1]) for r in rows}, created, changed

    # -- copying a store (featcache.store.copy): everything as it is, identities kept -------

    def shard_vectors(self, shard_id: int) -> list[tuple[str, int]]:
        """(key, row) of every vector a shard holds."""
        return [
            (str(k), _vector_row(r, f"{self.path}: vector of key {k!r}"))
            for k, r in self.query("SELECT key, row FROM vectors WHERE shard_id=?", (shard_id,))
        ]

    def import_shard(self, shard: ShardRecord, vectors: Sequence[tuple[str, int]]) -> None:
        """Register a copied shard file with its own (key, row) pairs, in one transaction."""
        with self.transaction() as db:
            self._insert_shard(db, shard, shard.rows, vectors)

    def head_history(self) -> tuple[dict[str, int], list[tuple[str, int, float]]]:
        """({head name: last version ever}, promotions in order)."""
        last = {str(n): int(v) for n, v in self.query("SELECT name, last FROM head_versions")}
        promotions = (
            [
                (str(n), int(v), float(t))
                for n, v, t in self.query(
                    "SELECT name, version, at FROM head_promotions ORDER BY rowid"
                )
            ]
            if self._has_table("head_promotions")
            else []
        )
        return last, promotions

    def import_heads(
        self,
        records: Sequence[HeadRecord],
        last: dict[str, int],
        promotions: Sequence[tuple[str, int, float]],
    ) -> None:
        """Register copied head files under their own versions, with the version history."""
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO heads VALUES(?, ?, ?, ?, ?, ?)",
                [
                    (h.name, h.version, h.file, h.sha256, json.dumps(h.meta), h.created)
                    for h in records
                ],
            )
            db.executemany(
                "INSERT INTO head_versions VALUES(?, ?) ON CONFLICT(name) DO UPDATE SET "
                "last=excluded.last",
                list(last.items()),
            )
            db.executemany("INSERT INTO head_promotions VALUES(?, ?, ?)", list(promotions))

    def analysis_records(self) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        """Every perceptual hash (key, kind, hash) and near-duplicate group row."""
        hashes = (
            [
                (k, kind, bytes(h))
                for k, kind, h in self.query("SELECT key, kind, hash FROM image_hashes")
            ]
            if self._has_table("image_hashes")
            else []
        )
        groups = (
            self.query("SELECT dataset, key, grp, created FROM dataset_groups")
            if self._has_table("dataset_groups")
            else []
        )
        return hashes, groups

    def import_analysis(
        self, hashes: Sequence[tuple[Any, ...]], groups: Sequence[tuple[Any, ...]]
    ) -> None:
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO image_hashes VALUES(?, ?, ?) ON CONFLICT DO NOTHING", list(hashes)
            )
            db.executemany(
                "INSERT INTO dataset_groups VALUES(?, ?, ?, ?) ON CONFLICT DO NOTHING",
                list(groups),
            )


def _merged_classes(name: str, old: list[str], new: list[str]) -> list[str]:
    shorter, longer = sorted((old, new), key=len)
    if longer[: len(shorter)] != shorter:  # a file may lack the last classes
        raise StoreError(
            f"dataset '{name}': cannot add rows with classes {new[:5]}... to a "
            f"dataset with classes {old[:5]}...; use another --dataset name"
        )
    return longer


def _split_counts(rows: Sequence[tuple[Any, ...]]) -> dict[str, int]:
    """{split: rows} in the order train, val, test, others ("" for rows without a split)."""
    order = {"train": 0, "val": 1, "test": 2}
    return {s: int(n) for s, n in sorted(rows, key=lambda r: (order.get(r[0], 3), r[0]))}


def _chunks(keys: Sequence[Any]) -> Iterator[Sequence[Any]]:
    for start in range(0, len(keys), _MAX_PARAMS):
        yield keys[start : start + _MAX_PARAMS]


def _key_chunks(keys: Iterable[str]) -> Iterator[Sequence[str]]:
    """The distinct `keys` in sorted chunks: probes in key order walk an index's pages in
    order instead of at random (at a million rows, 3x fewer page reads)."""
    return _chunks(sorted(set(keys)))


#: The longest JSON field (class names, a spec, a head's metadata) the catalog may hand us.
_JSON_FIELD_LIMIT = 16 << 20


def _json_field(text: Any, where: str, kind: type) -> Any:
    """A JSON field of the catalog parsed as a `kind`, or `StoreError` naming `where`: not
    text, longer than 16 MB, not JSON, nested past Python's recursion limit, another type."""
    if not isinstance(text, str) or len(text) > _JSON_FIELD_LIMIT:
        got = f"{len(text)} characters" if isinstance(text, str) else type(text).__name__
        raise StoreError(f"{where}: not a JSON text of at most 16 MB ({got}); crafted or damaged")
    try:
        value = json.loads(text)
    except RecursionError:
        raise StoreError(f"{where}: JSON nested too deeply; crafted or damaged") from None
    except ValueError as exc:
        raise StoreError(f"{where}: not JSON ({exc}); crafted or damaged") from exc
    if not isinstance(value, kind):
        raise StoreError(
            f"{where}: a JSON {kind.__name__} was expected, found {type(value).__name__}; "
            "crafted or damaged"
        )
    return value


def _class_names(text: Any, where: str) -> list[str]:
    names = _json_field(text, f"{where} class_names", list)
    if not all(isinstance(name, str) for name in names):
        raise StoreError(f"{where} class_names: not a list of strings; crafted or damaged")
    return [str(name) for name in names]


#: Rows of a shard, labels: numbered in int32 by the readers.
_MAX_ROW = 2**31


def _vector_row(value: Any, where: str) -> int:
    """A vector's row number from the catalog: an integer in 0..2**31-1, else `StoreError`."""
    if type(value) is not int or not 0 <= value < _MAX_ROW:
        raise StoreError(
            f"{where}: row {value!r} is not a row number (0..{_MAX_ROW - 1}); the catalog was "
            "crafted or damaged"
        )
    return value


def _check_page(found: Sequence[Sequence[Any]], where: str) -> None:
    """Check a `vector_pages` page (idx, key, path, label, split, shard, row): each vector
    row number an integer in 0..2**31-1 and each label an integer in -1..2**31-1 (or NULL),
    else `StoreError` naming the dataset row. Strict types (a float or text label is crafted,
    not truncated), and no message built for rows that pass: this runs on every streamed row.
    """
    for r in found:
        row, label = r[6], r[3]
        if row is not None and (type(row) is not int or not 0 <= row < _MAX_ROW):
            _vector_row(row, f"{where} row {r[0]!r}")
        if label is not None and (type(label) is not int or not -1 <= label <= _MAX_ROW):
            _integers([label], f"{where} row {r[0]!r} label", -1, _MAX_ROW)


def _integers(values: Sequence[Any], where: str, low: int, high: int) -> np.ndarray:
    """`values` as int64, only if each is an integer in low..high (NaN, text, a blob or an
    out-of-range number is `StoreError` naming `where`)."""
    if not len(values):
        return np.zeros(0, np.int64)
    found = np.asarray(values)
    if found.dtype.kind != "i":  # np.array(.., int64) would truncate 2.5 and parse "3"
        first = next((v for v in values if type(v) is not int), None)
        what = "an integer outside 64 bits" if first is None else f"{first!r} is not an integer"
        raise StoreError(f"{where}: {what}; crafted or damaged")
    found = found.astype(np.int64, copy=False)
    bad = (found < low) | (found > high)
    if bad.any():
        raise StoreError(
            f"{where}: {int(found[bad][0])} is outside {low}..{high}; crafted or damaged"
        )
    return found
