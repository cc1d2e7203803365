"""The Ray engine: extraction spread over a Ray cluster with Ray Data, landing in the same store.

The driver has already hashed the inputs and dropped the keys the store holds. Here it
hands the rest to ``map_batches`` over a pool of actors; each actor builds one AlexNet, and
for every batch decodes, computes and writes one shard per layer into the store's own
directory (a shared filesystem path on a cluster), returning (key, shard, row) or the reason
an image failed. The driver registers the shards in the catalog as results stream back, so
a killed run resumes like a local one: registered shards are kept, unregistered files are
garbage (``featcache store gc``).

Ray is optional: ``pip install "featcache[ray]"``.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from featcache.data.source import ImageItem
from featcache.errors import DependencyError, ImageError
from featcache.extractor.clock import Clock
from featcache.extractor.config import ExtractConfig
from featcache.extractor.fingerprint import ExtractorSpec
from featcache.extractor.stages import EngineResult, Failed, Keyed, Progress, run_batch
from featcache.store import FeatureStore, ShardFiles, ShardInfo

__all__ = ["compute_on_ray", "require_ray"]


def require_ray() -> Any:
    """Import Ray, or raise `DependencyError` saying how to install it."""
    try:
        import ray
        import ray.data
    except ImportError as exc:
        raise DependencyError(
            f"engine 'ray' needs Ray Data: pip install \"featcache[ray]\" (import failed: {exc})"
        ) from exc
    return ray


def _row(item: ImageItem, key: str) -> dict[str, Any]:
    if item.array is not None:
        pixels = np.ascontiguousarray(item.array)
        return {
            "key": key,
            "path": item.path,
            "file": "",
            "pixels": pixels.tobytes(),
            "shape": ",".join(map(str, pixels.shape)),
        }
    if item.file is None:  # in-memory uploads never reach the Ray engine
        raise ImageError(f"{item.path}: the Ray engine reads files or arrays, not uploads")
    return {
        "key": key,
        "path": item.path,
        "file": str(item.file.resolve()),
        "pixels": b"",
        "shape": "",
    }


def _item(path: str, file: str, pixels: bytes, shape: str) -> ImageItem:
    if file:
        return ImageItem(path, file=Path(file))
    dims = tuple(int(d) for d in shape.split(","))
    return ImageItem(path, array=np.frombuffer(pixels, dtype=np.uint8).reshape(dims))


class _ExtractActor:
    """One network per actor, built once; each call runs the shared stages on a batch."""

    def __init__(
        self, weights: str, spec: dict[str, str], store: str, config: ExtractConfig, threads: int
    ) -> None:
        from featcache.extractor._tf import import_tensorflow
        from featcache.extractor.network import TENSORFLOW
        from featcache.extractor.stages import ShardWriter
        from featcache.extractor.weights import read_weights

        import_tensorflow(threads)  # one actor per CPU share: TensorFlow's pools to that share
        self.spec = ExtractorSpec(**spec)
        self.config = config
        self.network = TENSORFLOW.build(read_weights(weights), self.spec)
        self.writer = ShardWriter(ShardFiles.in_store(store), self.spec.fingerprint, config.dtype)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        n = len(batch["key"])
        entries: list[Keyed] = [
            (
                _item(
                    str(batch["path"][i]),
                    str(batch["file"][i]),
                    bytes(batch["pixels"][i]),
                    str(batch["shape"][i]),
                ),
                str(batch["key"][i]),
            )
            for i in range(n)
        ]
        done = run_batch(entries, self.network, self.writer, self.config)
        row_of = {key: row for row, key in enumerate(done.keys)}
        errors = {f.key: f.reason for f in done.failed}
        keys = [key for _, key in entries]
        written: dict[str, ShardInfo] = done.written or {}
        out: dict[str, Any] = {
            "key": batch["key"],
            "path": batch["path"],
            "error": np.array([errors.get(key, "") for key in keys], dtype=object),
            "row": np.array([row_of.get(key, -1) for key in keys], dtype=np.int64),
        }
        for layer in self.config.layers:
            shard = written.get(layer)
            out[f"shard_{layer}"] = np.array([shard.name if shard else ""] * n, dtype=object)
            out[f"sha256_{layer}"] = np.array([shard.sha256 if shard else ""] * n, dtype=object)
        return out


def compute_on_ray(
    todo: list[Keyed],
    weights_path: Path,
    spec: ExtractorSpec,
    store: FeatureStore,
    config: ExtractConfig,
    clock: Clock,
    progress: Progress | None = None,
) -> EngineResult:
    """Extract `todo` on Ray with ``config.workers`` actors; register their shards in `store`."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(
            address=config.ray_address,
            ignore_reinit_error=True,
            log_to_driver=False,
            include_dashboard=False,
        )
    ray.data.DataContext.get_current().enable_progress_bars = False
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    t = time.perf_counter()
    rows = [_row(item, key) for item, key in todo]
    # At least one block per actor (or Ray leaves actors idle), at most a batch per block.
    blocks = max(min(len(rows), config.workers), -(-len(rows) // config.batch_size))
    actors = min(config.workers, blocks)
    per_actor = max(1.0, cpus // actors) if config.ray_address is None else 1.0
    results = ray.data.from_items(rows, override_num_blocks=blocks).map_batches(
        _ExtractActor,
        fn_constructor_kwargs={
            "weights": str(weights_path.resolve()),
            "spec": {
                "weights_sha256": spec.weights_sha256,
                "profile": spec.profile,
                "resize": spec.resize,
                "precision": spec.precision,
            },
            "store": str(Path(store.path).resolve()),
            "config": config,
            "threads": int(per_actor),
        },
        batch_size=config.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=per_actor,
    )
    result = EngineResult()
    done = 0
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        by_shard: dict[tuple[str, str, str], list[tuple[int, str]]] = defaultdict(list)
        for i, key in enumerate(batch["key"]):
            if batch["error"][i]:
                result.failed.append(
                    Failed(str(batch["path"][i]), str(batch["error"][i]), str(key))
                )
                continue
            for layer in config.layers:
                name = str(batch[f"shard_{layer}"][i])
                sha256 = str(batch[f"sha256_{layer}"][i])
                by_shard[(layer, name, sha256)].append((int(batch["row"][i]), str(key)))
        extracted: set[str] = set()
        for (layer, name, sha256), entries in by_shard.items():
            keys = [key for _, key in sorted(entries)]
            store.register_shard(name, spec.fingerprint, layer, keys, sha256=sha256)
            extracted.update(keys)
        result.extracted += len(extracted)
        done += len(batch["key"])
        if progress is not None:
            progress(done, len(todo))
    clock.add("network", time.perf_counter() - t)
    return result
