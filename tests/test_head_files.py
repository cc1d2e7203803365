"""Head files are arrays plus JSON: every kind round-trips, nothing is unpickled, old
pickled heads are refused (naming `heads upgrade`) and converted only by that command."""

from __future__ import annotations

import hashlib
import io
import pickle
import sqlite3
from pathlib import Path

import joblib
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import Evil
from featcache.classifier.finetune import FineTuneHead
from featcache.classifier.heads import LogRegHead, SoftmaxHead
from featcache.classifier.headstate import HeadState, decode_head, encode_head
from featcache.classifier.persist import head_file_bytes, load_head, parse_head_file
from featcache.classifier.train import train_head
from featcache.cli import app
from featcache.errors import HeadError
from featcache.store import DatasetRow, FeatureStore

FP = "b" * 64
runner = CliRunner()


def toy(n: int = 90, d: int = 12, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    X = (np.eye(k, d)[y] * 3 + rng.standard_normal((n, d))).astype(np.float32)
    return X, y


def tiny_finetune(d: int = 12, k: int = 3, seed: int = 0) -> FineTuneHead:
    """A fitted-looking FineTuneHead (fc7, fc8 on a 12-wide input) without TensorFlow."""
    rng = np.random.default_rng(seed)
    shapes = [(d, 8), (8, k)]
    state = HeadState(
        "finetune",
        {"cut": "fc6", "precision": "bf16", "random_state": 0},
        {
            "classes_": np.arange(k),
            "coefs_.0": rng.standard_normal(shapes[0]).astype(np.float16),
            "coefs_.1": rng.standard_normal(shapes[1]).astype(np.float16),
            "intercepts_.0": rng.standard_normal(8).astype(np.float32),
            "intercepts_.1": rng.standard_normal(k).astype(np.float32),
        },
        {
            "coefs_#count": 2,
            "intercepts_#count": 2,
            "n_features_in_": d,
            "layers_": ["fc7", "fc8"],
            "weights_sha256_": None,
            "n_iter_": 1,
            "best_epoch_": 1,
            "loss_curve_": [0.5],
            "validation_losses_": [],
            "validation_scores_": [],
            "epoch_seconds_": [0.1],
            "input_shape_": None,
            "probe_seconds_": 0.0,
        },
    )
    return FineTuneHead.from_state(state)


@pytest.mark.parametrize("kind", ["softmax", "logreg", "logreg-binary", "finetune"])
def test_every_kind_round_trips_to_the_same_answers(kind: str) -> None:
    X, y = toy()
    if kind == "softmax":
        head = SoftmaxHead(random_state=0, epochs=3).fit(X, y)
    elif kind.startswith("logreg"):
        y = y % 2 if kind.endswith("binary") else y
        head = LogRegHead(C=0.5).fit(X, y)
    else:
        head = tiny_finetune()
    payload = head_file_bytes(head)
    assert payload[:1] != b"\x80" and b"featcache.head" in payload[:4096]
    loaded = parse_head_file(payload, "test head")
    assert type(loaded) is type(head)
    np.testing.assert_array_equal(loaded.predict_proba(X), head.predict_proba(X))
    np.testing.assert_array_equal(loaded.classes_, head.classes_)
    assert loaded.get_params() == head.get_params()
    if kind == "finetune":
        assert loaded.coefs_[0].dtype == np.float16 and loaded.layers_ == ("fc7", "fc8")


def test_logreg_answers_as_sklearn_does() -> None:
    from sklearn.linear_model import LogisticRegression

    X, y = toy()
    head = LogRegHead(C=0.5).fit(X, y)
    model = LogisticRegression(C=0.5, max_iter=200).fit(head._standardise(X), y)
    np.testing.assert_allclose(
        head.decision_function(X), model.decision_function(head._standardise(X)), rtol=1e-6
    )


def test_a_file_that_lies_about_shapes_or_kind_is_refused() -> None:
    X, y = toy()
    state = SoftmaxHead(random_state=0, epochs=2).fit(X, y).to_state()
    wrong = HeadState(
        state.kind, state.params, {**state.arrays, "coef_": np.zeros((3, 5))}, state.values
    )
    with pytest.raises(HeadError, match=r"x: coef_ \(3, 5\) and intercept_ .* 12 features"):
        parse_head_file(encode_head(wrong), "x")
    other = HeadState("pickle", state.params, state.arrays, state.values)
    with pytest.raises(HeadError, match="unknown head kind 'pickle'"):
        parse_head_file(encode_head(other), "x")
    bad_param = HeadState(state.kind, {**state.params, "l2": -1}, state.arrays, state.values)
    with pytest.raises(HeadError, match="'l2' parameter of SoftmaxHead"):
        parse_head_file(encode_head(bad_param), "x")
    missing = HeadState(
        state.kind,
        state.params,
        {k: v for k, v in state.arrays.items() if k != "mean_"},
        state.values,
    )
    with pytest.raises(HeadError, match="lacks the array 'mean_'"):
        parse_head_file(encode_head(missing), "x")
    with pytest.raises(HeadError, match="x: not a head file"):
        decode_head(b"\x00" * 4, "x")
    with pytest.raises(HeadError, match="x: not a featcache head file"):
        decode_head(b"\x02\x00\x00\x00\x00\x00\x00\x00{}", "x")


def make_store(path: Path) -> tuple[FeatureStore, np.ndarray]:
    X, y = toy(n=60)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(len(y))]
    store = FeatureStore(path)
    store.register_extractor(FP, {"profile": "caffe", "weights_note": "RANDOM test vectors"})
    store.put_batch(keys, {"fc7": X}, FP)
    store.add_dataset(
        "toy", [DatasetRow(k, f"i{i}.png", int(y[i])) for i, k in enumerate(keys)], ["a", "b", "c"]
    )
    return store, X


