"""`extract`: reader → key → skip cached → engine (prepare → network → write) → dataset.

The stages live in `stages.py` and both engines run them (`local_engine.py`,
`ray_engine.py`); this module only decides what needs computing and records the result.
A fully cached run only hashes: it never reads the weights, builds the network nor imports
TensorFlow.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from featcache.data import open_source
from featcache.data.source import ImageItem, ImageSource
from featcache.errors import ConfigError, WeightsError
from featcache.extractor.clock import Clock
from featcache.extractor.config import ENGINES, ExtractConfig
from featcache.extractor.fingerprint import ExtractorSpec
from featcache.extractor.keys import key_items_trusting_stat
from featcache.extractor.local_engine import run_local
from featcache.extractor.network import (
    Network,
    NetworkFactory,
    Runtime,
    WeightsSource,
    build_tensorflow,
    runtime_named,
)
from featcache.extractor.registry import read_backbone_weights
from featcache.extractor.report import ExtractReport
from featcache.extractor.runtime_openvino import OpenVINONetwork, require_openvino
from featcache.extractor.stages import (
    EngineResult,
    Keyed,
    MemoryWriter,
    Progress,
    StoreWriter,
    Writer,
)
from featcache.extractor.weights import Weights, file_sha256
from featcache.store import (
    DatasetChange,
    DatasetRow,
    FeatureStore,
    normalize_split,
    validate_dataset_name,
)

if TYPE_CHECKING:  # the Ray modules are imported only for engine="ray"
    from featcache.extractor.ray_connect import RaySession
    from featcache.extractor.ray_pool import PoolEvent

__all__ = [
    "ENGINES",
    "ExtractConfig",
    "ExtractReport",
    "Network",
    "NetworkFactory",
    "build_tensorflow",
    "extract",
]


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
    progress: Progress | Literal["auto"] | None = "auto",
    network_factory: NetworkFactory | Runtime | None = None,
    engine: str | None = None,
    ray_address: str | None = None,
    on_ray_event: Callable[[PoolEvent], None] | None = None,
    weights_sha256: str | None = None,
    record_failures: bool = True,
) -> ExtractReport:
    """Extract `source` into `store` (or, with ``store=None``, into the returned report).

    `source` is an `ImageSource` or a path `open_source` reads (folder, CSV, pickle, npz);
    `weights` a weights file or loaded `Weights`; `store` a `FeatureStore` or its directory.

    Images already stored for this extractor are skipped; unreadable ones are reported in
    ``report.failures`` and skipped, and the rest are stored. With `dataset`, the images
    that have vectors are recorded as that dataset, one row per source path (see
    `FeatureStore.add_dataset`: `append` adds and updates rows, `split` replaces only that
    split's rows, neither replaces the dataset); `split` also fills the split of rows that
    have none. A path `source` names the dataset by default (the folder's name or the file's
    stem: ``"signs"`` for ``signs/``, ``"train"`` for ``train.p``). Names and splits are
    checked before any work.

    `progress` hears ``(done, total)`` images after each batch; ``"auto"`` (the default)
    shows a tqdm bar (a widget in Jupyter) on a terminal, or a line every 10 s otherwise,
    with a rate and ETA measured from the first batch on; None shows nothing.

    `network_factory` replaces the TensorFlow network (tests pass a fake one), or is a whole
    `Runtime` (the predictor's keeps its networks between calls). `weights_sha256`, when the
    caller knows it (a head's extractor records it), saves hashing a weights file path: the
    file must exist, but is read, and checked against it, only if the network needs it (not
    when the runtime's converted model is cached). `engine` and
    `ray_address` are shorthands for the config's fields: with ``engine="ray"`` the network
    runs on a Ray cluster with ``config.workers`` actors, which write shards into the store
    (its bucket, or its folder at a shared path on every node) for this process to register.
    It connects first, so a cluster that cannot be used leaves no store behind;
    `on_ray_event` hears of workers started, retries, batches given up and nodes lost, and
    ``report.ray`` sums them up.
    `record_failures` False keeps failures out of the store (in the report only): the
    service's uploads, where any client could otherwise grow the store without bound.
    """
    if progress == "auto":  # a notebook's or script's call: show progress unasked
        from featcache.progress import auto_progress

        with auto_progress("extracting") as shown:
            return extract(
                source,
                weights,
                store,
                config=config,
                engine=engine,
                ray_address=ray_address,
                class_names_file=class_names_file,
                dataset=dataset,
                split=split,
                append=append,
                progress=shown,
                network_factory=network_factory,
                on_ray_event=on_ray_event,
                weights_sha256=weights_sha256,
            )
    config = config or ExtractConfig()
    if engine is not None or ray_address is not None:
        config = replace(
            config, engine=engine or config.engine, ray_address=ray_address or config.ray_address
        )
    if dataset is not None:
        validate_dataset_name(dataset)
    split = normalize_split(split, where="--split")
    if weights_sha256 is not None and not re.fullmatch("[0-9a-f]{64}", weights_sha256):
        raise ConfigError(
            f"The 'weights_sha256' must be 64 lowercase hex digits. Got {weights_sha256!r}."
        )
    if config.runtime == "openvino":
        require_openvino()  # before any work: say how to install it
    # None: the config's runtime, chosen once the store is open (OpenVINO keeps models there)
    runtime: Runtime | None = None
    if isinstance(network_factory, Runtime):
        runtime = network_factory
    elif network_factory is not None:
        runtime = Runtime("custom", network_factory)
    session: RaySession | None = None
    if config.engine == "ray":
        from featcache.extractor.ray_connect import RaySession

        if store is None or isinstance(weights, Weights):
            raise ConfigError("engine='ray' needs a store and a weights file path")
        session = RaySession.connect(
            config.ray_address, timeout=config.ray_timeout, verbose=config.ray_verbose
        )
    try:
        return _extract(
            source,
            weights,
            store,
            config=config,
            class_names_file=class_names_file,
            dataset=dataset,
            split=split,
            append=append,
            progress=progress,
            runtime=runtime,
            session=session,
            on_ray_event=on_ray_event,
            weights_sha256=weights_sha256,
            record_failures=record_failures,
        )
    finally:
        if session is not None:
            session.close()


def _extract(
    source: ImageSource | str | Path,
    weights: str | Path | Weights,
    store: FeatureStore | str | Path | None,
    *,
    config: ExtractConfig,
    class_names_file: str | Path | None,
    dataset: str | None,
    split: str | None,
    append: bool,
    progress: Progress | None,
    runtime: Runtime | None,
    session: RaySession | None,
    on_ray_event: Callable[[PoolEvent], None] | None,
    weights_sha256: str | None,
    record_failures: bool,
) -> ExtractReport:
    start = time.perf_counter()
    clock = Clock()
    if session is not None:
        clock.add("ray_connect", session.connect_seconds)
    named_by_default = False
    if not isinstance(source, ImageSource):
        if dataset is None and store is not None:
            dataset, named_by_default = _default_dataset_name(source), True
        source = open_source(source, class_names_file=class_names_file)
    if any(item.max_bytes != config.max_file_bytes for item in source.items):
        bounded = [replace(item, max_bytes=config.max_file_bytes) for item in source.items]
        source = replace(source, items=bounded)
    for item in source.items:
        normalize_split(item.split, where=item.path)  # a bad split stops before any work
    if not isinstance(weights, Weights) and not Path(weights).is_file():
        # a missing weights file stops before the store is created
        read_backbone_weights(weights, config.backbone)
    if store is not None and not isinstance(store, FeatureStore):
        store = FeatureStore(store)
    if named_by_default and store is not None and dataset is not None:
        _refuse_other_source(store, dataset, source.description)
    if session is not None and store is not None:
        session.attach_log(store.path / "logs")
    if runtime is None:
        runtime = runtime_named(config.runtime, store, config.layers)
    with clock("weights_hash"):
        spec = config.spec(weights_sha256 or _weights_sha256(weights, store, config.backbone))

    memory = MemoryWriter(config.layers)  # where the vectors go without a store
    writer: Writer[object] = (
        memory if store is None else StoreWriter(store, spec.fingerprint, config.dtype)
    )
    result, weights_note = EngineResult(), None
    with ThreadPoolExecutor(config.workers, thread_name_prefix="featcache-io") as pool:
        with clock("hash"):
            found = key_items_trusting_stat(source.items, store, pool.map, rehash=config.rehash)
            keyed, unreadable = found.keyed, found.failed
        unique: dict[str, ImageItem] = {}
        for item, key in keyed:
            unique.setdefault(key, item)
        with clock("lookup"):
            present = _present(store, list(unique), spec, config)
        todo = [(item, key) for key, item in unique.items() if key not in present]
        if todo:
            weights_note, result = _compute(
                todo,
                weights,
                spec,
                store,
                writer,
                config,
                runtime,
                pool,
                clock,
                progress,
                session,
                on_ray_event,
            )

    failures = [f.as_pair() for f in (*unreadable, *result.failed)]
    failed_paths = {path for path, _ in failures}
    rows_changed: DatasetChange | None = None
    if store is not None:
        if record_failures:  # the service counts its uploads' failures instead
            store.record_failures(dataset, failures)
        if dataset is not None:
            with clock("dataset"):
                stored = {k for k, item in unique.items() if item.path not in failed_paths}
                rows = [
                    DatasetRow(key, item.path, item.label, item.split or split)
                    for item, key in keyed
                    if key in stored
                ]
                rows_changed = store.add_dataset(
                    dataset,
                    rows,
                    source.class_names,
                    source=source.description,
                    append=append,
                    split=split,
                )
    return ExtractReport(
        total=len(source.items),
        extracted=result.extracted,
        cached=len(unique) - len(todo),
        failed=len(failed_paths),
        duplicates=len(keyed) - len(unique),
        failures=failures,
        fingerprint=spec.fingerprint,
        dataset=dataset,
        weights_note=weights_note,
        seconds=time.perf_counter() - start + clock.timings.get("ray_connect", 0.0),
        timings=clock.timings,
        keys=memory.keys if store is None else [],
        vectors=memory.vectors() if store is None else {},
        rows=rows_changed,
        repairs=list(store.repairs) if store is not None else [],
        ray=session.summary if session is not None else None,
    )


def _default_dataset_name(source: str | Path) -> str:
    """The dataset a path names: the folder's name or the file's stem, as the path is
    written (a symlink keeps its own name, never its target's)."""
    named = Path(os.path.abspath(source))  # abspath: ".." and "." only, links untouched
    return named.name if named.is_dir() else named.stem


def _same_source(held: str, description: str) -> bool:
    """Whether `held`, a source recorded with a relative path before paths were made
    absolute ("folder data"), names the source now described by its absolute path
    ("folder /home/me/data"): the same kind, the absolute path ending in the relative one."""
    kind, _, rest = held.partition(" ")
    now_kind, _, now_rest = description.partition(" ")
    if kind != now_kind or not rest or rest.startswith("/"):
        return False
    tail = os.path.normpath(rest.split(" (", 1)[0])
    path, _, extra = now_rest.partition(" (")
    return path.endswith("/" + tail) and rest[len(rest.split(" (", 1)[0]) :] == (
        f" ({extra}" if extra else ""
    )


def _refuse_other_source(store: FeatureStore, dataset: str, description: str) -> None:
    """A dataset named by default is not silently rewritten from another source."""
    if dataset not in store.datasets():
        return
    held = store.dataset(dataset).source
    if held and held != description and not _same_source(held, description):
        raise ConfigError(
            f"{store.path}: dataset '{dataset}' holds rows from {held}, not from "
            f"{description}; to change its rows say so with --dataset {dataset}, or pick "
            "a new name with --dataset NAME"
        )


def _weights_sha256(
    weights: str | Path | Weights, store: FeatureStore | None, backbone: str
) -> str:
    """The weights' SHA-256, from the store's digest cache when the file is unchanged."""
    if isinstance(weights, Weights):
        return weights.sha256
    if not Path(weights).is_file():
        read_backbone_weights(weights, backbone)  # raises the standard, helpful WeightsError
    if store is None:
        return file_sha256(Path(weights))
    return store.file_sha256(weights, file_sha256)


def _present(
    store: FeatureStore | None, keys: list[str], spec: ExtractorSpec, config: ExtractConfig
) -> set[str]:
    """The keys that have a stored vector for every requested layer."""
    if store is None:
        return set()
    present = set(keys)
    for layer in config.layers:
        present &= store.has(keys, spec.fingerprint, layer)
    return present


def _load_weights(
    source: str | Path | Weights, spec: ExtractorSpec, store: FeatureStore | None
) -> Weights:
    """Read and check the weights (unless given loaded); record what the fingerprint means."""
    weights = source if isinstance(source, Weights) else read_backbone_weights(source, spec.network)
    if weights.network != spec.network:
        raise WeightsError(
            f"{weights.path}: {weights.network} weights, but the extractor is a {spec.network}"
        )
    if weights.sha256 != spec.weights_sha256:
        raise WeightsError(
            f"{weights.path}: SHA-256 {weights.sha256[:12]}... is not the "
            f"{spec.weights_sha256[:12]}... of extractor {spec.fingerprint[:12]}: give the "
            "weights it was made with (or, if the file changed while extracting, run again)"
        )
    if store is not None:
        store.register_extractor(
            spec.fingerprint, {**spec.as_dict(), "weights_note": weights.demo_note}
        )
    return weights


def _compute(
    todo: list[Keyed],
    weights: str | Path | Weights,
    spec: ExtractorSpec,
    store: FeatureStore | None,
    writer: Writer[object],
    config: ExtractConfig,
    runtime: Runtime,
    pool: ThreadPoolExecutor,
    clock: Clock,
    progress: Progress | None,
    session: RaySession | None,
    on_ray_event: Callable[[PoolEvent], None] | None,
) -> tuple[str | None, EngineResult]:
    """Load the weights (unless the runtime's converted model makes them unneeded) and run
    the engine over `todo`; return the weights' note and the engine's result."""
    local = session is None
    converted = runtime.converted(spec) if runtime.converted is not None and local else None
    warm: Future[object] | None = None
    if runtime.warm_up is not None and local and converted is None:
        # The runtime's import (seconds for TensorFlow) overlaps reading the weights.
        warm = pool.submit(runtime.warm_up)
    source: WeightsSource
    if converted is None and runtime.converted is not None and local:
        # A runtime that converts (OpenVINO) reads the weights when it builds its network,
        # so the first batches are prepared meanwhile rather than after.
        lazy = _lazy_weights(weights, spec, store)

        def make_converting_network() -> Network:
            with clock("build_network"):
                return runtime.build(lazy, spec)

        result = run_local(todo, make_converting_network, writer, config, pool, clock, progress)
        return lazy().demo_note, result
    with clock("load_weights"):
        if converted is None:
            loaded = _load_weights(weights, spec, store)
            source, note = loaded, loaded.demo_note
        else:
            # The converted model is cached: the weights are read only if it turns out to
            # be damaged and must be converted again.
            note = converted.get("weights_note")
            if store is not None:
                store.register_extractor(spec.fingerprint, {**spec.as_dict(), "weights_note": note})
            source = _lazy_weights(weights, spec, store)
    if session is not None and store is not None:  # extract() checked: ray has a store
        from featcache.extractor.ray_engine import compute_on_ray

        if config.runtime == "openvino":  # converted once here, not in every worker
            with clock("convert"):
                OpenVINONetwork(spec, loaded, store.runtime_models).ensure_converted(config.layers)
        return note, compute_on_ray(
            todo,
            loaded.path,
            spec,
            store,
            config,
            clock,
            progress,
            session=session,
            runtime=runtime,
            on_event=on_ray_event,
        )

    def make_network() -> Network:
        if warm is not None:
            with clock("warm_up_wait"):
                warm.result()
        with clock("build_network"):
            return runtime.build(source, spec)

    return note, run_local(todo, make_network, writer, config, pool, clock, progress)


def _lazy_weights(
    source: str | Path | Weights, spec: ExtractorSpec, store: FeatureStore | None
) -> Callable[[], Weights]:
    """A function that reads and checks the weights the first time it is called."""
    loaded: list[Weights] = []

    def load() -> Weights:
        if not loaded:
            loaded.append(_load_weights(source, spec, store))
        return loaded[0]

    return load
