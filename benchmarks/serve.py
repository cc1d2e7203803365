"""HTTP service throughput and latency, measured from 127.0.0.1 against a real server.

    python benchmarks/serve.py [--seconds 5] [--clients 8]

Builds a store (200 generated 32x32 images, seeded RANDOM weights in the real layout),
trains a head, starts ``featcache serve`` with those weights, then for a bounded time with a
bounded number of client threads measures requests/s and p50/p99 latency for:

- cached keys (GET /v1/predictions/{key}), with 1 client and with --clients clients;
- uploads of cached images (POST /v1/predict, one file each);
- uploads of images the store has never seen (extracted, stored, answered).

It prints the error count too (non-2xx or transport errors), which should be 0. The load is
loopback only and stops by itself.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx2 as httpx
import numpy as np
from PIL import Image


def png(seed: int) -> bytes:
    buf = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), np.uint8)
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def drive(
    name: str, clients: int, seconds: float, make_request: Callable[[httpx.Client, int], int]
) -> None:
    latencies: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.perf_counter() + seconds

    def worker(worker_id: int) -> None:
        mine: list[float] = []
        bad = 0
        with httpx.Client(timeout=60) as client:
            i = 0
            while time.perf_counter() < stop:
                start = time.perf_counter()
                try:
                    status = make_request(client, worker_id * 1_000_000 + i)
                except httpx.HTTPError:
                    status = 0
                mine.append(time.perf_counter() - start)
                bad += not 200 <= status < 300
                i += 1
        with lock:
            latencies.extend(mine)
            errors[0] += bad

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    print(
        f"{name:<34} {clients:>2} client(s): {len(ms) / elapsed:8.1f} req/s, "
        f"p50 {np.percentile(ms, 50):7.2f} ms, p99 {np.percentile(ms, 99):7.2f} ms, "
        f"{len(ms)} requests, {errors[0]} errors"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()

    from featcache.classifier.train import train_head
    from featcache.extractor.pipeline import extract
    from featcache.extractor.weights import write_demo_weights
    from featcache.store import FeatureStore

    with tempfile.TemporaryDirectory(prefix="featcache-serve-") as tmp:
        work = Path(tmp)
        weights = write_demo_weights(work / "random_alexnet.npy")
        print("weights: seeded RANDOM weights in the bvlc_alexnet.npy layout (not ImageNet)")
        images = [png(i) for i in range(200)]
        for i, data in enumerate(images):
            folder = work / "data" / str(i % 5)
            folder.mkdir(parents=True, exist_ok=True)
            (folder / f"{i}.png").write_bytes(data)
        store = FeatureStore(work / "store")
        extract(work / "data", weights, store, dataset="bench")
        train_head(store, "bench", name="bench")
        keys = [hashlib.sha256(d).hexdigest() for d in images]

        port = free_port()
        server = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "featcache",
                "serve",
                "--store",
                str(work / "store"),
                "--head",
                "bench",
                "--weights",
                str(weights),
                "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=os.environ.copy(),
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.time() + 60
            while time.time() < deadline:
                try:
                    if httpx.get(f"{base}/healthz").status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.1)
            else:
                sys.exit("server did not start")

            def get_key(client: httpx.Client, i: int) -> int:
                return client.get(f"{base}/v1/predictions/{keys[i % len(keys)]}").status_code

            def upload_cached(client: httpx.Client, i: int) -> int:
                data = images[i % len(images)]
                return client.post(
                    f"{base}/v1/predict", files={"files": ("c.png", data)}
                ).status_code

            def upload_new(client: httpx.Client, i: int) -> int:
                data = png(10_000_000 + i)  # never seen before
                return client.post(
                    f"{base}/v1/predict", files={"files": ("n.png", data)}
                ).status_code

            drive("warm-up", 1, 1.0, get_key)
            drive("cached key GET", 1, args.seconds, get_key)
            drive("cached key GET", args.clients, args.seconds, get_key)
            drive("upload of a cached image", 1, args.seconds, upload_cached)
            drive("upload of a cached image", args.clients, args.seconds, upload_cached)
            start = time.perf_counter()
            first = upload_new(httpx.Client(timeout=120), 999_999_999)
            print(
                f"first unseen upload (loads TensorFlow and the network): "
                f"{time.perf_counter() - start:.2f} s, status {first}"
            )
            drive("upload of an unseen image", 1, args.seconds, upload_new)
            drive("upload of an unseen image", args.clients, args.seconds, upload_new)
            health = httpx.get(f"{base}/healthz").json()
            print(f"server: {health}")
        finally:
            server.terminate()
            server.wait(30)


if __name__ == "__main__":
    main()
