"""Extraction: reader → hash → skip cached → decode+preprocess → network → store.

The runner is handed a network factory, so tests swap in a counting fake. Decoding of the
next batch runs in worker threads while the network computes the current one, and each
batch is written to the store behind the next batch's compute. A fully cached run only
hashes: it never builds the network nor imports TensorFlow.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np

from featcache.data import open_source
from featcache.data.source import ImageItem, ImageSource
from featcache.errors import ConfigError, FeatcacheError, ImageError
from featcache.extractor.alexnet import check_layers
from featcache.extractor.fingerprint import ExtractorSpec
from featcache.extractor.preprocess import DEFAULT_MAX_PIXELS, preprocess_rgb
from featcache.extractor.weights import Weights, file_sha256, read_weights
from featcache.store import (
    STORAGE_DTYPES,
    DatasetChange,
    DatasetRow,
    FeatureStore,
    normalize_split,
    validate_dataset_name,
)

__all__ = [
    "ENGINES",
    "ExtractConfig",
    "ExtractReport",
    "Network",
    "NetworkFactory",
    "build_alexnet",
    "extract",
]


class Network(Protocol):
    def forward(self, batch: np.ndarray, layers: Sequence[str] = ...) -> dict[str, np.ndarray]: ...


NetworkFactory = Callable[[Weights, ExtractorSpec], Network]
ENGINES = ("local", "ray")
#: Measured on the CPU (2 cores, AMX): bf16 gains 8% from 64 to 128, float32 nothing.
AUTO_BATCH_SIZE = {"float32": 64, "bf16": 128, "fp16": 128}
_PREFETCH = 4  # batches decoded ahead of the network (about 40 MB each per 64 images)
Progress = Callable[[int, int], None]  # (images done, images to compute)


def build_alexnet(weights: Weights, spec: ExtractorSpec) -> Network:
    """The default factory: a TensorFlow AlexNet (imports TensorFlow)."""
    from featcache.extractor.alexnet import AlexNet

    return AlexNet(weights.layers, spec.profile, precision=spec.precision)


@dataclass(frozen=True)
class ExtractConfig:
    """How to extract: profile and wiring, layers, batching, storage dtype, limits."""

    profile: str = "caffe"
    resize: str = "squash"
    precision: str = "float32"
    layers: tuple[str, ...] = ("fc7",)
    batch_size: int = 0  # 0: what suits the precision (AUTO_BATCH_SIZE)
    dtype: str = "float32"
    workers: int = 2
    max_pixels: int = DEFAULT_MAX_PIXELS

    def __post_init__(self) -> None:
        object.__setattr__(self, "layers", check_layers(self.layers))
        if self.batch_size < 0:
            raise ConfigError(f"The 'batch_size' must be >= 1 (or 0: auto). Got {self.batch_size}.")
        if self.batch_size == 0:
            object.__setattr__(self, "batch_size", AUTO_BATCH_SIZE[self.precision])
        if self.workers < 1:
            raise ConfigError(f"The 'workers' must be >= 1. Got {self.workers}.")
        if self.dtype not in STORAGE_DTYPES:
            raise ConfigError(
                f"The 'dtype' must be one of {list(STORAGE_DTYPES)}. Got {self.dtype!r}."
            )
        if self.max_pixels < 1:
            raise ConfigError(f"The 'max_pixels' must be >= 1. Got {self.max_pixels}.")

    def spec(self, weights_sha256: str) -> ExtractorSpec:
        return ExtractorSpec(weights_sha256, self.profile, self.resize, self.precision)


@dataclass
class ExtractReport:
    """What a run did. With ``store=None``, `vectors` holds the computed vectors by layer."""

    total: int = 0
    extracted: int = 0
    cached: int = 0
    failed: int = 0
    duplicates: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    fingerprint: str = ""
    dataset: str | None = None
    weights_note: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    rows: DatasetChange | None = None  # what writing the dataset changed, and its totals
    repairs: list[str] = field(default_factory=list)  # damaged shards found, recomputed

    @property
    def images_per_second(self) -> float:
        compute = self.timings.get("network", 0.0)
        return self.extracted / compute if compute else 0.0


class _Clock:
    def __init__(self, timings: dict[str, float]) -> None:
        self._timings = timings

    def add(self, stage: str, since: float) -> None:
        self._timings[stage] = self._timings.get(stage, 0.0) + time.perf_counter() - since


def _hash_all(
    items: Sequence[ImageItem], pool: ThreadPoolExecutor
) -> tuple[list[tuple[ImageItem, str]], list[tuple[str, str]]]:
    def key_or_error(item: ImageItem) -> tuple[ImageItem, str | None, str | None]:
        try:
            return item, item.key(), None
        except ImageError as exc:
            return item, None, str(exc)

    keyed, failures = [], []
    for item, key, error in pool.map(key_or_error, items):
        if key is None:
            failures.append((item.path, error or "unreadable"))
        else:
            keyed.append((item, key))
    return keyed, failures


def _prepare(item: ImageItem, config: ExtractConfig) -> np.ndarray:
    return preprocess_rgb(item.rgb(max_pixels=config.max_pixels), config.profile, config.resize)


def _decode_batch(
    batch: list[tuple[ImageItem, str]], config: ExtractConfig, pool: ThreadPoolExecutor
) -> tuple[list[str], np.ndarray, list[tuple[str, str]]]:
    def one(entry: tuple[ImageItem, str]) -> tuple[str, np.ndarray | None, str | None]:
        item, key = entry
        try:
            return key, _prepare(item, config), None
        except ImageError as exc:
            return key, None, str(exc)

    keys, arrays, failures = [], [], []
    for (item, _), (key, array, error) in zip(batch, pool.map(one, batch), strict=True):
        if array is None:
            failures.append((item.path, error or "unreadable"))
        else:
            keys.append(key)
            arrays.append(array)
    stacked = np.stack(arrays) if arrays else np.zeros((0, 227, 227, 3), np.float32)
    return keys, stacked, failures


def _batches(todo: list[tuple[ImageItem, str]], size: int) -> Iterator[list[tuple[ImageItem, str]]]:
    for start in range(0, len(todo), size):
        yield todo[start : start + size]


def extract(
    source: ImageSource | str | Path,
    weights: str | Path | Weights,
    store: FeatureStore | str | Path | None,
    *,
    config: ExtractConfig | None = None,
    class_names_file: str | Path | None = None,
    dataset: str | None = None,
    split: str | None = None,
    append: bool = False,
    progress: Progress | None = None,
    network_factory: NetworkFactory = build_alexnet,
    engine: str = "local",
    ray_address: str | None = None,
) -> ExtractReport:
    """Extract `source` into `store` (or, with ``store=None``, into the returned report).

    `source` is an `ImageSource` or a path `open_source` reads (folder, CSV, pickle, npz);
    `store` a `FeatureStore` or its directory.

    Images already stored for this extractor are skipped; unreadable ones are reported in
    ``report.failures`` and skipped, and the rest are stored. With `dataset`, the images
    that have vectors are recorded as that dataset, one row per source path (see
    `FeatureStore.add_dataset`: `append` adds and updates rows, `split` replaces only that
    split's rows, neither replaces the dataset); `split` also fills the split of rows that
    have none. A path `source` names the dataset by default (the folder's name or the file's
    stem: ``"signs"`` for ``signs/``, ``"train"`` for ``train.p``). Names and splits are
    checked before any work.

    `engine` "ray" runs the network on a Ray cluster (`ray_address`, default: start a local
    one) with ``config.workers`` actors; they write shards into the store's directory (a
    shared path on a cluster) and this process registers them.
    """
    config = config or ExtractConfig()
    if dataset is not None:
        validate_dataset_name(dataset)
    split = normalize_split(split, where="--split")
    if engine not in ENGINES:
        raise ConfigError(f"The 'engine' must be one of {list(ENGINES)}. Got {engine!r}.")
    if engine == "ray":
        from featcache.extractor.ray_engine import require_ray

        require_ray()
        if store is None or isinstance(weights, Weights):
            raise ConfigError("engine='ray' needs a store and a weights file path")
    start = time.perf_counter()
    if not isinstance(source, ImageSource):
        if dataset is None and store is not None:
            named = Path(source).resolve()
            dataset = named.name if named.is_dir() else named.stem
        source = open_source(source, class_names_file=class_names_file)
    for item in source.items:
        normalize_split(item.split, where=item.path)  # a bad split stops before any work
    if store is not None and not isinstance(store, FeatureStore):
        store = FeatureStore(store)
    report = ExtractReport(total=len(source.items), dataset=dataset)
    clock = _Clock(report.timings)
    t = time.perf_counter()
    if isinstance(weights, Weights):
        spec = config.spec(weights.sha256)
    else:
        if not Path(weights).is_file():
            read_weights(weights)  # raises the standard, helpful WeightsError
        digest = (
            file_sha256(Path(weights)) if store is None else store.file_sha256(weights, file_sha256)
        )
        spec = config.spec(digest)
    report.fingerprint = spec.fingerprint
    clock.add("weights_hash", t)

    with ThreadPoolExecutor(config.workers, thread_name_prefix="featcache-io") as pool:
        t = time.perf_counter()
        keyed, report.failures = _hash_all(source.items, pool)
        clock.add("hash", t)

        unique: dict[str, ImageItem] = {}
        for item, key in keyed:
            unique.setdefault(key, item)
        report.duplicates = len(keyed) - len(unique)
        t = time.perf_counter()
        if store is None:
            present: set[str] = set()
        else:
            keys = list(unique)
            present = set(keys)
            for layer in config.layers:
                present &= store.has(keys, report.fingerprint, layer)
        clock.add("lookup", t)
        todo = [(item, key) for key, item in unique.items() if key not in present]
        report.cached = len(unique) - len(todo)

        if todo:
            if network_factory is build_alexnet and engine == "local":
                # TensorFlow's import (seconds) overlaps reading the weights.
                from featcache.extractor._tf import import_tensorflow

                tf_ready = pool.submit(import_tensorflow)
            t = time.perf_counter()
            loaded = _load_weights(weights, spec, store)
            report.weights_note = loaded.demo_note
            clock.add("load_weights", t)
            if engine == "ray" and store is not None:  # ray always has a store (checked above)
                from featcache.extractor.ray_engine import compute_on_ray

                compute_on_ray(
                    todo,
                    Path(loaded.path),
                    spec,
                    store,
                    config,
                    report,
                    progress,
                    clock,
                    address=ray_address,
                )
            else:

                def make_network() -> Network:
                    if network_factory is build_alexnet:
                        t = time.perf_counter()
                        tf_ready.result()
                        clock.add("import_tf_wait", t)
                    return _build(network_factory, loaded, spec, clock)

                _compute(todo, make_network, spec, store, config, report, pool, progress, clock)

    report.repairs = list(store.repairs) if store is not None else []
    failed_paths = {path for path, _ in report.failures}
    report.failed = len(failed_paths)
    if store is not None:
        store.record_failures(dataset, report.failures)
        if dataset is not None:
            t = time.perf_counter()
            stored = set(unique) - {k for k in unique if unique[k].path in failed_paths}
            rows = [
                DatasetRow(key, item.path, item.label, item.split or split)
                for item, key in keyed
                if key in stored
            ]
            report.rows = store.add_dataset(
                dataset,
                rows,
                source.class_names,
                source=source.description,
                append=append,
                split=split,
            )
            clock.add("dataset", t)
    report.seconds = time.perf_counter() - start
    return report


def _load_weights(
    source: str | Path | Weights, spec: ExtractorSpec, store: FeatureStore | None
) -> Weights:
    """Read and check the weights (unless given loaded); record what the fingerprint means."""
    weights = source if isinstance(source, Weights) else read_weights(source)
    if weights.sha256 != spec.weights_sha256:
        raise FeatcacheError(f"{weights.path}: the file changed while extracting; run again")
    if store is not None:
        store.register_extractor(
            spec.fingerprint, {**spec.as_dict(), "weights_note": weights.demo_note}
        )
    return weights


def _build(
    factory: NetworkFactory, weights: Weights, spec: ExtractorSpec, clock: _Clock
) -> Network:
    t = time.perf_counter()
    network = factory(weights, spec)
    clock.add("build_network", t)
    return network


def _compute(
    todo: list[tuple[ImageItem, str]],
    make_network: Callable[[], Network],
    spec: ExtractorSpec,
    store: FeatureStore | None,
    config: ExtractConfig,
    report: ExtractReport,
    pool: ThreadPoolExecutor,
    progress: Progress | None,
    clock: _Clock,
) -> None:
    """The local engine: decode on `pool`, compute here, write behind.

    Up to `_PREFETCH` batches are decoded ahead, so the first ones are ready while
    TensorFlow loads and the network is built, and decoding keeps out of the network's way.
    """

    collected: dict[str, list[np.ndarray]] = {layer: [] for layer in config.layers}
    done = 0
    # One thread assembles the next batch (its images decode on `pool`), one writes the last.
    with (
        ThreadPoolExecutor(1, thread_name_prefix="featcache-prefetch") as prefetch,
        ThreadPoolExecutor(1, thread_name_prefix="featcache-write") as writer,
    ):
        pending_write: Future[int] | None = None
        decoding: deque[Future[tuple[list[str], np.ndarray, list[tuple[str, str]]]]] = deque(
            prefetch.submit(_decode_batch, batch, config, pool)
            for batch in itertools.islice(_batches(todo, config.batch_size), _PREFETCH)
        )
        remaining = _batches(todo[_PREFETCH * config.batch_size :], config.batch_size)
        network = make_network()
        while decoding:
            t = time.perf_counter()
            keys, inputs, failures = decoding.popleft().result()
            clock.add("decode_wait", t)
            following = next(remaining, None)
            if following is not None:
                decoding.append(prefetch.submit(_decode_batch, following, config, pool))
            report.failures.extend(failures)
            if keys:
                t = time.perf_counter()
                outputs = network.forward(inputs, config.layers)
                clock.add("network", t)
                if store is None:
                    report.keys.extend(keys)
                    for layer in config.layers:
                        collected[layer].append(outputs[layer])
                else:
                    t = time.perf_counter()
                    if pending_write is not None:
                        pending_write.result()
                    clock.add("write_wait", t)
                    pending_write = writer.submit(
                        store.put_batch, keys, outputs, spec.fingerprint, dtype=config.dtype
                    )
                report.extracted += len(keys)
            done += len(keys) + len(failures)
            if progress is not None:
                progress(done, len(todo))
        if pending_write is not None:
            t = time.perf_counter()
            pending_write.result()
            clock.add("write_wait", t)
    if store is None:
        report.vectors = {
            layer: np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
            for layer, parts in collected.items()
        }
