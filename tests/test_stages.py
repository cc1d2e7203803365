"""The stages both engines share (prepare, forward, writers), the local engine and the clock."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from conftest import CountingNetwork, write_images
from featcache.data import open_source
from featcache.errors import FeatcacheError
from featcache.extractor.clock import Clock
from featcache.extractor.config import ExtractConfig
from featcache.extractor.local_engine import run_local
from featcache.extractor.stages import (
    Keyed,
    MemoryWriter,
    ShardWriter,
    StoreWriter,
    forward,
    key_items,
    prepare,
    prepare_batch,
    run_batch,
)
from featcache.store import FeatureStore, ShardFiles

FP = "f" * 64


def keyed_folder(folder: Path, count: int, broken: Sequence[int] = ()) -> list[Keyed]:
    write_images(folder, count)
    items = open_source(folder).items
    for i in broken:
        Path(items[i].path).write_bytes(b"broken %d" % i)
    keyed, failed = key_items(items)
    assert not failed
    return keyed


def test_prepare_batch_sets_failures_aside_and_keeps_order(tmp_path: Path) -> None:
    keyed = keyed_folder(tmp_path, 5, broken=[1, 3])
    config = ExtractConfig()
    with ThreadPoolExecutor(2) as pool:
        batch = prepare_batch(keyed, config, pool.map)
    good = [keyed[i] for i in (0, 2, 4)]
    assert batch.keys == [key for _, key in good]
    assert batch.inputs.shape == (3, 227, 227, 3) and batch.inputs.dtype == np.float32
    np.testing.assert_array_equal(batch.inputs[1], prepare(good[1][0], config))
    assert [(f.path, f.key) for f in batch.failed] == [(i.path, k) for i, k in (keyed[1], keyed[3])]
    assert all("not an image in a known format" in f.reason for f in batch.failed)
    empty = prepare_batch([keyed[1]], config)
    assert empty.keys == [] and empty.inputs.shape == (0, 227, 227, 3)


def test_run_batch_writes_what_the_network_computed(
    tmp_path: Path, counting_network: type[CountingNetwork]
) -> None:
    keyed = keyed_folder(tmp_path, 4, broken=[2])
    config = ExtractConfig(layers=("fc6", "fc7"))
    writer = MemoryWriter(config.layers)
    done = run_batch(keyed, counting_network(), writer, config)
    assert done.keys == writer.keys == [keyed[i][1] for i in (0, 1, 3)]
    assert done.written == 3 and [f.path for f in done.failed] == [keyed[2][0].path]
    vectors = writer.vectors()
    assert vectors["fc6"].shape == vectors["fc7"].shape == (3, 4096)
    expected = counting_network().forward(prepare_batch(keyed, config).inputs, ("fc7",))["fc7"]
    np.testing.assert_array_equal(vectors["fc7"], expected)
    assert run_batch([keyed[2]], counting_network(), writer, config).written is None


def test_store_writer_and_shard_writer_store_the_same_vectors(tmp_path: Path) -> None:
    keys = ["a", "b", "c"]
    outputs = {"fc7": np.arange(12, dtype=np.float32).reshape(3, 4)}
    local = FeatureStore(tmp_path / "local")
    assert StoreWriter(local, FP, "float16").write(keys, outputs) == 3
    # The Ray path: a worker writes the shard files, the driver registers them.
    remote = FeatureStore(tmp_path / "remote")
    shards = ShardFiles.in_store(remote.path)
    written = ShardWriter(shards, FP, "float16").write(keys, outputs)
    shard = written["fc7"]
    assert shards.open(shard.name).dtype == np.float16  # stored in the config's dtype
    assert remote.register_shard(shard.name, FP, "fc7", keys, sha256=shard.sha256) == 3
    assert remote.verify().ok
    for store in (local, remote):
        np.testing.assert_array_equal(store.get(keys, FP, "fc7"), outputs["fc7"])


def test_a_network_returning_the_wrong_rows_is_named(tmp_path: Path) -> None:
    class Short:
        def forward(self, batch: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
            return {layer: np.zeros((len(batch) - 1, 8), np.float32) for layer in layers}

    batch = prepare_batch(keyed_folder(tmp_path, 2), ExtractConfig())
    with pytest.raises(FeatcacheError, match=r"returned \(1, 8\) for layer 'fc7', expected \(2,"):
        forward(Short(), batch, ("fc7",))


def test_local_engine_returns_its_result_and_reports_progress(
    tmp_path: Path, counting_network: type[CountingNetwork]
) -> None:
    keyed = keyed_folder(tmp_path, 7, broken=[5])
    config = ExtractConfig(batch_size=3)
    writer = MemoryWriter(config.layers)
    clock = Clock()
    seen: list[tuple[int, int]] = []
    with ThreadPoolExecutor(2) as pool:
        result = run_local(
            keyed,
            counting_network,
            writer,
            config,
            pool,
            clock,
            lambda done, total: seen.append((done, total)),
        )
    assert result.extracted == 6 and [f.path for f in result.failed] == [keyed[5][0].path]
    assert seen == [(3, 7), (6, 7), (7, 7)]
    assert counting_network.calls == 3 and sorted(writer.keys) == sorted(
        key for i, (_, key) in enumerate(keyed) if i != 5
    )
    assert {"decode_wait", "network", "write_wait"} <= set(clock.timings)


def test_reused_input_buffers_never_mix_batches(tmp_path: Path) -> None:
    """Batches are prepared into a few reused buffers: every row the network sees is its
    own image's input, whatever the batch lengths and failures around it."""
    keyed = keyed_folder(tmp_path, 23, broken=[4, 9, 10])
    config = ExtractConfig(batch_size=4, profile="udacity")
    expected = {
        key: prepare(item, config) for i, (item, key) in enumerate(keyed) if i not in (4, 9, 10)
    }
    seen: dict[bytes, np.ndarray] = {}

    class Recording:
        def forward(self, batch: np.ndarray, layers: Sequence[str]) -> dict[str, np.ndarray]:
            for row in batch:
                seen[row.tobytes()] = row.copy()
            return {"fc7": np.zeros((len(batch), 4096), np.float32)}

    writer = MemoryWriter(config.layers)
    with ThreadPoolExecutor(2) as pool:
        result = run_local(keyed, Recording, writer, config, pool, Clock())
    assert result.extracted == 20 and len(result.failed) == 3
    assert len(seen) == 20
    for key in writer.keys:
        assert expected[key].tobytes() in seen, key


def test_clock_sums_stages_from_any_thread_even_on_errors() -> None:
    clock = Clock()
    with clock("a"):
        pass
    with pytest.raises(ZeroDivisionError), clock("a"):
        _ = 1 / 0

    def work() -> None:
        for _ in range(200):
            clock.add("b", 0.5)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert set(clock.timings) == {"a", "b"} and clock.timings["a"] >= 0
    assert clock.timings["b"] == 400.0  # no update lost between threads
