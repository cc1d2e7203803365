"""`evaluate` reads ``--split valid`` as ``val`` (as extract does) and writes its report
files atomically with the one helper in featcache._io (no TensorFlow: vectors put in a store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from matplotlib.figure import Figure
from typer.testing import CliRunner

import featcache._io
from featcache.classifier.evaluate import evaluate_head, write_report
from featcache.classifier.train import train_head
from featcache.cli import app
from test_train_evaluate import make_store

REPORT = ("summary.json", "per_class.csv", "confusion_matrix.csv", "confusion_matrix.png")


@pytest.fixture()
def store_dir(tmp_path: Path) -> Path:
    """Dataset 'toy' without explicit splits (val carved by key hash) and head 'h'."""
    with make_store(tmp_path / "s", n=200) as store:
        train_head(store, "toy", params={"random_state": 0}, name="h")
    return tmp_path / "s"


def test_valid_and_validation_read_as_val(store_dir: Path) -> None:
    from featcache.store import FeatureStore

    with FeatureStore(store_dir) as store:
        val = evaluate_head(store, "h", "toy", split="val")
        for alias in ("valid", "Validation"):
            got = evaluate_head(store, "h", "toy", split=alias)
            assert got.summary["split"] == "val" and got.summary["n"] == val.summary["n"] > 0
            assert got.accuracy == val.accuracy


def test_cli_evaluate_split_valid_is_val_and_a_bad_split_names_the_flag(
    store_dir: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    args = ["evaluate", "--store", str(store_dir), "--dataset", "toy", "--head", "h"]
    val = runner.invoke(app, [*args, "--split", "val"])
    valid = runner.invoke(app, [*args, "--split", "valid"])
    assert val.exit_code == 0 and valid.exit_code == 0, valid.output
    assert "[val]" in valid.output and valid.output.splitlines()[0] == val.output.splitlines()[0]
    assert (store_dir / "reports" / "h-v1-toy-val" / "summary.json").exists()
    assert not (store_dir / "reports" / "h-v1-toy-valid").exists()
    every = runner.invoke(app, [*args, "--split", "all", "--out", str(tmp_path / "all")])
    assert every.exit_code == 0 and "[all], 200 images" in every.output
    bad = runner.invoke(app, [*args, "--split", "training"])
    assert bad.exit_code == 1
    assert "--split" in bad.output and "['train', 'val', 'test']" in bad.output
    assert "Traceback" not in bad.output


def test_every_report_file_goes_through_the_atomic_helper(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from featcache.store import FeatureStore

    with FeatureStore(store_dir) as store:
        ev = evaluate_head(store, "h", "toy", split="val")
    made: list[str] = []
    original = featcache._io.temporary_name

    def recording(path: Path) -> Path:
        made.append(path.name)
        return original(path)

    monkeypatch.setattr(featcache._io, "temporary_name", recording)
    paths = write_report(ev, tmp_path / "report")
    assert sorted(made) == sorted(REPORT) and [p.name for p in paths] == list(REPORT)
    assert json.loads(paths[0].read_text())["split"] == "val"


def test_a_failed_report_write_keeps_the_old_files_and_no_temporaries(
    store_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from featcache.store import FeatureStore

    with FeatureStore(store_dir) as store:
        ev = evaluate_head(store, "h", "toy", split="val")
    out = tmp_path / "report"
    write_report(ev, out)
    before = {name: (out / name).read_bytes() for name in REPORT}

    def broken(self: Figure, fname: Any, **kw: Any) -> None:
        fname.write(b"half a PNG")
        raise OSError("disk went away")

    monkeypatch.setattr(Figure, "savefig", broken)
    with pytest.raises(OSError, match="disk went away"):
        write_report(ev, out)
    assert (out / "confusion_matrix.png").read_bytes() == before["confusion_matrix.png"]
    assert sorted(p.name for p in out.iterdir()) == sorted(REPORT)  # no .tmp-* left behind
