"""FineTuneHead: the estimator contract, determinism, the pretrained start, refusals, and the
train → heads show → predict → serve round trip on pool5 vectors (seeded RANDOM weights)."""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from sklearn.utils.estimator_checks import parametrize_with_checks
from typer.testing import CliRunner

from conftest import write_images
from featcache.classifier.finetune import FineTuneHead
from featcache.classifier.persist import load_head
from featcache.classifier.rows import lazy_vectors
from featcache.classifier.train import train_head
from featcache.cli import app
from featcache.errors import ConfigError, WeightsError
from featcache.extractor.pipeline import ExtractConfig, extract
from featcache.extractor.stages import for_storage
from featcache.extractor.weights import Weights, read_weights
from featcache.service import ServiceConfig, create_app
from featcache.store import DatasetRow, FeatureStore

FP = "f" * 64


@dataclass(frozen=True)
class TinyWeights:
    """A stand-in for a weights file: small fc6 and fc7, and a digest."""

    sha256: str
    layers: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def tiny_weights(sha256: str, dim: int = 12, hidden: int = 6) -> TinyWeights:
    rng = np.random.default_rng(1)
    return TinyWeights(
        sha256,
        {
            "fc6": (
                rng.standard_normal((dim, hidden), dtype=np.float32) * 0.3,
                np.zeros(hidden, np.float32),
            ),
            "fc7": (
                rng.standard_normal((hidden, hidden), dtype=np.float32) * 0.3,
                np.zeros(hidden, np.float32),
            ),
        },
    )


def toy_store(path: Path, n: int = 60, dim: int = 12, layer: str = "pool5") -> FeatureStore:
    """`n` separable, non-negative `dim`-wide vectors stored in float16 as dataset 'toy'."""
    rng = np.random.default_rng(0)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    y = np.arange(n) % 3
    X = np.maximum(np.eye(3, dim)[y] * 3 + rng.standard_normal((n, dim)), 0).astype(np.float32)
    store = FeatureStore(path)
    store.register_extractor(FP, {"weights_sha256": "a" * 64, "weights_note": "RANDOM test"})
    store.put_batch(keys, {layer: X}, FP, dtype="float16")
    store.add_dataset("toy", [DatasetRow(k, f"{i}.png", int(y[i])) for i, k in enumerate(keys)])
    return store


# -- without TensorFlow ----------------------------------------------------------------------


def test_stored_rows_read_lazily_as_float32(tmp_path: Path) -> None:
    store = toy_store(tmp_path / "s")
    data = lazy_vectors(store, "toy", "pool5")
    full = store.vectors("toy", "pool5")
    assert data.X.shape == (60, 12) and data.keys == full.keys
    subset = data.X[data.y == 1]  # a lazy view, nothing read yet
    assert subset.shape == (20, 12)
    rows = subset.read_rows(np.array([0, 3, 19]))
    assert rows.dtype == np.float32
    np.testing.assert_array_equal(rows, full.X[full.y == 1][[0, 3, 19]])


def test_finetune_refuses_vectors_of_another_weights_file(tmp_path: Path) -> None:
    store = toy_store(tmp_path / "s")
    with pytest.raises(WeightsError, match=r"SHA-256 bbbbbbbbbbbb\.\.\. is not the aaaaaaaaaaaa"):
        train_head(store, "toy", head="finetune", weights=tiny_weights("b" * 64))
    with pytest.raises(ConfigError, match=r"pass it \(--weights W\)"):
        train_head(store, "toy", head="finetune")
    with pytest.raises(ConfigError, match="cut='pool5' trains on 'pool5' vectors. Got layer 'fc7'"):
        train_head(
            store,
            "toy",
            head="finetune",
            layer="fc7",
            params={"cut": "pool5"},
            weights=tiny_weights("a" * 64),
        )
    with pytest.raises(ConfigError, match=r"'cut' parameter of FineTuneHead must be a str among"):
        train_head(store, "toy", head="finetune", layer="fc7", weights=tiny_weights("a" * 64))
    with pytest.raises(ConfigError, match="'precision' parameter of FineTuneHead"):
        train_head(store, "toy", head="finetune", params={"precision": "fp8"})
    assert store.heads() == []


