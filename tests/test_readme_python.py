"""The README's Python API block, run as written on generated images with random weights."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import REPO, write_images
from featcache.cli import app

pytestmark = pytest.mark.slow


def readme_python_block() -> str:
    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Python API") :]
    found = re.search(r"```python\n(.*?)\n```", section, flags=re.S)
    assert found is not None, "no python block in the README's Python API section"
    return found.group(1)


def test_readme_python_block_runs_as_written(
    tmp_path: Path, weights_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    classes = ("stop", "yield", "priority")
    write_images(tmp_path / "signs_data" / "train", 30, classes=classes)
    write_images(tmp_path / "signs_data" / "test", 12, seed=1, classes=classes)
    (tmp_path / "signs").symlink_to("signs_data")  # named "signs" all the same
    (tmp_path / "bvlc_alexnet.npy").symlink_to(weights_path)
    rng = np.random.default_rng(7)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "stop.jpg")
    monkeypatch.chdir(tmp_path)
    code = readme_python_block()

    first: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), first)
    ev = first["ev"]
    assert isinstance(ev.accuracy, float) and 0.0 <= ev.accuracy <= 1.0
    assert ev.top5_accuracy == 1.0  # 3 classes
    assert ev.confusion.shape == (3, 3) and ev.confusion.sum() == 12
    assert len(first["df"]) == 42 and set(first["df"]["split"]) == {"train", "test"}
    assert first["record"].version == 1
    written = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert "NOT ImageNet" in written["weights_note"]  # ev.write() says the weights are random
    # predict extracted stop.jpg, so it is a row of the "uploads" dataset (README "Uploads")
    assert first["store"].datasets() == ["signs", "uploads"]

    again: dict[str, Any] = {}
    exec(compile(code, "README.md", "exec"), again)
    assert again["record"].version == 2
    assert again["ev"].accuracy == ev.accuracy

    runner = CliRunner()
    done = runner.invoke(
        app,
        [
            "evaluate",
            "--store",
            "signs.fc",
            "--head",
            "signs-softmax",
            "--dataset",
            "signs",
            "--split",
            "test",
            "--out",
            "cli-report",
        ],
    )
    assert done.exit_code == 0, done.output
    cli_summary = json.loads((tmp_path / "cli-report" / "summary.json").read_text())
    notebook_summary = json.loads((tmp_path / "report" / "summary.json").read_text())
    assert cli_summary["accuracy"] == ev.accuracy == notebook_summary["accuracy"]
    assert sorted(p.name for p in (tmp_path / "report").iterdir()) == sorted(
        p.name for p in (tmp_path / "cli-report").iterdir()
    )
    assert (tmp_path / "report" / "per_class.csv").read_text() == (
        tmp_path / "cli-report" / "per_class.csv"
    ).read_text()

    predict = ["predict", "--store", "signs.fc", "--head", "signs-softmax", "--top-k", "3"]
    done = runner.invoke(app, [*predict, "--json", "stop.jpg"])
    assert done.exit_code == 0, done.output
    answer = json.loads(done.output.splitlines()[0])
    (result,) = again["pred"].predict(["stop.jpg"], top_k=3)
    assert answer["key"] == result.key and answer["path"] == result.path == "stop.jpg"
    assert answer["predictions"] == [p.as_dict() for p in result.predictions]
    assert "NOT ImageNet" in answer["weights_note"]
