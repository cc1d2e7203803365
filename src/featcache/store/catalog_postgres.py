"""The catalog on PostgreSQL: the dialect seam between `Catalog` and a server database.

`Catalog` speaks one SQL: SQLite's ``?`` placeholders and statements both databases accept
(``INSERT ... ON CONFLICT``, ``RETURNING``). `PostgresConnection` offers the part of
`sqlite3.Connection` that `Catalog` uses (``execute``, ``executemany``, ``total_changes``,
``in_transaction``, ``close``) over a psycopg 3 connection; what differs is here and only
here: the placeholders, the table definitions (`POSTGRES_TABLES`: 64-bit integers, BYTEA,
serial ids), the catalog lookup of a table, and the write lock.

SQLite lets one writer in at a time (``BEGIN IMMEDIATE``); the same semantics here come
from a transaction-scoped advisory lock taken by every write transaction, so concurrent
writers on several machines queue exactly as processes on one machine do, and readers (each
statement in autocommit mode) see only committed transactions: never a half-registered
shard. psycopg is imported only when a ``postgresql://`` catalog is opened
(``pip install 'featcache[postgres]'``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from featcache.errors import ConfigError, StoreError

__all__ = [
    "POSTGRES_SCHEMES",
    "POSTGRES_TABLES",
    "PostgresConnection",
    "foreign_postgres_schema",
    "is_postgres_url",
    "redact_url",
]

POSTGRES_SCHEMES = ("postgresql", "postgres")
# Any fixed 64-bit number, the same for every featcache process: "one writer at a time".
_WRITE_LOCK = 0x66656174636163  # "featcac"
_HAS_TABLE = "SELECT 1 FROM sqlite_master WHERE type='table' AND name=?"
_REWRITES = {
    _HAS_TABLE: "SELECT 1 FROM information_schema.tables "
    "WHERE table_schema = current_schema() AND table_name = %s",
}

# The tables of featcache.store.schema in PostgreSQL's types, columns in the same order
# (statements insert by position). Integers that hold sizes and nanoseconds are 64-bit;
# head_promotions has a serial ``rowid`` last, as SQLite gives every table one.
POSTGRES_TABLES = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS extractors(
    fingerprint TEXT PRIMARY KEY, spec TEXT NOT NULL, created DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS shards(
    id BIGSERIAL PRIMARY KEY, name TEXT UNIQUE NOT NULL, fingerprint TEXT NOT NULL,
    layer TEXT NOT NULL, dtype TEXT NOT NULL, rows BIGINT NOT NULL, dim BIGINT NOT NULL,
    created DOUBLE PRECISION NOT NULL, sha256 TEXT, bytes BIGINT, mtime_ns BIGINT);
CREATE TABLE IF NOT EXISTS vectors(
    key TEXT NOT NULL, fingerprint TEXT NOT NULL, layer TEXT NOT NULL,
    shard_id BIGINT NOT NULL, row BIGINT NOT NULL,
    PRIMARY KEY(key, fingerprint, layer));
CREATE INDEX IF NOT EXISTS vectors_shard ON vectors(shard_id);
CREATE TABLE IF NOT EXISTS datasets(
    name TEXT PRIMARY KEY, class_names TEXT NOT NULL, source TEXT NOT NULL,
    created DOUBLE PRECISION NOT NULL, updated DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS dataset_rows(
    dataset TEXT NOT NULL, idx BIGINT NOT NULL, key TEXT NOT NULL, path TEXT NOT NULL,
    label BIGINT, split TEXT, PRIMARY KEY(dataset, idx));
CREATE INDEX IF NOT EXISTS dataset_rows_keys ON dataset_rows(dataset, key, idx, split);
DROP INDEX IF EXISTS dataset_rows_key;
CREATE TABLE IF NOT EXISTS failures(
    id BIGSERIAL PRIMARY KEY, dataset TEXT, path TEXT NOT NULL, reason TEXT NOT NULL,
    time DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS file_digests(
    path TEXT PRIMARY KEY, size BIGINT NOT NULL, mtime_ns BIGINT NOT NULL,
    inode BIGINT NOT NULL, sha256 TEXT NOT NULL, ctime_ns BIGINT);
CREATE TABLE IF NOT EXISTS heads(
    name TEXT NOT NULL, version BIGINT NOT NULL, file TEXT NOT NULL, sha256 TEXT NOT NULL,
    meta TEXT NOT NULL, created DOUBLE PRECISION NOT NULL, PRIMARY KEY(name, version));
CREATE TABLE IF NOT EXISTS head_versions(name TEXT PRIMARY KEY, last BIGINT NOT NULL);
CREATE TABLE IF NOT EXISTS head_promotions(
    name TEXT NOT NULL, version BIGINT NOT NULL, at DOUBLE PRECISION NOT NULL,
    rowid BIGSERIAL);
CREATE TABLE IF NOT EXISTS image_hashes(
    key TEXT NOT NULL, kind TEXT NOT NULL, hash BYTEA NOT NULL, PRIMARY KEY(key, kind));
CREATE TABLE IF NOT EXISTS dataset_groups(
    dataset TEXT NOT NULL, key TEXT NOT NULL, grp BIGINT NOT NULL,
    created DOUBLE PRECISION NOT NULL, PRIMARY KEY(dataset, key))
"""


