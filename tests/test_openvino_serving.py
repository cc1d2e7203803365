"""`predict` and `serve` with ``--runtime openvino``: with the converted model cached, an
unseen image is extracted through OpenVINO without reading the weights file or importing
TensorFlow; a damaged cached model is converted again (reading the weights then).

The store uses the session's seeded RANDOM weights; the module converts its model once.
Subprocesses watch the weights file with an audit hook: every ``open`` of it is reported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import numpy as np
import pytest

from conftest import write_images
from featcache.data.source import ImageItem, ImageSource
from featcache.errors import WeightsError
from featcache.extractor import pipeline as pipeline_module
from featcache.extractor import weights as weights_module
from featcache.extractor.pipeline import ExtractConfig, extract
from featcache.store import FeatureStore
from service_fakes import png

pytestmark = [
    pytest.mark.slow,  # a 244 MB conversion, and TensorFlow as the reference
    pytest.mark.skipif(
        importlib.util.find_spec("openvino") is None, reason='pip install "featcache[openvino]"'
    ),
]

OPENED = "featcache-test: weights opened"
TENSORFLOW = "featcache-test: tensorflow imported"

#: Runs the command line with an audit hook that reports opening the weights file and
#: importing TensorFlow on stderr, as they happen.
_WATCHED_CLI = """
import os, sys
WEIGHTS = os.path.realpath(sys.argv[1])
def watch(event, args):
    if event == "open" and isinstance(args[0], (str, os.PathLike)):
        if os.path.basename(os.fspath(args[0])) == os.path.basename(WEIGHTS):
            if os.path.realpath(os.fspath(args[0])) == WEIGHTS:
                sys.stderr.write("featcache-test: weights opened\\n")
    elif event == "import" and args[0] == "tensorflow":
        sys.stderr.write("featcache-test: tensorflow imported\\n")
sys.addaudithook(watch)
sys.argv = ["featcache", *sys.argv[2:]]
from featcache.cli import main
main()
"""


def _watched(weights: Path, *args: str) -> list[str]:
    return [sys.executable, "-c", _WATCHED_CLI, str(weights), *args]


def _image(folder: Path, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"new{seed}.png"
    path.write_bytes(png(seed))
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, weights_path: Path) -> Path:
    """A store with OpenVINO's float32 fc7 model converted and a head 'signs' on 12 images."""
    from featcache.classifier.train import train_head

    root = tmp_path_factory.mktemp("ovserve")
    write_images(root / "signs", 12, seed=21, classes=("stop", "yield"))
    with FeatureStore(root / "store") as store:
        config = ExtractConfig(runtime="openvino")
        extract(root / "signs", weights_path, store, config=config, dataset="signs")
        train_head(store, "signs", name="signs", params={"random_state": 0})
        assert len(list(store.runtime_models.folders())) == 1
    return root


