"""A dataset is named from the path as it was given (a symlink keeps its own name), and a
dataset named by default is never rewritten from another source without --dataset."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import CountingNetwork, write_images
from featcache.errors import ConfigError
from featcache.extractor.pipeline import extract
from featcache.extractor.weights import Weights
from featcache.store import FeatureStore

STUB = Weights(Path("stub-alexnet.npy"), {}, "ab" * 32, "RANDOM stub weights for tests")


def run(source: str | Path, store: Path, **kwargs: object) -> str | None:
    report = extract(source, STUB, store, network_factory=CountingNetwork, **kwargs)  # type: ignore[arg-type]
    return report.dataset


def test_a_symlinked_folder_keeps_its_own_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_images(tmp_path / "photos_ds", 4)
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    os.symlink("../photos_ds", "myphotos")
    store = tmp_path / "s"
    assert run("../photos_ds", store) == "photos_ds"
    assert run("myphotos", store) == "myphotos"
    assert run("myphotos/", store) == "myphotos"
    with FeatureStore(store, create=False) as fs:
        assert fs.datasets() == ["myphotos", "photos_ds"]
        assert fs.dataset("photos_ds").rows == fs.dataset("myphotos").rows == 4
        # paths are keyed absolute (test_dataset_paths), the symlink's own name kept
        photos, mine = f"{os.getcwd()}/../photos_ds", f"{os.getcwd()}/myphotos/"
        photos = os.path.normpath(photos) + "/"
        assert all(r.path.startswith(photos) for r in fs.dataset_rows("photos_ds"))
        assert all(r.path.startswith(mine) for r in fs.dataset_rows("myphotos"))


def test_a_file_is_named_by_its_stem_as_given(tmp_path: Path) -> None:
    write_images(tmp_path / "real", 2)
    (tmp_path / "list.csv").write_text("path,label\nreal/a/img0000.png,a\nreal/b/img0001.png,b\n")
    os.symlink(tmp_path / "list.csv", tmp_path / "mine.csv")
    assert run(tmp_path / "mine.csv", tmp_path / "s") == "mine"


def test_default_name_never_replaces_another_sources_rows(tmp_path: Path) -> None:
    write_images(tmp_path / "a" / "train", 4, seed=1)
    write_images(tmp_path / "b" / "train", 4, seed=2)
    store = tmp_path / "s"
    assert run(tmp_path / "a" / "train", store) == "train"
    assert run(tmp_path / "a" / "train", store) == "train"  # the same source again: fine
    said = (
        "dataset 'train' holds rows from folder .*a/train, not from folder .*b/train; to "
        "change its rows say so with --dataset train, or pick a new name with --dataset NAME"
    )
    with pytest.raises(ConfigError, match=said):
        run(tmp_path / "b" / "train", store)
    with pytest.raises(ConfigError, match="holds rows from"):
        run(tmp_path / "b" / "train", store, append=True)
    with FeatureStore(store, create=False) as fs:
        assert all("/a/train/" in r.path for r in fs.dataset_rows("train"))
    assert run(tmp_path / "b" / "train", store, dataset="train") == "train"  # said so
    with FeatureStore(store, create=False) as fs:
        assert all("/b/train/" in r.path for r in fs.dataset_rows("train"))
