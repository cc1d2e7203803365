"""Names from a store (file names, class names, reasons) in what we write and print: no cell
a spreadsheet evaluates as a formula, no escape sequence reaching the terminal."""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from featcache._text import csv_cell, printable
from featcache.cli import app
from featcache.store import DatasetRow, FeatureStore

FP = "f" * 64
FORMULAS = ['=HYPERLINK("http://x")', "+1+1", "-2+3", "@SUM(A1)", "\tx", "\rx"]


def test_csv_cells_and_printable_text() -> None:
    assert [csv_cell(v) for v in FORMULAS] == ["'" + v for v in FORMULAS]
    assert csv_cell("plain.png") == "plain.png" and csv_cell(-1.5) == -1.5
    assert printable("a\x1b[31mred\x1b]0;title\x07\x00\x9bz\n\tok") == (
        "a\\x1b[31mred\\x1b]0;title\\x07\\x00\\x9bz\n\tok"
    )


def test_failures_csv_holds_no_formula(tmp_path: Path) -> None:
    with FeatureStore(tmp_path / "s") as store:
        store.record_failures(
            "d", [(f"/data/{v}.png", f"{v}: cannot decode") for v in FORMULAS[:4]]
        )
        store.record_failures("=cmd|' /C calc'!A0", [("=cmd.png", "=1+1")])
    with open(tmp_path / "s" / "failures.csv", newline="") as f:
        rows = list(csv.reader(f))
    cells = [cell for row in rows[1:] for cell in row[1:]]
    assert not [c for c in cells if c.startswith(("=", "+", "-", "@", "\t", "\r"))], cells
    assert "'=cmd.png" in cells and "'=1+1" in cells and "'=cmd|' /C calc'!A0" in cells
    assert '/data/=HYPERLINK("http://x").png' in cells  # inside a cell: harmless, kept


def test_evaluate_reports_hold_no_formula(tmp_path: Path) -> None:
    from featcache.classifier.evaluate import evaluate_head, write_report
    from featcache.classifier.train import train_head

    names = ["=1+1", "@SUM(A1)"]
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(16)]  # 6 test rows
    rng = np.random.default_rng(0)
    with FeatureStore(tmp_path / "s") as store:
        store.register_extractor(FP, {"network": "test"})
        store.put_batch(keys, {"fc7": rng.normal(size=(16, 4)).astype(np.float32)}, FP)
        store.add_dataset(
            "d",
            [
                DatasetRow(k, f"{i}.png", i % 2, "test" if i < 6 else "train")
                for i, k in enumerate(keys)
            ],
            names,
        )
        train_head(store, "d", name="h", fingerprint=FP, params={"epochs": 1, "random_state": 0})
        written = write_report(evaluate_head(store, "h", "d"), tmp_path / "report")
    for path in written:
        if path.suffix == ".csv":
            text = path.read_text()
            assert "'=1+1" in text and "'@SUM(A1)" in text, text
            for row in csv.reader(text.splitlines()):
                assert not any(c.startswith(("=", "@")) for c in row), (path, row)


def test_names_with_escape_sequences_are_printed_escaped(tmp_path: Path) -> None:
    with FeatureStore(tmp_path / "s") as store:
        store.put_batch(["a"], {"fc7": np.ones((1, 4), np.float32)}, FP)
    planted = tmp_path / "s" / "shards" / "\x1b[2J\x1b]0;pwned\x07x.npy"
    planted.write_bytes(b"not a shard")
    result = CliRunner().invoke(app, ["store", "verify", "--store", str(tmp_path / "s")])
    assert result.exit_code == 3
    assert "\x1b" not in result.output and "\x07" not in result.output
    assert "\\x1b[2J\\x1b]0;pwned\\x07x.npy" in result.output


@pytest.mark.parametrize("stream", ["out", "err"])
def test_both_consoles_escape(stream: str, capsys: pytest.CaptureFixture[str]) -> None:
    from featcache.cli import _shared

    getattr(_shared, stream).print("name \x1b[31mred")
    captured = getattr(capsys.readouterr(), stream)
    assert "\x1b" not in captured and "name \\x1b[31mred" in captured
