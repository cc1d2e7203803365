"""Image paths are keyed absolute: the same folder given relative or absolute is one set of
rows, and rows an older featcache recorded under relative paths stay the same rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import CountingNetwork, write_images
from featcache.extractor.pipeline import extract
from featcache.extractor.weights import Weights
from featcache.store import DatasetRow, FeatureStore


def _rows(store: FeatureStore, name: str = "d") -> list[tuple[str, str, int | None]]:
    return [(r.path, r.key, r.label) for r in store.dataset_rows(name)]


def test_a_folder_given_relative_then_absolute_is_one_set_of_rows(
    tmp_path: Path, stub_weights: Weights, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_images(tmp_path / "data", 6)
    monkeypatch.chdir(tmp_path)
    with FeatureStore(tmp_path / "store") as store:
        for given in ("data", "./data/", tmp_path / "data", "data/../data"):
            for append in (False, True):
                extract(
                    given,
                    stub_weights,
                    store,
                    dataset="d",
                    append=append,
                    network_factory=CountingNetwork,
                )
                rows = _rows(store)
                assert len(rows) == 6, (given, append)
                assert all(path.startswith(str(tmp_path / "data") + "/") for path, _, _ in rows)


def test_a_symlinked_folder_keeps_its_own_name(tmp_path: Path, stub_weights: Weights) -> None:
    write_images(tmp_path / "data", 4)
    (tmp_path / "link").symlink_to(tmp_path / "data")
    with FeatureStore(tmp_path / "store") as store:
        report = extract(tmp_path / "link", stub_weights, store, network_factory=CountingNetwork)
        assert report.dataset == "link"
        assert all(path.startswith(f"{tmp_path}/link/") for path, _, _ in _rows(store, "link"))


@pytest.mark.parametrize("append", [False, True])
def test_rows_recorded_under_relative_paths_stay_the_same_rows(
    tmp_path: Path, stub_weights: Weights, monkeypatch: pytest.MonkeyPatch, append: bool
) -> None:
    write_images(tmp_path / "data", 6)
    monkeypatch.chdir(tmp_path)
    with FeatureStore(tmp_path / "store") as store:
        extract(
            tmp_path / "data", stub_weights, store, dataset="d", network_factory=CountingNetwork
        )
        now = store.dataset_rows("d")
        # as an older featcache recorded them: paths as given ("data/a/img0000.png")
        old = [
            DatasetRow(r.key, str(Path(r.path).relative_to(tmp_path)), r.label, r.split)
            for r in now
        ]
        store.add_dataset("d", old, store.dataset("d").class_names, source="folder data")
        assert all(not path.startswith("/") for path, _, _ in _rows(store))
        before = store.datasets_generation()
        report = extract(
            tmp_path / "data",
            stub_weights,
            store,
            dataset="d",
            append=append,
            network_factory=CountingNetwork,
        )
        assert report.rows is not None
        assert (report.rows.added, report.rows.removed, report.rows.unchanged) == (0, 0, 6)
        rows = store.dataset_rows("d")
        assert [(r.path, r.key, r.label) for r in rows] == [(r.path, r.key, r.label) for r in now]
        assert store.datasets_generation() > before  # the paths were rewritten in place
        assert store.dataset("d").source == f"folder {tmp_path / 'data'}"
