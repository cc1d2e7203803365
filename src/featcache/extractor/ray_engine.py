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
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from featcache.data.source import ImageItem
from featcache.errors import DependencyError, ImageError
from featcache.extractor.fingerprint import ExtractorSpec

if TYPE_CHECKING:  # the pipeline imports this module lazily; no cycle at run time
    from featcache.extractor.pipeline import ExtractConfig, ExtractReport, _Clock
    from featcache.store import FeatureStore, ShardInfo

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
    """One network per actor, built once; each call extracts a batch and writes its shards."""

    def __init__(
        self, weights: str, spec: dict[str, str], store: str, options: dict[str, Any], threads: int
    ) -> None:
        from featcache.extractor._tf import import_tensorflow
        from featcache.extractor.pipeline import build_alexnet
        from featcache.extractor.weights import read_weights
        from featcache.store import ShardFiles

        import_tensorflow(threads)  # one actor per CPU share: TensorFlow's pools to that share
        self.spec = ExtractorSpec(**spec)
        loaded = read_weights(weights)
        self.network = build_alexnet(loaded, self.spec)
        self.shards = ShardFiles.in_store(store)
        self.options = options

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from featcache.extractor.preprocess import preprocess_rgb

        opts = self.options
        n = len(batch["key"])
        errors = [""] * n
        inputs, good = [], []
        for i in range(n):
            item = _item(
                str(batch["path"][i]),
                str(batch["file"][i]),
                bytes(batch["pixels"][i]),
                str(batch["shape"][i]),
            )
            try:
                rgb = item.rgb(max_pixels=opts["max_pixels"])
                inputs.append(preprocess_rgb(rgb, self.spec.profile, self.spec.resize))
                good.append(i)
            except ImageError as exc:
                errors[i] = str(exc)
        rows = np.full(n, -1, dtype=np.int64)
        out: dict[str, Any] = {
            "key": batch["key"],
            "path": batch["path"],
            "error": np.array(errors, dtype=object),
        }
        written: dict[str, ShardInfo] = {}
        if good:
            vectors = self.network.forward(np.stack(inputs), opts["layers"])
            for layer in opts["layers"]:
                matrix = vectors[layer].astype(opts["dtype"], copy=False)
                written[layer] = self.shards.write(self.spec.fingerprint, layer, matrix)
            rows[good] = np.arange(len(good))
        out["row"] = rows
        for layer in opts["layers"]:
            shard = written.get(layer)
            out[f"shard_{layer}"] = np.array([shard.name if shard else ""] * n, dtype=object)
            out[f"sha256_{layer}"] = np.array([shard.sha256 if shard else ""] * n, dtype=object)
        return out


def compute_on_ray(
    todo: list[tuple[ImageItem, str]],
    weights_path: Path,
    spec: ExtractorSpec,
    store: FeatureStore,
    config: ExtractConfig,
    report: ExtractReport,
    progress: Callable[[int, int], None] | None,
    clock: _Clock,
    *,
    address: str | None = None,
) -> None:
    """Extract `todo` on Ray with ``config.workers`` actors; register their shards in `store`."""
    ray = require_ray()
    if not ray.is_initialized():
        ray.init(
            address=address, ignore_reinit_error=True, log_to_driver=False, include_dashboard=False
        )
    ray.data.DataContext.get_current().enable_progress_bars = False
    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    t = time.perf_counter()
    rows = [_row(item, key) for item, key in todo]
    # At least one block per actor (or Ray leaves actors idle), at most a batch per block.
    blocks = max(min(len(rows), config.workers), -(-len(rows) // config.batch_size))
    actors = min(config.workers, blocks)
    per_actor = max(1.0, cpus // actors) if address is None else 1.0
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
            "options": {
                "layers": config.layers,
                "dtype": config.dtype,
                "max_pixels": config.max_pixels,
            },
            "threads": int(per_actor),
        },
        batch_size=config.batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        num_cpus=per_actor,
    )
    done = 0
    for batch in results.iter_batches(batch_size=None, batch_format="numpy"):
        by_shard: dict[tuple[str, str, str], list[tuple[int, str]]] = defaultdict(list)
        for i, key in enumerate(batch["key"]):
            if batch["error"][i]:
                report.failures.append((str(batch["path"][i]), str(batch["error"][i])))
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
        report.extracted += len(extracted)
        done += len(batch["key"])
        if progress is not None:
            progress(done, len(todo))
    clock.add("network", t)
