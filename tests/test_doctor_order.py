"""doctor's non-IID check tests the order within each class: a folder laid out as
class/CLASS_NNN.png (names that carry the class, so file-name order is class order) is not
flagged, while the same pictures drifting within each class (later ones darker, or shifted)
are. Real digit scans in a seeded random order; the vectors are the pictures' 8x8 pixels
(a stand-in for the network: a function of the pixels, so drift in the pixels reaches them)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featcache.analysis.doctor import doctor
from featcache.analysis.labels import ORDER, source_order
from featcache.store import DatasetRow, FeatureStore
from planted import _digit

FP = "f" * 64


def _folder_store(tmp_path: Path, drift: str | None, count: int = 240) -> FeatureStore:
    """Digits saved as ROOT/train|test/CLASS/CLASS_RANK.png (rank within the class: the
    order they were "taken" in), vectors from their pixels. `drift`: later pictures of each
    class darker ("dark") or shifted right ("shift"), growing with the rank."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    pick = np.random.default_rng(0).permutation(len(digits.images))[:count]
    labels = digits.target[pick]
    rank = np.zeros(count, np.int64)
    for c in range(10):
        rank[labels == c] = np.arange(int((labels == c).sum()))
    time = rank / np.bincount(labels, minlength=10)[labels]
    rows, vectors = [], []
    for i, index in enumerate(pick.tolist()):
        pixels = _digit(digits.images[index]).astype(np.float64)
        if drift == "dark":
            pixels *= 1.0 - 0.6 * time[i]
        elif drift == "shift":
            pixels = np.roll(pixels, round(4 * time[i]), axis=1)
        picture = Image.fromarray(pixels.astype(np.uint8))
        split = "test" if i % 5 == 0 else "train"
        folder = tmp_path / "images" / split / str(labels[i])
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{labels[i]}_{rank[i]:03d}.png"
        picture.save(path)
        small = picture.resize((8, 8), Image.Resampling.BOX)
        vectors.append(np.asarray(small, np.float32).ravel())
        key = hashlib.sha256(path.read_bytes()).hexdigest()
        rows.append(DatasetRow(key, str(path), int(labels[i]), split))
    store = FeatureStore(tmp_path / "store")
    store.register_extractor(FP, {"profile": "caffe", "weights_note": "pixels as vectors"})
    store.put_batch([r.key for r in rows], {"fc7": np.stack(vectors)}, FP)
    store.add_dataset("d", rows, [str(c) for c in range(10)])
    return store


def test_class_prefixed_names_in_class_folders_are_not_flagged(tmp_path: Path) -> None:
    store = _folder_store(tmp_path, None)
    report = doctor(store, "d")
    order = report.datalab["non_iid"]
    assert not order["flagged"] and order["p_value"] > 0.2
    assert order["order"] == ORDER
    assert f"non-IID order: no (p-value {order['p_value']}, on the {ORDER})" in "\n".join(
        report.summary()
    )
    # what doctor tested before (file names across class folders) is class order here
    rows = store.dataset_rows("d")
    paths, labels = [r.path for r in rows], np.array([r.label for r in rows])
    by_name = source_order(paths)
    assert (np.diff(labels[by_name]) >= 0).all()


@pytest.mark.parametrize("drift", ["dark", "shift"])
def test_pictures_drifting_within_each_class_are_flagged(tmp_path: Path, drift: str) -> None:
    report = doctor(_folder_store(tmp_path, drift), "d")
    order = report.datalab["non_iid"]
    assert order["flagged"] and order["p_value"] < 0.01
    assert "non-IID order: FLAGGED" in "\n".join(report.summary())


def test_each_class_keeps_its_recorded_order() -> None:
    """Arrays by index, files by name (numbers as numbers); each class's rows appear in that
    order, the classes' places drawn by a seeded shuffle (the same every run)."""
    paths = [f"/x/train.p#{i}" for i in range(40)] + [
        "/d/0/IMG_10.png", "/d/0/IMG_9.png", "/d/1/IMG_100.png", "/d/1/IMG_20.png"
    ]  # fmt: skip
    labels = np.array([i // 10 for i in range(40)] + [0, 0, 1, 1])  # the array sorted by label
    order = source_order(paths, labels)
    assert sorted(order.tolist()) == list(range(44))
    assert order.tolist() == source_order(paths, labels).tolist()
    within = {c: [i for i in order.tolist() if labels[i] == c] for c in range(4)}
    assert within[0] == [41, 40, *range(0, 10)]  # image files first, IMG_9 before IMG_10
    assert within[1] == [43, 42, *range(10, 20)]
    assert within[2] == list(range(20, 30)) and within[3] == list(range(30, 40))
    assert (np.diff(labels[order]) < 0).sum() > 5  # the classes interleave
    assert source_order(paths).tolist() == [41, 40, 43, 42, *range(40)]  # no labels
