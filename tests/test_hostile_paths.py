"""A store from someone else names files outside itself: absolute names, ``..`` and symlinks
in its catalog, its shard folder and its runtime models. Every command leaves every outside
file as it was; `store verify` reports each bad reference; only files featcache made are
ever deleted."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import CountingNetwork, publish_runtime_model, write_images
from featcache.classifier.train import train_head
from featcache.cli import app
from featcache.errors import StoreError, UnsafePathError
from featcache.extractor.config import ExtractConfig
from featcache.extractor.pipeline import extract
from featcache.extractor.weights import Weights
from featcache.store import FeatureStore, RuntimeFiles
from featcache.store.paths import contained

runner = CliRunner()


def cli(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def test_contained_refuses_every_way_out(tmp_path: Path) -> None:
    root = tmp_path / "shards"
    (root / "a").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (root / "a" / "link").symlink_to(tmp_path / "outside")
    (root / "a" / "inner").symlink_to(root / "a")
    assert contained(root, "a/x.npy", "shard") == root / "a" / "x.npy"
    assert contained(root, "a/inner/x.npy", "shard") == root / "a" / "inner" / "x.npy"
    for name in ("/etc/passwd", "../x.npy", "a/../../x.npy", "", "a\\..\\x", "a/\x00"):
        with pytest.raises(UnsafePathError, match="not a relative name inside"):
            contained(root, name, "shard")
    with pytest.raises(UnsafePathError, match=r"leads outside .* through a symlink"):
        contained(root, "a/link/x.npy", "shard")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def hostile(tmp_path: Path, stub_weights: Weights) -> tuple[Path, Path, list[Path]]:
    """A store whose catalog names outside files (absolute, ``..``), with a registered shard
    replaced by a symlink to an outside copy, a symlinked shard folder and runtime folder
    holding featcache-named old files, and a head whose file is outside."""
    images = write_images(tmp_path / "data", 8, classes=("a", "b"))
    store = FeatureStore(tmp_path / "store")
    extract(
        tmp_path / "data",
        stub_weights,
        store,
        dataset="d",
        config=ExtractConfig(batch_size=2),
        network_factory=CountingNetwork,
    )
    train_head(store, "d", name="good", params={"random_state": 0, "epochs": 2})
    train_head(store, "d", name="bad", params={"random_state": 0, "epochs": 3})
    shards = store._catalog.shards()
    assert len(shards) == 4
    store.close()

    outside = tmp_path / "outside"
    (outside / "dir").mkdir(parents=True)
    (outside / "notes.txt").write_text("my notes\n")
    (outside / "x.npy").write_bytes(b"not a shard of yours")
    head_file = outside / "h.safetensors"
    head_file.write_bytes(b"someone's file")
    root = tmp_path / "store"
    # a registered shard replaced by a symlink to an outside copy of itself (same bytes)
    third = root / "shards" / shards[2].name
    shutil.copy(third, outside / "copy.npy")
    third.unlink()
    third.symlink_to(outside / "copy.npy")
    # a symlinked shard folder and runtime folder holding old featcache-named files
    old = outside / "dir" / f"{'cd' * 16}.npy"
    old.write_bytes(b"x" * 128)
    (outside / "dir" / "openvino-fc7-float32").mkdir()
    (outside / "dir" / "openvino-fc7-float32" / "model.bin").write_bytes(b"y")
    for path in [old, *(outside / "dir").rglob("*")]:
        os.utime(path, (time.time() - 10**5, time.time() - 10**5))
    (root / "shards" / "evil").symlink_to(outside / "dir")
    (root / "runtimes").mkdir()
    (root / "runtimes" / ("0" * 16)).symlink_to(outside / "dir")
    digest = hashlib.sha256(head_file.read_bytes()).hexdigest()
    with sqlite3.connect(root / "catalog.sqlite") as db:
        db.execute(
            "UPDATE shards SET name=? WHERE id=?", (str(outside / "notes.txt"), shards[0].id)
        )
        db.execute("UPDATE shards SET name=? WHERE id=?", ("../../outside/x.npy", shards[1].id))
        db.execute(
            "UPDATE heads SET file=?, sha256=? WHERE name='bad'",
            ("heads/bad/../../../outside/h.safetensors", digest),
        )
    return root, outside, images


def test_no_command_touches_a_file_outside_the_store(
    hostile: tuple[Path, Path, list[Path]], stub_weights: Weights
) -> None:
    root, outside, images = hostile
    before = snapshot(outside)

    code, output = cli("store", "verify", "--store", root)
    assert code == 3, output  # damage found (EXIT_STRICT)
    assert output.count("not a relative name") >= 2  # the absolute and the ../ shard
    assert "through a symlink" in output  # the symlinked registered shard
    assert "head 'bad' v1: head file 'heads/bad/../../../outside/h.safetensors'" in output
    assert snapshot(outside) == before

    code, output = cli("predict", "--store", root, "--head", "good", *images)
    assert snapshot(outside) == before
    code, output = cli("predict", "--store", root, "--head", "bad", images[0])
    assert code == 1 and "not a relative name" in output
    with FeatureStore(root) as store:  # extract resumes: bad shards' images computed again
        report = extract(
            root.parent / "data", stub_weights, store, dataset="d", network_factory=CountingNetwork
        )
        assert report.extracted == 6  # the 3 bad shards' images (2 each)
    assert snapshot(outside) == before
    code, output = cli("store", "verify", "--store", root, "--repair")
    assert snapshot(outside) == before
    code, output = cli("store", "gc", "--store", root, "--grace", "0")
    assert code == 0, output
    assert snapshot(outside) == before
    code, output = cli("heads", "delete", "--store", root, "bad", "--yes")
    assert code == 0 and "deleted 1 version(s)" in output
    assert snapshot(outside) == before
    assert (root / "shards" / "evil").is_symlink()  # a planted link is left to its owner
    code, output = cli("predict", "--store", root, "--head", "good", *images)
    assert code == 0, output
    assert output.count("(cached)") == len(images)


def test_gc_deletes_only_what_featcache_names(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "s")
    store.put_batch(["k1"], {"fc7": np.ones((1, 4), np.float32)}, "f" * 64)
    folder = next((tmp_path / "s" / "shards").rglob("*.npy")).parent
    mine = folder / "notes.npy"  # someone's own file, put in the store by hand
    mine.write_bytes(b"keep me")
    orphan = folder / f"{'ef' * 16}.npy"  # what a killed run leaves
    orphan.write_bytes(b"x")
    for path in (mine, orphan):
        os.utime(path, (time.time() - 10**5, time.time() - 10**5))
    store.gc(grace_seconds=0)
    assert mine.read_bytes() == b"keep me" and not orphan.exists()


def publish(files: RuntimeFiles, fingerprint: str = "f" * 64) -> Path:
    return publish_runtime_model(files, fingerprint, kib=1)


def test_a_runtime_model_belongs_to_its_fingerprint_and_its_exact_files(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "s")
    files = store.runtime_models
    ours, theirs = "a" * 64, "b" * 64
    publish(files, theirs)
    # copied from another fingerprint's folder into ours: never used
    mine = files.folder(ours, "openvino-fc7-float32")
    mine.parent.mkdir(parents=True)
    shutil.copytree(files.folder(theirs, "openvino-fc7-float32"), mine)
    with pytest.raises(StoreError, match=r"made for extractor bbbbbbbbbbbbbbbb .* copied from"):
        files.find(ours, "openvino-fc7-float32")
    report = store.verify()
    assert any("copied from elsewhere" in p and str(mine) in p for p in report.problems)
    shutil.rmtree(mine)
    # a file dropped beside the signed manifest's list: the folder holds an unlisted file
    folder = publish(files, ours)
    (folder / "extra.bin").write_bytes(b"other weights")
    model = files.find(ours, "openvino-fc7-float32")
    assert model is not None
    assert "extra.bin: not in the manifest's file list" in files.check(model)[0]
    assert any("not in the manifest's file list" in p for p in store.verify().problems)
    (folder / "extra.bin").unlink()
    # model.bin swapped and dropped from the manifest: the signature no longer matches
    manifest = json.loads((folder / "manifest.json").read_text())
    del manifest["files"]["model.bin"]
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(StoreError, match="does not match its signature"):
        files.find(ours, "openvino-fc7-float32")
    # a manifest that lies about layers or precision, or lists a path
    for change in ({"layers": ["fc6"]}, {"precision": "bf16"}, {"files": {"../x": "0"}}):
        (folder / "manifest.json").write_text(json.dumps({**manifest, **change}))
        with pytest.raises(StoreError, match="rebuilt on next use|not a plain file name"):
            files.find(ours, "openvino-fc7-float32")


def test_gc_and_verify_handle_temporaries_left_by_killed_commands(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "s")
    store.add_head("h", b"payload", {})
    folder = tmp_path / "s" / "heads" / "h"
    old = folder / f".tmp-4242-0123456789ab-{'ab' * 8}.safetensors"  # a killed train's
    old.write_bytes(b"x" * 1000)
    os.utime(old, (time.time() - 10**4, time.time() - 10**4))
    young = tmp_path / "s" / ".tmp-4243-0123456789ab-failures.csv"  # a command running now
    young.write_bytes(b"y")
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / ".tmp-1-0123456789ab-x").write_bytes(b"z")
    os.utime(outside / ".tmp-1-0123456789ab-x", (0, 0))
    (tmp_path / "s" / "reports").symlink_to(outside)  # never followed
    problems = store.verify().problems
    assert sum("temporary file" in p for p in problems) == 2
    assert any(str(old) in p for p in problems) and any(str(young) in p for p in problems)
    report = store.gc(grace_seconds=900)
    assert not old.exists() and young.exists() and (outside / ".tmp-1-0123456789ab-x").exists()
    assert report.files_removed == 1 and report.bytes_freed >= 1000