def test_extract_stores_pool5_in_float16_unless_told(
    tmp_path: Path, counting_network: type
) -> None:
    config = ExtractConfig(layers=("pool5", "fc7"))
    assert config.storage_dtype("pool5") == "float16" and config.storage_dtype("fc7") == "float32"
    assert ExtractConfig(dtype="float32").storage_dtype("pool5") == "float32"
    with pytest.raises(
        ConfigError, match=r"'dtype' must be one of \['auto', 'float32', 'float16'\]"
    ):
        ExtractConfig(dtype="int8")
    with pytest.raises(ConfigError, match=r"'pool5' values reach 1e\+05, beyond float16"):
        for_storage("pool5", np.array([[1.0, -1e5]], np.float32), "float16")
    write_images(tmp_path / "data", 4)
    store = FeatureStore(tmp_path / "store")
    weights = Weights(Path("w.npy"), {}, "c" * 64, None)
    extract(tmp_path / "data", weights, store, config=config, network_factory=counting_network)
    dtypes = {np.load(p, mmap_mode="r").dtype.name for p in (tmp_path / "store").rglob("*.npy")}
    pool5 = {np.load(p, mmap_mode="r").dtype.name for p in (tmp_path / "store").rglob("pool5/*")}
    assert pool5 == {"float16"} and dtypes == {"float16", "float32"}


# -- TensorFlow -------------------------------------------------------------------------------


@pytest.mark.slow
@parametrize_with_checks(
    [FineTuneHead(init="random", hidden_units=8, epochs=20, dropout=0.0, random_state=0)]
)
def test_sklearn_estimator_contract(estimator: FineTuneHead, check: object) -> None:
    check(estimator)  # type: ignore[operator]


@pytest.mark.slow
def test_fit_is_deterministic_and_lazy_rows_equal_arrays(tmp_path: Path) -> None:
    store = toy_store(tmp_path / "s")
    data = lazy_vectors(store, "toy", "pool5")
    weights = tiny_weights("a" * 64)
    # the held-out loss alone chooses (McNemar's test would keep these few rows' frozen start)
    params = {"epochs": 3, "batch_size": 8, "random_state": 3, "selection_significance": 1.0}
    a = FineTuneHead(**params).fit(data.X, data.y, pretrained=weights)
    b = FineTuneHead(**params).fit(store.vectors("toy", "pool5").X, data.y, pretrained=weights)
    for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert a.weights_sha256_ == "a" * 64 and a.n_iter_ >= 1
    other = FineTuneHead(**{**params, "random_state": 4}).fit(data.X, data.y, pretrained=weights)
    assert not np.array_equal(other.coefs_[0], a.coefs_[0])
    assert not np.array_equal(a.coefs_[0], weights.layers["fc6"][0])  # fc6 did train
    np.testing.assert_array_equal(a.predict(data.X), a.predict(store.vectors("toy", "pool5").X))


