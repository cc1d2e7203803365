"""The catalog's schema (version 2) and the migration from version 1.

Version 2 added each shard's SHA-256, size and mtime; the ``head_versions`` table (the last
version each head name ever had, so a version is never reused after a delete); and row
identity, a unique (dataset, path) index. Migrating merges the duplicated rows that version
1 let ``extract --append`` make.

Any writable open also adds, if missing, the ``ctime_ns`` column of ``file_digests`` (a
file's stamp includes its inode change time, which ``touch`` cannot set back), the
``datasets_generation`` counter in ``meta``
(no version change: older readers ignore it; `bump_generation` keeps it), and replaces the
index on ``dataset_rows(key)`` by one on ``(dataset, key, idx, split)``: it serves the same
key lookups (per dataset), counts a dataset's rows per split without reading the table, and
lets a dataset's rows be joined with ``vectors`` in key order, which at a million rows reads
the vectors table's pages in order instead of at random.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from featcache.errors import StoreError

__all__ = [
    "SCHEMA_VERSION",
    "create_or_migrate",
    "dedupe_rows",
    "foreign_schema",
    "has_stamp_ctime",
    "schema_version",
]

SCHEMA_VERSION = 2
_TABLES = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS extractors(
    fingerprint TEXT PRIMARY KEY, spec TEXT NOT NULL, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS shards(
    id INTEGER PRIMARY KEY, name TEXT UNIQUE NOT NULL, fingerprint TEXT NOT NULL,
    layer TEXT NOT NULL, dtype TEXT NOT NULL, rows INTEGER NOT NULL, dim INTEGER NOT NULL,
    created REAL NOT NULL, sha256 TEXT, bytes INTEGER, mtime_ns INTEGER);
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
CREATE INDEX IF NOT EXISTS dataset_rows_keys ON dataset_rows(dataset, key, idx, split);
DROP INDEX IF EXISTS dataset_rows_key;
CREATE TABLE IF NOT EXISTS failures(
    id INTEGER PRIMARY KEY, dataset TEXT, path TEXT NOT NULL, reason TEXT NOT NULL,
    time REAL NOT NULL);
CREATE TABLE IF NOT EXISTS file_digests(
    path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL,
    inode INTEGER NOT NULL, sha256 TEXT NOT NULL, ctime_ns INTEGER);
CREATE TABLE IF NOT EXISTS heads(
    name TEXT NOT NULL, version INTEGER NOT NULL, file TEXT NOT NULL, sha256 TEXT NOT NULL,
    meta TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY(name, version));
CREATE TABLE IF NOT EXISTS head_versions(name TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS head_promotions(
    name TEXT NOT NULL, version INTEGER NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS image_hashes(
    key TEXT NOT NULL, kind TEXT NOT NULL, hash BLOB NOT NULL,
    PRIMARY KEY(key, kind)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS dataset_groups(
    dataset TEXT NOT NULL, key TEXT NOT NULL, grp INTEGER NOT NULL, created REAL NOT NULL,
    PRIMARY KEY(dataset, key)) WITHOUT ROWID;
"""
# After the migration (duplicate rows must be gone before the index can exist).
_ROW_IDENTITY = "CREATE UNIQUE INDEX IF NOT EXISTS dataset_rows_path ON dataset_rows(dataset, path)"

#: The ``meta`` row counting writes to datasets (`Catalog.datasets_generation`).
GENERATION_KEY = "datasets_generation"


def schema_version(db: Any, path: Path | str) -> int | None:
    """The schema version a catalog records (None if it records none)."""
    try:
        found = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            raise StoreError(f"{path}: not a featcache catalog (no 'meta' table)") from exc
        raise
    if found is None:
        return None
    try:
        return int(found[0])
    except (TypeError, ValueError):
        raise StoreError(
            f"{path}: catalog schema {str(found[0])[:40]!r} is not a version number "
            "(the catalog was crafted or damaged)"
        ) from None


def foreign_schema(db: sqlite3.Connection, path: Path | str) -> None:
    """Refuse a SQLite catalog holding SQL that featcache never writes: triggers and views
    (they would run on our reads and writes: delete vectors, rewrite rows), virtual tables
    (a module's code), and featcache's tables with other columns, types, defaults or
    constraints than it creates. Also turns ``trusted_schema`` off, so no SQL function with
    side effects can run from the schema. `StoreError` naming the object and the fix."""
    db.execute("PRAGMA trusted_schema=OFF")
    objects = db.execute("SELECT type, name, tbl_name, sql FROM sqlite_master").fetchall()
    fix = (
        "the store was crafted or altered, and featcache never runs a store's SQL. Extract "
        "into a fresh store; or, only if you trust whoever wrote it, "
    )
    for kind, name, table, sql in objects:
        virtual = kind == "table" and str(sql or "").lstrip().upper().startswith("CREATE VIRTUAL")
        if kind in ("trigger", "view") or virtual:
            what = "virtual table" if virtual else kind
            raise StoreError(
                f"{path}: the catalog holds a {what} {name!r} (on table {table!r}) that "
                f"featcache never creates; {fix}remove it: sqlite3 {path} "
                f"'DROP {'TABLE' if virtual else kind.upper()} \"{name}\"'"
            )
    reference = sqlite3.connect(":memory:")
    try:
        for statement in filter(str.strip, _TABLES.split(";")):
            reference.execute(statement)
        ours = {n: s for n, s in reference.execute("SELECT name, sql FROM sqlite_master")}
        for kind, name, _, sql in objects:
            if kind != "table" or name not in ours:
                continue
            found = _columns(db, name)
            wanted = _columns(reference, name)
            extra = [c for c in found if c not in wanted]
            if extra or len(found) > len(wanted) or found != wanted[: len(found)]:
                column = (extra or found)[0]
                raise StoreError(
                    f"{path}: table {name!r} has column {column[0]!r} ({column[1] or 'no type'}"
                    f"{', default ' + str(column[3]) if column[3] is not None else ''}) where "
                    f"featcache creates {[c[0] + ' ' + c[1] for c in wanted]}; {fix}"
                    "rebuild that table as featcache creates it"
                )
            for word in _CONSTRAINTS:
                if word in str(sql).upper() and word not in str(ours[name]).upper():
                    raise StoreError(
                        f"{path}: table {name!r} has a {word} clause featcache never "
                        f"creates; {fix}rebuild that table as featcache creates it"
                    )
    finally:
        reference.close()


