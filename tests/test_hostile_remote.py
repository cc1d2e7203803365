"""A hostile bucket and a hostile catalog database: the store on object storage (moto's S3
server) with its catalog on PostgreSQL (Debian's server), both written by an attacker.

Each attack must end in a `FeatcacheError` naming the object, row or field, touch no object
outside the store's prefix, delete nothing featcache did not write, and never read an object
whole into memory past the limits (see tests/servers.py for the servers).
"""

from __future__ import annotations

import hashlib
import io
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from featcache.errors import FeatcacheError, StoreError
from featcache.store import DatasetRow, FeatureStore

fsspec = pytest.importorskip("fsspec")
psycopg = pytest.importorskip("psycopg")

FP = "e" * 64
ROWS, DIM = 20, 4


def _keys() -> list[str]:
    return [hashlib.sha256(str(i).encode()).hexdigest() for i in range(ROWS)]


@pytest.fixture
def made(bucket: str, pg_catalog: str) -> tuple[str, str]:
    """A bucket store (20 vectors of 4 floats, one dataset, one head) and its catalog URL."""
    from featcache.classifier.train import train_head

    keys = _keys()
    with FeatureStore(bucket, catalog=pg_catalog) as store:
        vectors = np.random.default_rng(0).normal(size=(ROWS, DIM)).astype(np.float32)
        store.register_extractor(FP, {"network": "test"})
        store.put_batch(keys, {"fc7": vectors}, FP)
        store.add_dataset(
            "d", [DatasetRow(k, f"{i}.png", i % 2) for i, k in enumerate(keys)], ["a", "b"]
        )
        train_head(store, "d", name="h", fingerprint=FP, params={"random_state": 0, "epochs": 1})
    return bucket, pg_catalog


def _sql(url: str, statement: str, params: tuple[Any, ...] = ()) -> None:
    with psycopg.connect(url, autocommit=True) as db:
        db.execute(statement, params)


def _s3() -> Any:
    s3 = fsspec.filesystem("s3")
    s3.invalidate_cache()
    return s3


def _shard(bucket: str) -> str:
    (found,) = [o for o in _s3().find(bucket.removeprefix("s3://")) if o.endswith(".npy")]
    return str(found)


def _npy(header: dict[str, object], body: bytes) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)  # type: ignore[no-untyped-call]
    return buffer.getvalue() + body


def _rewrite_shard(bucket: str, catalog: str, payload: bytes) -> None:
    """Replace the shard object, with the catalog's digest and size to match."""
    s3 = _s3()
    s3.pipe_file(_shard(bucket), payload)
    _sql(
        catalog,
        "UPDATE shards SET sha256=%s, bytes=%s",
        (hashlib.sha256(payload).hexdigest(), len(payload)),
    )