@pytest.mark.slow
def test_zero_epochs_reproduce_the_extractors_fc7(weights: Weights, tmp_path: Path) -> None:
    write_images(tmp_path / "data", 6)
    report = extract(
        tmp_path / "data", weights, None, config=ExtractConfig(layers=("pool5", "fc6", "fc7"))
    )
    out = report.vectors
    y = np.arange(6) % 2
    head = FineTuneHead(epochs=0).fit(out["pool5"], y, pretrained=weights)
    fc7 = head.activations(out["pool5"], "fc7")
    scale = np.abs(out["fc7"]).max()
    assert np.abs(fc7 - out["fc7"]).max() <= 1e-4 * scale
    np.testing.assert_allclose(head.coefs_[0], weights.layers["fc6"][0], rtol=1e-6, atol=1e-9)
    upper = FineTuneHead(cut="fc6", epochs=0).fit(out["fc6"], y, pretrained=weights)
    assert np.abs(upper.activations(out["fc6"], "fc7") - out["fc7"]).max() <= 1e-4 * scale
    with pytest.raises(ValueError, match="'fc6' takes 9216 inputs but X has 4096"):
        FineTuneHead(epochs=0).fit(out["fc6"], y, pretrained=weights)


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), np.uint8)
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_train_show_predict_and_serve_round_trip(weights_path: Path, tmp_path: Path) -> None:
    write_images(tmp_path / "data", 12, classes=("stop", "yield", "priority"))
    store = tmp_path / "store"
    cli = CliRunner()
    done = cli.invoke(
        app,
        [
            "extract",
            str(tmp_path / "data"),
            "--store",
            str(store),
            "--weights",
            str(weights_path),
            "--layers",
            "pool5",
            "--dataset",
            "signs",
        ],
    )
    assert done.exit_code == 0, done.output
    assert {p.parent.name for p in store.rglob("shards/*/*/*.npy")} == {"pool5"}
    trained = cli.invoke(
        app,
        [
            "train",
            "--store",
            str(store),
            "--dataset",
            "signs",
            "--kind",
            "finetune",
            "--weights",
            str(weights_path),
            "--name",
            "ft",
            "--param",
            "epochs=2",
            "--param",
            "random_state=0",
            "--val-fraction",
            "0.25",
        ],
    )
    assert trained.exit_code == 0, trained.output
    assert "[pool5]" in trained.output and "RANDOM" in trained.output.upper()
    # 9 training rows: none left to hold out inside the fine-tune, and it says so
    assert "Epoch 0/2 (frozen start + linear probe) - " in trained.output
    assert "Epoch 1/2 - " in trained.output and " - loss: " in trained.output
    assert (
        "no held-out rows, so no number of epochs is chosen and no gain is measured"
        in trained.output
    )
    shown = json.loads(cli.invoke(app, ["heads", "show", "--store", str(store), "ft"]).output)
    assert shown["head"] == "finetune" and shown["layer"] == "pool5"
    assert 210e6 < shown["file_bytes"] < 230e6  # fc6 and fc7 in float32
    with FeatureStore(store) as fs:
        bf16 = train_head(
            fs,
            "signs",
            head="finetune",
            name="ft16",
            params={"epochs": 1, "precision": "bf16", "random_state": 0},
            weights=read_weights(weights_path),
        )
        assert bf16.estimator.coefs_[0].dtype == np.float16
        assert 100e6 < (fs.path / bf16.record.file).stat().st_size < 120e6
        loaded = load_head(fs, "ft")
    cached = sorted((tmp_path / "data").rglob("*.png"))[0]
    unseen = tmp_path / "new.png"
    unseen.write_bytes(png(99))
    answered = cli.invoke(
        app,
        [
            "predict",
            "--store",
            str(store),
            "--head",
            "ft",
            str(cached),
            str(unseen),
            "--json",
            "--weights",
            str(weights_path),
        ],
    )
    assert answered.exit_code == 0, answered.output
    first, second = (json.loads(line) for line in answered.output.splitlines()[:2])
    assert first["cached"] is True and second["cached"] is False
    assert {p["label"] for p in first["predictions"]} == {"stop", "yield", "priority"}
    with FeatureStore(store) as fs:  # the unseen image was stored at the head's layer
        assert fs.has([second["key"]], loaded.fingerprint, "pool5") == {second["key"]}
    config = ServiceConfig(store=store, head="ft", weights=weights_path)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
        by_key = client.get(f"/v1/predictions/{first['key']}")
        assert by_key.status_code == 200
        assert by_key.json()["predictions"] == first["predictions"]
        upload = client.post("/v1/predict", files=[("files", ("x.png", png(7), "image/png"))])
        assert upload.status_code == 200, upload.text
        assert upload.json()["results"][0]["cached"] is False
