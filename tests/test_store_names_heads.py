"""Names and splits checked before any work; a (name, version) names one model forever."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from conftest import CountingNetwork, write_images
from featcache.classifier.train import train_head
from featcache.errors import ConfigError, NotFoundError
from featcache.extractor.pipeline import extract
from featcache.extractor.weights import Weights
from featcache.predictor import Predictor
from featcache.store import (
    DatasetRow,
    FeatureStore,
    normalize_split,
    validate_dataset_name,
    validate_head_name,
)

FP = "a" * 64
STUB = Weights(Path("stub-alexnet.npy"), {}, "ef" * 32, "RANDOM stub weights for tests")


def test_splits_and_their_aliases() -> None:
    assert [normalize_split(s) for s in ("train", "VAL", "valid", "Validation", "test")] == [
        "train",
        "val",
        "val",
        "val",
        "test",
    ]
    assert normalize_split(None) is None and normalize_split("") is None
    with pytest.raises(ConfigError, match=r"must be one of \['train', 'val', 'test'\].*'training'"):
        normalize_split("training")


@pytest.mark.parametrize("name", ["a/b", "a{version}", "a{0}", "", ".hidden", "x" * 65, "a b"])
def test_bad_names_are_refused_saying_the_rule(name: str) -> None:
    with pytest.raises(ConfigError, match="1-64 characters from A-Z a-z 0-9"):
        validate_dataset_name(name)
    with pytest.raises(ConfigError, match=r"head name \(--name\)"):
        validate_head_name(name)


def test_good_names_pass() -> None:
    for name in ("gtsrb", "signs-v2.1", "A_b", "0" * 64):
        assert validate_dataset_name(name) == name == validate_head_name(name)


def test_extract_refuses_bad_dataset_or_split_before_any_work(tmp_path: Path) -> None:
    write_images(tmp_path / "imgs", 2, size=8)
    CountingNetwork.calls = 0
    with pytest.raises(ConfigError, match="dataset name"):
        extract(
            tmp_path / "imgs", STUB, tmp_path / "s", dataset="a/b", network_factory=CountingNetwork
        )
    with pytest.raises(ConfigError, match="'training'"):
        extract(
            tmp_path / "imgs",
            STUB,
            tmp_path / "s",
            dataset="d",
            split="training",
            network_factory=CountingNetwork,
        )
    assert CountingNetwork.calls == 0 and not (tmp_path / "s").exists()


def toy_store(path: Path, seed: int = 0) -> FeatureStore:
    rng = np.random.default_rng(seed)
    keys = [hashlib.sha256(f"{i}".encode()).hexdigest() for i in range(60)]
    y = np.arange(60) % 3
    X = (np.eye(3, 16)[y] * 3 + rng.standard_normal((60, 16))).astype(np.float32)
    store = FeatureStore(path)
    store.register_extractor(FP, {"profile": "caffe", "weights_note": "RANDOM test vectors"})
    store.put_batch(keys, {"fc7": np.maximum(X, 0)}, FP)
    rows = [DatasetRow(k, f"img{i}.png", int(y[i])) for i, k in enumerate(keys)]
    store.add_dataset("toy", rows, ["a", "b", "c"])
    return store


def test_versions_are_never_reused_and_names_are_not_formatted(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    assert store.add_head("signs", b"one", {}).version == 1
    assert store.add_head("signs", b"two", {}).version == 2
    store.delete_head("signs")
    third = store.add_head("signs", b"three", {})
    assert third.version == 3 and store.head_bytes(third) == b"three"
    assert third.file.startswith("heads/signs/")
    with pytest.raises(ConfigError, match="head name"):
        store.add_head("a{version}", b"x", {})
    with pytest.raises(ConfigError, match="head name"):
        train_head(toy_store(tmp_path / "t"), "toy", name="a{0}")


def test_predictor_sees_delete_and_retrain_by_digest(tmp_path: Path) -> None:
    store = toy_store(tmp_path)
    first = train_head(store, "toy", name="h", params={"random_state": 0}).record
    predictor = Predictor(store, "h", refresh_seconds=0.0)
    assert predictor.head.record.sha256 == first.sha256
    store.delete_head("h")
    with pytest.raises(NotFoundError, match="no head 'h'"):
        predictor.head  # noqa: B018 - a deleted head is not served
    second = train_head(
        store, "toy", name="h", head="logreg", params={"C": 0.1, "random_state": 0}
    ).record
    assert second.version == 2 and second.sha256 != first.sha256
    head = predictor.head
    assert (head.version, head.record.sha256, head.meta["head"]) == (2, second.sha256, "logreg")
    answer = predictor.predict_keys([store.dataset_rows("toy")[0].key])[0]
    assert answer.head == {"name": "h", "version": 2}