BODY = bytes(ROWS * DIM * 4)
SHARD_ATTACKS: dict[str, tuple[Callable[[str, str], None], str]] = {
    "float64 in a float32 record": (
        lambda b, c: _rewrite_shard(
            b, c, _npy({"descr": "<f8", "fortran_order": False, "shape": (ROWS, DIM // 2)}, BODY)
        ),
        r"shard holds dtype <f8, its record says 'float32'",
    ),
    "strings": (
        lambda b, c: _rewrite_shard(
            b, c, _npy({"descr": "<U1", "fortran_order": False, "shape": (ROWS, DIM)}, BODY)
        ),
        r"shard holds dtype <U1",
    ),
    "big-endian": (
        lambda b, c: _rewrite_shard(
            b, c, _npy({"descr": ">f4", "fortran_order": False, "shape": (ROWS, DIM)}, BODY)
        ),
        r"shard holds dtype >f4",
    ),
    "fortran order": (
        lambda b, c: _rewrite_shard(
            b, c, _npy({"descr": "<f4", "fortran_order": True, "shape": (ROWS, DIM)}, BODY)
        ),
        r"in Fortran order, its record says \(20, 4\)",
    ),
    "lying shape": (
        lambda b, c: _rewrite_shard(
            b, c, _npy({"descr": "<f4", "fortran_order": False, "shape": (10**12, DIM)}, BODY)
        ),
        r"header says shape \(1000000000000, 4\)",
    ),
    "not npy": (lambda b, c: _rewrite_shard(b, c, b"\x00" * 128), r"not a readable \.npy shard"),
    "absurd record": (
        lambda b, c: _sql(c, "UPDATE shards SET rows=4000000000000, dim=1000000000"),
        r"its record says \(4000000000000, 1000000000\)",
    ),
}


@pytest.mark.parametrize("attack", list(SHARD_ATTACKS))
def test_a_crafted_bucket_shard_is_damage_named_by_verify_and_refused_by_reads(
    attack: str, made: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bucket, catalog = made
    craft, message = SHARD_ATTACKS[attack]
    craft(bucket, catalog)
    monkeypatch.setenv("FEATCACHE_CACHE", str(tmp_path / "another-host"))  # the bucket is new here
    shard = _shard(bucket)
    with FeatureStore(bucket, catalog=catalog, create=False, read_only=True) as store:
        problems = store.verify().problems
        assert any(shard in p and re.search(message, p) for p in problems), problems
        with pytest.raises(FeatcacheError):
            store.vectors("d")
        with pytest.raises(StoreError, match=re.escape(shard)):
            list(store.batches("d"))


def _outside(bucket: str) -> str:
    """An object beside the store's prefix, in the same bucket: the attacker's target."""
    path = bucket.removeprefix("s3://").rsplit("/", 1)[0] + "/precious.npy"
    _s3().pipe_file(path, b"precious")
    return path


@pytest.mark.parametrize(
    "name",
    ["../precious.npy", "../../precious.npy", "/precious.npy", "a/../../precious.npy", "", "."],
)
def test_shard_names_leading_out_of_the_bucket_store_touch_nothing(
    name: str, made: tuple[str, str]
) -> None:
    bucket, catalog = made
    target = _outside(bucket)
    _sql(catalog, "UPDATE shards SET name=%s", (name,))
    with FeatureStore(bucket, catalog=catalog, create=False) as store:
        with pytest.raises(FeatcacheError, match=r"shard .*not a relative name"):
            store.vectors("d")
        problems = store.verify().problems
        assert any(re.search(r"shard .*not a relative name", p) for p in problems), problems
        store.verify(repair=True)
        with pytest.raises(StoreError, match=r"the catalog lists no shards"):
            store.gc(grace_seconds=0)  # the crafted record was the only shard: gc refuses
    assert _s3().cat_file(target) == b"precious"


@pytest.mark.parametrize("file", ["heads/../../precious.npy", "../precious.npy", "/precious.npy"])
def test_head_files_leading_out_of_the_bucket_store_touch_nothing(
    file: str, made: tuple[str, str]
) -> None:
    bucket, catalog = made
    target = _outside(bucket)
    _sql(catalog, "UPDATE heads SET file=%s", (file,))
    with FeatureStore(bucket, catalog=catalog, create=False) as store:
        assert any("head file" in p and "refused" in p for p in store.verify().problems)
        store.delete_head("h")
    assert _s3().cat_file(target) == b"precious"


def test_bucket_head_objects_are_size_checked_before_they_are_read(
    made: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from featcache.store import bucket as bucket_module

    bucket, catalog = made
    monkeypatch.setattr(bucket_module, "MAX_HEAD_BYTES", 64)
    with FeatureStore(bucket, catalog=catalog, create=False) as store:
        record = store.head("h")
        reads: list[tuple[object, ...]] = []
        files = store._heads.files  # type: ignore[attr-defined]
        original = files.read

        def counting(*args: object) -> bytes:
            reads.append(args)
            return bytes(original(*args))

        monkeypatch.setattr(files, "read", counting)
        with pytest.raises(FeatcacheError, match=r"head file of \d+ bytes, past the 64 bytes"):
            store.head_bytes(record)
        assert reads == []  # refused from its size, never downloaded


def test_a_non_featcache_object_in_the_shards_prefix_is_never_deleted(
    made: tuple[str, str],
) -> None:
    bucket, catalog = made
    stray = bucket.removeprefix("s3://") + "/shards/notes.npy"
    _s3().pipe_file(stray, b"someone's notes")
    with FeatureStore(bucket, catalog=catalog, create=False) as store:
        problems = store.verify().problems
        assert any("notes.npy: a file featcache did not write" in p for p in problems), problems
        store.gc(grace_seconds=0)
    assert _s3().cat_file(stray) == b"someone's notes"


# -- a hostile catalog database ----------------------------------------------------------------

CATALOG_ATTACKS = {
    "text column": (
        "ALTER TABLE vectors ALTER COLUMN row TYPE TEXT",
        r"table 'vectors' column 'row' is text where featcache creates bigint",
    ),
    "real column": (
        "ALTER TABLE shards ALTER COLUMN dim TYPE DOUBLE PRECISION",
        r"table 'shards' column 'dim' is double precision where featcache creates bigint",
    ),
    "extra column": (
        "ALTER TABLE dataset_rows ADD COLUMN evil TEXT DEFAULT 'x'",
        r"table 'dataset_rows' has column 'evil' featcache never creates",
    ),
    "trigger": (
        "CREATE FUNCTION wipe() RETURNS trigger LANGUAGE plpgsql AS "
        "$$ BEGIN DELETE FROM vectors; RETURN NEW; END $$; "
        "CREATE TRIGGER wipe AFTER INSERT ON dataset_rows FOR EACH ROW EXECUTE FUNCTION wipe()",
        r"a trigger 'wipe' on table 'dataset_rows' that featcache never creates",
    ),
    "rule": (
        "CREATE RULE keep AS ON DELETE TO shards DO INSTEAD NOTHING",
        r"a rule 'keep' on table 'shards' that featcache never creates",
    ),
    "view": (
        "ALTER TABLE failures RENAME TO failures_old; CREATE VIEW failures AS "
        "SELECT * FROM failures_old",
        r"'failures' is a view",
    ),
}


@pytest.mark.parametrize("attack", list(CATALOG_ATTACKS))
def test_a_crafted_catalog_database_is_refused_when_opened(
    attack: str, made: tuple[str, str]
) -> None:
    bucket, catalog = made
    statement, message = CATALOG_ATTACKS[attack]
    _sql(catalog, statement)
    with psycopg.connect(catalog) as db:
        before = db.execute("SELECT COUNT(*) FROM vectors").fetchone()
    for read_only in (False, True):
        with pytest.raises(StoreError, match=message):
            FeatureStore(bucket, catalog=catalog, create=False, read_only=read_only)
    with psycopg.connect(catalog) as db:
        assert db.execute("SELECT COUNT(*) FROM vectors").fetchone() == before


def test_a_damaged_bucket_shard_is_moved_to_quarantine_never_deleted(
    made: tuple[str, str],
) -> None:
    bucket, catalog = made
    payload = _npy({"descr": "<f4", "fortran_order": False, "shape": (ROWS - 1, DIM)}, BODY)
    _rewrite_shard(bucket, catalog, payload)
    shard = _shard(bucket)
    name = shard.split("/shards/", 1)[1]
    with FeatureStore(bucket, catalog=catalog, create=False) as store:
        report = store.verify(repair=True)
        kept = f"{bucket}/quarantine/shards/{name}"
        assert report.quarantined == [kept]
        assert store.verify().quarantine_files == 1
    s3 = _s3()
    assert not s3.exists(shard)
    assert s3.cat_file(kept.removeprefix("s3://")) == payload
    assert b"its record says" in s3.cat_file(kept.removeprefix("s3://") + ".json")
