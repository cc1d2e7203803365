"""The SQLite catalog of a store (``catalog.sqlite``, WAL mode): every SQL statement lives here.

Tables: ``extractors`` (fingerprint → spec), ``shards`` (file, fingerprint, layer, dtype,
shape), ``vectors`` ((key, fingerprint, layer) → shard row), ``datasets`` and ``dataset_rows``
((key, path, label, split) per dataset), ``failures`` and ``heads`` (versioned head files).
Writes take SQLite's write lock up front (``BEGIN IMMEDIATE``), so processes that share a
store queue instead of failing half-way.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from featcache.errors import StoreError

__all__ = ["Catalog"]

SCHEMA_VERSION = 1
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS extractors(
    fingerprint TEXT PRIMARY KEY, spec TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS shards(
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, fingerprint TEXT NOT NULL,
    layer TEXT NOT NULL, dtype TEXT NOT NULL, rows INTEGER NOT NULL, dim INTEGER NOT NULL,
    created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS vectors(
    key TEXT NOT NULL, fingerprint TEXT NOT NULL, layer TEXT NOT NULL,
    shard_id INTEGER NOT NULL, row INTEGER NOT NULL,
    PRIMARY KEY(key, fingerprint, layer)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS vectors_shard ON vectors(shard_id);
CREATE TABLE IF NOT EXISTS datasets(
    name TEXT PRIMARY KEY, class_names TEXT NOT NULL, source TEXT NOT NULL,
    created REAL NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS dataset_rows(
    dataset TEXT NOT NULL, idx INTEGER NOT NULL, key TEXT NOT NULL, path TEXT NOT NULL,
    label INTEGER, split TEXT, PRIMARY KEY(dataset, idx));
CREATE INDEX IF NOT EXISTS dataset_rows_key ON dataset_rows(key);
CREATE TABLE IF NOT EXISTS failures(
    id INTEGER PRIMARY KEY, dataset TEXT, path TEXT NOT NULL, reason TEXT NOT NULL,
    time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS file_digests(
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, sha256 TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS heads(
    name TEXT NOT NULL, version INTEGER NOT NULL, file TEXT NOT NULL, sha256 TEXT NOT NULL,
    meta TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY(name, version));
"""
_MAX_PARAMS = 500  # keys per IN (...) query, well under SQLite's variable limit