_CONSTRAINTS = ("CHECK", "REFERENCES", "COLLATE", "GENERATED", " AS ")


def _columns(db: sqlite3.Connection, table: str) -> list[tuple[str, str, int, Any, int, int]]:
    """(name, declared type, not null, default, primary-key position, hidden) per column."""
    return [
        (str(n), str(t).upper(), int(nn), d, int(pk), int(hidden))
        for _, n, t, nn, d, pk, hidden in db.execute(f'PRAGMA table_xinfo("{table}")')
    ]


def create_or_migrate(db: Any, path: Path | str, *, tables: str = "") -> int | None:
    """Create the tables of a new catalog or bring an old one up to date, inside the caller's
    transaction; return the version migrated from (None if none was needed).

    `tables` is the dialect's own definition of the same tables (PostgreSQL's types); SQLite's
    is the default. `db` is a `sqlite3.Connection` or a connection offering its methods.
    """
    # statement by statement: executescript() would commit the open transaction
    for statement in filter(str.strip, (tables or _TABLES).split(";")):
        db.execute(statement)
    found = schema_version(db, path)
    migrated = None
    if found is None:
        db.execute("INSERT INTO meta VALUES('schema', ?)", (str(SCHEMA_VERSION),))
    elif found == 1:
        _migrate_from_1(db)
        migrated = 1
    elif found != SCHEMA_VERSION:
        raise StoreError(f"{path}: catalog schema {found} is not the supported {SCHEMA_VERSION}")
    db.execute(_ROW_IDENTITY)
    db.execute("INSERT INTO meta VALUES(?, '0') ON CONFLICT(key) DO NOTHING", (GENERATION_KEY,))
    if not has_stamp_ctime(db):  # stamps of an older store: every file is hashed once more
        db.execute(
            f"ALTER TABLE file_digests ADD COLUMN ctime_ns {'BIGINT' if tables else 'INTEGER'}"
        )
    return migrated


def has_stamp_ctime(db: Any) -> bool:
    """Whether ``file_digests`` has the ``ctime_ns`` column (added after version 2 was
    released, without a version change: a catalog opened read-only may still lack it)."""
    cursor = db.execute("SELECT * FROM file_digests LIMIT 0")
    names = [column[0] for column in cursor.description]
    cursor.fetchall()
    return "ctime_ns" in names


def _migrate_from_1(db: Any) -> None:
    """Version 1 had no shard checksums, reused head versions and duplicated rows."""
    for column in ("sha256 TEXT", "bytes INTEGER", "mtime_ns INTEGER"):
        db.execute(f"ALTER TABLE shards ADD COLUMN {column}")
    db.execute(
        "INSERT OR IGNORE INTO head_versions SELECT name, MAX(version) FROM heads GROUP BY name"
    )
    dedupe_rows(db)
    db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))


def bump_generation(db: Any) -> None:
    """Count a change to dataset rows (every writer of ``dataset_rows`` calls this in its
    transaction): one indexed row update, whatever the size of the write."""
    db.execute(
        "UPDATE meta SET value = CAST(CAST(value AS BIGINT) + 1 AS TEXT) WHERE key = ?",
        (GENERATION_KEY,),
    )


def dedupe_rows(db: Any) -> int:
    """Keep one row per (dataset, path): the first position, with the newest values."""
    groups = db.execute(
        "SELECT dataset, path, MIN(idx), MAX(idx) FROM dataset_rows "
        "GROUP BY dataset, path HAVING COUNT(*) > 1"
    ).fetchall()
    removed = 0
    for dataset, path, first, last in groups:
        key, label, split = db.execute(
            "SELECT key, label, split FROM dataset_rows WHERE dataset=? AND idx=?", (dataset, last)
        ).fetchone()
        before = db.total_changes
        db.execute(
            "DELETE FROM dataset_rows WHERE dataset=? AND path=? AND idx<>?", (dataset, path, first)
        )
        removed += db.total_changes - before
        db.execute(
            "UPDATE dataset_rows SET key=?, label=?, split=? WHERE dataset=? AND idx=?",
            (key, label, split, dataset, first),
        )
    if groups:
        bump_generation(db)
    return removed
