"""doctor's near-duplicate rule: a group needs the pixel hash *and* the vectors to agree, so
plain pictures with no copies report no leakage; pairs say which signal grouped them and
which part (train, carved val, test) each side is in."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featcache.analysis.doctor import CARVED, doctor
from featcache.analysis.duplicates import AGREEMENT, agreeing
from featcache.classifier.splits import key_fraction
from featcache.store import DatasetRow, FeatureStore
from planted import generated_photo, write_generated_photos, write_plain_digits, write_plain_photos

FP = "c" * 64


def test_agreement_needs_both_signals() -> None:
    hash_sim = np.array([1.0, 1.0, 0.9375, 0.9375, 0.875, 0.875, 0.8125, 0.2, np.nan])
    vector = np.array([0.75, 0.65, 0.96, 0.94, 0.99, 0.97, 0.999, 0.9999, 0.9999])
    got = agreeing(vector, hash_sim, AGREEMENT)
    assert got.tolist() == [True, False, True, False, True, False, False, False, False]


def _store(tmp_path: Path, pictures: list[np.ndarray], vectors: np.ndarray,
           splits: list[str | None]) -> FeatureStore:  # fmt: skip
    folder = tmp_path / "images"
    folder.mkdir()
    rows = []
    for i, pixels in enumerate(pictures):
        path = folder / f"{i:03d}.png"
        Image.fromarray(pixels).save(path)
        key = hashlib.sha256(path.read_bytes()).hexdigest()
        rows.append(DatasetRow(key, str(path), i % 3, splits[i]))
    store = FeatureStore(tmp_path / "store")
    store.register_extractor(FP, {"profile": "caffe", "weights_note": "RANDOM test vectors"})
    store.put_batch([r.key for r in rows], {"fc7": vectors.astype(np.float32)}, FP)
    store.add_dataset("d", rows, ["a", "b", "c"])
    return store


def test_vectors_alone_never_group_distinct_pictures(tmp_path: Path) -> None:
    """Blank patches through random weights: vector cosines near 1, hashes far apart."""
    rng = np.random.default_rng(0)
    n = 60
    pictures = [generated_photo(rng, 32) for _ in range(n)]
    base = rng.standard_normal((4, 32))
    vectors = 10 + base[np.arange(n) % 4] + 1e-4 * rng.standard_normal((n, 32))
    store = _store(tmp_path, pictures, vectors, ["test" if i % 4 == 0 else "train"
                                                 for i in range(n)])  # fmt: skip
    report = doctor(store, "d")
    near = report.near_duplicates
    assert len(near) > 0 and not near.grouped.any()  # listed for review, never grouped
    assert (near.vector_similarity > 0.999).any()
    assert set(near.signal) <= {"vector", "hash"}
    assert report.leakage == {"val": 0.0, "test": 0.0}
    assert report.groups_with_copies == 0
    assert "0 pair(s) grouped" in "\n".join(report.summary())


def test_cross_split_names_the_carved_validation_part(tmp_path: Path) -> None:
    """No val split given: a copy pair inside train with one side in the part `train` holds
    out is cross-split, and says so; the val leakage counts it."""
    rng = np.random.default_rng(1)
    pictures = [generated_photo(rng, 32) for _ in range(40)]
    vectors = rng.standard_normal((40, 32)) + 5
    folder = tmp_path / "probe"
    folder.mkdir()

    def key(pixels: np.ndarray) -> str:
        Image.fromarray(pixels).save(folder / "p.png")
        return hashlib.sha256((folder / "p.png").read_bytes()).hexdigest()

    kept = next(i for i in range(40) if key_fraction(key(pictures[i])) >= 0.2)
    carved = (kept + 1) % 40
    for level in range(256):  # another file (another key) of the same picture, carved
        copy = pictures[kept].copy()
        copy[0, 0] = level
        if key_fraction(key(copy)) < 0.2:
            break
    pictures[carved] = copy
    vectors[carved] = vectors[kept] + 1e-3
    store = _store(tmp_path, pictures, vectors, ["train"] * 30 + ["test"] * 10)
    report = doctor(store, "d")
    assert report.val_carved
    pair = report.near_duplicates.iloc[0]
    assert pair.grouped and pair.leaks and pair.cross_split and pair.signal == "hash+vector"
    assert {pair.part_a, pair.part_b} == {"train", CARVED}
    assert {pair.split_a, pair.split_b} == {"train"}
    assert report.leaked_rows["val"] >= 1 and report.leaked_rows["test"] == 0
    assert report.as_json()["val_part"] == CARVED
    assert f"leakage {CARVED}" in "\n".join(report.summary())


@pytest.mark.slow
def test_plain_pictures_report_no_leakage(tmp_path: Path, weights_path: Path) -> None:
    """Through the network (random weights): digit scans, scikit-learn's and scikit-image's
    photos (tiles, LFW faces and non-faces) and made-up photos, none a copy of another."""
    from featcache.extractor.pipeline import extract

    store = FeatureStore(tmp_path / "store")
    for name, write in (
        ("digits", lambda root: write_plain_digits(root, 300)),
        ("photos", lambda root: write_plain_photos(root, side=160)),
        ("generated", lambda root: write_generated_photos(root, 100)),
    ):
        write(tmp_path / name)
        extract(tmp_path / name, weights_path, store, dataset=name)
        report = doctor(store, name)
        assert report.leakage["test"] <= 0.02, (name, report.leakage)
        assert report.leakage["val"] <= 0.02, (name, report.leakage)
        assert report.near_duplicates.grouped.sum() <= 2, name
