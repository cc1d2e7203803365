"""FineTuneHead in bounded memory: a cut's vectors streamed from the store's shards give the
same head, bit for bit, as the same vectors in memory, with the linear probe's fc7 rows
spilled to a temporary file; no read gathers the whole matrix."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from featcache.classifier.finetune import FineTuneHead
from featcache.classifier.rows import lazy_vectors
from featcache.classifier.spill import ComputedRows
from featcache.store import DatasetRow, FeatureStore
from test_finetune_cuts import tiny_conv3_data, tiny_net

FP = "e" * 64


def test_computed_rows_read_the_same_in_memory_and_spilled(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    data = rng.standard_normal((50, 7)).astype(np.float32)
    rows = np.array([0, 3, 4, 49])
    with ComputedRows(50) as small, ComputedRows(50, max_memory_bytes=0, folder=tmp_path) as big:
        for part in (data[:20], data[20:]):
            small.append(part)
            big.append(part)
        assert not small.spilled and big.spilled and big.shape == (50, 7)
        assert len(list(tmp_path.iterdir())) == 1  # the temporary folder
        np.testing.assert_array_equal(small.read_rows(rows), data[rows])
        np.testing.assert_array_equal(big.read_rows(rows), data[rows])
        assert big.read_rows(rows).dtype == np.float32
    assert list(tmp_path.iterdir()) == []  # deleted with the block
    with ComputedRows(3) as partial:
        partial.append(data[:2])
        with pytest.raises(ValueError, match="only 2 of 3 rows were appended"):
            partial.read_rows(np.arange(2))
        with pytest.raises(ValueError, match=r"block of shape \(2, 3\); expected \(k, 7\)"):
            partial.append(data[:2, :3])
        with pytest.raises(ValueError, match="4 rows appended to 3"):
            partial.append(data[:2])


class CountingRows:
    """A row source that remembers how many rows each read asked for."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.shape = inner.shape  # type: ignore[attr-defined]
        self.reads: list[int] = []

    def read_rows(self, rows: np.ndarray) -> np.ndarray:
        self.reads.append(len(rows))
        out: np.ndarray = self.inner.read_rows(rows)  # type: ignore[attr-defined]
        return out


def conv3_store(path: Path, n: int) -> FeatureStore:
    """`n` tiny conv3 maps (5x5x4, flattened) stored in float16 as dataset 'maps'."""
    x, y = tiny_conv3_data(n)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(n)]
    store = FeatureStore(path)
    store.register_extractor(FP, {"weights_sha256": "a" * 64, "weights_note": "RANDOM test"})
    store.put_batch(keys, {"conv3": x}, FP, dtype="float16")
    store.add_dataset("maps", [DatasetRow(k, f"{i}.png", int(y[i])) for i, k in enumerate(keys)])
    return store


@pytest.mark.slow
def test_a_conv_cut_streamed_from_the_shards_equals_the_fit_in_memory(tmp_path: Path) -> None:
    n = 400
    store = conv3_store(tmp_path / "s", n)
    data = lazy_vectors(store, "maps", "conv3")
    in_memory = store.vectors("maps", "conv3").X  # the same float16-rounded values
    net = tiny_net()
    params = {"cut": "conv3", "epochs": 2, "random_state": 5}

    streamed = FineTuneHead(**params)
    streamed._probe_memory_bytes = 0  # the probe's fc7 rows go to a temporary file
    counting = CountingRows(data.X)
    streamed.fit(counting, data.y, pretrained=net)
    whole = FineTuneHead(**params).fit(in_memory, data.y, pretrained=net)

    assert streamed.n_iter_ == whole.n_iter_ >= 1
    for a, b in zip(
        streamed.coefs_ + streamed.intercepts_, whole.coefs_ + whole.intercepts_, strict=True
    ):
        np.testing.assert_array_equal(a, b)
    assert streamed.validation_losses_ == whole.validation_losses_
    # read in bounded pieces (mini-batches, the probe's blocks, a 256-row sample), never whole
    assert max(counting.reads) <= 256 < n and sum(counting.reads) > 2 * n
    np.testing.assert_array_equal(streamed.predict(data.X), whole.predict(in_memory))
