"""Training, splits, evaluation, head persistence and safety, on vectors put in a store."""

from __future__ import annotations

import hashlib
import json
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import Evil
from featcache.classifier.evaluate import evaluate_head, report_values, write_report
from featcache.classifier.persist import load_head
from featcache.classifier.splits import effective_splits, key_fraction
from featcache.classifier.train import train_head
from featcache.cli import app
from featcache.errors import (
    ConfigError,
    DataError,
    FingerprintMismatchError,
    HeadError,
    NotFoundError,
)
from featcache.store import DatasetRow, FeatureStore

FP = "a" * 64


def make_store(
    path: Path, n: int = 400, k: int = 3, seed: int = 0, splits: bool = False
) -> FeatureStore:
    """A store holding `n` separable 32-d vectors in dataset 'toy' (no network involved)."""
    rng = np.random.default_rng(seed)
    keys = [hashlib.sha256(f"{seed}-{i}".encode()).hexdigest() for i in range(n)]
    y = rng.integers(0, k, n)
    X = (np.eye(k, 32)[y] * 3 + rng.standard_normal((n, 32))).astype(np.float32)
    store = FeatureStore(path)
    store.register_extractor(FP, {"profile": "caffe", "weights_note": "RANDOM test vectors"})
    store.put_batch(keys, {"fc7": np.maximum(X, 0)}, FP)
    split_of = (lambda i: "test" if i % 4 == 0 else "train") if splits else (lambda i: None)
    rows = [DatasetRow(key, f"img{i}.png", int(y[i]), split_of(i)) for i, key in enumerate(keys)]
    store.add_dataset("toy", rows, [f"class {c}" for c in range(k)])
    return store


def test_hash_split_is_stable_and_about_the_fraction() -> None:
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(2000)]
    a = effective_splits(keys, [None] * 2000, 0.2)
    order = np.random.default_rng(0).permutation(2000)
    b = effective_splits([keys[i] for i in order], [None] * 2000, 0.2)
    np.testing.assert_array_equal(a[order], b)  # same image, same side, whatever the order
    assert 0.17 < (a == "val").mean() < 0.23
    assert all((s == "val") == (key_fraction(k) < 0.2) for k, s in zip(keys, a, strict=True))


def test_explicit_splits_win_and_test_is_never_trained_on() -> None:
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(6)]
    given = ["train", "Validation", "test", None, "train", "valid"]
    out = effective_splits(keys, given, 0.5)
    assert out.tolist() == ["train", "val", "test", "train", "train", "val"]
    carved = effective_splits(keys, ["train", "test", "train", "train", "test", None], 0.5)
    assert carved[1] == carved[4] == "test" and set(carved) <= {"train", "val", "test"}


def test_report_values_by_hand() -> None:
    y_true = np.array([0, 0, 1, 1, 2])
    # predictions: 0, 1, 1, 1, 0 (argmax of each row)
    proba = np.array(
        [[0.7, 0.2, 0.1], [0.3, 0.6, 0.1], [0.1, 0.8, 0.1], [0.2, 0.5, 0.3], [0.5, 0.1, 0.4]]
    )
    ev = report_values(y_true, proba, np.array([0, 1, 2]), ["a", "b", "c"], k=2)
    assert ev.summary["accuracy"] == pytest.approx(3 / 5)
    # top-2: row 0 {0,1} ok, row 1 {1,0} ok, row 2 ok, row 3 {1,2} ok, row 4 {0,2} ok
    assert ev.summary["top2_accuracy"] == pytest.approx(1.0)
    pc = ev.per_class.set_index("label")
    assert pc.loc["a", "precision"] == pytest.approx(1 / 2)  # predicted a: rows 0, 4
    assert pc.loc["a", "recall"] == pytest.approx(1 / 2)
    assert pc.loc["b", "precision"] == pytest.approx(2 / 3) and pc.loc["b", "recall"] == 1.0
    assert pc.loc["b", "f1"] == pytest.approx(0.8)
    assert pc.loc["c", "recall"] == 0.0 and pc.loc["c", "support"] == 1
    assert ev.confusion.tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    assert ev.summary["macro_f1"] == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert ev.summary["most_confused"] == [
        {"true": "a", "predicted": "b", "count": 1},
        {"true": "c", "predicted": "a", "count": 1},
    ]


