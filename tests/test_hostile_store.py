"""A store handed over by an attacker: every file it holds is hostile input.

Each attack must end in a `FeatcacheError` naming the file (row, field), run no code, touch
no file outside the store, lose no stored data, and neither hang nor allocate without bound.
Runtime models here are stand-ins (conftest.publish_runtime_model); the real OpenVINO
conversions are in test_openvino.py.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from conftest import CountingNetwork, publish_runtime_model, write_images
from featcache.classifier.train import train_head
from featcache.errors import ConfigError, FeatcacheError, HeadError, StoreError
from featcache.extractor.pipeline import extract
from featcache.extractor.weights import Weights
from featcache.store import FeatureStore, LocalKey, RuntimeFiles, local_key

FP = "f" * 64
NAME = "openvino-fc7-float32"


# -- runtime models: signed with this user's local key ---------------------------------------


def test_the_local_key_is_created_once_private_and_refused_when_others_may_read_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "cfg" / "featcache" / "local.key"
    key = local_key(path)
    assert path.stat().st_mode & 0o777 == 0o600 and len(path.read_bytes()) == 32
    assert local_key(path).secret == key.secret  # the same key from then on
    assert key.secret.hex() not in repr(key) and key.id in repr(key)
    os.chmod(path, 0o644)
    with pytest.raises(ConfigError, match=r"local\.key: .* may be read by others .*chmod 600"):
        local_key(path)
    os.chmod(path, 0o600)
    path.write_bytes(b"short")
    with pytest.raises(ConfigError, match=r"local\.key: a featcache key is 32 bytes; got 5"):
        local_key(path)
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere.key")
    with pytest.raises(ConfigError, match=r"local\.key: cannot read .*not a symlink"):
        local_key(path)
    fifo = tmp_path / "fifo.key"
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ConfigError, match=r"fifo\.key: .* not a regular file"):
        local_key(fifo)  # refused at once, never blocks


def test_the_key_file_follows_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from featcache.store import key_file

    monkeypatch.delenv("FEATCACHE_KEY_FILE")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert key_file() == tmp_path / "xdg" / "featcache" / "local.key"
    monkeypatch.setenv("FEATCACHE_KEY_FILE", str(tmp_path / "k"))
    assert key_file() == tmp_path / "k"


def _other_key(tmp_path: Path) -> LocalKey:
    return local_key(tmp_path / "other-user.key")


def test_a_model_signed_with_another_key_or_unsigned_is_foreign(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "s")
    theirs = RuntimeFiles(store.runtime_models.root, _other_key(tmp_path))
    folder = publish_runtime_model(theirs, FP, kib=1)
    assert theirs.find(FP, NAME) is not None  # sound for whoever converted it
    with pytest.raises(StoreError, match=r"manifest\.json: is signed with another key .* never"):
        store.runtime_models.find(FP, NAME)
    problems = store.verify().problems
    assert any("signed with another key" in p and str(folder) in p for p in problems)

    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["mac"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match=r"manifest\.json: is not signed .* converted again"):
        store.runtime_models.find(FP, NAME)
    for mac in ({"key": store.runtime_models.key.id, "hmac_sha256": "0" * 64}, "x", None):
        (folder / "manifest.json").write_text(json.dumps({**manifest, "mac": mac}))
        with pytest.raises(StoreError, match="does not match its signature|is not signed"):
            store.runtime_models.find(FP, NAME)
    assert store.verify(repair=True).runtime_models_removed == [str(folder)]
    assert not folder.exists()
    # converted here: signed with this user's key and used
    publish_runtime_model(store.runtime_models, FP, kib=1)
    assert store.runtime_models.find(FP, NAME) is not None and store.verify().ok


# -- an attacker's store: one small store, copied and altered once per attack -----------------


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory, stub_weights: Weights) -> Path:
    """A store of 12 images (fake network) with a trained head, made once for the module."""
    root = tmp_path_factory.mktemp("hostile")
    write_images(root / "data", 12, classes=("a", "b"))
    with FeatureStore(root / "store") as store:
        extract(root / "data", stub_weights, store, dataset="d", network_factory=CountingNetwork)
        train_head(store, "d", name="h", params={"random_state": 0, "epochs": 2})
    return root / "store"


@pytest.fixture
def copy(made: Path, tmp_path: Path) -> Path:
    shutil.copytree(made, tmp_path / "store")
    return tmp_path / "store"


def _sql(store: Path, statement: str) -> None:
    with sqlite3.connect(store / "catalog.sqlite") as db:
        db.executescript(statement)


def _vectors_table(store: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(store / "catalog.sqlite") as db:
        return sorted(db.execute("SELECT * FROM vectors").fetchall())


def _everything(store: Path, stub_weights: Weights) -> list[str]:
    """Open the store and run what reads or writes each part of it; the FeatcacheError of
    each step that refused (any other exception fails the test)."""
    refused = []
    steps: dict[str, Callable[[FeatureStore], object]] = {
        "info": lambda s: s.info(),
        "vectors": lambda s: s.vectors("d"),
        "batches": lambda s: list(s.batches("d")),
        "train": lambda s: train_head(s, "d", name="h2", params={"epochs": 1}),
        "head": lambda s: s.head_bytes(s.head("h")),
        "extract": lambda s: extract(
            store.parent / "more", stub_weights, s, dataset="d2", network_factory=CountingNetwork
        ),
        "verify": lambda s: s.verify(),
    }
    write_images(store.parent / "more", 2, seed=3)
    try:
        opened = FeatureStore(store)
    except FeatcacheError as exc:
        return [f"open: {exc}"]
    with opened:
        for name, step in steps.items():
            try:
                step(opened)
            except FeatcacheError as exc:
                refused.append(f"{name}: {exc}")
    return refused


CATALOG_ATTACKS = {
    # SQL that would run on our reads and writes: refused before any statement of ours
    "trigger": (
        "CREATE TRIGGER wipe AFTER INSERT ON dataset_rows BEGIN DELETE FROM vectors; END;",
        r"open: .*catalog\.sqlite: the catalog holds a trigger 'wipe' \(on table 'dataset_rows'\)"
        r".*DROP TRIGGER",
    ),
    "trigger on meta": (
        "CREATE TRIGGER t BEFORE UPDATE ON meta BEGIN DELETE FROM shards; END;",
        r"open: .*a trigger 't' \(on table 'meta'\)",
    ),
    "view": ("CREATE VIEW v AS SELECT * FROM vectors;", r"open: .*holds a view 'v'"),
    "extra column": (
        "ALTER TABLE dataset_rows ADD COLUMN evil TEXT DEFAULT 'x';",
        r"open: .*table 'dataset_rows' has column 'evil' \(TEXT, default 'x'\) where featcache "
        r"creates \['dataset TEXT'",
    ),
    "altered type": (
        "DROP TABLE failures; CREATE TABLE failures(id INTEGER PRIMARY KEY, dataset BLOB, "
        "path TEXT NOT NULL, reason TEXT NOT NULL, time REAL NOT NULL);",
        r"open: .*table 'failures' has column 'dataset' \(BLOB\)",
    ),
    "check clause": (
        "DROP TABLE head_versions; CREATE TABLE head_versions(name TEXT PRIMARY KEY, "
        "last INTEGER NOT NULL CHECK(last < 0));",
        r"open: .*table 'head_versions' has a CHECK clause",
    ),
    "schema version": ("UPDATE meta SET value='x' WHERE key='schema';", r"schema 'x' is not a"),
    # absurd values in rows
    "negative row": ("UPDATE vectors SET row=-1;", r"row is -1, outside 0\.\.2147483647|row -1"),
    "huge row": ("UPDATE vectors SET row=1000000000000;", r"1000000000000"),
    "text row": ("UPDATE vectors SET row='abc';", r"'abc'|not an integer"),
    "real row": ("UPDATE vectors SET row=0.5;", r"row 0\.5 is not a row number"),
    "text label": (
        "UPDATE dataset_rows SET label='abc' WHERE idx=0;",
        r"label: 'abc' is not an integer",
    ),
    # np.array(.., int64) would have truncated it to the label 2
    "real label": ("UPDATE dataset_rows SET label=2.5 WHERE idx=0;", r"label: 2\.5 is not an"),
    "huge label": (
        "UPDATE dataset_rows SET label=99999999999 WHERE idx=0;",
        r"label: 99999999999 is outside -1\.\.2147483648",
    ),
    "shard record": ("UPDATE shards SET rows=1000000000000, dim=1000000000;", r"its record says"),
    "shard dtype": ("UPDATE shards SET dtype='object';", r"its record says 'object'"),
    "deep class names": (
        "UPDATE datasets SET class_names='" + "[" * 50000 + "]" * 50000 + "';",
        r"dataset 'd' class_names: JSON nested too deeply",
    ),
    "class names of numbers": (
        "UPDATE datasets SET class_names='[1, 2]';",
        r"class_names: not a list of strings",
    ),
    "extractor spec": ("UPDATE extractors SET spec='[1]';", r"spec: a JSON dict was expected"),
    "head meta": (
        "UPDATE heads SET meta='" + '{"a":' * 50000 + "1" + "}" * 50000 + "';",
        r"head 'h' v1 meta: JSON nested too deeply",
    ),
    "head file of a number": ("UPDATE heads SET file=7;", r"head file '7': not under heads/"),
}


@pytest.mark.parametrize("attack", list(CATALOG_ATTACKS))
def test_a_crafted_catalog_is_refused_naming_what_is_wrong(
    attack: str, copy: Path, stub_weights: Weights
) -> None:
    statement, message = CATALOG_ATTACKS[attack]
    before = _vectors_table(copy)
    _sql(copy, statement)
    refused = _everything(copy, stub_weights)
    assert any(re.search(message, r) for r in refused), refused
    if attack.startswith("trigger"):  # it never ran: no stored vector was lost
        assert _vectors_table(copy) == before


def test_a_catalog_that_is_a_fifo_is_refused_without_hanging(copy: Path) -> None:
    (copy / "catalog.sqlite").unlink()
    os.mkfifo(copy / "catalog.sqlite", 0o600)
    with pytest.raises(StoreError, match=r"catalog\.sqlite"):
        FeatureStore(copy)


def _shard(store: Path) -> Path:
    (path,) = (store / "shards").rglob("*.npy")
    return path


def _rewrite_shard(store: Path, payload: bytes) -> None:
    """Replace the shard's bytes, with the catalog's digest, size and mtime to match."""
    shard = _shard(store)
    shard.write_bytes(payload)
    digest = hashlib.sha256(payload).hexdigest()
    _sql(
        store,
        f"UPDATE shards SET sha256='{digest}', bytes={len(payload)}, "
        f"mtime_ns={shard.stat().st_mtime_ns};",
    )


def _npy(header: dict[str, object], body: bytes = b"") -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)  # type: ignore[no-untyped-call]
    return buffer.getvalue() + body


SHARD_ATTACKS: dict[str, Callable[[Path], None]] = {
    "fortran order": lambda s: _rewrite_shard(
        s, _npy({"descr": "<f4", "fortran_order": True, "shape": (12, 4096)}, bytes(12 * 4096 * 4))
    ),
    "lying shape": lambda s: _rewrite_shard(
        s, _npy({"descr": "<f4", "fortran_order": False, "shape": (10**12, 4096)}, bytes(64))
    ),
    "big-endian": lambda s: _rewrite_shard(
        s, _npy({"descr": ">f4", "fortran_order": False, "shape": (12, 4096)}, bytes(12 * 4096 * 4))
    ),
    "huge header": lambda s: _rewrite_shard(
        s, b"\x93NUMPY\x02\x00" + (10**6).to_bytes(4, "little") + b"{" + b" " * 10**6
    ),
    "not npy": lambda s: _rewrite_shard(s, b"\x00" * 128),
}


@pytest.mark.parametrize("attack", list(SHARD_ATTACKS))
def test_a_crafted_shard_is_refused_as_damage(attack: str, copy: Path) -> None:
    SHARD_ATTACKS[attack](copy)
    shard = _shard(copy)
    with FeatureStore(copy) as store:
        problems = store.verify().problems
        assert any(str(shard) in p for p in problems), problems
        with pytest.raises(StoreError, match=re.escape(str(shard))):
            store.vectors("d")


def test_a_fifo_shard_is_refused_without_hanging(copy: Path) -> None:
    shard = _shard(copy)
    shard.unlink()
    os.mkfifo(shard, 0o600)
    with FeatureStore(copy) as store:
        assert any("not a regular file" in p for p in store.verify().problems)
        with pytest.raises(StoreError, match="not a regular file"):
            store.vectors("d")


def test_head_files_are_size_capped_and_parsed_without_recursion(copy: Path) -> None:
    from featcache.classifier.persist import load_head
    from featcache.store import MAX_HEAD_BYTES

    with FeatureStore(copy) as store:
        record = store.head("h")
        path = copy / record.file
        with open(path, "r+b") as f:  # sparse: no disk used
            f.truncate(MAX_HEAD_BYTES + 1)
        with pytest.raises(HeadError, match=r"head file of 2147483649 bytes, past the"):
            store.head_bytes(record)
        deep = b"[" * 100000 + b"]" * 100000
        payload = len(deep).to_bytes(8, "little") + deep
        path.write_bytes(payload)
        _sql(copy, f"UPDATE heads SET sha256='{hashlib.sha256(payload).hexdigest()}';")
        with pytest.raises(HeadError, match=r"not a featcache head file|header of"):
            load_head(store, "h")


def test_huge_or_deep_runtime_manifests_are_refused(copy: Path) -> None:
    store = FeatureStore(copy)
    folder = publish_runtime_model(store.runtime_models, FP, kib=1)
    manifest = folder / "manifest.json"
    for content, message in (
        (b" " * (2 << 20), r"larger than 1048576 bytes"),
        (b"[" * 100000 + b"]" * 100000, r"nested too deeply"),
    ):
        manifest.write_bytes(content)
        with pytest.raises(StoreError, match=message):
            store.runtime_models.find(FP, NAME)
        assert any(str(manifest) in p for p in store.verify().problems)
    manifest.unlink()
    os.mkfifo(manifest, 0o600)
    with pytest.raises(StoreError, match=r"manifest\.json: unreadable .*not a regular file"):
        store.runtime_models.find(FP, NAME)
    store.close()


def test_verify_lists_every_crafted_row_and_carries_on(copy: Path) -> None:
    from typer.testing import CliRunner

    from featcache.cli import app

    _sql(
        copy,
        "UPDATE dataset_rows SET label='abc' WHERE idx=0;"
        "UPDATE dataset_rows SET path='img' || char(27) || '[31mred' || char(0) || '.png' "
        "WHERE idx=1;"
        "UPDATE datasets SET class_names='[1, 2]';"
        "UPDATE heads SET meta='[1]', file='heads/../../x';"
        "UPDATE shards SET dtype='object', rows=-5;"
        "UPDATE extractors SET spec='not json';",
    )
    with FeatureStore(copy, read_only=True, create=False) as store:
        problems = store.verify().problems  # never raises on the first one
    wanted = [
        r"table 'dataset_rows' row \(dataset='d', idx='0'\) field 'label': 'abc' is not an integer",
        r"table 'dataset_rows' row \(dataset='d', idx='1'\) field 'path': .* control characters",
        r"table 'datasets' row \(name='d'\) field 'class_names': not a list of strs",
        r"table 'heads' row \(name='h', version='1'\) field 'meta': a JSON dict was expected",
        r"table 'heads' row \(name='h', version='1'\) field 'file': 'heads/\.\./\.\./x' is not a "
        r"relative name",
        r"table 'shards' row \(id='1'\) field 'dtype': 'object' is not one of float32, float16",
        r"table 'shards' row \(id='1'\) field 'rows': -5 is outside",
        r"table 'extractors' row \(fingerprint='.*'\) field 'spec': not JSON",
        r"shard holds dtype <f4, its record says 'object'",  # and the shard checks ran on
    ]
    for pattern in wanted:
        assert any(re.search(pattern, p) for p in problems), (pattern, problems)
    result = CliRunner().invoke(app, ["store", "verify", "--store", str(copy)])
    assert (
        result.exit_code == 3
        and "field 'label'" in result.output
        and "field 'spec'" in result.output
    )
