"""featcache doctor: pixel hashes, neighbour search, groups, leakage, label issues, outliers,
report files; honest splits (train --split-groups) and the clean test accuracy."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from typer.testing import CliRunner

from featcache.analysis.doctor import DoctorConfig, doctor, near_duplicate_groups
from featcache.analysis.duplicates import NearDuplicateConfig, connected_groups
from featcache.analysis.folds import fold_ids
from featcache.analysis.neighbours import VectorIndex, hash_similarity, vector_neighbours
from featcache.classifier.evaluate import evaluate_head
from featcache.classifier.splits import effective_splits
from featcache.classifier.train import train_head
from featcache.cli import app
from featcache.data.phash import HASH_BYTES, HASH_KIND, hash_distance, image_hash, image_hashes
from featcache.errors import ConfigError
from featcache.store import DatasetRow, FeatureStore
from planted import recall_at, write_planted

FP = "b" * 64
DOCTOR_KEYS = {
    "dataset",
    "layer",
    "rows",
    "exact_duplicates",
    "near_duplicates",
    "leakage",
    "label_issues",
    "outliers",
}


def blocky(rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """A random picture with structure at the hash's scale (8x8 blocks, upscaled)."""
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((size, size), Image.Resampling.BILINEAR))


def jpeg(pixels: np.ndarray) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=70)
    return np.asarray(Image.open(buffer).convert("RGB"))


def shifted(pixels: np.ndarray) -> np.ndarray:
    out = pixels.copy()
    out[:, 1:] = pixels[:, :-1]
    return out


# -- perceptual hash ------------------------------------------------------------------------


def test_hash_finds_resized_reencoded_and_shifted_copies() -> None:
    rng = np.random.default_rng(0)
    originals = [blocky(rng) for _ in range(40)]
    bigger = [np.asarray(Image.fromarray(p).resize((45, 45))) for p in originals]
    copies = {
        "resized": bigger,
        "jpeg": [jpeg(p) for p in originals],
        "shifted": [shifted(p) for p in originals],
    }
    base = image_hashes(originals)
    assert base.shape == (40, HASH_BYTES) and base.dtype == np.uint8
    assert len(image_hash(originals[0])) == HASH_BYTES == 40
    idx = np.arange(40)
    for kind, pictures in copies.items():
        both = np.concatenate([base, image_hashes(pictures)])
        same = hash_distance(both, idx, idx + 40)
        assert same.max() <= 6, (kind, same)
    others = hash_distance(base, idx, (idx + 1) % 40)
    assert others.min() >= 12
    assert hash_similarity(base, idx[:1], idx[:1])[0] == 1.0


def test_hash_of_grayscale_equals_hash_of_the_same_rgb() -> None:
    gray = blocky(np.random.default_rng(1))[:, :, 0]
    assert image_hash(gray) == image_hash(np.repeat(gray[:, :, None], 3, axis=2))


# -- search and groups ----------------------------------------------------------------------


