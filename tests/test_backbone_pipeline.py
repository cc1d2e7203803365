"""One store, two backbones: extract, train, predict and serve keep them apart.

AlexNet uses the session's seeded RANDOM weights; VGG16 narrow RANDOM weights
(`narrow_backbones`: 1/16 of the filters, the real 224x224 inputs and layer names).
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest
from click.testing import Result
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from conftest import write_images
from featcache.classifier.train import train_head
from featcache.cli import app
from featcache.errors import WeightsError
from featcache.extractor.pipeline import ExtractConfig, extract
from featcache.extractor.registry import backbone_named
from featcache.predictor import Predictor
from featcache.service import ServiceConfig, create_app
from featcache.store import FeatureStore

pytestmark = pytest.mark.slow


def _png(seed: int) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (40, 30, 3), np.uint8)
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def test_a_store_with_two_backbones_keeps_them_apart(
    tmp_path: Path, weights_path: Path, narrow_backbones: int
) -> None:
    write_images(tmp_path / "data", 8, classes=("stop", "yield"))
    vgg = backbone_named("vgg16").write_demo_weights(tmp_path / "vgg16.h5", 0)
    store = FeatureStore(tmp_path / "store")
    alex = extract(tmp_path / "data", weights_path, store, dataset="signs")
    ours = extract(
        tmp_path / "data", vgg, store, dataset="signs", config=ExtractConfig(backbone="vgg16")
    )
    assert alex.fingerprint != ours.fingerprint and ours.extracted == 8
    assert ours.weights_note and "VGG16" in ours.weights_note
    specs = store.extractors()
    assert specs[ours.fingerprint]["network"] == "vgg16"
    assert specs[alex.fingerprint]["network"] == "alexnet"
    again = extract(
        tmp_path / "data", vgg, store, dataset="signs", config=ExtractConfig(backbone="vgg16")
    )
    assert again.cached == 8 and again.extracted == 0  # its own cache, AlexNet's untouched
    data = store.vectors("signs", "fc2")
    assert data.fingerprint == ours.fingerprint and data.X.shape == (8, 256)
    assert store.vectors("signs", "fc7").fingerprint == alex.fingerprint

    train_head(store, "signs", layer="fc2", name="vgg", params={"random_state": 0})
    train_head(store, "signs", layer="fc7", name="alex", params={"random_state": 0})

    # an unseen image is extracted with the head's own backbone, stored under its fingerprint
    new = tmp_path / "new.png"
    new.write_bytes(_png(99))
    key = hashlib.sha256(new.read_bytes()).hexdigest()
    [result] = Predictor(store, "vgg", weights=vgg).predict([new])
    assert result.error is None and not result.cached and result.predictions
    assert store.has([key], ours.fingerprint, "fc2") == {key}
    assert store.has([key], alex.fingerprint, "fc7") == set()
    [cached] = Predictor(store, "vgg").predict([new])
    assert cached.cached and cached.predictions[0].label == result.predictions[0].label
    # AlexNet's head reads its weights as AlexNet's: VGG16's file is refused, saying why
    with pytest.raises(WeightsError, match=r"vgg16\.h5: not a \.npy file.*bvlc_alexnet\.npy"):
        Predictor(store, "alex", weights=vgg).predict([new])

    # served: an upload goes through VGG16 for the vgg head
    config = ServiceConfig(store=store.path, head="vgg", weights=vgg, batch_window_seconds=0.01)
    with TestClient(create_app(config), base_url="http://127.0.0.1") as client:
        upload = _png(123)
        r = client.post("/v1/predict", files={"files": ("u.png", upload)})
        assert r.status_code == 200, r.text
        first = r.json()["results"][0]
        assert first["cached"] is False and first["predictions"]
        upload_key = hashlib.sha256(upload).hexdigest()
    assert store.has([upload_key], ours.fingerprint, "fc2") == {upload_key}


def test_cli_demo_info_and_extract_with_resnet50(tmp_path: Path, narrow_backbones: int) -> None:
    runner = CliRunner()
    weights = tmp_path / "resnet50.h5"
    made = runner.invoke(app, ["weights", "demo", "--backbone", "resnet50", str(weights)])
    assert made.exit_code == 0, made.output
    assert "NOT ImageNet-trained" in made.output
    info = runner.invoke(app, ["weights", "info", str(weights)])
    assert info.exit_code == 0, info.output
    assert ": resnet50," in info.output and "conv5_block3_3_conv" in info.output
    assert "NOT ImageNet" in info.output
    write_images(tmp_path / "pics", 4)
    store = tmp_path / "store"

    def extract(layers: str) -> Result:
        words = ["extract", tmp_path / "pics", "--store", store, "--weights", weights]
        return runner.invoke(app, [*map(str, words), "--backbone", "resnet50", "--layers", layers])

    result = extract("avg_pool,conv5_block3_out")
    assert result.exit_code == 0, result.output
    assert "(resnet50, caffe, float32, tensorflow)" in result.output
    with FeatureStore(store) as fs:
        assert fs.vectors("pics", "avg_pool").X.shape == (4, 128)
        assert fs.vectors("pics", "conv5_block3_out").X.dtype == np.float32
    wrong = extract("fc7")
    assert wrong.exit_code != 0 and "backbone 'resnet50'" in wrong.output