def plant_legacy(store: FeatureStore, name: str, payload: bytes) -> None:
    """What an older featcache wrote: heads/NAME/DIGEST.joblib, registered with its digest."""
    digest = hashlib.sha256(payload).hexdigest()
    file = f"heads/{name}/{digest[:16]}.joblib"
    (store.path / file).parent.mkdir(parents=True, exist_ok=True)
    (store.path / file).write_bytes(payload)
    with sqlite3.connect(store.path / "catalog.sqlite") as db:
        db.execute("UPDATE heads SET file=?, sha256=? WHERE name=?", (file, digest, name))


def test_saved_heads_are_safetensors_and_load(tmp_path: Path) -> None:
    store, X = make_store(tmp_path / "s")
    train_head(store, "toy", name="h", params={"random_state": 0, "epochs": 2})
    record = store.head("h")
    assert record.file.startswith("heads/h/") and record.file.endswith(".safetensors")
    payload = (store.path / record.file).read_bytes()
    assert hashlib.sha256(payload).hexdigest() == record.sha256
    loaded = load_head(store, "h")
    assert isinstance(loaded.estimator, SoftmaxHead)
    assert loaded.estimator.coef_.shape == (3, 12) and loaded.estimator.coef_.dtype == np.float32
    assert loaded.estimator.predict(X).shape == (60,)


def test_old_pickled_heads_are_refused_and_upgraded_only_on_request(tmp_path: Path) -> None:
    store, X = make_store(tmp_path / "s")
    train_head(store, "toy", name="good", params={"random_state": 0, "epochs": 2})
    train_head(store, "toy", name="evil", head="logreg")
    old = load_head(store, "good").estimator
    buffer = io.BytesIO()
    joblib.dump(old, buffer)  # a head as featcache saved it before: a joblib pickle
    plant_legacy(store, "good", buffer.getvalue())
    marker = tmp_path / "pwned"
    plant_legacy(store, "evil", pickle.dumps(Evil(marker)))
    for name in ("good", "evil"):
        with pytest.raises(
            HeadError,
            match=r"old head file \(a joblib pickle\).*featcache heads "
            rf"upgrade --store {tmp_path / 's'}",
        ):
            load_head(store, name)
    assert not marker.exists()
    store.close()
    # without --yes and without an answer, nothing is converted (and nothing unpickled)
    result = runner.invoke(app, ["heads", "upgrade", "--store", str(tmp_path / "s")], input="")
    assert result.exit_code == 1 and "trusting the store" in result.output
    assert "nothing converted" in result.output and not marker.exists()
    # the trusted path: the user vouches for the store (here, the genuine head only)
    with FeatureStore(tmp_path / "s") as fs:
        fs.delete_head("evil")
    result = runner.invoke(app, ["heads", "upgrade", "--store", str(tmp_path / "s"), "--yes"])
    assert result.exit_code == 0, result.output
    assert "trusting the store" in result.output and "converted 1 head version(s)" in result.output
    with FeatureStore(tmp_path / "s") as fs:
        record = fs.head("good")
        assert record.version == 1 and record.file.endswith(".safetensors")
        assert not list((fs.path / "heads" / "good").glob("*.joblib"))  # the pickle is gone
        np.testing.assert_array_equal(
            load_head(fs, "good").estimator.predict_proba(X), old.predict_proba(X)
        )
    result = runner.invoke(app, ["heads", "upgrade", "--store", str(tmp_path / "s")])
    assert result.exit_code == 0 and "nothing to convert" in result.output


def test_upgrade_converts_a_logreg_saved_with_its_sklearn_model(tmp_path: Path) -> None:
    from sklearn.linear_model import LogisticRegression

    store, X = make_store(tmp_path / "s")
    train_head(store, "toy", name="lr", head="logreg")
    head = load_head(store, "lr").estimator
    expected = head.predict_proba(X)
    model = LogisticRegression()
    model.coef_, model.intercept_, model.classes_ = head.coef_, head.intercept_, head.classes_
    del head.coef_, head.intercept_
    head.model_ = model  # how LogRegHead kept its model before heads were data
    buffer = io.BytesIO()
    joblib.dump(head, buffer)
    plant_legacy(store, "lr", buffer.getvalue())
    store.close()
    result = runner.invoke(app, ["heads", "upgrade", "--store", str(tmp_path / "s"), "-y"])
    assert result.exit_code == 0, result.output
    with FeatureStore(tmp_path / "s") as fs:
        np.testing.assert_array_equal(load_head(fs, "lr").estimator.predict_proba(X), expected)
