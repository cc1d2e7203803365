"""Load, check and describe AlexNet weights files (``bvlc_alexnet.npy``) without running their code.

The file is a NumPy ``.npy`` holding a pickled dict, in one of two layouts::

    {layer: [W, b]}                          the common file (caffe-tensorflow, the lab's)
    {layer: {"weights": W, "biases": b}}     newer caffe-tensorflow exports

Unpickling runs code, so the pickle is read by `featcache._safepickle.safe_unpickle`, which
admits only what plain arrays need and refuses every other global *before* it is looked up.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from featcache._io import atomic_write, file_sha256
from featcache._safepickle import UnpicklingFailed, safe_unpickle
from featcache.errors import WeightsError

__all__ = [
    "DEMO_MARKER",
    "LAYER_SHAPES",
    "Weights",
    "file_sha256",
    "load_weights",
    "read_weights",
    "write_demo_weights",
]

#: The shape of each layer's weight matrix; its bias has the last dimension's length.
LAYER_SHAPES: dict[str, tuple[int, ...]] = {
    "conv1": (11, 11, 3, 96),
    "conv2": (5, 5, 48, 256),
    "conv3": (3, 3, 256, 384),
    "conv4": (3, 3, 192, 384),
    "conv5": (3, 3, 192, 256),
    "fc6": (9216, 4096),
    "fc7": (4096, 4096),
    "fc8": (4096, 1000),
}

#: Key of the note that `write_demo_weights` leaves in the dict, so random weights say so.
DEMO_MARKER = "__featcache_demo__"


@dataclass(frozen=True)
class Weights:
    """A checked weights file: float32 ``(W, b)`` per layer, its SHA-256 and any demo note."""

    path: Path
    layers: dict[str, tuple[np.ndarray, np.ndarray]]
    sha256: str
    demo_note: str | None  # set for seeded random weights written by featcache
    network: str = "alexnet"  # the backbone whose layout they were read as

    @property
    def is_demo(self) -> bool:
        return self.demo_note is not None

    @property
    def nbytes(self) -> int:
        return sum(w.nbytes + b.nbytes for w, b in self.layers.values())


def _unpickle_npy(data: bytes, path: Path) -> Any:
    stream = io.BytesIO(data)
    try:
        version = np.lib.format.read_magic(stream)
    except ValueError as exc:
        raise WeightsError(f"{path}: not a .npy file ({exc}); expected bvlc_alexnet.npy") from exc
    try:
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
    except ValueError as exc:
        raise WeightsError(f"{path}: unreadable .npy header ({exc})") from exc
    if not dtype.hasobject:
        raise WeightsError(
            f"{path}: holds a plain {dtype} array of shape {shape}, not a dict of layers; "
            "expected bvlc_alexnet.npy ({layer: [W, b]})"
        )
    try:
        obj = safe_unpickle(stream, path)
    except UnpicklingFailed as exc:
        raise WeightsError(
            f"{path}: the pickled data is truncated or corrupt ({exc}); download the file again"
        ) from exc
    if isinstance(obj, np.ndarray) and obj.shape == () and obj.dtype == object:
        obj = obj.item()
    return obj


def _layer_pair(path: Path, name: str, entry: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(entry, Mapping):
        if "weights" not in entry or "biases" not in entry:
            raise WeightsError(
                f"{path}: layer '{name}' is a dict without 'weights' and 'biases' "
                f"(found keys {sorted(map(str, entry))})"
            )
        raw_w, raw_b = entry["weights"], entry["biases"]
    elif isinstance(entry, list | tuple) and len(entry) == 2:
        raw_w, raw_b = entry
    else:
        raise WeightsError(
            f"{path}: layer '{name}' must be [W, b] or {{'weights': W, 'biases': b}}, "
            f"found {type(entry).__name__}"
        )
    expected = LAYER_SHAPES[name]
    pair = []
    for label, raw, shape in (("weights", raw_w, expected), ("biases", raw_b, expected[-1:])):
        if not isinstance(raw, np.ndarray) or raw.dtype.kind not in "fiu":
            raise WeightsError(
                f"{path}: layer '{name}' {label} is {type(raw).__name__}, not a numeric array"
            )
        if raw.shape != shape:
            raise WeightsError(
                f"{path}: layer '{name}' {label} has shape {raw.shape}, expected {shape}"
            )
        arr = np.ascontiguousarray(raw, dtype=np.float32)
        if not np.isfinite(arr).all():
            raise WeightsError(f"{path}: layer '{name}' {label} contains NaN or infinity")
        pair.append(arr)
    return pair[0], pair[1]


def read_weights(path: str | Path) -> Weights:
    """Read and check a weights file; raise `WeightsError` before any work if it is unusable."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise WeightsError(
            f"{path}: no such weights file; get it with 'featcache weights fetch' or make "
            "random test weights with 'featcache weights demo'"
        ) from exc
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read weights file ({exc})") from exc
    if not data:
        raise WeightsError(f"{path}: the weights file is empty")
    # hashlib releases the GIL on large buffers: hash in a thread while unpickling here.
    with ThreadPoolExecutor(1) as hasher:
        digest = hasher.submit(lambda: hashlib.sha256(data).hexdigest())
        obj = _unpickle_npy(data, path)
    if not isinstance(obj, Mapping):
        raise WeightsError(
            f"{path}: holds a {type(obj).__name__}, expected a dict of layers {list(LAYER_SHAPES)}"
        )
    missing = [name for name in LAYER_SHAPES if name not in obj]
    if missing:
        raise WeightsError(
            f"{path}: missing layer(s) {missing}; found {sorted(map(str, obj))}. "
            "Is this bvlc_alexnet.npy?"
        )
    layers = {name: _layer_pair(path, name, obj[name]) for name in LAYER_SHAPES}
    note = obj.get(DEMO_MARKER)
    return Weights(
        path=path,
        layers=layers,
        sha256=digest.result(),
        demo_note=str(note) if note is not None else None,
    )


def load_weights(path: str | Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Return ``{layer: (W, b)}`` as float32 for either layout, every shape checked."""
    return read_weights(path).layers


def write_demo_weights(path: str | Path, seed: int = 0, layout: str = "lists") -> Path:
    """Write seeded random weights in the real file's layout, marked as random.

    He-scaled normal weights and small biases, the same recipe as the reference's
    ``make_random_weights.py``. They are not ImageNet's: everything computed with them
    says so (`Weights.demo_note`).
    """
    if layout not in ("lists", "dicts"):
        raise WeightsError(f"layout must be 'lists' or 'dicts', got {layout!r}")
    path = Path(path)
    rng = np.random.default_rng(seed)
    content: dict[str, Any] = {}
    for name, shape in LAYER_SHAPES.items():
        fan_in = int(np.prod(shape[:-1]))
        w = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        b = rng.standard_normal(shape[-1], dtype=np.float32) * np.float32(0.01)
        content[name] = [w, b] if layout == "lists" else {"weights": w, "biases": b}
    content[DEMO_MARKER] = f"seeded random weights (seed={seed}), NOT ImageNet-trained"
    with atomic_write(path) as f:
        np.save(f, np.array(content, dtype=object), allow_pickle=True)
    return path
