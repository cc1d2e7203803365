"""Stored paths in the service's answers for keys (issue 12 point 5), without TensorFlow:
`FeatureStore.paths_of`, ``GET /v1/predictions/{key}`` and ``POST /v1/predict/keys``, and
that the answer LRU never serves a path the store no longer holds."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from featcache.service import ServiceConfig, create_app
from featcache.store import DatasetRow, FeatureStore
from service_fakes import CLASSES, LOCAL, make_store


@pytest.fixture()
def store_path(tmp_path: Path) -> tuple[Path, list[str]]:
    """root/store with dataset 'signs' (rows '<i>.png') and head 'signs'; and the keys."""
    path, images = make_store(tmp_path, 6)
    return path, [hashlib.sha256(d).hexdigest() for d in images]


def client(path: Path, **kw: object) -> TestClient:
    config = ServiceConfig(store=path, head="signs", **kw)  # type: ignore[arg-type]
    return TestClient(create_app(config), base_url=LOCAL)


def test_paths_of_knows_dataset_keys_and_leaves_out_others(
    store_path: tuple[Path, list[str]],
) -> None:
    path, keys = store_path
    with FeatureStore(path) as store:
        assert store.paths_of([keys[1], "0" * 64, keys[0], keys[1]]) == {
            keys[1]: "1.png",
            keys[0]: "0.png",
        }
        assert store.paths_of([]) == {}


def test_paths_of_many_keys_in_several_queries(store_path: tuple[Path, list[str]]) -> None:
    path, keys = store_path
    with FeatureStore(path) as store:
        unknown = [f"{i:064x}" for i in range(1200)]  # more than one query's parameters
        assert store.paths_of([*unknown, keys[5]]) == {keys[5]: "5.png"}


def test_a_key_in_several_rows_gets_the_newest_datasets_row(
    store_path: tuple[Path, list[str]],
) -> None:
    path, keys = store_path
    with FeatureStore(path) as store:
        # same image twice in one dataset: the first row in dataset order
        store.add_dataset(
            "twice", [DatasetRow(keys[0], "b.png", 0), DatasetRow(keys[0], "a.png", 0)], CLASSES
        )
        assert store.paths_of([keys[0]]) == {keys[0]: "b.png"}
        time.sleep(0.01)  # a later 'updated' stamp than 'twice'
        store.add_dataset("signs", [DatasetRow(keys[0], "moved/0.png", 0)], CLASSES, append=True)
        assert store.paths_of([keys[0]]) == {keys[0]: "0.png"}  # 'signs', its first row
        time.sleep(0.01)
        store.add_dataset("twice", [DatasetRow(keys[0], "c.png", 0)], CLASSES, append=True)
        assert store.paths_of([keys[0]]) == {keys[0]: "b.png"}


def test_get_and_keys_answers_carry_the_stored_path(store_path: tuple[Path, list[str]]) -> None:
    path, keys = store_path
    with FeatureStore(path) as store:  # a vector that no dataset row holds: path unknown
        store.put_batch(["e" * 64], {"fc7": store.get(keys[:1], "f" * 64, "fc7")}, "f" * 64)
    with client(path) as c:
        got = c.get(f"/v1/predictions/{keys[2]}")
        orphan = c.get(f"/v1/predictions/{'e' * 64}")
        many = c.post("/v1/predict/keys", json={"keys": [keys[3], "0" * 64, "E" * 64]})
    assert got.status_code == 200 and got.json()["path"] == "2.png"
    assert got.json()["predictions"]
    assert orphan.status_code == 200 and orphan.json()["path"] is None
    results = many.json()["results"]
    assert [r["path"] for r in results] == ["3.png", None, None]
    assert results[0]["predictions"] and "error" in results[1] and results[2]["predictions"]


def _path_within(c: TestClient, key: str, expected: str | None) -> dict[str, object]:
    """The GET answer once its path is `expected` (the head refresh renews the path LRU)."""
    deadline = time.monotonic() + 10
    while True:
        answer: dict[str, object] = c.get(f"/v1/predictions/{key}").json()
        if answer["path"] == expected or time.monotonic() > deadline:
            return answer
        time.sleep(0.02)


def test_lru_answers_show_the_path_the_store_holds_now(
    store_path: tuple[Path, list[str]],
) -> None:
    path, keys = store_path
    with client(path, head_refresh_seconds=0.05) as c:
        first = c.get(f"/v1/predictions/{keys[4]}").json()
        assert first["path"] == "4.png"
        assert len(c.app.state.answers) == 1  # type: ignore[attr-defined]
        assert len(c.app.state.paths) == 1  # type: ignore[attr-defined]
        with FeatureStore(path) as store:  # another process re-extracts from a new folder
            store.add_dataset(
                "signs",
                [DatasetRow(k, f"new/{i}.png", i % len(CLASSES)) for i, k in enumerate(keys)],
                CLASSES,
            )
        again = _path_within(c, keys[4], "new/4.png")
        many = c.post("/v1/predict/keys", json={"keys": [keys[4]]}).json()
        assert c.app.state.answers.get(keys[4], c.app.state.follower.live.identity) is not None  # type: ignore[attr-defined]
        with FeatureStore(path) as store:
            store.add_dataset("signs", [DatasetRow(keys[0], "0.png", 0)], CLASSES)
        gone = _path_within(c, keys[4], None)
    assert again["path"] == "new/4.png" and many["results"][0]["path"] == "new/4.png"
    assert again["predictions"] == first["predictions"]
    assert gone["path"] is None and gone["predictions"] == first["predictions"]
