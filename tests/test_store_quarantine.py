"""A damaged shard (a header contradicting its record, changed bytes, truncated) is moved to
``STORE/quarantine/shards/`` with a note, never deleted, and its vectors computed again."""

from __future__ import annotations

import hashlib
import io
import json
import os
import sqlite3
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from conftest import CountingNetwork, write_images
from featcache.cli import app
from featcache.extractor.pipeline import extract
from featcache.extractor.weights import Weights

runner = CliRunner()


def _run(data: Path, store: Path, weights: Weights) -> object:
    return extract(data, weights, store, dataset="d", network_factory=CountingNetwork)


def _lying_header(store: Path) -> tuple[Path, bytes]:
    """Rewrite the store's shard with a header (and catalog digest) for another shape."""
    (shard,) = sorted((store / "shards").rglob("*.npy"))
    buffer = io.BytesIO()
    np.save(buffer, np.zeros((3, 5), np.float32), allow_pickle=False)
    payload = buffer.getvalue()
    shard.write_bytes(payload)
    with sqlite3.connect(store / "catalog.sqlite") as db:
        db.execute(
            "UPDATE shards SET sha256=?, bytes=?, mtime_ns=?",
            (hashlib.sha256(payload).hexdigest(), len(payload), shard.stat().st_mtime_ns),
        )
    return shard, payload


def test_extract_moves_a_contradicting_shard_to_quarantine_and_recomputes(
    tmp_path: Path, stub_weights: Weights
) -> None:
    data = tmp_path / "data"
    write_images(data, 4)
    store = tmp_path / "s"
    _run(data, store, stub_weights)
    shard, payload = _lying_header(store)
    name = shard.relative_to(store / "shards").as_posix()
    again = _run(data, store, stub_weights)
    assert again.extracted == 4  # type: ignore[attr-defined]
    (repair,) = again.repairs  # type: ignore[attr-defined]
    kept = store / "quarantine" / "shards" / name
    assert "its record says" in repair and f"moved to {kept} (nothing deleted)" in repair
    assert kept.read_bytes() == payload  # what the store held, byte for byte
    note = json.loads(kept.with_name(kept.name + ".json").read_text())
    assert note["record"]["name"] == name and "its record says" in note["problem"]
    assert not shard.exists()
    result = runner.invoke(app, ["store", "verify", "--store", str(store)])
    assert result.exit_code == 0, result.output
    assert "note: 1 damaged shard file(s) kept in quarantine/" in result.output
    # gc leaves the quarantine alone
    assert runner.invoke(app, ["store", "gc", "--store", str(store), "--grace", "0"]).exit_code == 0
    assert kept.read_bytes() == payload


def test_verify_repair_quarantines_and_a_second_damage_of_that_name_is_kept_too(
    tmp_path: Path, stub_weights: Weights
) -> None:
    data = tmp_path / "data"
    write_images(data, 4)
    store = tmp_path / "s"
    _run(data, store, stub_weights)
    shard, payload = _lying_header(store)
    result = runner.invoke(app, ["store", "verify", "--store", str(store)])
    assert result.exit_code == 3
    assert "moves the file to quarantine/ (nothing is deleted)" in result.output
    result = runner.invoke(app, ["store", "verify", "--store", str(store), "--repair"])
    assert result.exit_code == 0, result.output
    kept = store / "quarantine" / "shards" / shard.relative_to(store / "shards")
    assert f"kept: {kept}" in result.output and kept.read_bytes() == payload
    # the same name damaged again (a crafted catalog can name it twice): nothing replaced
    shard.parent.mkdir(parents=True, exist_ok=True)
    _run(data, store, stub_weights)
    with sqlite3.connect(store / "catalog.sqlite") as db:
        db.execute("UPDATE shards SET name=?", (shard.relative_to(store / "shards").as_posix(),))
    for old in (store / "shards").rglob("*.npy"):
        os.replace(old, shard)
    _lying_header(store)
    runner.invoke(app, ["store", "verify", "--store", str(store), "--repair"])
    assert kept.read_bytes() == payload
    assert kept.with_name(kept.name + ".1").read_bytes() == payload


def test_a_quarantine_folder_planted_as_a_symlink_leads_nowhere(
    tmp_path: Path, stub_weights: Weights
) -> None:
    data = tmp_path / "data"
    write_images(data, 4)
    store = tmp_path / "s"
    _run(data, store, stub_weights)
    outside = tmp_path / "outside"
    outside.mkdir()
    (store / "quarantine").symlink_to(outside)
    shard, payload = _lying_header(store)
    again = _run(data, store, stub_weights)
    assert again.extracted == 4  # type: ignore[attr-defined]
    assert list(outside.iterdir()) == []  # nothing written through the symlink
    assert shard.read_bytes() == payload  # kept where it was (unregistered; gc's to judge)
