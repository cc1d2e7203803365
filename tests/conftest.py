"""Shared fixtures: seeded random weights (written once per session) and small image sets."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from featcache.extractor.weights import Weights, read_weights, write_demo_weights

REPO = Path(__file__).resolve().parents[1]
REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def weights_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded RANDOM weights in the bvlc_alexnet.npy layout (244 MB), made once per session."""
    return write_demo_weights(tmp_path_factory.mktemp("weights") / "demo_alexnet.npy", seed=0)


@pytest.fixture(scope="session")
def weights(weights_path: Path) -> Weights:
    return read_weights(weights_path)


def write_images(
    folder: Path, count: int, *, seed: int = 0, size: int = 32, classes: Sequence[str] = ("a", "b")
) -> list[Path]:
    """Write `count` random RGB PNGs into folder/<class>/, cycling through `classes`."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        cls = folder / classes[i % len(classes)]
        cls.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        path = cls / f"img{i:04d}.png"
        Image.fromarray(pixels).save(path)
        paths.append(path)
    return paths


class CountingNetwork:
    """A fake network: fc7 = a fixed projection of the input's channel means; counts calls."""

    calls = 0
    images = 0

    def __init__(self, *_: object) -> None:
        pass

    def forward(self, batch: np.ndarray, layers: Sequence[str] = ("fc7",)) -> dict[str, np.ndarray]:
        type(self).calls += 1
        type(self).images += len(batch)
        means = batch.reshape(len(batch), -1, 3).mean(axis=1)
        out = {}
        for layer in layers:
            dim = {"fc6": 4096, "fc7": 4096, "pool5": 9216, "fc8": 1000, "prob": 1000}[layer]
            proj = np.random.default_rng(dim).standard_normal((3, dim)).astype(np.float32)
            out[layer] = np.maximum(means @ proj, 0).astype(np.float32)
        return out


@pytest.fixture
def counting_network() -> type[CountingNetwork]:
    CountingNetwork.calls = 0
    CountingNetwork.images = 0
    return CountingNetwork


class Evil:
    """A pickle payload that runs a shell command when unpickled: it touches `marker`."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, ...]:
        return (os.system, (f"touch {self.marker}",))


def make_trained_store(root: Path, weights: Path, count: int) -> Path:
    """Images in root/data (3 sign classes), extracted into root/store, head 'signs' trained."""
    from featcache.classifier.train import train_head
    from featcache.extractor.pipeline import extract
    from featcache.store import FeatureStore

    write_images(root / "data", count, classes=("stop", "yield", "priority"))
    store = FeatureStore(root / "store")
    extract(root / "data", weights, store, dataset="signs")
    train_head(store, "signs", name="signs", params={"random_state": 0})
    return root


PYTHON = sys.executable
