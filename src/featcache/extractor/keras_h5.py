"""Read and write weights files in ``keras.applications``' HDF5 layout, with h5py only.

The files Keras downloads (``vgg16_weights_tf_dim_ordering_tf_kernels.h5``,
``resnet50_weights_tf_dim_ordering_tf_kernels.h5``) hold one group per layer; the group's
``weight_names`` attribute lists its arrays in the order Keras assigns them (kernel, bias;
BatchNormalization: gamma, beta, moving_mean, moving_variance), each a dataset at that
name inside the group (``block1_conv1/kernel:0``, or Keras 1's ``block1_conv1_W_1:0``).
HDF5 is data: reading it runs no code (no pickle, no Keras model file). Every array's shape
is checked against the network's layout before any work, naming the layer.

A truncated file cannot be opened by HDF5 at all; it is opened again with its missing tail
read as zeros, only to name the first layer whose bytes are cut off.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from featcache._io import atomic_write
from featcache.errors import WeightsError

__all__ = ["DEMO_ATTRIBUTE", "random_dense", "read_keras_h5", "write_keras_h5"]

#: Root attribute that `write_keras_h5` sets on seeded random weights, so they say so.
DEMO_ATTRIBUTE: Final = "featcache_demo"
_TRUNCATED = re.compile(r"truncated file: eof = (\d+).*stored_eof = (\d+)")

#: The arrays of a layer, in Keras's order: (suffix, shape), e.g. ("kernel", (3, 3, 3, 64)).
LayerLayout = Sequence[tuple[str, tuple[int, ...]]]


def random_dense(rng: np.random.Generator, shape: tuple[int, ...]) -> list[tuple[str, np.ndarray]]:
    """A seeded random ("kernel", "bias") pair of `shape` (He-scaled kernel, small bias), as
    the demo writers of the Keras backbones store each layer."""
    fan_in = int(np.prod(shape[:-1]))
    w = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
    b = rng.standard_normal(shape[-1], dtype=np.float32) * np.float32(0.01)
    return [("kernel", w), ("bias", b)]


def _h5py() -> Any:
    import h5py

    return h5py


def _text(value: Any) -> str:
    return value.decode("utf8") if isinstance(value, bytes) else str(value)


class _ZeroTail(io.RawIOBase):
    """A truncated file read as if it were `size` bytes long (the tail as zeros)."""

    def __init__(self, data: bytes, size: int) -> None:
        self._data, self._size, self._pos = data, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        count = max(0, min(len(view), self._size - self._pos))
        chunk = self._data[self._pos : self._pos + count]
        view[: len(chunk)] = chunk
        view[len(chunk) : count] = b"\0" * (count - len(chunk))
        self._pos += count
        return count


def _truncation(path: Path, exc: OSError, layout: Mapping[str, LayerLayout]) -> WeightsError:
    """Name the first layer a truncated file lost, opening it with its tail as zeros."""
    found = _TRUNCATED.search(str(exc))
    if found is None:
        return WeightsError(f"{path}: not a readable HDF5 weights file ({exc})")
    size, stored = int(found.group(1)), int(found.group(2))
    where = f"{path}: the file is truncated ({size} of {stored} bytes)"
    try:
        with _h5py().File(_ZeroTail(path.read_bytes()[:size], stored), "r") as f:
            for layer in layout:
                if layer not in f:
                    return WeightsError(f"{where}; layer '{layer}' is lost; download it again")
                for name in _weight_names(f[layer]):
                    dataset = f[layer][name]
                    offset = dataset.id.get_offset()
                    if offset is None or offset + dataset.id.get_storage_size() > size:
                        return WeightsError(
                            f"{where}; layer '{layer}' ({name}) is cut off; download it again"
                        )
    except Exception as inner:  # the metadata itself is gone: no layer can be named
        return WeightsError(f"{where} and unreadable ({inner}); download it again")
    return WeightsError(f"{where}; download it again")


def _weight_names(group: Any) -> list[str]:
    names = group.attrs.get("weight_names")
    if names is None:  # Keras splits long attributes into weight_names0, weight_names1, ...
        names = []
        for index in range(len(group.attrs)):
            if f"weight_names{index}" not in group.attrs:
                break
            names.extend(group.attrs[f"weight_names{index}"])
    return [_text(name) for name in names]


def read_keras_h5(
    path: Path, layout: Mapping[str, LayerLayout], *, expected_file: str
) -> tuple[dict[str, list[np.ndarray]], str | None]:
    """Read every layer of `layout` from a Keras HDF5 weights file, shapes checked.

    Returns ``{layer: [array, ...]}`` (float32, in `layout`'s order) and the demo note of
    seeded random weights (None for real ones). Raises `WeightsError` naming the file and
    the layer: missing file, not HDF5, truncated, layer or array missing, wrong shape,
    non-finite values.
    """
    h5py = _h5py()
    if not path.is_file():
        raise WeightsError(
            f"{path}: no such weights file; get {expected_file} with 'featcache weights fetch' "
            "or make random test weights with 'featcache weights demo'"
        )
    try:
        handle = h5py.File(path, "r")
    except OSError as exc:
        if path.stat().st_size == 0:
            raise WeightsError(f"{path}: the weights file is empty") from exc
        if not h5py.is_hdf5(path):
            raise WeightsError(
                f"{path}: not an HDF5 file; expected {expected_file} (keras.applications)"
            ) from exc
        raise _truncation(path, exc, layout) from exc
    out: dict[str, list[np.ndarray]] = {}
    with handle as f:
        missing = [layer for layer in layout if layer not in f]
        if missing:
            raise WeightsError(
                f"{path}: missing layer(s) {missing[:5]}{' ...' if len(missing) > 5 else ''} "
                f"of {len(layout)}; is this {expected_file}?"
            )
        for layer, arrays in layout.items():
            names = _weight_names(f[layer])
            if len(names) != len(arrays):
                raise WeightsError(
                    f"{path}: layer '{layer}' has {len(names)} array(s) {names}, expected "
                    f"{len(arrays)} ({', '.join(part for part, _ in arrays)})"
                )
            values = []
            for name, (part, shape) in zip(names, arrays, strict=True):
                try:
                    raw = f[layer][name]
                    if raw.shape != shape:
                        raise WeightsError(
                            f"{path}: layer '{layer}' {part} has shape {raw.shape}, "
                            f"expected {shape}"
                        )
                    if raw.dtype.kind not in "fiu":
                        raise WeightsError(
                            f"{path}: layer '{layer}' {part} is {raw.dtype}, not numeric"
                        )
                    array = np.asarray(raw, dtype=np.float32)
                except (OSError, KeyError) as exc:
                    raise WeightsError(
                        f"{path}: layer '{layer}' {part} cannot be read ({exc}); "
                        "download the file again"
                    ) from exc
                if not np.isfinite(array).all():
                    raise WeightsError(f"{path}: layer '{layer}' {part} contains NaN or infinity")
                values.append(array)
            out[layer] = values
        note = f.attrs.get(DEMO_ATTRIBUTE)
    return out, None if note is None else _text(note)


def write_keras_h5(
    path: Path, layers: Mapping[str, Sequence[tuple[str, np.ndarray]]], note: str | None
) -> Path:
    """Write ``{layer: [(suffix, array), ...]}`` in Keras 2's HDF5 weights layout (arrays
    at ``LAYER/LAYER/SUFFIX:0``, listed in ``weight_names``); `note` marks random weights."""
    h5py = _h5py()
    with atomic_write(path) as handle, h5py.File(handle.name, "w") as f:
        f.attrs["layer_names"] = [name.encode() for name in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        if note is not None:
            f.attrs[DEMO_ATTRIBUTE] = note.encode()
        for layer, arrays in layers.items():
            group = f.create_group(layer)
            names = [f"{layer}/{suffix}:0" for suffix, _ in arrays]
            group.attrs["weight_names"] = [name.encode() for name in names]
            for name, (_, array) in zip(names, arrays, strict=True):
                group.create_dataset(name, data=np.asarray(array, dtype=np.float32))
    return path
