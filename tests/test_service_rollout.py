"""Rollout: ``heads promote``, and a server following the newest, the promoted or one
pinned version while retrains happen; head specs; the follower swaps by file digest."""

from __future__ import annotations

import dataclasses
import hashlib
import threading
import time
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from typer.testing import CliRunner

from featcache.cli import app as cli_app
from featcache.errors import ConfigError, NotFoundError
from featcache.service import HeadSpec, ServiceConfig, create_app
from featcache.service.heads import HeadFollower
from featcache.store import FeatureStore, HeadRecord
from service_fakes import live_server, make_store, retrain


def test_head_specs() -> None:
    assert HeadSpec.parse("signs") == HeadSpec("signs")
    assert HeadSpec.parse("signs@promoted") == HeadSpec("signs", "promoted")
    assert HeadSpec.parse("signs@3") == HeadSpec("signs", "pinned", 3)
    assert str(HeadSpec.parse("signs@3")) == "signs@3"
    for bad in ("signs@0", "signs@latest", "@3", "a/b", ""):
        with pytest.raises(ConfigError, match="NAME@promoted"):
            HeadSpec.parse(bad)


def test_promote_cli_and_store(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    retrain(store, l2=1.0)
    runner = CliRunner()
    done = runner.invoke(cli_app, ["heads", "promote", "--store", str(store), "signs@1"])
    assert done.exit_code == 0, done.output
    assert "promoted head 'signs' v1" in done.output
    missing = runner.invoke(cli_app, ["heads", "promote", "--store", str(store), "signs@9"])
    assert missing.exit_code != 0 and "no version 9" in missing.output
    with FeatureStore(store) as fs:
        assert fs.promoted_head("signs") == 1
        fs.promote_head("signs", 2)
        assert fs.promoted_head("signs") == 2
        fs.delete_head("signs", 2)
        assert fs.promoted_head("signs") == 1  # the newest promotion still there
        assert fs.promoted_head("other") is None


def test_promoted_needs_a_promotion(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    with FeatureStore(store) as fs, pytest.raises(NotFoundError, match="heads promote"):
        HeadFollower(fs, HeadSpec("signs", "promoted"))


class Relabelled:
    """A store whose head 'signs' v2 (other bytes) is presented as v1, as a store rebuilt
    under the same name would be."""

    def __init__(self, store: FeatureStore) -> None:
        self.store = store

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    def head(self, name: str, version: int | None = None) -> HeadRecord:
        return dataclasses.replace(self.store.head(name, 2), version=1)


def test_follower_swaps_on_a_changed_digest_not_a_version(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    with FeatureStore(store) as fs:
        follower = HeadFollower(fs, HeadSpec("signs"))
        assert not follower.refresh()
        old = follower.live
        retrain(store, l2=3.0)
        follower.store = Relabelled(fs)  # type: ignore[assignment]
        assert follower.refresh()
        assert not follower.refresh()
        assert follower.live.head.version == old.head.version == 1
        assert follower.live.digest == fs.head("signs", 2).sha256 != old.digest


def test_newest_promoted_and_pinned_while_a_retrain_happens(tmp_path: Path) -> None:
    store, images = make_store(tmp_path)
    retrain(store, l2=0.5)  # v2
    with FeatureStore(store) as fs:
        fs.promote_head("signs", 1)
    key = hashlib.sha256(images[0]).hexdigest()
    specs = {"newest": "signs", "promoted": "signs@promoted", "pinned": "signs@2"}
    apps = {
        name: create_app(ServiceConfig(store=store, head=spec, head_refresh_seconds=0.05))
        for name, spec in specs.items()
    }
    seen: dict[str, list[int]] = {name: [] for name in specs}
    failures: list[str] = []
    stop = threading.Event()

    def hammer(base: str, name: str) -> None:
        with httpx.Client(base_url=base, timeout=30) as http:
            while not stop.is_set():
                r = http.get(f"/v1/predictions/{key}")
                if r.status_code != 200:
                    failures.append(r.text)
                else:
                    seen[name].append(r.json()["head"]["version"])

    def served(base: str) -> int:
        return int(httpx.get(f"{base}/v1/heads").json()["served"]["version"])

    def wait_for(base: str, version: int) -> None:
        deadline = time.monotonic() + 10
        while served(base) != version and time.monotonic() < deadline:
            time.sleep(0.02)

    with (
        live_server(apps["newest"]) as newest,
        live_server(apps["promoted"]) as promoted,
        live_server(apps["pinned"]) as pinned,
    ):
        bases = {"newest": newest, "promoted": promoted, "pinned": pinned}
        threads = [threading.Thread(target=hammer, args=(b, n)) for n, b in bases.items()]
        for t in threads:
            t.start()
        try:
            assert [served(bases[n]) for n in specs] == [2, 1, 2]
            v3 = retrain(store, l2=2.0)
            wait_for(newest, v3)
            time.sleep(0.3)  # several refreshes: the others must stay
            assert [served(bases[n]) for n in specs] == [3, 1, 2]
            with FeatureStore(store) as fs:
                fs.promote_head("signs", v3)
            wait_for(promoted, v3)
            assert [served(bases[n]) for n in specs] == [3, 3, 2]
            with FeatureStore(store) as fs:  # roll back
                fs.promote_head("signs", 1)
            wait_for(promoted, 1)
            heads = httpx.get(f"{promoted}/v1/heads").json()
        finally:
            stop.set()
            for t in threads:
                t.join(30)
    assert not failures
    assert seen["pinned"] and set(seen["pinned"]) == {2}
    assert seen["newest"][0] == 2 and seen["newest"][-1] == 3
    assert {1, 3} <= set(seen["promoted"])
    served_head = heads["served"]
    assert served_head["follows"] == "promoted" and served_head["version"] == 1
    assert len(served_head["digest"]) == 64 and served_head["live_since"].endswith("Z")
    assert [h["promoted"] for h in heads["heads"]] == [True, False, False]