def test_train_registers_versions_with_metadata(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    first = train_head(store, "toy", params={"random_state": 0})
    assert first.record.name == "toy-softmax" and first.record.version == 1
    meta = first.record.meta
    assert meta["fingerprint"] == FP and meta["layer"] == "fc7"
    assert meta["class_names"] == ["class 0", "class 1", "class 2"] and meta["classes"] == [0, 1, 2]
    assert meta["weights_note"] == "RANDOM test vectors"
    assert meta["metrics"]["n_train"] + meta["metrics"]["n_val"] == 400
    assert 60 < meta["metrics"]["n_val"] < 100  # 20% by key hash
    assert meta["metrics"]["val_accuracy"] > 0.9
    assert len(meta["train_digest"]) == 64 and meta["params"]["random_state"] == 0
    again = train_head(store, "toy", params={"random_state": 0})
    assert again.record.version == 2
    assert again.record.meta["train_digest"] == meta["train_digest"]
    logreg = train_head(store, "toy", head="logreg", name="lr")
    assert logreg.record.meta["head"] == "logreg" and logreg.metrics["val_accuracy"] > 0.9


def test_evaluate_on_the_test_split_and_write_report(tmp_path: Path) -> None:
    store = make_store(tmp_path, splits=True)
    train_head(store, "toy", params={"random_state": 0}, name="h")
    ev = evaluate_head(store, "h", "toy", split="test")
    assert ev.summary["n"] == 100 and ev.summary["accuracy"] > 0.9
    paths = write_report(ev, tmp_path / "report")
    summary = json.loads(paths[0].read_text())
    assert summary["split"] == "test" and summary["head"] == "h"
    per_class = pd.read_csv(paths[1])
    assert per_class["support"].sum() == 100
    confusion = pd.read_csv(paths[2], index_col=0)
    assert confusion.to_numpy().sum() == 100
    with Image.open(paths[3]) as png:
        assert png.format == "PNG" and png.size[0] > 500
    with pytest.raises(ConfigError, match=r"split must be one of \['train', 'val', 'test'\]"):
        evaluate_head(store, "h", "toy", split="holdout")


def test_head_refuses_vectors_of_another_extractor(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    train_head(store, "toy", name="h")
    head = load_head(store, "h")
    with pytest.raises(
        FingerprintMismatchError,
        match=r"trained on 'fc7' vectors of extractor "
        r"aaaaaaaaaaaa; refused 'fc6' vectors of extractor bbbbbbbbbbbb",
    ):
        head.check_vectors("b" * 64, "fc6")
    # a dataset whose vectors come from another extractor cannot be evaluated by this head
    other = FeatureStore(tmp_path)
    other.put_batch(["k"], {"fc7": np.ones((1, 32), np.float32)}, "b" * 64)
    other.add_dataset("other", [DatasetRow("k", "x.png", 0)], ["class 0"])
    with pytest.raises(NotFoundError, match="no 'fc7' vector for extractor aaaaaaaaaaaa"):
        evaluate_head(other, "h", "other", split=None)


def test_tampered_head_file_is_refused_before_unpickling(tmp_path: Path) -> None:
    store = make_store(tmp_path)
    record = train_head(store, "toy", name="h").record
    marker = tmp_path / "pwned"
    (tmp_path / record.file).write_bytes(pickle.dumps(Evil(marker)))
    with pytest.raises(HeadError, match="does not match the registered"):
        load_head(store, "h")
    assert not marker.exists()


def test_training_needs_two_classes(tmp_path: Path) -> None:
    store = make_store(tmp_path, k=1)
    with pytest.raises(DataError, match="fewer than 2 classes"):
        train_head(store, "toy")


def test_cli_train_evaluate_predict_heads(tmp_path: Path) -> None:
    make_store(tmp_path / "s", splits=True)
    runner = CliRunner()

    def cli(*args: str) -> tuple[int, str]:
        result = runner.invoke(app, list(args))
        return result.exit_code, result.output

    code, text = cli(
        "train",
        "--store",
        str(tmp_path / "s"),
        "--dataset",
        "toy",
        "--param",
        "l2=0.01",
        "--param",
        "class_weight=balanced",
        "--name",
        "signs",
    )
    assert code == 0, text
    assert "head 'signs' v1 (softmax)" in text and "[fc7]" in text and "RANDOM" in text
    assert ", top-3 " in text  # 3 classes: top-3, like evaluate's report, not a trivial top-5
    code, text = cli("train", "--store", str(tmp_path / "s"), "--dataset", "toy", "--param", "lr=1")
    assert code == 1 and "Unknown parameter(s) ['lr']" in text
    code, text = cli(
        "evaluate",
        "--store",
        str(tmp_path / "s"),
        "--dataset",
        "toy",
        "--head",
        "signs",
        "--out",
        str(tmp_path / "rep"),
    )
    assert code == 0 and "[test], 100 images" in text
    assert (tmp_path / "rep" / "confusion_matrix.png").exists()
    code, text = cli("heads", "list", "--store", str(tmp_path / "s"))
    assert "signs v1: softmax on 'toy'" in text and "(promoted)" not in text
    code, text = cli("heads", "promote", "--store", str(tmp_path / "s"), "signs@1")
    assert code == 0, text
    code, text = cli("heads", "list", "--store", str(tmp_path / "s"))
    assert "signs v1: softmax on 'toy'" in text and text.rstrip().endswith("(promoted)")
    code, text = cli("heads", "show", "--store", str(tmp_path / "s"), "signs")
    assert json.loads(text)["params"]["l2"] == 0.01
    code, text = cli("heads", "delete", "--store", str(tmp_path / "s"), "signs", "--yes")
    assert code == 0 and "deleted 1 version(s)" in text
    code, text = cli(
        "evaluate", "--store", str(tmp_path / "s"), "--dataset", "toy", "--head", "signs"
    )
    assert code == 1 and "no head 'signs'" in text
