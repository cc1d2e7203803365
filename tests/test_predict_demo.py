"""Predict (cached without TensorFlow, unseen extracted then cached) and the demo, end to end."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import make_trained_store
from featcache.cli import app
from featcache.demo import run_demo
from featcache.errors import ConfigError, WeightsError
from featcache.extractor.weights import write_demo_weights
from featcache.predictor import Predictor
from featcache.store import FeatureStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, weights_path: Path) -> Path:
    return make_trained_store(tmp_path_factory.mktemp("predict"), weights_path, 24)


def test_cached_predictions_need_no_tensorflow(trained: Path) -> None:
    image = sorted((trained / "data" / "stop").iterdir())[0]
    code = (
        "import sys, json\n"
        "from typer.testing import CliRunner\n"
        "from featcache.cli import app\n"
        f"r = CliRunner().invoke(app, ['predict', '--store', {str(trained / 'store')!r}, "
        f"'--head', 'signs', {str(image)!r}, '--json'])\n"
        "assert r.exit_code == 0, r.output\n"
        "assert 'tensorflow' not in sys.modules\n"
        "print(r.output)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    answer = json.loads(done.stdout.strip().splitlines()[0])
    assert answer["cached"] is True and answer["path"] == str(image)
    probs = [p["probability"] for p in answer["predictions"]]
    assert probs == sorted(probs, reverse=True) and len(probs) == 3  # 3 classes < top-k 5
    assert {p["label"] for p in answer["predictions"]} == {"stop", "yield", "priority"}


def test_unseen_image_is_extracted_stored_and_answered(
    trained: Path, weights_path: Path, tmp_path: Path
) -> None:
    new = tmp_path / "new.png"
    Image.fromarray(np.random.default_rng(42).integers(0, 256, (50, 40, 3), np.uint8)).save(new)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8\xff truncated")
    store = FeatureStore(trained / "store")
    cached = sorted((trained / "data" / "stop").iterdir())[0]
    unseen, broken, hit = Predictor(store, "signs").predict([new, bad, cached])  # no weights
    assert unseen.error == f"{new}: not in the store; give the weights (--weights) to extract it"
    assert (
        broken.error is not None
        and "bad.jpg" in broken.error
        and "not in the store" not in (broken.error)
    )
    assert hit.error is None and hit.cached and len(hit.predictions) == 3
    predictor = Predictor(store, "signs", weights=weights_path, top_k=2)
    first, broken = predictor.predict([new, bad])
    assert first.cached is False and len(first.predictions) == 2
    assert broken.error is not None and "bad.jpg" in broken.error
    again = Predictor(store, "signs", top_k=2).predict([new])[0]  # no weights needed
    assert again.cached is True
    assert [p.as_dict() for p in again.predictions] == [p.as_dict() for p in first.predictions]


def test_predict_refuses_other_weights(trained: Path, tmp_path: Path) -> None:
    other = write_demo_weights(tmp_path / "other.npy", seed=1)
    new = tmp_path / "n.png"
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(new)
    predictor = Predictor(FeatureStore(trained / "store"), "signs", weights=other)
    with pytest.raises(WeightsError, match="is not the .* that head 'signs' was trained with"):
        predictor.predict([new])


def test_cli_text_output_like_the_seed(trained: Path) -> None:
    images = sorted((trained / "data" / "yield").iterdir())[:2]
    result = CliRunner().invoke(
        app,
        [
            "predict",
            "--store",
            str(trained / "store"),
            "--head",
            "signs",
            "--top-k",
            "2",
            *map(str, images),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == f"Image 0: {images[0]} (cached)"
    label, prob = lines[1].split(": ")
    assert label in {"stop", "yield", "priority"} and 0 <= float(prob) <= 1
    assert "Image 1:" in result.output and "NOT ImageNet" in result.output


def test_demo_runs_the_whole_job(tmp_path: Path) -> None:
    result = run_demo(tmp_path / "demo", limit=200)
    assert result.extraction.extracted == 200 and result.extraction.failed == 0
    for kind in ("softmax", "logreg"):
        summary = result.evaluations[kind].summary
        assert summary["n"] == 40 and summary["accuracy"] > 0.5  # 10 classes: chance is 0.1
        assert (result.reports[kind] / "confusion_matrix.png").exists()
    assert len(result.predictions) == 3 and all(p.predictions for p in result.predictions)
    rerun = run_demo(tmp_path / "demo", limit=200)
    assert rerun.extraction.cached == 200 and rerun.extraction.extracted == 0
    assert rerun.heads["softmax"].record.version == 2


def test_demo_limit_is_checked_against_what_out_holds(tmp_path: Path) -> None:
    for name in ("1.png", "2.png"):  # an earlier run's folder of 2 images
        (tmp_path / "demo" / "digits" / "train" / "0").mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8)).save(tmp_path / "demo" / "digits" / "train" / "0" / name)
    with pytest.raises(ConfigError, match=r"--limit 5: .* holds 2 digit images .* another --out"):
        run_demo(tmp_path / "demo", limit=5)
    with pytest.raises(ConfigError, match=r"--limit must be >= 1\. Got 0\."):
        run_demo(tmp_path / "demo", limit=0)
    assert not (tmp_path / "demo" / "store").exists()  # refused before any work


def test_demo_command_prints_next_commands_that_work(tmp_path: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["demo", "--out", str(tmp_path / "d"), "--limit", "60"])
    assert result.exit_code == 0, result.output
    assert "sample: 60 digit images" in result.output and "RANDOM weights" in result.output
    line = next(x for x in result.output.splitlines() if x.startswith("next: featcache predict"))
    unseen = tmp_path / "unseen.png"
    Image.fromarray(np.full((32, 32), 200, dtype=np.uint8)).save(unseen)
    args = line.removeprefix("next: featcache ").replace("IMAGE...", str(unseen)).split()
    result = runner.invoke(app, args)  # the printed command, as given, answers an unseen image
    assert result.exit_code == 0, result.output
    assert f"Image 0: {unseen} (extracted)" in result.output


def test_the_demos_suggested_commands_work_as_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import featcache.service.runner

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    shown = runner.invoke(app, ["demo", "--out", "d", "--limit", "60"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    predict = next(line for line in lines if line.startswith("next: featcache predict"))
    words = predict.split()[2:]
    assert words[-1] == "IMAGE..."
    image = sorted(Path("d/digits/test").rglob("*.png"))[0]
    done = runner.invoke(app, [*words[:-1], str(image)])
    assert done.exit_code == 0 and f"{image} (cached)" in done.output
    serve = next(line for line in lines if line.strip().startswith("featcache serve"))
    monkeypatch.setattr(featcache.service.runner, "run", lambda *a, **k: None)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    served = runner.invoke(app, [*serve.split()[1:], "--port", str(port)])
    assert served.exit_code == 0 and "serving head 'digits-softmax' v1" in served.output