@pytest.fixture
def weights_reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every read or hash of a weights file in this process, by function (still done)."""
    calls: list[str] = []

    def spy(name: str, real: Callable[..., Any]) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return real(*args, **kwargs)

        return counted

    # The AlexNet entry of the backbone registry imports `read_weights` from the weights
    # module when it is called, so patching it there catches every read.
    patched = (
        (weights_module, ("read_weights", "file_sha256")),
        (pipeline_module, ("file_sha256",)),
    )
    for module, names in patched:
        for name in names:
            monkeypatch.setattr(module, name, spy(name, getattr(module, name)))
    return calls


def _manifests(store: Path) -> dict[str, str]:
    return {
        str(path.relative_to(store)): path.read_text()
        for path in sorted((store / "runtimes").rglob("manifest.json"))
    }


def test_predict_reads_no_weights_when_the_model_is_cached(
    served: Path, weights_path: Path, weights_reads: list[str]
) -> None:
    from featcache.predictor import Predictor

    before = _manifests(served / "store")
    new = _image(served / "api", 101)
    with FeatureStore(served / "store") as store:
        predictor = Predictor(store, "signs", weights=weights_path, runtime="openvino", top_k=2)
        (first,) = predictor.predict([new])
        (again,) = predictor.predict([new])
        assert first.error is None and not first.cached and len(first.predictions) == 2
        assert again.cached and again.predictions == first.predictions
        assert store.has([first.key or ""], store.head("signs").meta["fingerprint"], "fc7")
    assert weights_reads == []  # neither read nor hashed
    assert _manifests(served / "store") == before  # and nothing converted


def test_predict_still_needs_the_weights_file_to_exist(served: Path, tmp_path: Path) -> None:
    from featcache.predictor import Predictor

    missing = tmp_path / "missing.npy"
    new = _image(tmp_path, 105)
    with FeatureStore(served / "store") as store:
        predictor = Predictor(store, "signs", weights=missing, runtime="openvino")
        with pytest.raises(WeightsError, match="missing.npy: no such weights file"):
            predictor.predict([new])


def test_cli_predict_reads_no_weights_nor_imports_tensorflow(
    served: Path, weights_path: Path
) -> None:
    new = _image(served / "cli", 102)
    args = ("predict", "--store", str(served / "store"), "--head", "signs", str(new))
    args += ("--weights", str(weights_path), "--runtime", "openvino", "--json")
    done = subprocess.run(
        _watched(weights_path, *args), capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout.strip().splitlines()[0])
    assert answer["cached"] is False and answer["predictions"], answer
    assert OPENED not in done.stderr and TENSORFLOW not in done.stderr, done.stderr
    # The hook does see the file opened when a command reads it.
    check = subprocess.run(
        _watched(weights_path, "weights", "info", str(weights_path)),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert OPENED in check.stderr, check.stderr


def test_a_damaged_cached_model_is_converted_again_reading_the_weights(
    served: Path, weights_path: Path, weights_reads: list[str], tmp_path: Path
) -> None:
    from featcache.predictor import Predictor

    shutil.copytree(served / "store", tmp_path / "store")
    (binary,) = (tmp_path / "store" / "runtimes").rglob("model.bin")
    with open(binary, "r+b") as f:
        f.truncate(binary.stat().st_size // 2)
    new = _image(tmp_path / "new", 103)
    with FeatureStore(tmp_path / "store") as store:
        assert not store.verify().ok
        predictor = Predictor(store, "signs", weights=weights_path, runtime="openvino", top_k=2)
        (result,) = predictor.predict([new])
        assert result.error is None and not result.cached and len(result.predictions) == 2
        assert store.verify().ok  # converted again, and saved whole
    assert weights_reads.count("read_weights") == 1  # read once, to convert


@pytest.fixture
def server(served: Path, weights_path: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``featcache serve --runtime openvino`` on 127.0.0.1 (watched); yields its URL and log."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    args = ("serve", "--store", str(served / "store"), "--head", "signs", "--top-k", "2")
    args += ("--weights", str(weights_path), "--runtime", "openvino", "--port", str(port))
    log_path = tmp_path / "server.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            _watched(weights_path, *args), stdout=log, stderr=subprocess.STDOUT
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(f"{base}/healthz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"the server did not start: {log_path.read_text()}")
        yield base, log_path
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(30)


def test_serve_extracts_an_upload_through_openvino_like_predict_and_tensorflow(
    server: tuple[str, Path], served: Path, weights_path: Path, tmp_path: Path
) -> None:
    from featcache.classifier.persist import load_head

    base, log = server
    shutil.copytree(served / "store", tmp_path / "for-predict")  # before the upload
    data = png(104)
    key = hashlib.sha256(data).hexdigest()

    def upload() -> dict[str, Any]:
        r = httpx.post(f"{base}/v1/predict", files={"files": ("new.png", data)}, timeout=300)
        assert r.status_code == 200, r.text
        return r.json()["results"][0]  # type: ignore[no-any-return]

    first, second = upload(), upload()
    assert first["cached"] is False and len(first["predictions"]) == 2, first
    assert second["cached"] is True and second["predictions"] == first["predictions"]
    with FeatureStore(served / "store") as store:
        assert store.has([key], store.head("signs").meta["fingerprint"], "fc7") == {key}
    served_log = log.read_text()  # no TensorFlow in the server: extracted through OpenVINO
    assert OPENED not in served_log and TENSORFLOW not in served_log, served_log

    image = _image(tmp_path / "image", 104)
    args = ("predict", "--store", str(tmp_path / "for-predict"), "--head", "signs")
    args += (str(image), "--top-k", "2", "--weights", str(weights_path))
    args += ("--runtime", "openvino", "--json")
    done = subprocess.run(
        [sys.executable, "-m", "featcache", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    predicted = json.loads(done.stdout.strip().splitlines()[0])
    assert predicted["cached"] is False and predicted["predictions"] == first["predictions"]

    # TensorFlow (the reference) on the same image, vectors kept in memory.
    source = ImageSource([ImageItem(str(image), file=image)], [], "reference")
    report = extract(source, weights_path, None, config=ExtractConfig())
    with FeatureStore(served / "store") as store:
        (ranked,) = load_head(store, "signs").rank(report.vectors["fc7"], 2)
    assert [p.label for p in ranked] == [p["label"] for p in first["predictions"]]
    np.testing.assert_allclose(
        [p.probability for p in ranked], [p["probability"] for p in first["predictions"]], atol=1e-4
    )
