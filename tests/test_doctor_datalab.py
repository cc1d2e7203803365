"""doctor with cleanlab's Datalab: label issues ranked in full, bursts not flagged, tiny data
still gets its duplicate, leakage and outlier parts, and Datalab's class-imbalance and
non-IID findings on data planted for them (vectors put in a store directly, no network)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image

from featcache.analysis.doctor import doctor
from featcache.analysis.labels import source_order
from featcache.store import DatasetRow, FeatureStore
from planted import generated_photo

FP = "e" * 64


def _store(tmp_path: Path, pictures: list[np.ndarray], vectors: np.ndarray,
           labels: list[int], names: list[str], classes: int) -> FeatureStore:  # fmt: skip
    rows = []
    for i, pixels in enumerate(pictures):
        folder = tmp_path / "images" / ("test" if i % 5 == 0 else "train") / f"c{labels[i]}"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / names[i]
        Image.fromarray(pixels).save(path)
        key = hashlib.sha256(path.read_bytes()).hexdigest()
        rows.append(DatasetRow(key, str(path), labels[i], "test" if i % 5 == 0 else "train"))
    store = FeatureStore(tmp_path / "store")
    store.register_extractor(FP, {"profile": "caffe", "weights_note": "RANDOM test vectors"})
    store.put_batch([r.key for r in rows], {"fc7": vectors.astype(np.float32)}, FP)
    store.add_dataset("d", rows, [f"class {c}" for c in range(classes)])
    return store


def _clustered(n: int, labels: np.ndarray, seed: int, d: int = 32) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((int(labels.max()) + 1, d)) * 3
    return np.maximum(centres[labels] + rng.standard_normal((n, d)), 0) + 5


def test_a_burst_class_is_not_flagged(tmp_path: Path) -> None:
    """Class 2 is one burst: 24 frames of one scene, all grouped. Kept in one fold, no head
    would see the class; split across folds, the class is scored by heads that saw it."""
    rng = np.random.default_rng(0)
    labels = np.array([i % 2 for i in range(96)] + [2] * 24)
    vectors = _clustered(len(labels), labels, 0)
    scene = generated_photo(rng, 32)
    pictures = [generated_photo(rng, 32) for _ in range(96)]
    for j in range(24):
        frame = scene.copy()
        frame[j % 32, (3 * j) % 32] ^= 1 + j  # another file, the same picture
        pictures.append(frame)
    vectors[96:] = vectors[96] + 1e-3 * rng.standard_normal((24, vectors.shape[1]))
    names = [f"{i:04d}.png" for i in range(len(labels))]
    store = _store(tmp_path, pictures, vectors, labels.tolist(), names, 3)
    report = doctor(store, "d", out=tmp_path / "out")
    assert report.bursts == 1
    assert max(report.groups.values()) >= 0 and report.groups_with_copies == 1
    issues = report.label_issues
    assert len(issues) == len(labels)  # a full ranking
    assert not issues[issues.given == "class 2"].flagged.any()
    assert issues.flagged.sum() <= 3
    data = json.loads((tmp_path / "out" / "doctor.json").read_text())
    assert data["bursts_split_across_folds"] == 1
    assert "split across the label folds" in "\n".join(report.summary())


def test_tiny_two_class_data_still_gets_duplicates_leakage_and_outliers(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pictures = [generated_photo(rng, 32) for _ in range(5)]
    pictures.append(pictures[1].copy())
    pictures[5][0, 0] ^= 7  # a copy of a train picture in test
    labels = [0, 0, 0, 0, 1, 0]
    vectors = _clustered(6, np.array(labels), 1)
    vectors[5] = vectors[1] + 1e-4
    names = [f"{i}.png" for i in range(6)]
    store = _store(tmp_path, pictures, vectors, labels, names, 2)
    store.add_dataset(
        "d",
        [DatasetRow(r.key, r.path, r.label, "test" if r.path.endswith("5.png") else "train")
         for r in store.dataset_rows("d")],
        ["class 0", "class 1"],
    )  # fmt: skip
    report = doctor(store, "d", out=tmp_path / "out")
    assert report.near_duplicates.grouped.sum() == 1
    assert report.leakage["test"] == 1.0
    assert len(report.outliers) == 6
    assert len(report.label_issues) == 0
    assert report.skipped and "class 'class 1' has 1 labelled row" in report.skipped[0]
    data = json.loads((tmp_path / "out" / "doctor.json").read_text())
    assert data["near_duplicates"][0]["grouped"] and data["skipped"] == report.skipped
    assert "skipped: label checks" in "\n".join(report.summary())


def test_datalab_finds_an_imbalanced_class_not_a_class_sorted_order(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    n = 300
    labels = np.array([0] * 150 + [1] * 146 + [2] * 4)  # class 2: 1.3% of the rows
    vectors = _clustered(n, labels, 2)
    pictures = [generated_photo(rng, 32) for _ in range(n)]
    sorted_names = [f"IMG_{i:04d}.png" for i in range(n)]  # taken class after class
    report = doctor(_store(tmp_path / "a", pictures, vectors, labels.tolist(), sorted_names, 3),
                    "d")  # fmt: skip
    found = report.datalab
    assert found["class_imbalance"]["flagged"]
    assert found["class_imbalance"]["rarest_class"] == "class 2"
    # the order within each class is tested (tests/test_doctor_order.py): classes taken one
    # after another, each in a random order, are not non-IID
    assert not found["non_iid"]["flagged"] and found["non_iid"]["p_value"] > 0.05
    assert "non-IID order: no" in "\n".join(report.summary())


def test_source_order_reads_array_indices_and_numbered_names() -> None:
    paths = ["/d/b/IMG_10.png", "/d/a/IMG_9.png", "/x/train.p#10", "/x/train.p#2"]
    assert source_order(paths).tolist() == [1, 0, 3, 2]  # image files, then arrays
