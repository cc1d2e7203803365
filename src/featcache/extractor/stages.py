"""The stages both engines run: key (hash), prepare (decode + preprocess), forward, write.

Modelled on clip-retrieval's reader → mapper → writer: an engine decides where and when
each stage runs (threads and a write-behind here, Ray actors there), never what it does.
A failure of one image is a `Failed` record, never an exception that stops the batch.

``map_fn`` arguments take the ``map`` of a thread pool (``pool.map``) or the built-in one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

import numpy as np

from featcache.data.phash import HASH_KIND, image_hash
from featcache.data.source import ImageItem
from featcache.errors import ConfigError, FeatcacheError, ImageError
from featcache.extractor.config import ExtractConfig, storage_dtype
from featcache.extractor.network import Network
from featcache.extractor.preprocess import INPUT_SIZE, preprocess_into
from featcache.store import FeatureStore, ShardFiles, ShardInfo

__all__ = [
    "BatchResult",
    "EngineResult",
    "Failed",
    "Keyed",
    "MapFn",
    "MemoryWriter",
    "PreparedBatch",
    "Progress",
    "ShardWriter",
    "StoreWriter",
    "Writer",
    "batches",
    "for_storage",
    "forward",
    "input_buffer",
    "key_items",
    "prepare",
    "prepare_batch",
    "prepare_hashed",
    "run_batch",
]

T = TypeVar("T")
R = TypeVar("R")
T_co = TypeVar("T_co", covariant=True)
MapFn = Callable[[Callable[[T], R], Iterable[T]], Iterator[R]]
Keyed = tuple[ImageItem, str]  # an image and its content key
Progress = Callable[[int, int], None]  # (images done, images to compute)


@dataclass(frozen=True)
class Failed:
    """An image that was skipped: its key (None if it could not even be read) and why."""

    path: str
    reason: str
    key: str | None = None

    def as_pair(self) -> tuple[str, str]:
        return self.path, self.reason


# -- reader: content keys --------------------------------------------------------------------


def key_items(
    items: Sequence[ImageItem], map_fn: MapFn[ImageItem, Keyed | Failed] = map
) -> tuple[list[Keyed], list[Failed]]:
    """Hash every item (reads the files); return the keyed items and the unreadable ones."""

    def key_or_failure(item: ImageItem) -> Keyed | Failed:
        try:
            return item, item.key()
        except ImageError as exc:
            return Failed(item.path, str(exc))

    keyed: list[Keyed] = []
    failed: list[Failed] = []
    for outcome in map_fn(key_or_failure, items):
        if isinstance(outcome, Failed):
            failed.append(outcome)
        else:
            keyed.append(outcome)
    return keyed, failed


def batches(todo: Sequence[T], size: int) -> Iterator[list[T]]:
    """Consecutive slices of `size` (the last one shorter)."""
    for start in range(0, len(todo), size):
        yield list(todo[start : start + size])


# -- prepare: decode + preprocess ------------------------------------------------------------


def prepare(item: ImageItem, config: ExtractConfig) -> np.ndarray:
    """One image → its (S, S, 3) float32 network input (S: the backbone's input size);
    `ImageError` if it cannot be."""
    out = np.empty((config.input_size, config.input_size, 3), np.float32)
    prepare_hashed(item, config, out)
    return out


def prepare_hashed(item: ImageItem, config: ExtractConfig, out: np.ndarray) -> bytes:
    """Decode `item` and write its network input into `out` (a (S, S, 3) float32 row of a
    batch); return the perceptual hash of its pixels (featcache doctor's near-duplicates).
    """
    rgb = item.rgb(max_pixels=config.max_pixels)
    preprocess_into(rgb, out, config.profile, config.resize, mean_bgr=config.network.mean_bgr)
    return image_hash(rgb)


def input_buffer(size: int, side: int = INPUT_SIZE) -> np.ndarray:
    """An uninitialised (size, side, side, 3) float32 array for `prepare_batch` to fill
    (side: the backbone's input size, `ExtractConfig.input_size`)."""
    return np.empty((size, side, side, 3), np.float32)


@dataclass(frozen=True)
class PreparedBatch:
    """A batch ready for the network: `inputs` row i is the image of ``keys[i]``."""

    keys: list[str]
    inputs: np.ndarray
    failed: list[Failed] = field(default_factory=list)
    hashes: dict[str, bytes] = field(default_factory=dict)  # key → perceptual hash


def prepare_batch(
    batch: Sequence[Keyed],
    config: ExtractConfig,
    map_fn: MapFn[tuple[int, Keyed], bytes | Failed] = map,
    out: np.ndarray | None = None,
) -> PreparedBatch:
    """Prepare every image of `batch` (in parallel with a pool's map) into one array, each
    into its row; failures set aside (and their rows dropped). `out`, a (N >= len(batch),
    S, S, 3) float32 array, is that array when given (a buffer the engine reuses)."""
    side = config.input_size
    if out is None:
        inputs = input_buffer(len(batch), side)
    elif out.dtype != np.float32 or out.shape[1:] != (side, side, 3) or len(out) < len(batch):
        raise ConfigError(f"'out' must be a (>= {len(batch)}, {side}, {side}, 3) float32 array")
    else:
        inputs = out[: len(batch)]

    def one(entry: tuple[int, Keyed]) -> bytes | Failed:
        row, (item, key) = entry
        try:
            return prepare_hashed(item, config, inputs[row])
        except ImageError as exc:
            return Failed(item.path, str(exc), key)

    keys, rows, failed, hashes = [], [], [], {}
    for row, outcome in enumerate(map_fn(one, enumerate(batch))):
        key = batch[row][1]
        if isinstance(outcome, Failed):
            failed.append(outcome)
        else:
            keys.append(key)
            rows.append(row)
            hashes[key] = outcome
    if failed:
        inputs = inputs[rows]
    return PreparedBatch(keys, inputs, failed, hashes)


# -- mapper: the network ---------------------------------------------------------------------


def forward(network: Network, batch: PreparedBatch, layers: Sequence[str]) -> dict[str, np.ndarray]:
    """Run the network on a prepared batch; check it returned one row per key per layer."""
    outputs = network.forward(batch.inputs, layers)
    for layer in layers:
        matrix = outputs.get(layer)
        if matrix is None or matrix.ndim != 2 or matrix.shape[0] != len(batch.keys):
            shape = None if matrix is None else matrix.shape
            raise FeatcacheError(
                f"the network returned {shape} for layer '{layer}', "
                f"expected ({len(batch.keys)}, dim)"
            )
    return outputs


# -- writer ----------------------------------------------------------------------------------


class Writer(Protocol[T_co]):
    """Puts one computed batch somewhere; ``outputs[layer]`` row i belongs to ``keys[i]``."""

    def write(
        self,
        keys: Sequence[str],
        outputs: Mapping[str, np.ndarray],
        hashes: Mapping[str, bytes] | None = None,
    ) -> T_co: ...


_FLOAT16_MAX = 65504.0


def for_storage(layer: str, matrix: np.ndarray, dtype: str) -> np.ndarray:
    """`matrix` in `dtype`; `ConfigError` if float16 cannot hold its values."""
    if dtype == "float16":
        peak = float(np.abs(matrix).max(initial=0.0))
        if peak > _FLOAT16_MAX:
            raise ConfigError(
                f"'{layer}' values reach {peak:.3g}, beyond float16 (65504); extract again "
                "with --dtype float32"
            )
    return matrix.astype(dtype, copy=False)


class StoreWriter:
    """Writes each batch into a store (one shard per layer, registered at once)."""

    def __init__(self, store: FeatureStore, fingerprint: str, dtype: str) -> None:
        self.store, self.fingerprint, self.dtype = store, fingerprint, dtype

    def write(
        self,
        keys: Sequence[str],
        outputs: Mapping[str, np.ndarray],
        hashes: Mapping[str, bytes] | None = None,
    ) -> int:
        """Return how many vectors were new to the store; record the pixel hashes too."""
        added = 0
        for dtype in sorted({storage_dtype(self.dtype, layer) for layer in outputs}):
            group = {
                layer: for_storage(layer, matrix, dtype)
                for layer, matrix in outputs.items()
                if storage_dtype(self.dtype, layer) == dtype
            }
            added += self.store.put_batch(keys, group, self.fingerprint, dtype=dtype)
        if hashes:
            self.store.put_image_hashes(HASH_KIND, hashes)
        return added


class ShardWriter:
    """Writes shard files only, for a process without the catalog (a Ray worker); the
    driver registers the returned shards with `FeatureStore.register_shard`. `prefix`
    starts every file name (the Ray run's identity)."""

    def __init__(self, shards: ShardFiles, fingerprint: str, dtype: str, prefix: str = "") -> None:
        self.shards, self.fingerprint, self.dtype = shards, fingerprint, dtype
        self.prefix = prefix

    def write(
        self,
        keys: Sequence[str],
        outputs: Mapping[str, np.ndarray],
        hashes: Mapping[str, bytes] | None = None,  # not recorded: doctor computes them
    ) -> dict[str, ShardInfo]:
        """Return ``{layer: shard}`` (name and SHA-256); shard row i is ``keys[i]``'s vector."""
        return {
            layer: self.shards.write(
                self.fingerprint,
                layer,
                for_storage(layer, matrix, storage_dtype(self.dtype, layer)),
                prefix=self.prefix,
            )
            for layer, matrix in outputs.items()
        }


class MemoryWriter:
    """Keeps the vectors in memory (extraction with ``store=None``)."""

    def __init__(self, layers: Sequence[str]) -> None:
        self.keys: list[str] = []
        self._parts: dict[str, list[np.ndarray]] = {layer: [] for layer in layers}

    def write(
        self,
        keys: Sequence[str],
        outputs: Mapping[str, np.ndarray],
        hashes: Mapping[str, bytes] | None = None,
    ) -> int:
        self.keys.extend(keys)
        for layer, parts in self._parts.items():
            parts.append(outputs[layer])
        return len(keys)

    def vectors(self) -> dict[str, np.ndarray]:
        """``{layer: (N, dim)}`` in the order written."""
        return {
            layer: np.concatenate(parts) if parts else np.zeros((0, 0), np.float32)
            for layer, parts in self._parts.items()
        }


# -- one whole batch -------------------------------------------------------------------------


@dataclass(frozen=True)
class BatchResult(Generic[T]):
    """One batch done: the keys computed (in row order), the failures, what the writer
    returned (None when no image of the batch could be prepared)."""

    keys: list[str]
    failed: list[Failed]
    written: T | None


def run_batch(
    batch: Sequence[Keyed],
    network: Network,
    writer: Writer[T],
    config: ExtractConfig,
    map_fn: MapFn[tuple[int, Keyed], bytes | Failed] = map,
) -> BatchResult[T]:
    """prepare → forward → write for one batch, in this thread (what a Ray worker does)."""
    prepared = prepare_batch(batch, config, map_fn)
    written: T | None = None
    if prepared.keys:
        outputs = forward(network, prepared, config.layers)
        written = writer.write(prepared.keys, outputs, prepared.hashes)
    return BatchResult(prepared.keys, prepared.failed, written)


@dataclass
class EngineResult:
    """What an engine did with the images it was given (the report is built from it)."""

    extracted: int = 0
    failed: list[Failed] = field(default_factory=list)
