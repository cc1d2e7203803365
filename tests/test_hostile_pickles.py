"""A pickle that would run code, planted in every kind of file a store holds (with the
catalog's digests updated to match, as its author could), runs nothing in any command."""

from __future__ import annotations

import hashlib
import json
import pickle
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from conftest import CountingNetwork, Evil, write_images
from featcache.classifier.train import train_head
from featcache.cli import app
from featcache.extractor.pipeline import extract
from featcache.extractor.weights import Weights
from featcache.service import ServiceConfig, create_app
from featcache.store import FeatureStore

runner = CliRunner()


def cli(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output


def plant(root: Path, marker: Path) -> None:
    """Evil pickles as: head file (registered digest updated), an extra head, a shard (the
    catalog's digest and size updated), a runtime model's files and manifest, failures.csv,
    reports, and the catalog's own JSON fields."""
    evil = pickle.dumps(Evil(marker))
    with sqlite3.connect(root / "catalog.sqlite") as db:
        file = db.execute("SELECT file FROM heads WHERE name='bad'").fetchone()[0]
        (root / file).write_bytes(evil)
        db.execute(
            "UPDATE heads SET sha256=? WHERE name='bad'", (hashlib.sha256(evil).hexdigest(),)
        )
        shard_id, name = db.execute("SELECT id, name FROM shards ORDER BY id LIMIT 1").fetchone()
        shard = root / "shards" / name
        np.save(shard, np.array([Evil(marker)], dtype=object), allow_pickle=True)
        payload = shard.read_bytes()
        db.execute(
            "UPDATE shards SET sha256=?, bytes=?, mtime_ns=? WHERE id=?",
            (hashlib.sha256(payload).hexdigest(), len(payload), shard.stat().st_mtime_ns, shard_id),
        )
        fingerprint = db.execute("SELECT fingerprint FROM extractors").fetchone()[0]
        db.execute("UPDATE datasets SET class_names=?", (json.dumps(["a", evil.hex()]),))
    (root / "heads" / "bad" / f"{'ab' * 8}.joblib").write_bytes(evil)
    model = root / "runtimes" / fingerprint[:16] / "openvino-fc7-float32"
    model.mkdir(parents=True)
    for part in ("model.xml", "model.bin"):
        (model / part).write_bytes(evil)
    files = {p: hashlib.sha256(evil).hexdigest() for p in ("model.xml", "model.bin")}
    manifest = {
        "format": 1,
        "fingerprint": fingerprint,
        "name": model.name,
        "layers": ["fc7"],
        "precision": "float32",
        "files": files,
        "meta": {"layers": ["fc7"], "precision": "float32", "runtime": "openvino"},
    }
    (model / "manifest.json").write_text(json.dumps(manifest))
    (model / "checked.json").write_bytes(evil)
    (root / "failures.csv").write_bytes(evil)
    (root / "reports").mkdir(exist_ok=True)
    (root / "reports" / "summary.json").write_bytes(evil)


@pytest.fixture
def planted(tmp_path: Path, stub_weights: Weights) -> tuple[Path, list[Path], Path]:
    images = write_images(tmp_path / "data", 24, classes=("a", "b"))
    with FeatureStore(tmp_path / "store") as store:
        extract(
            tmp_path / "data", stub_weights, store, dataset="d", network_factory=CountingNetwork
        )
        train_head(store, "d", name="good", params={"random_state": 0, "epochs": 2})
        train_head(store, "d", name="bad", params={"random_state": 0, "epochs": 3})
    marker = tmp_path / "PWNED"
    plant(tmp_path / "store", marker)
    return tmp_path / "store", images, marker


def test_no_command_unpickles_anything_from_a_store(
    planted: tuple[Path, list[Path], Path], tmp_path: Path, stub_weights: Weights
) -> None:
    store, images, marker = planted
    outputs = {}
    for name, args in {
        "heads list": ("heads", "list", "--store", store),
        "heads show": ("heads", "show", "--store", store, "bad"),
        "predict": ("predict", "--store", store, "--head", "bad", *images[:3]),
        "predict good": ("predict", "--store", store, "--head", "good", *images[:3]),
        "evaluate": ("evaluate", "--store", store, "--head", "bad", "--dataset", "d"),
        "evaluate good": (
            "evaluate",
            "--store",
            store,
            "--head",
            "good",
            "--dataset",
            "d",
            "--out",
            tmp_path / "rep",
        ),
        "doctor": ("doctor", "--store", store, "--dataset", "d", "--out", tmp_path / "doc"),
        "advise": (
            "advise",
            "--store",
            store,
            "--dataset",
            "d",
            "--layers",
            "fc7",
            "--out",
            tmp_path / "adv",
        ),
        "export": ("export", "--store", store, "--dataset", "d", "--out", tmp_path / "e.npz"),
        "verify": ("store", "verify", "--store", store),
        "info": ("store", "info", "--store", store),
    }.items():
        outputs[name] = cli(*args)
        assert not marker.exists(), name
    assert outputs["heads list"][0] == 0
    code, text = outputs["predict"]
    assert code == 1 and "does not match the registered" not in text
    assert "old head file (a joblib pickle)" in text and "heads upgrade" in text
    code, text = outputs["verify"]
    # the pickled shard was found damaged by predict's look-up (its header is an object
    # array, its record float32) and dropped for recomputing (test_hostile_store: verify)
    assert code == 3 and "0 shards" in text
    assert "head 'bad' v1" in text and "an old pickled head" in text
    for config in (dict(head="good"), dict(head="bad")):
        try:
            with TestClient(create_app(ServiceConfig(store=store, **config))) as c:  # type: ignore[arg-type]
                c.get("/healthz")
                c.post("/v1/predict", files={"files": ("x.png", images[0].read_bytes())})
        except Exception:  # the bad head is refused at start: what matters is the marker
            pass
        assert not marker.exists()
    with FeatureStore(store) as fs:
        extract(
            store.parent / "data", stub_weights, fs, dataset="d", network_factory=CountingNetwork
        )
    assert not marker.exists()
    assert cli("store", "verify", "--store", store, "--repair")
    assert cli("store", "gc", "--store", store, "--grace", "0")[0] == 0
    assert cli("heads", "delete", "--store", store, "bad", "--yes")[0] == 0
    assert not marker.exists()
