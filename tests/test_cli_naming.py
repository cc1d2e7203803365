"""One naming rule across the CLI: ``--store`` everywhere (the older positional store still
works, with a note), and ``NAME``, ``NAME@N``, ``NAME@promoted`` wherever a head is named."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer
from typer.testing import CliRunner

from conftest import write_images
from featcache.classifier.train import train_head
from featcache.cli import app
from featcache.errors import ConfigError, NotFoundError
from featcache.predictor import Predictor
from featcache.store import DatasetRow, FeatureStore, HeadSpec

runner = CliRunner()


def cli(*args: str | Path) -> tuple[int, str]:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result.exit_code, result.output


def every_command() -> list[tuple[str, Any]]:
    found: list[tuple[str, Any]] = []

    def walk(words: list[str], command: Any) -> None:
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                walk([*words, name], sub)
        else:
            found.append((" ".join(words), command))

    walk([], typer.main.get_command(app))
    return found


STORELESS = {"demo", "weights fetch", "weights info", "weights demo"}


@pytest.mark.parametrize("words,command", every_command(), ids=lambda x: str(x))
def test_every_command_with_a_store_names_it_store(words: str, command: Any) -> None:
    if words in STORELESS:
        return
    options = {opt for param in command.params for opt in param.opts}
    assert "--store" in options, words


@pytest.fixture
def store(tmp_path: Path) -> tuple[Path, list[Path]]:
    """Head 'h' in three versions (v2 promoted) on four cached images of dataset 'd'."""
    paths = write_images(tmp_path / "imgs", 4)
    keys = [hashlib.sha256(p.read_bytes()).hexdigest() for p in paths]
    fs = FeatureStore(tmp_path / "s")
    fp = "c" * 64
    fs.register_extractor(fp, {"profile": "caffe", "weights_note": "RANDOM test weights"})
    fs.put_batch(keys, {"fc7": np.eye(4, 8, dtype=np.float32) + 0.1}, fp)
    rows = [
        DatasetRow(k, str(p), i % 2, None) for i, (k, p) in enumerate(zip(keys, paths, strict=True))
    ]
    fs.add_dataset("d", rows, ["x", "y"])
    for seed in range(3):
        train_head(fs, "d", name="h", val_fraction=0.0, params={"random_state": seed})
    fs.promote_head("h@2")
    fs.close()
    return tmp_path / "s", paths


def test_store_and_heads_take_store_as_an_option(store: tuple[Path, list[Path]]) -> None:
    path, _ = store
    code, text = cli("store", "info", "--store", path)
    assert code == 0 and "dataset d: 4 images (no split 4)" in text
    code, text = cli("heads", "list", "--store", path)
    assert code == 0 and "h v2: softmax" in text and text.count("(promoted)") == 1
    assert "h v2" in next(line for line in text.splitlines() if "(promoted)" in line)
    code, text = cli("store", "verify", "--store", path)
    assert code == 0 and "0 problem(s)" in text
    code, text = cli("store", "gc", "--store", path, "--grace", "0")
    assert code == 0 and "removed 0 file(s)" in text


def test_positional_store_still_works_with_a_note(store: tuple[Path, list[Path]]) -> None:
    path, _ = store
    code, text = cli("store", "info", path)
    assert code == 0 and "dataset d: 4 images" in text
    assert f"note: 'featcache store info {path}' is deprecated; use " in text
    assert f"'featcache store info --store {path}'" in text
    code, text = cli("heads", "show", path, "h", "--version", "1")
    assert code == 0 and "deprecated" in text
    assert json.loads(text[text.index("{") :])["version"] == 1
    code, text = cli("heads", "promote", path, "h", "3")
    assert code == 0 and "promoted head 'h' v3" in text
    code, text = cli("store", "info", path, "--store", path)
    assert code == 2 and "the store is given twice" in text
    code, text = cli("heads", "list")
    assert code == 2 and "Missing option '--store'" in text


def test_head_references_in_heads_commands(store: tuple[Path, list[Path]]) -> None:
    path, _ = store
    for ref, version in (("h", 3), ("h@1", 1), ("h@promoted", 2)):
        code, text = cli("heads", "show", "--store", path, ref)
        assert code == 0, text
        assert json.loads(text)["version"] == version
    code, text = cli("heads", "show", "--store", path, "h@2", "--version", "2")
    assert code == 1 and "say the version once, as h@2" in text
    code, text = cli("heads", "promote", "--store", path, "h@3")
    assert code == 0 and "promoted head 'h' v3" in text
    code, text = cli("heads", "promote", "--store", path, "h")
    assert code == 1 and "say which version of head 'h' to promote: h@VERSION" in text
    code, text = cli("heads", "delete", "--store", path, "h@promoted", "--yes")
    assert code == 0 and "deleted 1 version(s) of head 'h'" in text
    with FeatureStore(path, create=False) as fs:
        assert [r.version for r in fs.heads("h")] == [1, 2]


def test_head_references_in_predict_and_evaluate(store: tuple[Path, list[Path]]) -> None:
    path, images = store
    for ref, version in (("h@1", 1), ("h@promoted", 2), ("h", 3)):
        code, text = cli("predict", "--store", path, "--head", ref, "--json", images[0])
        assert code == 0, text
        assert json.loads(text)["head"] == {"name": "h", "version": version}
        code, text = cli(
            "evaluate", "--store", path, "--head", ref, "--dataset", "d", "--split", "all"
        )
        assert code == 0, text
        assert f"head 'h' v{version} on 'd' [all], 4 images" in text
        assert (path / "reports" / f"h-v{version}-d-all" / "summary.json").exists()
    code, text = cli("predict", "--store", path, "--head", "h@9", images[0])
    assert code == 1 and "head 'h' has no version 9 (it has 1, 2, 3)" in text
    code, text = cli("evaluate", "--store", path, "--head", "h@x", "--dataset", "d")
    assert code == 1 and "expected NAME, NAME@promoted or NAME@VERSION" in text


def test_no_promoted_version_says_the_command(
    tmp_path: Path, store: tuple[Path, list[Path]]
) -> None:
    path, images = store
    with FeatureStore(path) as fs:
        train_head(fs, "d", name="g", val_fraction=0.0)
        with pytest.raises(NotFoundError, match="has no promoted version") as caught:
            fs.head("g@promoted")
    suggested = str(caught.value).split("run '")[1].split("'")[0]
    assert suggested == f"featcache heads promote --store {path} g@1"
    code, text = cli(*suggested.split()[1:])
    assert code == 0 and "promoted head 'g' v1" in text
    code, text = cli("predict", "--store", path, "--head", "g@promoted", images[0])
    assert code == 0 and "(cached)" in text


def test_library_takes_the_same_references(store: tuple[Path, list[Path]]) -> None:
    path, _ = store
    with FeatureStore(path, create=False) as fs:
        assert fs.head("h@promoted").version == 2
        assert fs.head(HeadSpec("h", "pinned", 1)).version == 1
        pred = Predictor(fs, "h@promoted")
        assert pred.head.version == 2 and pred.head_spec == HeadSpec("h", "promoted")
        fs.promote_head("h", 1)
        pred._checked_at = -1e9  # the next look re-reads the promotion
        assert pred.head.version == 1
        with pytest.raises(ConfigError, match="say the version once"):
            Predictor(fs, "h@1", version=2)
