"""Shared fixtures: seeded random weights (written once per session), a stub for fake-network
tests, small image sets and a counting fake network."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from featcache.extractor import weights as weights_module
from featcache.extractor.weights import (
    LAYER_SHAPES,
    Weights,
    file_sha256,
    read_weights,
    write_demo_weights,
)

REPO = Path(__file__).resolve().parents[1]


def _find_reference() -> Path:
    """shared/reference beside the checkout, or beside a folder above it (git worktrees)."""
    for folder in REPO.parents:
        if (folder / "shared" / "reference").is_dir():
            return folder / "shared" / "reference"
    return REPO.parent / "shared" / "reference"  # absent: the tests that need it skip


REFERENCE = _find_reference()


@pytest.fixture(scope="session", autouse=True)
def local_key_file(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """This test session's local key (featcache.store.localkey), never the user's own: set
    in the environment, so the commands and Ray workers the tests start use it too."""
    path = tmp_path_factory.mktemp("config") / "local.key"
    before = os.environ.get("FEATCACHE_KEY_FILE")
    os.environ["FEATCACHE_KEY_FILE"] = str(path)
    yield path
    if before is None:
        os.environ.pop("FEATCACHE_KEY_FILE", None)
    else:
        os.environ["FEATCACHE_KEY_FILE"] = before


@pytest.fixture(scope="session")
def weights_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Seeded RANDOM weights in the bvlc_alexnet.npy layout (244 MB), made once per session."""
    return write_demo_weights(tmp_path_factory.mktemp("weights") / "demo_alexnet.npy", seed=0)


@pytest.fixture(scope="session")
def weights(weights_path: Path) -> Weights:
    return read_weights(weights_path)


Shapes = dict[str, tuple[int, ...]]

#: AlexNet's layers with tiny shapes: same names, ranks and order as `LAYER_SHAPES`.
SMALL_SHAPES: Shapes = {
    "conv1": (3, 3, 3, 4),
    "conv2": (3, 3, 2, 6),
    "conv3": (3, 3, 6, 8),
    "conv4": (3, 3, 4, 8),
    "conv5": (3, 3, 4, 6),
    "fc6": (24, 10),
    "fc7": (10, 10),
    "fc8": (10, 5),
}
assert list(SMALL_SHAPES) == list(LAYER_SHAPES)
assert all(len(SMALL_SHAPES[name]) == len(shape) for name, shape in LAYER_SHAPES.items())


@pytest.fixture
def small_shapes(monkeypatch: pytest.MonkeyPatch) -> Shapes:
    """Make the weights loader and `write_demo_weights` expect `SMALL_SHAPES` in this test
    (they read `LAYER_SHAPES` when they run), where the real sizes are not the point."""
    monkeypatch.setattr(weights_module, "LAYER_SHAPES", SMALL_SHAPES)
    return SMALL_SHAPES


STUB_NOTE = "stub weights for a fake network (random stand-in), NOT ImageNet-trained"


@pytest.fixture(scope="session")
def stub_weights(tmp_path_factory: pytest.TempPathFactory) -> Weights:
    """For fake-network tests: no layers (the fake ignores them), a small file and its real
    SHA-256, so `extract` given the file's path finds the same fingerprint without reading
    244 MB (a cached run never loads the weights)."""
    path = tmp_path_factory.mktemp("stub") / "stub_weights.npy"
    path.write_bytes(b"featcache test stub: stands in for the weights of a fake network\n")
    return Weights(path=path, layers={}, sha256=file_sha256(path), demo_note=STUB_NOTE)


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


#: VGG16 and ResNet50 narrowed 16 times (the same layers, 1/16 of the filters and units):
#: where the networks' width is not the point, the real 224x224 inputs run through them in
#: milliseconds and their weights files are 3 MB and 1 MB.
NARROW = 16


@pytest.fixture
def narrow_backbones(monkeypatch: pytest.MonkeyPatch) -> int:
    """Make VGG16's and ResNet50's readers and demo writers expect the narrow layouts in
    this test (they read their `LAYER_SHAPES` when they run)."""
    from featcache.extractor import resnet50, vgg16

    monkeypatch.setattr(vgg16, "LAYER_SHAPES", vgg16.vgg16_layer_shapes(NARROW))
    monkeypatch.setattr(resnet50, "LAYER_SHAPES", resnet50.resnet50_layer_shapes(NARROW))
    return NARROW


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[str]:
    """A PostgreSQL server on 127.0.0.1 for the session (see tests/servers.py)."""
    from servers import postgres_server

    with postgres_server() as url:
        yield url


@pytest.fixture
def pg_catalog(postgres_admin: str) -> str:
    """The URL of a fresh, empty database on the session's PostgreSQL server."""
    from servers import new_database

    return new_database(postgres_admin)


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on 127.0.0.1 for the session (see tests/servers.py)."""
    from servers import s3_server

    with s3_server() as endpoint:
        yield endpoint


@pytest.fixture
def bucket(s3_endpoint: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the session's S3 server; its URL. The AWS variables point s3fs at
    the server (as a user's would at theirs) and the block cache goes under tmp_path."""
    import uuid

    import fsspec

    for name, value in {
        "AWS_ENDPOINT_URL": s3_endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "FEATCACHE_CACHE": str(tmp_path / "cache"),
    }.items():
        monkeypatch.setenv(name, value)
    name = f"fc-{uuid.uuid4().hex[:12]}"
    fsspec.filesystem("s3").mkdir(name)
    return f"s3://{name}/store"


def publish_runtime_model(files: Any, fingerprint: str = "f" * 64, *, kib: int = 16) -> Path:
    """Publish a stand-in OpenVINO model (an empty net, `kib` KiB of weights) for fc7 in
    `files` (a store's `RuntimeFiles`); return its folder."""

    def write(folder: Path) -> None:
        (folder / "model.xml").write_text("<net/>")
        (folder / "model.bin").write_bytes(bytes(range(256)) * 4 * kib)

    return Path(
        files.publish(
            fingerprint,
            "openvino-fc7-float32",
            write,
            {"note": "x"},
            layers=["fc7"],
            precision="float32",
        ).folder
    )
