"""`FeatureStore.discard_unregistered`: a Ray run removes the shards its dead workers left,
and only those (its own, by the run identity in their names)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from featcache.errors import ConfigError
from featcache.store import FeatureStore, ShardFiles


def test_only_this_runs_unregistered_shards_go(tmp_path: Path) -> None:
    store = FeatureStore(tmp_path / "st")
    files = ShardFiles.in_store(store.path)
    fp, matrix = "f" * 64, np.ones((2, 4), np.float32)
    kept = files.write(fp, "fc7", matrix, prefix="ray-run1-")
    store.register_shard(kept.name, fp, "fc7", ["a", "b"], sha256=kept.sha256)
    left = files.write(fp, "fc7", matrix, prefix="ray-run1-")  # a worker died before reporting
    other_run = files.write(fp, "fc7", matrix, prefix="ray-run2-")
    untagged = files.write(fp, "fc7", matrix)
    folder = files.path(left.name).parent
    temporary = folder / f".tmp-123-abcdef012345-ray-run1-{'0' * 32}.npy"
    temporary.write_bytes(b"half a shard")

    removed = store.discard_unregistered("ray-run1-")

    assert sorted(removed) == sorted([left.name, f"{fp[:16]}/fc7/{temporary.name}"])
    assert not files.path(left.name).exists() and not temporary.exists()
    for shard in (kept, other_run, untagged):
        assert files.path(shard.name).exists()
    assert store.discard_unregistered("ray-run1-") == []


def test_an_empty_prefix_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="prefix"):
        FeatureStore(tmp_path / "st").discard_unregistered("")