class Catalog:
    """A connection to one store's catalog, safe to share between threads."""

    def __init__(self, path: Path, *, timeout: float = 60.0) -> None:
        self.path = path
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                path, timeout=timeout, isolation_level=None, check_same_thread=False
            )
            self._enable_wal(timeout)
            self._db.execute("PRAGMA synchronous=NORMAL")
            with self.transaction() as db:
                # statement by statement: executescript() would commit the open transaction
                for statement in filter(str.strip, _SCHEMA.split(";")):
                    db.execute(statement)
                found = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
                if found is None:
                    db.execute("INSERT INTO meta VALUES('schema', ?)", (str(SCHEMA_VERSION),))
                elif int(found[0]) != SCHEMA_VERSION:
                    raise StoreError(
                        f"{path}: catalog schema {found[0]} is not the supported {SCHEMA_VERSION}"
                    )
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{path}: not a usable featcache catalog ({exc})") from exc

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
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock from its start."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as exc:
                raise StoreError(
                    f"{self.path}: the catalog is locked or unwritable ({exc})"
                ) from exc
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            else:
                try:
                    self._db.execute("COMMIT")
                except sqlite3.DatabaseError as exc:
                    self._db.execute("ROLLBACK")
                    raise StoreError(f"{self.path}: commit failed ({exc})") from exc

    def query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.DatabaseError as exc:
                raise StoreError(f"{self.path}: query failed ({exc})") from exc

    # -- extractors -------------------------------------------------------------------------

    def register_extractor(self, fingerprint: str, spec: dict[str, Any]) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR IGNORE INTO extractors VALUES(?, ?, ?)",
                (fingerprint, json.dumps(spec, sort_keys=True), time.time()),
            )

    def extractors(self) -> dict[str, dict[str, Any]]:
        rows = self.query("SELECT fingerprint, spec FROM extractors ORDER BY created")
        return {fp: json.loads(spec) for fp, spec in rows}

    # -- vectors ----------------------------------------------------------------------------

    def present(self, keys: Sequence[str], fingerprint: str, layer: str) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            found.update(
                row[0]
                for row in self.query(
                    f"SELECT key FROM vectors WHERE fingerprint=? AND layer=? AND key IN ({marks})",
                    (fingerprint, layer, *chunk),
                )
            )
        return found

    def locate(
        self, keys: Sequence[str], fingerprint: str, layer: str
    ) -> dict[str, tuple[str, int]]:
        """Map each stored key to (shard name, row)."""
        where: dict[str, tuple[str, int]] = {}
        for chunk in _chunks(keys):
            marks = ",".join("?" * len(chunk))
            for key, name, row in self.query(
                "SELECT v.key, s.name, v.row FROM vectors v JOIN shards s ON s.id = v.shard_id "
                f"WHERE v.fingerprint=? AND v.layer=? AND v.key IN ({marks})",
                (fingerprint, layer, *chunk),
            ):
                where[key] = (name, row)
        return where

    def register_shard(
        self, name: str, fingerprint: str, layer: str, dtype: str, keys: Sequence[str], dim: int
    ) -> int:
        """Register a written shard and its keys in one transaction; return how many were new.

        Keys another writer registered first keep their vectors. A shard that adds nothing is
        unregistered again in the same transaction (the caller deletes its file).
        """
        with self.transaction() as db:
            shard_id = db.execute(
                "INSERT INTO shards(name, fingerprint, layer, dtype, rows, dim, created) "
                "VALUES(?, ?, ?, ?, ?, ?, ?)",
                (name, fingerprint, layer, dtype, len(keys), dim, time.time()),
            ).lastrowid
            before = db.total_changes
            db.executemany(
                "INSERT OR IGNORE INTO vectors VALUES(?, ?, ?, ?, ?)",
                [(key, fingerprint, layer, shard_id, row) for row, key in enumerate(keys)],
            )
            added = db.total_changes - before
            if added == 0:
                db.execute("DELETE FROM shards WHERE id=?", (shard_id,))
        return added

    def vector_counts(self) -> list[tuple[str, str, int]]:
        return self.query(
            "SELECT fingerprint, layer, COUNT(*) FROM vectors GROUP BY fingerprint, layer"
        )

    def shards(self) -> list[tuple[int, str, str, int, int]]:
        """(id, name, dtype, rows, dim) of every registered shard."""
        return self.query("SELECT id, name, dtype, rows, dim FROM shards ORDER BY id")

    def shard_rows(self, shard_id: int) -> list[int]:
        return [r[0] for r in self.query("SELECT row FROM vectors WHERE shard_id=?", (shard_id,))]

    def dangling_vectors(self) -> int:
        return int(
            self.query(
                "SELECT COUNT(*) FROM vectors v LEFT JOIN shards s ON s.id = v.shard_id "
                "WHERE s.id IS NULL"
            )[0][0]
        )

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
        rows: Iterable[tuple[str, str, int | None, str | None]],
        class_names: Sequence[str],
        source: str,
        *,
        append: bool,
    ) -> int:
        now = time.time()
        with self.transaction() as db:
            found = db.execute("SELECT class_names FROM datasets WHERE name=?", (name,)).fetchone()
            start = 0
            if found is not None and append:
                old, new = list(json.loads(found[0])), list(class_names)
                shorter, longer = sorted((old, new), key=len)
                if longer[: len(shorter)] != shorter:  # a file may lack the last classes
                    raise StoreError(
                        f"dataset '{name}': cannot append rows with classes {new[:5]}... to a "
                        f"dataset with classes {old[:5]}...; use another --dataset name"
                    )
                class_names = longer
                start = db.execute(
                    "SELECT COALESCE(MAX(idx) + 1, 0) FROM dataset_rows WHERE dataset=?", (name,)
                ).fetchone()[0]
            else:
                db.execute("DELETE FROM dataset_rows WHERE dataset=?", (name,))
            db.execute(
                "INSERT INTO datasets VALUES(?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET "
                "class_names=excluded.class_names, source=excluded.source, "
                "updated=excluded.updated",
                (name, json.dumps(list(class_names)), source, now, now),
            )
            before = db.total_changes
            db.executemany(
                "INSERT INTO dataset_rows VALUES(?, ?, ?, ?, ?, ?)",
                (
                    (name, start + i, key, path, label, split)
                    for i, (key, path, label, split) in enumerate(rows)
                ),
            )
            return db.total_changes - before

    def dataset(self, name: str) -> tuple[list[str], str, int] | None:
        """(class names, source, row count) of a dataset, or None."""
        found = self.query("SELECT class_names, source FROM datasets WHERE name=?", (name,))
        if not found:
            return None
        count = self.query("SELECT COUNT(*) FROM dataset_rows WHERE dataset=?", (name,))[0][0]
        return json.loads(found[0][0]), found[0][1], int(count)

    def dataset_names(self) -> list[str]:
        return [r[0] for r in self.query("SELECT name FROM datasets ORDER BY name")]

    def dataset_rows(
        self, name: str, fingerprint: str | None = None, layer: str | None = None
    ) -> list[tuple[Any, ...]]:
        """(key, path, label, split[, shard name, row]) in dataset order."""
        if fingerprint is None:
            return self.query(
                "SELECT key, path, label, split FROM dataset_rows WHERE dataset=? ORDER BY idx",
                (name,),
            )
        return self.query(
            "SELECT r.key, r.path, r.label, r.split, s.name, v.row FROM dataset_rows r "
            "LEFT JOIN vectors v ON v.key = r.key AND v.fingerprint = ? AND v.layer = ? "
            "LEFT JOIN shards s ON s.id = v.shard_id WHERE r.dataset = ? ORDER BY r.idx",
            (fingerprint, layer, name),
        )

    def dataset_fingerprints(self, name: str, layer: str) -> list[str]:
        return [
            r[0]
            for r in self.query(
                "SELECT DISTINCT v.fingerprint FROM dataset_rows r JOIN vectors v "
                "ON v.key = r.key AND v.layer = ? WHERE r.dataset = ?",
                (layer, name),
            )
        ]

    # -- failures ---------------------------------------------------------------------------

    def add_failures(self, dataset: str | None, failures: Sequence[tuple[str, str]]) -> None:
        now = time.time()
        with self.transaction() as db:
            db.executemany(
                "INSERT INTO failures(dataset, path, reason, time) VALUES(?, ?, ?, ?)",
                [(dataset, path, reason, now) for path, reason in failures],
            )

    def failures(self, dataset: str | None = None) -> list[tuple[str, str]]:
        if dataset is None:
            return self.query("SELECT path, reason FROM failures ORDER BY id")
        return self.query(
            "SELECT path, reason FROM failures WHERE dataset=? ORDER BY id", (dataset,)
        )

    # -- file digests (weights files: hashing 244 MB on every run is measurable) -----------

    def file_digest(self, path: str, size: int, mtime_ns: int, inode: int) -> str | None:
        found = self.query(
            "SELECT sha256 FROM file_digests WHERE path=? AND size=? AND mtime_ns=? AND inode=?",
            (path, size, mtime_ns, inode),
        )
        return str(found[0][0]) if found else None

    def remember_file_digest(
        self, path: str, size: int, mtime_ns: int, inode: int, sha256: str
    ) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO file_digests VALUES(?, ?, ?, ?, ?)",
                (path, size, mtime_ns, inode, sha256),
            )

    # -- heads ------------------------------------------------------------------------------

    def add_head(self, name: str, file: str, sha256: str, meta: dict[str, Any]) -> int:
        with self.transaction() as db:
            version = int(
                db.execute(
                    "SELECT COALESCE(MAX(version), 0) + 1 FROM heads WHERE name=?", (name,)
                ).fetchone()[0]
            )
            db.execute(
                "INSERT INTO heads VALUES(?, ?, ?, ?, ?, ?)",
                (
                    name,
                    version,
                    file.format(version=version),
                    sha256,
                    json.dumps(meta),
                    time.time(),
                ),
            )
        return version

    def heads(
        self, name: str | None = None
    ) -> list[tuple[str, int, str, str, dict[str, Any], float]]:
        sql = "SELECT name, version, file, sha256, meta, created FROM heads"
        rows = (
            self.query(sql + " WHERE name=? ORDER BY version", (name,))
            if name
            else self.query(sql + " ORDER BY name, version")
        )
        return [(n, v, f, s, json.loads(m), c) for n, v, f, s, m, c in rows]

    def delete_heads(self, name: str, version: int | None) -> list[str]:
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


def _chunks(keys: Sequence[str]) -> Iterator[Sequence[str]]:
    for start in range(0, len(keys), _MAX_PARAMS):
        yield keys[start : start + _MAX_PARAMS]
