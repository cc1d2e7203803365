"""The HTTP service with TensorFlow: unseen uploads are extracted in batches, stored and
answered. (The rest of the service is tested without TensorFlow in test_service_*.py.)"""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx2 as httpx
import numpy as np
import pytest
import uvicorn
from PIL import Image

from conftest import make_trained_store
from featcache.service import ServiceConfig, create_app
from featcache.store import FeatureStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, weights_path: Path) -> Path:
    return make_trained_store(tmp_path_factory.mktemp("service"), weights_path, 12)


def png(seed: int, size: int = 32) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture
def live(served: Path, weights_path: Path) -> Iterator[str]:
    """A real uvicorn server on 127.0.0.1, started and stopped by the test."""
    config = ServiceConfig(
        store=served / "store",
        head="signs",
        weights=weights_path,
        head_refresh_seconds=0.2,
        batch_window_seconds=0.2,
    )
    server = uvicorn.Server(
        uvicorn.Config(create_app(config), host="127.0.0.1", port=0, log_level="warning")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(30)


def test_unseen_uploads_are_batched_stored_and_answered(live: str, served: Path) -> None:
    images = [png(1000 + i) for i in range(4)]

    def send(data: bytes) -> dict[str, object]:
        r = httpx.post(f"{live}/v1/predict", files={"files": ("new.png", data)}, timeout=120)
        assert r.status_code == 200, r.text
        return r.json()["results"][0]  # type: ignore[no-any-return]

    with ThreadPoolExecutor(4) as pool:
        first = list(pool.map(send, images))
    assert all(r["cached"] is False and r["predictions"] for r in first)
    store = FeatureStore(served / "store")
    keys = [hashlib.sha256(d).hexdigest() for d in images]
    head = store.head("signs")
    assert store.has(keys, head.meta["fingerprint"], "fc7") == set(keys)
    again = httpx.get(f"{live}/v1/predictions/{keys[0]}").json()
    assert again["predictions"] == first[0]["predictions"]
    metrics = httpx.get(f"{live}/metrics").text
    sizes = [
        line
        for line in metrics.splitlines()
        if line.startswith("featcache_extraction_batch_size_sum")
    ]
    counts = [
        line
        for line in metrics.splitlines()
        if line.startswith("featcache_extraction_batch_size_count")
    ]
    assert float(sizes[0].split()[-1]) == 4 and float(counts[0].split()[-1]) < 4  # batched