# narrower integer columns hold the same kind of value (never a string or a float)
_INTEGERS = {"integer": "bigint", "smallint": "bigint"}


def _wanted_columns() -> dict[str, list[tuple[str, str]]]:
    """{table: [(column, PostgreSQL's name of its type)]} as `POSTGRES_TABLES` creates them."""
    names = {"BIGSERIAL": "bigint", "BIGINT": "bigint", "TEXT": "text", "BYTEA": "bytea"}
    names["DOUBLE"] = "double precision"
    wanted: dict[str, list[tuple[str, str]]] = {}
    for table, body in re.findall(
        r"CREATE TABLE IF NOT EXISTS (\w+)\((.*?)\)\s*(?:;|$)", POSTGRES_TABLES, re.S
    ):
        columns = []
        for part in re.split(r",(?![^(]*\))", body):
            words = part.split()
            if words and words[0] != "PRIMARY":
                columns.append((words[0], names[words[1]]))
        wanted[table] = columns
    return wanted


def foreign_postgres_schema(db: PostgresConnection, where: str) -> None:
    """Refuse a catalog database holding what featcache never creates on its tables:
    triggers and rules (they would run on our writes: delete vectors, rewrite rows), a view
    in place of a table, and tables with other columns or column types (a text ``row``
    would hand us strings where we read row numbers). `StoreError` naming the object."""
    fix = (
        "the catalog database was crafted or altered; featcache never runs a catalog's own "
        "code. Give featcache a fresh database, or remove it yourself if you trust its owner"
    )
    wanted = _wanted_columns()
    tables = dict(
        db.execute(
            "SELECT table_name, table_type FROM information_schema.tables "
            "WHERE table_schema = current_schema()"
        ).fetchall()
    )
    for table, kind in sorted(tables.items()):
        if table in wanted and kind != "BASE TABLE":
            raise StoreError(f"{where}: '{table}' is a view ({kind}), not a table; {fix}")
    for name, table in db.execute(
        "SELECT t.tgname, c.relname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
        "JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE NOT t.tgisinternal AND n.nspname = current_schema() ORDER BY 1"
    ).fetchall():
        raise StoreError(
            f"{where}: a trigger '{name}' on table '{table}' that featcache never creates; {fix} "
            f'(DROP TRIGGER "{name}" ON "{table}")'
        )
    for name, table in db.execute(
        "SELECT rulename, tablename FROM pg_rules WHERE schemaname = current_schema() ORDER BY 1"
    ).fetchall():
        raise StoreError(
            f"{where}: a rule '{name}' on table '{table}' that featcache never creates; {fix} "
            f'(DROP RULE "{name}" ON "{table}")'
        )
    found: dict[str, list[tuple[str, str]]] = {}
    for table, column, kind in db.execute(
        "SELECT table_name, column_name, data_type FROM information_schema.columns "
        "WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position"
    ).fetchall():
        if table in wanted:
            found.setdefault(table, []).append((column, kind))
    for table, columns in sorted(found.items()):
        ours = dict(wanted[table])
        for column, kind in columns:
            if column not in ours:
                raise StoreError(
                    f"{where}: table '{table}' has column '{column}' featcache never creates "
                    f"(it creates {[c for c, _ in wanted[table]]}); {fix}"
                )
            if _INTEGERS.get(kind, kind) != _INTEGERS.get(ours[column], ours[column]):
                raise StoreError(
                    f"{where}: table '{table}' column '{column}' is {kind} where featcache "
                    f"creates {ours[column]}; {fix}"
                )