def clustered(n: int, d: int = 48, seed: int = 0) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Vectors with a large shared component, class structure and planted near copies."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((5, d)) * 2
    X = 10 + centres[rng.integers(0, 5, n)] + rng.standard_normal((n, d))
    pairs = [(i, n // 2 + i) for i in range(0, 40, 2)]
    for a, b in pairs:
        X[b] = X[a] + 0.02 * rng.standard_normal(d)
    return X.astype(np.float32), pairs


def test_exact_search_matches_brute_force() -> None:
    X, _ = clustered(300)
    nb = vector_neighbours(VectorIndex.build(X), 5)
    assert nb.exact
    Z = X - X.mean(axis=0)
    Z /= np.linalg.norm(Z, axis=1, keepdims=True)
    S = Z @ Z.T
    np.fill_diagonal(S, -np.inf)
    expected = np.argsort(-S, axis=1)[:, :5]
    assert (nb.index == expected).mean() > 0.99  # float ties may swap a few
    np.testing.assert_allclose(nb.similarity, np.sort(S, axis=1)[:, ::-1][:, :5], atol=1e-5)


def test_cell_search_finds_the_planted_copies() -> None:
    X, pairs = clustered(3000, d=256)
    vi = VectorIndex.build(X)
    nb = vector_neighbours(vi, 3, search_dims=32, cell_rows=400)
    assert not nb.exact
    assert all(nb.index[a, 0] == b and nb.index[b, 0] == a for a, b in pairs)
    a, b = np.array(pairs).T
    assert (vi.cosine(a, b) > 0.99).all()


def test_connected_groups_chain_pairs() -> None:
    labels = connected_groups(6, np.array([0, 1, 4]), np.array([1, 2, 5]))
    assert labels[0] == labels[1] == labels[2] != labels[3]
    assert labels[4] == labels[5] != labels[3]


def test_folds_and_held_out_split_keep_groups_whole() -> None:
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(400)]
    groups = {k: i // 4 for i, k in enumerate(keys)}  # groups of four
    folds = fold_ids(keys, 5, groups)
    splits = effective_splits(keys, [None] * 400, 0.3, groups)
    for g in range(100):
        assert len(set(folds[4 * g : 4 * g + 4])) == 1
        assert len(set(splits[4 * g : 4 * g + 4])) == 1
    loose = effective_splits(keys, [None] * 400, 0.3)
    assert any(len(set(loose[4 * g : 4 * g + 4])) > 1 for g in range(100))  # groups matter
    with pytest.raises(ConfigError, match="folds"):
        fold_ids(keys, 1)


# -- the store's hashes and groups ----------------------------------------------------------


def test_store_keeps_hashes_and_drops_groups_when_the_dataset_changes(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "s")
    store.put_image_hashes(HASH_KIND, {"k1": b"\x01" * 40})
    assert store.image_hashes(["k1", "k2"], HASH_KIND) == {"k1": b"\x01" * 40}
    assert store.image_hashes(["k1"], "another-kind") == {}
    store.add_dataset("d", [DatasetRow("k1", "a.png", 0, "train")], ["x"])
    assert store.groups("d") is None
    store.put_groups("d", {"k1": 0})
    assert store.groups("d") == {"k1": 0}
    store.add_dataset("d", [DatasetRow("k2", "b.png", 0, "test")], ["x"], append=True)
    assert store.groups("d") is None  # recorded before the dataset changed


# -- doctor on vectors put in a store (no network) -----------------------------------------


def make_store(tmp_path: Path, n: int = 240, seed: int = 0) -> tuple[FeatureStore, dict[str, list]]:
    """Images on disk (for hashes and thumbnails) and vectors put directly in a store.

    Planted: 6 copies (resized, JPEG, shifted) of train pictures in test, 6 flipped labels,
    one exact duplicate across splits with another label, 3 outliers.
    """
    rng = np.random.default_rng(seed)
    k, d = 4, 64
    centres = rng.standard_normal((k, d)) * 3
    folder = tmp_path / "images"
    folder.mkdir()
    rows, vectors, planted = [], {}, {"pairs": [], "flipped": [], "outliers": []}

    def add(pixels: np.ndarray, vector: np.ndarray, label: int, split: str, name: str) -> str:
        path = folder / name
        Image.fromarray(pixels).save(path)
        key = hashlib.sha256(path.read_bytes()).hexdigest()
        rows.append(DatasetRow(key, str(path), label, split))
        vectors[key] = vector
        return str(path)

    labels = rng.integers(0, k, n)
    pictures, vecs = [], []
    for i in range(n):
        pictures.append(blocky(rng))
        vecs.append(np.maximum(centres[labels[i]] + rng.standard_normal(d), 0) + 5)
    for i in range(n):
        split = "test" if i % 5 == 0 else "train"
        label = int(labels[i])
        if 10 <= i < 16:
            label = (label + 1) % k
        path = add(pictures[i], vecs[i], label, split, f"img{i:03d}.png")
        if 10 <= i < 16:
            planted["flipped"].append(path)
        if i in (1, 2, 3, 4, 6, 7):  # train pictures with a copy in test
            maker = (jpeg, shifted, lambda p: np.asarray(Image.fromarray(p).resize((45, 45))))
            copy = maker[i % 3](pictures[i])
            noisy = vecs[i] + 0.05 * rng.standard_normal(d)
            planted["pairs"].append(
                (path, add(copy, noisy, int(labels[i]), "test", f"copy{i}.png"))
            )
    for j in range(3):
        noise = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        far = np.abs(rng.standard_normal(d)) * 12
        planted["outliers"].append(add(noise, far, j % k, "train", f"noise{j}.png"))
    # the same file listed twice: in train and in test, with different labels
    rows.append(DatasetRow(rows[1].key, rows[1].path + "#again", 3, "test"))
    store = FeatureStore(tmp_path / "store")
    store.register_extractor(FP, {"profile": "caffe", "weights_note": "RANDOM test vectors"})
    keys = list(vectors)
    store.put_batch(keys, {"fc7": np.array([vectors[key] for key in keys], np.float32)}, FP)
    store.add_dataset("toy", rows, [f"class {c}" for c in range(k)])
    return store, planted


def test_doctor_finds_the_planted_problems_and_writes_the_report(tmp_path: Path) -> None:
    store, planted = make_store(tmp_path)
    report = doctor(store, "toy", out=tmp_path / "out", config=DoctorConfig(folds=4, top=8))
    assert report.hashes_computed == report.images - 0  # no hash was recorded: all computed
    assert len(store.image_hashes(list(report.groups), HASH_KIND)) == report.images

    exact = report.exact_duplicates
    assert len(exact) == 1 and exact.loc[0, "conflict"] and exact.loc[0, "cross_split"]

    near = report.near_duplicates[report.near_duplicates.cross_split]
    found = [frozenset(p) for p in zip(near.path_a, near.path_b, strict=True)]
    wanted = [frozenset(p) for p in planted["pairs"]]
    assert recall_at(found, wanted, 2 * len(wanted)) == 1.0
    groups = report.groups
    key_of = {r.path: r.key for r in store.dataset_rows("toy")}
    assert all(groups[key_of[a]] == groups[key_of[b]] for a, b in planted["pairs"])

    test_rows = report.split_rows["test"]
    assert report.leakage["test"] == pytest.approx(report.leaked_rows["test"] / test_rows)
    assert report.leaked_rows["test"] >= 1 + sum(1 for p in planted["pairs"])  # + exact dup
    issues = list(report.label_issues.path)
    assert recall_at(issues, planted["flipped"], 2 * len(planted["flipped"])) >= 0.7
    assert recall_at(list(report.outliers.path), planted["outliers"], 6) == 1.0

    data = json.loads((tmp_path / "out" / "doctor.json").read_text())
    assert set(data) >= DOCTOR_KEYS
    assert set(data["leakage"]) == {"val", "test"}
    assert set(data["near_duplicates"][0]) >= {
        "path_a", "path_b", "split_a", "split_b", "similarity", "signal",
    }  # fmt: skip
    first = data["near_duplicates"][0]
    assert first["signal"] == "hash+vector" and first["grouped"] and first["leaks"]
    assert set(data["exact_duplicates"][0]) == {"keys", "paths", "splits", "labels"}
    assert set(data["label_issues"][0]) >= {"path", "given", "suggested", "score"}
    assert set(data["outliers"][0]) >= {"path", "score"}
    assert data["rows"] == len(store.dataset_rows("toy"))
    for name in ("exact_duplicates", "near_duplicates", "label_issues", "outliers"):
        table = pd.read_csv(tmp_path / "out" / f"{name}.csv")
        assert len(table) == len(data[name])
        png = tmp_path / "out" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = "\n".join(report.summary("S"))
    assert "leakage test" in summary and "--split-groups" in summary


def test_split_groups_keeps_copies_on_one_side_and_evaluate_reports_clean_accuracy(
    tmp_path: Path,
) -> None:
    store, _ = make_store(tmp_path)
    # every row without a split: train carves the held-out rows itself
    rows = [DatasetRow(r.key, r.path, r.label, None if r.split == "train" else r.split)
            for r in store.dataset_rows("toy")]  # fmt: skip
    within = [DatasetRow(r.key, r.path + "#train-copy", r.label, None) for r in rows[:40]]
    store.add_dataset("toy", rows + within, [f"class {c}" for c in range(4)])
    groups = near_duplicate_groups(store, "toy")
    assert store.groups("toy") == groups
    keys = [r.key for r in rows + within]
    sides = effective_splits(keys, [r.split for r in rows + within], 0.5, groups)
    by_group: dict[int, set[str]] = {}
    for key, side in zip(keys, sides.tolist(), strict=True):
        if side != "test":
            by_group.setdefault(groups[key], set()).add(side)
    assert all(len(s) == 1 for s in by_group.values())

    result = CliRunner().invoke(
        app, ["train", "--store", str(store.path), "--dataset", "toy", "--split-groups",
              "--val-fraction", "0.5", "--name", "honest"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "held together" in result.output
    assert store.head("honest").meta["split_groups"] is True
    summary = evaluate_head(store, "honest", "toy", split="test").summary
    assert 0 < summary["clean_n"] < summary["n"]
    assert 0.0 <= summary["clean_accuracy"] <= 1.0
    train_head(store, "toy", name="plain", val_fraction=0.5)
    assert store.head("plain").meta["split_groups"] is False


def test_doctor_cli_prints_the_summary_and_next_command(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path, n=120)
    result = CliRunner().invoke(
        app, ["doctor", "--store", str(store.path), "--dataset", "toy", "--top", "4",
              "--folds", "3", "--out", str(tmp_path / "rep")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "leakage test" in result.output and "next: featcache train" in result.output
    assert "RANDOM test vectors" in result.output
    assert (tmp_path / "rep" / "doctor.json").exists()
    bad = CliRunner().invoke(app, ["doctor", "--store", str(store.path), "--dataset", "nope"])
    assert bad.exit_code == 1 and "no dataset 'nope'" in bad.output


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="'folds'"):
        DoctorConfig(folds=1)
    with pytest.raises(ConfigError, match="'agreement' rows"):
        NearDuplicateConfig(agreement=((0, 1.5),))
    with pytest.raises(ConfigError, match="'review'"):
        NearDuplicateConfig(review=-1)
    with pytest.raises(ConfigError, match="'outlier_neighbours'"):
        DoctorConfig(outlier_neighbours=50)


# -- the planted image dataset, through the network (random weights) -----------------------


@pytest.mark.slow
def test_planted_problems_are_found_with_the_demo_weights(
    tmp_path: Path, weights_path: Path
) -> None:
    from featcache.extractor.pipeline import extract

    planted = write_planted(tmp_path / "data")
    store = FeatureStore(tmp_path / "store")
    extract(tmp_path / "data", weights_path, store, dataset="planted")
    report = doctor(store, "planted", out=tmp_path / "out")
    assert report.hashes_computed == 0  # recorded at extract time

    near = report.near_duplicates[report.near_duplicates.cross_split]
    found = [frozenset(p) for p in zip(near.path_a, near.path_b, strict=True)]
    wanted = [frozenset(p) for p in planted.pairs]
    near_recall = recall_at(found, wanted, 2 * len(wanted))
    label_recall = recall_at(
        list(report.label_issues.path), planted.flipped, 2 * len(planted.flipped)
    )
    outlier_recall = recall_at(
        list(report.outliers.path), planted.outliers, 2 * len(planted.outliers)
    )
    print(
        f"recall: near {near_recall:.2f}, labels {label_recall:.2f}, outliers {outlier_recall:.2f}"
    )
    assert near_recall >= 0.9
    assert label_recall >= 0.7
    assert outlier_recall >= 0.8
    key_of = {r.path: r.key for r in store.dataset_rows("planted")}
    assert all(report.groups[key_of[a]] == report.groups[key_of[b]] for a, b in planted.pairs)
    assert report.leakage["test"] > 0
