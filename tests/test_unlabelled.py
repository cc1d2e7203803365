"""A flat folder is an unlabelled dataset: extract, doctor (duplicates, outliers), export and
predict work; train says what is missing; doctor's next step works as printed."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import CountingNetwork, write_images
from featcache.cli import app
from featcache.extractor.pipeline import extract
from featcache.extractor.weights import Weights
from featcache.store import FeatureStore

STUB = Weights(Path("stub-alexnet.npy"), {}, "ab" * 32, "RANDOM stub weights for tests")
runner = CliRunner()


def cli(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def next_command(text: str) -> list[str]:
    line = next(line for line in text.splitlines() if line.startswith("next: "))
    return line[len("next: ") :].split("   ")[0].split()[1:]  # drop "featcache" and the why


def test_unlabelled_folder_end_to_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for i, path in enumerate(write_images(Path("made"), 8)):
        Path("photos").mkdir(exist_ok=True)
        path.rename(Path("photos") / f"p{i}.png")
    shutil.copy("photos/p0.png", "photos/copy.png")  # an exact duplicate for doctor
    report = extract("photos", STUB, "s", network_factory=CountingNetwork)
    assert report.dataset == "photos" and report.total == 9 and report.duplicates == 1
    with FeatureStore("s", create=False) as fs:
        data = fs.vectors("photos")
        assert (data.y == -1).all() and data.class_names == []
        assert fs.dataset("photos").source == f"folder {tmp_path / 'photos'} (unlabelled)"

    code, text = cli("train", "--store", "s", "--dataset", "photos")
    source = f"folder {tmp_path / 'photos'} (unlabelled)"
    assert code == 1 and f"dataset 'photos' is unlabelled ({source})" in text
    assert "Put the images in one subfolder per class" in text

    code, text = cli("doctor", "--store", "s", "--dataset", "photos")
    assert code == 0, text
    assert "exact duplicates: 1 image(s) on 2 rows" in text
    assert "label issues: not checked (the dataset is unlabelled)" in text
    assert "outliers:" in text
    step = next_command(text)
    assert " ".join(step) == "export --store s --dataset photos --layer fc7 --out photos.parquet"
    code, text = cli(*step)  # works as printed
    assert code == 0 and Path("photos.parquet").exists()

    # with a head trained on the same extractor's vectors, doctor points to predict
    write_images(Path("labelled"), 12, seed=3)
    extract("labelled", STUB, "s", network_factory=CountingNetwork)
    code, text = cli("train", "--store", "s", "--dataset", "labelled", "--val-fraction", "0")
    assert code == 0, text
    code, text = cli("doctor", "--store", "s", "--dataset", "photos")
    step = next_command(text)
    # the source's path as recorded: absolute (test_dataset_paths)
    assert " ".join(step) == f"predict --store s --head labelled-softmax {tmp_path / 'photos'}"
    code, text = cli(*step, "--json")
    assert code == 0, text
    assert text.count('"predictions"') == 9 and '"cached": true' in text
    code, text = cli("export", "--store", "s", "--dataset", "photos", "--out", "p.npz")
    assert code == 0
    with np.load("p.npz") as npz:
        assert npz["labels"].tolist() == [-1] * 9