def is_postgres_url(location: object) -> bool:
    """True for ``postgresql://...`` and ``postgres://...`` (a catalog on a server)."""
    return isinstance(location, str) and urlsplit(location).scheme in POSTGRES_SCHEMES


def redact_url(url: str) -> str:
    """The URL without its password, for messages and records."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _translate(sql: str) -> str:
    rewritten = _REWRITES.get(sql)
    if rewritten is not None:
        return rewritten
    # featcache's statements hold no '?' inside literals; a '%' is psycopg's escape
    # SQLite's null-safe "x IS ?" is PostgreSQL's "x IS NOT DISTINCT FROM ?"
    sql = sql.replace(" IS ?", " IS NOT DISTINCT FROM ?")
    return sql.replace("%", "%%").replace("?", "%s")


class _Changes:
    """Counts rows changed, as sqlite3.Connection.total_changes does."""

    def __init__(self) -> None:
        self.total = 0

    def add(self, cursor: Any) -> None:
        status = (cursor.statusmessage or "").split(" ", 1)[0]
        if status in ("INSERT", "UPDATE", "DELETE") and cursor.rowcount > 0:
            self.total += cursor.rowcount


class PostgresConnection:
    """The subset of `sqlite3.Connection` that `Catalog` uses, on a PostgreSQL server."""

    def __init__(self, url: str, *, timeout: float, read_only: bool) -> None:
        try:
            import psycopg
        except ImportError as exc:
            raise ConfigError(
                f"catalog {redact_url(url)}: PostgreSQL catalogs need psycopg; "
                "pip install 'featcache[postgres]'"
            ) from exc
        self.errors: tuple[type[Exception], ...] = (psycopg.Error,)
        self._changes = _Changes()
        self._conn = psycopg.connect(
            url, autocommit=True, connect_timeout=max(1, int(timeout)), prepare_threshold=None
        )
        if read_only:
            self._conn.execute("SET default_transaction_read_only = on")
        self._in_transaction = False

    @property
    def total_changes(self) -> int:
        return self._changes.total

    @property
    def in_transaction(self) -> bool:
        return self._in_transaction

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        """Run one statement; return its cursor (``fetchone``, ``fetchall``, iteration)."""
        if sql == "BEGIN IMMEDIATE":  # SQLite's "take the write lock now"
            self._conn.execute("BEGIN")
            self._in_transaction = True
            return self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_WRITE_LOCK,))
        if sql in ("COMMIT", "ROLLBACK"):
            self._in_transaction = False
        cursor = self._conn.execute(_translate(sql), tuple(params))
        self._changes.add(cursor)
        return cursor

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        batch = [tuple(row) for row in rows]
        if not batch:
            return
        with self._conn.cursor() as cursor:
            cursor.executemany(_translate(sql), batch)
            if cursor.rowcount > 0:  # the sum over the batch (psycopg >= 3.1)
                self._changes.total += cursor.rowcount

    def has_table(self, name: str) -> bool:
        return bool(self.execute(_HAS_TABLE, (name,)).fetchall())

    def close(self) -> None:
        self._conn.close()
