"""A store on object storage against a local one: cached lookup p50 and a streamed epoch,
with the bucket's block cache cold and warm.

    python benchmarks/bucket.py [--rows 5000] [--dim 4096] [--shard-rows 64] [--lookups 200]
                                [--endpoint http://127.0.0.1:9000 --catalog postgresql://...]

Builds the same store twice through the public API (`FeatureStore.put_batch` in shards of
`--shard-rows` rows, as `extract --batch-size 64` writes them, and `add_dataset`): in a local
folder with its SQLite catalog, and on a bucket with its catalog on PostgreSQL. The vectors
are seeded synthetic fc7-like numbers (NOT features of real images). Without `--endpoint`
and `--catalog`, it starts moto's S3 server and a PostgreSQL cluster on 127.0.0.1 the way
the tests do (tests/servers.py; needs ``pip install 'featcache[s3,postgres]' 'moto[server]'``
and Debian's postgresql package). Against moto on the same machine, a GET costs what a
local HTTP round trip costs; a real bucket adds its network latency to every cold fetch.

Per setup it prints, in one run:

- ``lookup``: `--lookups` single-key `FeatureStore.get` of random keys (a cached lookup of
  `predict` and `serve`): p50 in ms
- ``epoch``: every vector of the dataset through `FeatureStore.batches` (what a streamed
  training epoch reads): seconds

for: local folder + SQLite (the baseline; the OS page cache warm), local folder + PostgreSQL
(the catalog's cost alone), bucket + PostgreSQL with an empty block cache (``cold``: a new
host) and again with the cache filled (``warm``), and the ratio of each to the baseline,
with the ranged GETs the block cache made.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import numpy as np

FINGERPRINT = "b0c4e7" * 10 + "beef"
DATASET = "bench"


def synthetic(rows: int, dim: int) -> tuple[list[str], np.ndarray]:
    """Seeded fc7-like vectors (ReLU of noise; NOT features of real images) and their keys."""
    rng = np.random.default_rng(0)
    X = np.maximum(rng.standard_normal((rows, dim), dtype=np.float32), 0)
    keys = [hashlib.sha256(i.to_bytes(8, "little")).hexdigest() for i in range(rows)]
    return keys, X


def build(store: object, keys: list[str], X: np.ndarray, shard_rows: int) -> None:
    from featcache.store import DatasetRow, FeatureStore

    assert isinstance(store, FeatureStore)
    store.register_extractor(FINGERPRINT, {"weights_note": "synthetic benchmark vectors"})
    for lo in range(0, len(keys), shard_rows):
        store.put_batch(keys[lo : lo + shard_rows], {"fc7": X[lo : lo + shard_rows]}, FINGERPRINT)
    rows = [DatasetRow(k, f"img{i}.png", i % 10) for i, k in enumerate(keys)]
    store.add_dataset(DATASET, rows, [f"c{i}" for i in range(10)])


def measure(
    store: object, keys: list[str], lookups: int, empty: Callable[[], None]
) -> tuple[float, float]:
    """(lookup p50 in ms, epoch seconds); `empty()` runs before each lookup and the epoch."""
    from featcache.store import FeatureStore

    assert isinstance(store, FeatureStore)
    rng = np.random.default_rng(1)
    times = []
    for i in rng.integers(0, len(keys), lookups):
        empty()
        t = time.perf_counter()
        store.get([keys[int(i)]], FINGERPRINT)
        times.append(time.perf_counter() - t)
    empty()
    t = time.perf_counter()
    total = 0.0
    for batch in store.batches(DATASET, batch_size=4096):
        total += float(batch.X[:, 0].sum())
    return statistics.median(times) * 1e3, time.perf_counter() - t


@contextmanager
def servers(endpoint: str | None, catalog: str | None) -> Iterator[tuple[str, str]]:
    """The given S3 endpoint and PostgreSQL URL, or servers started like the tests'."""
    with ExitStack() as stack:
        if endpoint is None or catalog is None:
            sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
            from servers import new_database, postgres_server, s3_server

            if endpoint is None:
                endpoint = stack.enter_context(s3_server())
            if catalog is None:
                catalog = new_database(stack.enter_context(postgres_server()))
        yield endpoint, catalog


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--dim", type=int, default=4096)
    parser.add_argument("--shard-rows", type=int, default=64)
    parser.add_argument("--lookups", type=int, default=200)
    parser.add_argument("--endpoint", help="an S3 endpoint (default: start moto_server)")
    parser.add_argument("--catalog", help="a PostgreSQL URL (default: start a cluster)")
    args = parser.parse_args()

    import fsspec

    from featcache.store import FeatureStore

    keys, X = synthetic(args.rows, args.dim)
    root = Path(tempfile.mkdtemp(prefix="featcache-bucket-"))
    try:
        with servers(args.endpoint, args.catalog) as (endpoint, catalog):
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
            os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
            os.environ["AWS_ENDPOINT_URL"] = endpoint
            os.environ["FEATCACHE_CACHE"] = str(root / "cache")
            name = f"fc-bench-{os.getpid()}"
            fsspec.filesystem("s3").mkdir(name)
            url = f"s3://{name}/store"
            postgres_local = catalog.rsplit("/", 1)[0] + "/postgres"  # the admin database
            import psycopg

            second = f"fc_bench_{os.getpid()}"
            with psycopg.connect(postgres_local, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {second}")
            local_pg = catalog.rsplit("/", 1)[0] + f"/{second}"

            setups = [
                ("local folder + SQLite", str(root / "local"), ""),
                ("local folder + PostgreSQL", str(root / "local-pg"), local_pg),
                ("bucket + PostgreSQL, cache cold", url, catalog),
                ("bucket + PostgreSQL, cache warm", url, catalog),
            ]
            for _, where, cat in setups[:3]:
                with FeatureStore(where, catalog=cat) as store:
                    build(store, keys, X, args.shard_rows)
            print(
                f"{args.rows} rows x {args.dim} float32 ({X.nbytes / 2**20:.0f} MiB) in shards "
                f"of {args.shard_rows} rows; synthetic vectors; S3 at {endpoint}"
            )
            print(f"{'setup':34} {'lookup p50':>11} {'ratio':>6} {'epoch':>8} {'ratio':>6} GETs")
            base: tuple[float, float] | None = None
            for label, where, cat in setups:
                with FeatureStore(where, catalog=cat, create=False) as store:
                    cache = getattr(store._shards, "cache", None)

                    def empty(cold: bool = label.endswith("cold"), cache: Any = cache) -> None:
                        if cold:  # a new host: nothing cached (the open-shard LRU neither)
                            store._maps.clear()
                            shutil.rmtree(cache.folder, ignore_errors=True)

                    lookup, epoch = measure(store, keys, args.lookups, empty)
                    gets = "" if cache is None else str(cache.fetches)
                if base is None:
                    base = (lookup, epoch)
                print(
                    f"{label:34} {lookup:8.3f} ms {lookup / base[0]:5.1f}x {epoch:7.2f}s "
                    f"{epoch / base[1]:5.1f}x {gets}"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
