"""Row identity: a dataset row is its source path; re-running any extract command is harmless."""

from __future__ import annotations

import itertools
import pickle
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from conftest import CountingNetwork
from featcache.errors import ConfigError
from featcache.extractor.pipeline import extract
from featcache.extractor.weights import Weights
from featcache.store import DatasetRow, FeatureStore

#: The fake network ignores the weights; only their digest enters the fingerprint.
STUB = Weights(Path("stub-alexnet.npy"), {}, "ab" * 32, "RANDOM stub weights for tests")
SIZES = {"train": 6, "val": 3, "test": 2}


def write_lab(folder: Path) -> dict[str, Path]:
    """The lab's three pickles (tiny: 8x8 images), different images in each."""
    rng = np.random.default_rng(7)
    files = {}
    for split, n in SIZES.items():
        name = {"train": "train.p", "val": "valid.p", "test": "test.p"}[split]
        data = {
            "features": rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8),
            "labels": np.arange(n) % 3,
        }
        with open(folder / name, "wb") as f:
            pickle.dump(data, f)
        files[split] = folder / name
    return files


def run(store: Path, files: dict[str, Path], split: str, *, append: bool) -> Any:
    """One walkthrough command: ``extract FILE --dataset gtsrb --split SPLIT [--append]``."""
    return extract(
        files[split],
        STUB,
        store,
        dataset="gtsrb",
        split="valid" if split == "val" else split,  # the alias reads as 'val'
        append=append,
        network_factory=CountingNetwork,
    )


def test_walkthrough_commands_twice_in_every_order(tmp_path: Path) -> None:
    files = write_lab(tmp_path)
    commands = [("train", False), ("val", True), ("test", True)]
    for n, order in enumerate(itertools.permutations(commands)):
        store = tmp_path / f"store{n}"
        for split, append in [*order, *order]:
            run(store, files, split, append=append)
        with FeatureStore(store) as fs:
            info = fs.dataset("gtsrb")
            assert info.splits == SIZES, order
            assert info.rows == 11
            paths = [r.path for r in fs.dataset_rows("gtsrb")]
            assert len(set(paths)) == len(paths)
            assert fs.vectors("gtsrb").X.shape == (11, 4096)


def test_rerun_summary_counts_and_split_scoped_replace(tmp_path: Path) -> None:
    files = write_lab(tmp_path)
    first = run(tmp_path / "s", files, "train", append=False).rows
    assert (first.added, first.updated, first.removed) == (6, 0, 0)
    run(tmp_path / "s", files, "val", append=True)
    again = run(tmp_path / "s", files, "train", append=False).rows
    assert (again.added, again.updated, again.removed, again.unchanged) == (0, 0, 0, 6)
    assert again.splits == {"train": 6, "val": 3}  # the val rows stay
    assert again.summary() == "0 added, 0 updated, 0 removed; now 9 rows (train 6, val 3)"
    # the train file loses two images and one label changes
    with open(files["train"], "rb") as f:
        data = pickle.load(f)
    data["features"], data["labels"] = data["features"][:4], data["labels"][:4].copy()
    data["labels"][0] = 2
    with open(files["train"], "wb") as f:
        pickle.dump(data, f)
    changed = run(tmp_path / "s", files, "train", append=False).rows
    assert (changed.added, changed.updated, changed.removed) == (0, 1, 2)
    assert changed.splits == {"train": 4, "val": 3}
    # --append adds nothing twice and removes nothing
    appended = run(tmp_path / "s", files, "test", append=True).rows
    assert (appended.added, appended.removed) == (2, 0)
    # without a split (and without --append) the dataset is replaced
    whole = extract(
        files["test"], STUB, tmp_path / "s", dataset="gtsrb", network_factory=CountingNetwork
    ).rows
    assert (whole.added, whole.updated, whole.removed) == (0, 2, 7)  # split 'test' → none
    assert whole.splits == {"": 2}


def test_add_dataset_semantics(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    rows = [DatasetRow("k1", "a.png", 0, "train"), DatasetRow("k2", "b.png", 1, "val")]
    change = store.add_dataset("d", rows, ["x", "y"])
    assert (change.added, change.rows) == (2, 2)
    # a path listed twice counts once (its first row)
    twice = store.add_dataset("e", [rows[0], DatasetRow("k9", "a.png", 1)], ["x", "y"])
    assert twice.rows == 1 and store.dataset_rows("e")[0].key == "k1"
    # the same path with new content is an update, not a new row
    update = store.add_dataset(
        "d", [DatasetRow("k3", "a.png", 0, "train")], ["x", "y"], append=True
    )
    assert (update.added, update.updated, update.rows) == (0, 1, 2)
    assert [r.key for r in store.dataset_rows("d")] == ["k3", "k2"]
    with pytest.raises(ConfigError, match=r"split must be one of \['train', 'val', 'test'\]"):
        store.add_dataset("d", [DatasetRow("k1", "c.png", 0, "training")], ["x", "y"])


def _as_version_1(catalog: Path) -> None:
    """Turn a catalog back into schema 1: no checksums, no version counter, no row identity."""
    db = sqlite3.connect(catalog)
    db.executescript(
        """
        DROP INDEX dataset_rows_path;
        ALTER TABLE shards DROP COLUMN sha256;
        ALTER TABLE shards DROP COLUMN bytes;
        ALTER TABLE shards DROP COLUMN mtime_ns;
        DROP TABLE head_versions;
        UPDATE meta SET value='1' WHERE key='schema';
        """
    )
    # what 'extract --append' did twice under schema 1
    db.execute(
        "INSERT INTO dataset_rows SELECT dataset, idx + 100, key, path, label, 'val' "
        "FROM dataset_rows"
    )
    db.commit()
    db.close()


def test_old_store_with_duplicate_rows_is_repaired_on_open(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path)
    x = np.random.default_rng(0).random((3, 4), dtype=np.float32)
    store.put_batch(["k0", "k1", "k2"], {"fc7": x}, "f" * 64)
    store.add_dataset("d", [DatasetRow(f"k{i}", f"p{i}", 0, "train") for i in range(3)], ["c"])
    store.add_head("h", b"one", {})
    store.close()
    _as_version_1(tmp_path / "catalog.sqlite")
    reopened = FeatureStore(tmp_path)
    info = reopened.dataset("d")
    assert info.rows == 3 and info.splits == {"val": 3}  # the newest values, one row per path
    assert [r.path for r in reopened.dataset_rows("d")] == ["p0", "p1", "p2"]
    report = reopened.verify()
    assert report.ok, report.problems
    assert reopened.add_head("h", b"two", {}).version == 2
