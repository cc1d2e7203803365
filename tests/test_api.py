"""The notebook API: exports, LabelledVectors in pandas, evaluate, save_head, validation."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import featcache as fc
from conftest import CountingNetwork, write_images
from featcache.classifier.evaluate import evaluate_head
from featcache.errors import ConfigError, NotFoundError
from test_train_evaluate import make_store

SUBPACKAGES = ("analysis", "classifier", "data", "export", "extractor", "service", "store")


@pytest.mark.parametrize("name", SUBPACKAGES)
def test_subpackages_export_every_public_name_of_their_modules(name: str) -> None:
    package = importlib.import_module(f"featcache.{name}")
    exported = set(package.__all__)
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"featcache.{name}.{info.name}")
        missing = set(getattr(module, "__all__", ())) - exported
        assert not missing, f"featcache.{name} does not export {sorted(missing)} of {info.name}"
    for public in exported:
        assert getattr(package, public) is not None, public
        assert not inspect.ismodule(getattr(package, public)), f"{public} is a module"


def test_notebook_names_are_top_level_and_typed() -> None:
    for name in ("SoftmaxHead", "LogRegHead", "evaluate", "save_head", "Predictor", "extract"):
        assert name in fc.__all__
    assert (Path(fc.__file__).parent / "py.typed").exists()
    code = (
        "import sys, featcache as fc, featcache.extractor\n"
        "bad = [m for m in ('tensorflow', 'sklearn') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_vectors_to_pandas_and_split(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", n=40, splits=True)
    data = store.vectors("toy")
    df = data.to_pandas()
    assert list(df.columns) == ["key", "path", "label", "class_name", "split"]
    assert len(df) == 40 and df["key"].tolist() == data.keys
    assert df["label"].dtype == pd.Int64Dtype() and df["label"].tolist() == data.y.tolist()
    assert df["class_name"].tolist() == [f"class {c}" for c in data.y]
    train, test = data.split("train"), data.split("test")
    assert len(train) == 30 and len(test) == 10
    assert test.X.shape == (10, 32) and test.X.dtype == np.float32
    assert set(test.splits) == {"test"} and test.keys == [data.keys[i] for i in range(0, 40, 4)]
    np.testing.assert_array_equal(test.X, data.X[::4])
    assert test.class_names == data.class_names and test.dataset == "toy"
    with pytest.raises(NotFoundError, match=r"no rows in split 'val' \(its splits: test, train\)"):
        data.split("val")


def test_evaluate_in_hand_equals_evaluate_head(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", n=200, splits=True)
    data = store.vectors("toy")
    train, test = data.split("train"), data.split("test")
    head = fc.SoftmaxHead(random_state=0).fit(train.X, train.y)
    ev = fc.evaluate(head, test.X, test.y, class_names=data.class_names)
    assert isinstance(ev.accuracy, float) and 0.5 < ev.accuracy <= 1.0  # 3 separable classes
    assert ev.top5_accuracy == 1.0  # 3 classes: top-3 always holds the truth
    assert ev.confusion.shape == (3, 3) and ev.confusion.sum() == len(test)
    assert ev.per_class["label"].tolist() == ["class 0", "class 1", "class 2"]
    assert ev.per_class["support"].sum() == len(test)
    record = fc.save_head(store, "toy-softmax", head, trained_on=data)
    assert record.version == 1
    assert fc.save_head(store, "toy-softmax", head, trained_on=data).version == 2
    stored = evaluate_head(store, "toy-softmax", "toy", split="test")
    assert stored.accuracy == ev.accuracy
    np.testing.assert_array_equal(stored.confusion, ev.confusion)
    assert record.meta["dataset"] == "toy" and record.meta["head"] == "softmax"
    assert record.meta["class_names"] == data.class_names
    paths = ev.write(tmp_path / "report")
    assert [p.name for p in paths] == [
        "summary.json",
        "per_class.csv",
        "confusion_matrix.csv",
        "confusion_matrix.png",
    ]
    frame = pd.read_csv(paths[2], index_col=0)
    assert frame.to_numpy().tolist() == ev.confusion.tolist()


def test_save_head_refuses_unfitted_or_undescribed(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", n=40)
    with pytest.raises(fc.HeadError, match="SoftmaxHead is not fitted; call .fit first"):
        fc.save_head(store, "h", fc.SoftmaxHead(), trained_on=store.vectors("toy"))
    data = store.vectors("toy")
    head = fc.LogRegHead().fit(data.X, data.y)
    with pytest.raises(ConfigError, match="pass trained_on="):
        fc.save_head(store, "h", head)


def test_logreg_errors_name_logreghead() -> None:
    X = np.random.default_rng(0).standard_normal((20, 4))
    y = np.arange(20) % 2
    with pytest.raises(ValueError, match="The 'C' parameter of LogRegHead must be"):
        fc.LogRegHead(C=-1.0).fit(X, y)
    with pytest.raises(ConfigError, match="The 'max_iter' parameter of LogRegHead"):
        fc.make_head("logreg", {"max_iter": 0})


def test_unknown_head_suggests_training(tmp_path: Path) -> None:
    store = make_store(tmp_path / "s", n=20)
    with pytest.raises(NotFoundError, match=r"no head 'x' \(known: none\); train one with"):
        fc.load_head(store, "x")


def test_extract_names_the_dataset_after_the_source(
    tmp_path: Path, weights_path: Path, counting_network: type[CountingNetwork]
) -> None:
    write_images(tmp_path / "signs" / "train", 6)
    write_images(tmp_path / "signs" / "test", 2, seed=1)
    store = fc.FeatureStore(tmp_path / "st")
    report = fc.extract(tmp_path / "signs", weights_path, store, network_factory=counting_network)
    assert report.dataset == "signs" and store.datasets() == ["signs"]
    data = store.vectors("signs")
    assert len(data) == 8 and sorted(set(data.splits)) == ["test", "train"]
