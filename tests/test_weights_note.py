"""Everything computed from random (demo) weights says so: every output the README lists
(commands' text, JSON files, PNG pictures, exports, HTTP answers) carries the note.

(`extract`, cached runs included, is checked with the real network in test_cli_extract.py
and test_cli_interrupt.py.)"""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

import featcache as fc
from featcache.classifier.train import train_head
from featcache.cli import app
from featcache.service import ServiceConfig, create_app
from featcache.store import FeatureStore
from service_fakes import LOCAL
from signs import CLASSES, write_signs

NOTE = "RANDOM test vectors, not AlexNet features"
runner = CliRunner()


@pytest.fixture(scope="module")
def noted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """root/store: 36 real PNGs (root/data) with random 'fc7' vectors marked as random,
    dataset 'signs' (a quarter in test), head 'signs'."""
    root = tmp_path_factory.mktemp("noted")
    signs = write_signs(root / "data", 36, test_every=4)
    with FeatureStore(root / "store") as store:
        store.register_extractor("e" * 64, {"profile": "caffe", "weights_note": NOTE})
        store.put_batch(signs.keys, {"fc7": signs.vectors}, "e" * 64)
        store.add_dataset("signs", signs.rows, list(CLASSES))
        train_head(store, "signs", name="signs", params={"random_state": 0})
    return root


def cli(*args: str | Path) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def png_note(path: Path) -> str:
    with Image.open(path) as image:
        return str(image.text.get("Description", ""))  # type: ignore[attr-defined]


def test_train_evaluate_and_their_report_files(noted: Path, tmp_path: Path) -> None:
    store = noted / "store"
    assert NOTE in cli("train", "--store", store, "--dataset", "signs", "--name", "again")
    text = cli(
        "evaluate", "--store", store, "--head", "signs", "--dataset", "signs", "--out", tmp_path
    )
    assert NOTE in text
    assert json.loads((tmp_path / "summary.json").read_text())["weights_note"] == NOTE
    assert png_note(tmp_path / "confusion_matrix.png") == NOTE
    shown = json.loads(cli("heads", "show", "--store", store, "signs"))
    assert shown["weights_note"] == NOTE


def test_a_notebook_evaluation_written_with_ev_write(noted: Path, tmp_path: Path) -> None:
    with FeatureStore(noted / "store", create=False) as store:
        data = store.vectors("signs")
    assert data.weights_note == NOTE and data.split("train").weights_note == NOTE
    head = fc.SoftmaxHead(random_state=0).fit(data.split("train").X, data.split("train").y)
    ev = fc.evaluate(head, data.split("test"))
    assert ev.summary["weights_note"] == NOTE and ev.labels == list(CLASSES)
    ev.write(tmp_path)
    assert json.loads((tmp_path / "summary.json").read_text())["weights_note"] == NOTE
    assert png_note(tmp_path / "confusion_matrix.png") == NOTE
    plain = fc.evaluate(head, data.X, data.y)  # bare arrays carry no note, and claim none
    assert plain.summary["weights_note"] is None


def test_predict_text_and_json(noted: Path) -> None:
    image = sorted((noted / "data").rglob("*.png"))[0]
    args = ("predict", "--store", noted / "store", "--head", "signs", image)
    assert NOTE in cli(*args)
    assert json.loads(cli(*args, "--json"))["weights_note"] == NOTE


def test_every_http_answer(noted: Path) -> None:
    image = sorted((noted / "data").rglob("*.png"))[0]
    key = hashlib.sha256(image.read_bytes()).hexdigest()
    config = ServiceConfig(store=noted / "store", head="signs")
    with TestClient(create_app(config), base_url=LOCAL) as client:
        upload = client.post("/v1/predict", files={"files": ("a.png", image.read_bytes())})
        by_keys = client.post("/v1/predict/keys", json={"keys": [key]})
        by_key = client.get(f"/v1/predictions/{key}")
        heads = client.get("/v1/heads")
        health = client.get("/healthz")
    assert upload.status_code == by_keys.status_code == by_key.status_code == 200
    assert upload.json()["weights_note"] == NOTE and upload.json()["results"][0]["predictions"]
    assert by_keys.json()["weights_note"] == NOTE
    assert by_key.json()["weights_note"] == NOTE and by_key.json()["key"] == key
    assert heads.json()["served"]["weights_note"] == NOTE
    assert health.json()["weights_note"] == NOTE


def test_serve_banner(noted: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import featcache.service.runner

    monkeypatch.setattr(featcache.service.runner, "run", lambda *a, **k: None)
    with socket.socket() as probe:  # a port free a moment ago (serve only tries it)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    text = cli("serve", "--store", noted / "store", "--head", "signs", "--port", str(port))
    assert f"note: {NOTE}" in text


def test_store_info_and_exports(noted: Path, tmp_path: Path) -> None:
    store = noted / "store"
    assert "[RANDOM WEIGHTS]" in cli("store", "info", "--store", store)
    assert (
        json.loads(cli("store", "info", "--store", store, "--json"))["extractors"]["e" * 64][
            "weights_note"
        ]
        == NOTE
    )
    for name in ("v.npz", "v.parquet"):
        assert NOTE in cli(
            "export", "--store", store, "--dataset", "signs", "--out", tmp_path / name
        )
    with np.load(tmp_path / "v.npz") as npz:
        assert str(npz["weights_note"]) == NOTE and npz["features"].shape == (36, 16)
    metadata = pq.read_schema(tmp_path / "v.parquet").metadata
    assert metadata[b"featcache.weights_note"].decode() == NOTE


@pytest.mark.slow  # cleanlab's folds and three pictures: about 7 s
def test_doctor_and_advise_text_json_and_pictures(noted: Path, tmp_path: Path) -> None:
    store = noted / "store"
    text = cli("doctor", "--store", store, "--dataset", "signs", "--out", tmp_path / "d")
    assert NOTE in text
    assert json.loads((tmp_path / "d" / "doctor.json").read_text())["weights_note"] == NOTE
    sheets = sorted((tmp_path / "d").glob("*.png"))
    assert sheets and all(png_note(p) == NOTE for p in sheets)
    text = cli(
        "advise", "--store", store, "--dataset", "signs", "--layers", "fc7", "--out", tmp_path / "a"
    )
    assert NOTE in text
    assert json.loads((tmp_path / "a" / "advise.json").read_text())["weights_note"] == NOTE
    assert png_note(tmp_path / "a" / "advise.png") == NOTE
