"""A small store for the service's tests, made without TensorFlow: PNG files whose fc7
vectors are seeded RANDOM numbers (not network features), and a softmax head trained on them."""

from __future__ import annotations

import hashlib
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import uvicorn
from fastapi import FastAPI
from PIL import Image

from featcache.classifier.train import train_head
from featcache.store import DatasetRow, FeatureStore

FINGERPRINT = "f" * 64
DIM = 32
CLASSES = ("stop", "yield", "priority")
LOCAL = "http://127.0.0.1"  # TestClient base URL: a loopback Host name


def png(seed: int, size: int = 16) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), np.uint8)
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def make_store(root: Path, count: int = 30) -> tuple[Path, list[bytes]]:
    """A store at root/store with `count` images' random vectors and head 'signs' v1."""
    images = [png(i) for i in range(count)]
    keys = [hashlib.sha256(d).hexdigest() for d in images]
    rng = np.random.default_rng(0)
    labels = [i % len(CLASSES) for i in range(count)]
    centres = rng.standard_normal((len(CLASSES), DIM)).astype(np.float32) * 3
    vectors = centres[labels] + rng.standard_normal((count, DIM)).astype(np.float32)
    with FeatureStore(root / "store") as store:
        store.register_extractor(
            FINGERPRINT, {"weights_note": "RANDOM test vectors, not AlexNet features"}
        )
        store.put_batch(keys, {"fc7": vectors}, FINGERPRINT)
        store.add_dataset(
            "signs",
            [DatasetRow(k, f"{i}.png", labels[i]) for i, k in enumerate(keys)],
            list(CLASSES),
        )
        train_head(store, "signs", name="signs", params={"random_state": 0})
    return root / "store", images


def retrain(store_path: Path, l2: float) -> int:
    """Register a new version of head 'signs'; return its version."""
    with FeatureStore(store_path) as store:
        params = {"random_state": 0, "l2": l2}
        return train_head(store, "signs", name="signs", params=params).record.version


@contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """The app under a real uvicorn on 127.0.0.1 (port chosen by the OS), stopped after."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not server.started and time.time() < deadline:
        time.sleep(0.02)
    if not server.started:
        raise RuntimeError("uvicorn did not start within 30 s")
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
