"""Dataset readers: folder, split folders, CSV manifest, train.p pickle, npz, class names."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

from conftest import Evil, write_images
from featcache.data import open_source, read_class_names
from featcache.data.source import array_key
from featcache.errors import DataError, ImageError, UnsafePickleError


def test_folder_classes_sorted_and_labelled(tmp_path: Path) -> None:
    write_images(tmp_path, 6, classes=("zebra", "ant", "moth"))
    source = open_source(tmp_path)
    assert source.class_names == ["ant", "moth", "zebra"]
    labels = {Path(i.path).parent.name: i.label for i in source.items}
    assert labels == {"ant": 0, "moth": 1, "zebra": 2}
    assert all(i.split is None for i in source.items)


def test_split_folders_become_splits(tmp_path: Path) -> None:
    write_images(tmp_path / "train", 4, classes=("a", "b"))
    write_images(tmp_path / "test", 2, seed=1, classes=("b",))
    source = open_source(tmp_path)
    assert source.class_names == ["a", "b"]
    assert sorted({i.split for i in source.items}) == ["test", "train"]
    assert [i.label for i in source.items if i.split == "test"] == [1, 1]


def test_empty_folder_is_explained(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no images; expected ROOT/image.png \(unlabelled\)"):
        open_source(tmp_path)


def test_manifest_relative_paths_names_and_splits(tmp_path: Path) -> None:
    paths = write_images(tmp_path / "imgs", 3)
    (tmp_path / "m.csv").write_text(
        "path,label,split\n"
        f"imgs/a/{paths[0].name},stop,train\n"
        f"imgs/b/{paths[1].name},yield,test\n"
        f"imgs/a/{paths[2].name},stop,\n"
    )
    source = open_source(tmp_path / "m.csv")
    assert source.class_names == ["stop", "yield"]
    assert [(i.label, i.split) for i in source.items] == [(0, "train"), (1, "test"), (0, None)]
    assert Path(source.items[0].path) == paths[0].resolve()


def test_manifest_int_labels_named_by_signnames(tmp_path: Path) -> None:
    paths = write_images(tmp_path, 2)
    (tmp_path / "signnames.csv").write_text("ClassId,SignName\n1,Yield\n0,Speed limit (20km/h)\n")
    (tmp_path / "m.csv").write_text(f"path,label\na/{paths[0].name},1\nb/{paths[1].name},0\n")
    source = open_source(tmp_path / "m.csv", class_names_file=tmp_path / "signnames.csv")
    assert source.class_names == ["Speed limit (20km/h)", "Yield"]
    assert [i.label for i in source.items] == [1, 0]


def test_manifest_label_out_of_range_names_line(tmp_path: Path) -> None:
    (tmp_path / "names.csv").write_text("ClassId,SignName\n0,A\n1,B\n")
    (tmp_path / "m.csv").write_text("path,label\nx.png,0\ny.png,7\n")
    with pytest.raises(DataError, match=r"m\.csv, line 3: label 7 is outside 0\.\.1"):
        open_source(tmp_path / "m.csv", class_names_file=tmp_path / "names.csv")


def test_manifest_without_path_column(tmp_path: Path) -> None:
    (tmp_path / "m.csv").write_text("file,label\nx.png,0\n")
    with pytest.raises(DataError, match="header must name 'path'"):
        open_source(tmp_path / "m.csv")


def test_class_names_file_with_gap(tmp_path: Path) -> None:
    (tmp_path / "n.csv").write_text("ClassId,SignName\n0,A\n2,C\n")
    with pytest.raises(DataError, match="without gaps"):
        read_class_names(tmp_path / "n.csv")


def test_train_p_pickle_read_safely(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    features = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    labels = np.array([0, 2, 1, 2, 0])
    with open(tmp_path / "train.p", "wb") as f:
        pickle.dump({"features": features, "labels": labels, "sizes": None}, f)
    source = open_source(tmp_path / "train.p")
    assert source.class_names == ["0", "1", "2"]
    assert [i.label for i in source.items] == [0, 2, 1, 2, 0]
    np.testing.assert_array_equal(source.items[1].rgb(), features[1])
    assert source.items[1].key() == array_key(features[1])
    assert source.items[0].path.endswith("train.p#0")


def test_pickle_that_runs_code_is_refused(tmp_path: Path) -> None:
    with open(tmp_path / "train.p", "wb") as f:
        pickle.dump({"features": Evil(tmp_path / "pwned"), "labels": [0]}, f)
    with pytest.raises(UnsafePickleError, match=r"train\.p: refused to load '(posix|os)\.system'"):
        open_source(tmp_path / "train.p")
    assert not (tmp_path / "pwned").exists()


def test_pickle_with_wrong_arrays(tmp_path: Path) -> None:
    with open(tmp_path / "train.p", "wb") as f:
        features = np.linspace(-1, 1, 2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
        pickle.dump({"features": features, "labels": [0, 1]}, f)
    said = (
        r"images are float32 in \[-1, 1\]; featcache reads 0-255 or, for floats, 0-1. "
        r"Rescale them, e.g. images = \(images - images.min\(\)\)"
    )
    with pytest.raises(DataError, match=said):
        open_source(tmp_path / "train.p")
    with open(tmp_path / "t2.p", "wb") as f:
        pickle.dump({"features": np.zeros((2, 4, 4, 3), np.uint8), "labels": np.array([0])}, f)
    with pytest.raises(DataError, match=r"2 images but labels of shape \(1,\); give one per image"):
        open_source(tmp_path / "t2.p")


def test_float_images_and_string_labels_are_accepted(tmp_path: Path) -> None:
    pixels = np.random.default_rng(0).integers(0, 256, (3, 4, 4, 3)).astype(np.uint8)
    np.savez(tmp_path / "unit.npz", images=pixels / 255.0, labels=np.array(["cat", "ant", "cat"]))
    np.savez(tmp_path / "byte.npz", images=pixels.astype(np.float32), labels=[2.0, 0.0, 2.0])
    unit, byte = open_source(tmp_path / "unit.npz"), open_source(tmp_path / "byte.npz")
    assert unit.class_names == ["ant", "cat"] and [i.label for i in unit.items] == [1, 0, 1]
    assert [i.label for i in byte.items] == [2, 0, 2] and byte.class_names == ["0", "1", "2"]
    for source in (unit, byte):  # the same pixels, so the same keys as the uint8 images
        assert (source.items[1].rgb() == pixels[1]).all()
    assert unit.items[0].key() == byte.items[0].key()
    assert "float64 in [0, 1], scaled by 255" in unit.description
    assert "float32 in [0, 255], rounded to uint8" in byte.description
    names = tmp_path / "names.csv"
    names.write_text("ClassId,SignName\n0,dog\n1,cat\n2,ant\n")
    named = open_source(tmp_path / "unit.npz", class_names_file=names)
    assert [i.label for i in named.items] == [1, 2, 1]
    names.write_text("ClassId,SignName\n0,dog\n1,cow\n")
    with pytest.raises(
        DataError, match="label 'cat' \\(row 0\\) is not a class of the class-names file"
    ):
        open_source(tmp_path / "unit.npz", class_names_file=names)
    np.savez(tmp_path / "half.npz", images=pixels, labels=[0.5, 1.0, 2.0])
    with pytest.raises(DataError, match="label 0.5 at row 0 is not a whole number"):
        open_source(tmp_path / "half.npz")
    np.savez(tmp_path / "bare.npz", images=pixels)
    bare = open_source(tmp_path / "bare.npz")
    assert [i.label for i in bare.items] == [None] * 3 and bare.class_names == []


def test_a_flat_folder_is_unlabelled(tmp_path: Path) -> None:
    for i, path in enumerate(write_images(tmp_path / "x", 3)):
        (tmp_path / "flat").mkdir(exist_ok=True)
        path.rename(tmp_path / "flat" / f"p{i}.png")
    source = open_source(tmp_path / "flat")
    assert source.class_names == [] and [i.label for i in source.items] == [None] * 3
    assert source.description.endswith("(unlabelled)")


def test_npz_and_grayscale_arrays(tmp_path: Path) -> None:
    images = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    np.savez(tmp_path / "d.npz", images=images, labels=np.array([1, 0]))
    source = open_source(tmp_path / "d.npz")
    rgb = source.items[0].rgb()
    assert rgb.shape == (4, 4, 3) and (rgb[..., 2] == images[0]).all()


def test_unreadable_file_item(tmp_path: Path) -> None:
    write_images(tmp_path, 2)
    source = open_source(tmp_path)
    Path(source.items[0].path).unlink()
    with pytest.raises(ImageError, match="img0000.png: cannot read"):
        source.items[0].key()


def test_unknown_type(tmp_path: Path) -> None:
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(DataError, match=r"unknown dataset type '\.txt'"):
        open_source(tmp_path / "x.txt")
