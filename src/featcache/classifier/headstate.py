"""One file format for every head kind: named numeric arrays plus JSON, never a pickle.

A head file is a safetensors file: an 8-byte length, a JSON header (array names, dtypes,
shapes, offsets, and one metadata string holding the head's kind, parameters and learned
scalars as JSON), then the raw little-endian array bytes. Loading parses; it cannot run
code, whoever wrote the file. Why safetensors and not the alternatives:

- ``.npz`` with ``allow_pickle=False`` is also code-free, but it is a zip archive (members
  may be deflated, so a small file can expand without bound) and has no place for JSON
  beside the arrays;
- skops serialises scikit-learn objects by naming the classes to build, and asks the
  caller to trust the type names a file lists: a trust decision per file, where ours needs
  none (a head is only arrays and numbers, and the code that uses them is ours);
- safetensors is made for exactly this (model weights shared between strangers), bounds
  its header, admits only numeric dtypes and checks that every offset lies in the file.

A head kind takes part by subclassing `StatefulHead` and listing the attributes it learns
(`_state_arrays`, `_state_array_lists`, `_state_values`) and a `_check_state` for their
shapes; `HEAD_KINDS` maps the file's kind to the class. Nothing else changes for a new kind.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from featcache.errors import HeadError

__all__ = [
    "FORMAT_VERSION",
    "HeadState",
    "StatefulHead",
    "decode_head",
    "encode_head",
    "is_legacy_pickle",
]

FORMAT_VERSION = 1
_META_KEY = "featcache.head"
_NUMERIC_KINDS = "biuf"  # bool, signed and unsigned ints, floats
_MAX_HEADER = 16 * 1024 * 1024  # a head's header lists a few dozen arrays: kilobytes


@dataclass(frozen=True)
class HeadState:
    """A head as data: its kind, constructor parameters, learned arrays and learned values."""

    kind: str
    params: dict[str, Any]
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, array in self.arrays.items():
            if not isinstance(array, np.ndarray) or array.dtype.kind not in _NUMERIC_KINDS:
                raise HeadError(
                    f"head state '{self.kind}': array '{name}' must be a numeric NumPy array; "
                    f"got {type(array).__name__} {getattr(array, 'dtype', '')}"
                )


H = TypeVar("H", bound="StatefulHead")


class StatefulHead:
    """Mixin of every head kind: `to_state` and `from_state` from the declared attributes.

    `_state_arrays` name attributes holding one array (a string array, like the class labels
    of some sklearn checks, is kept as a JSON list), `_state_array_lists` attributes holding
    a list of arrays (one per layer), `_state_values` JSON attributes (numbers, strings,
    lists of them, None). Constructor parameters come from ``get_params()``.
    """

    head_kind: ClassVar[str]
    _state_arrays: ClassVar[tuple[str, ...]] = ()
    _state_array_lists: ClassVar[tuple[str, ...]] = ()
    _state_values: ClassVar[tuple[str, ...]] = ()

    if TYPE_CHECKING:  # sklearn's, from BaseEstimator beside this mixin

        def get_params(self, deep: bool = True) -> dict[str, Any]: ...

    def to_state(self) -> HeadState:
        """This fitted head as a `HeadState`; `HeadError` if it is not fitted."""
        arrays: dict[str, np.ndarray] = {}
        values: dict[str, Any] = {}
        try:
            for name in self._state_arrays:
                array = np.asarray(getattr(self, name))
                if array.dtype.kind in _NUMERIC_KINDS:
                    arrays[name] = np.ascontiguousarray(array)
                else:
                    values[name] = [str(v) for v in array.tolist()]
            for name in self._state_array_lists:
                parts = list(getattr(self, name))
                values[f"{name}#count"] = len(parts)
                for i, part in enumerate(parts):
                    arrays[f"{name}.{i}"] = np.ascontiguousarray(np.asarray(part))
            for name in self._state_values:
                values[name] = _plain(getattr(self, name, None), name)
        except AttributeError as exc:
            raise HeadError(
                f"{type(self).__name__} is not fitted ({exc}); call .fit before saving it"
            ) from None
        params = {k: _plain_param(v) for k, v in self.get_params(deep=False).items()}
        return HeadState(self.head_kind, params, arrays, values)

    @classmethod
    def from_state(cls: type[H], state: HeadState, source: str = "head") -> H:
        """Build a fitted head from `state`; `HeadError` naming `source` if it is incomplete
        or its shapes do not fit together."""
        try:
            head = cls(**state.params)
        except TypeError as exc:
            raise HeadError(f"{source}: parameters do not fit {cls.__name__} ({exc})") from None
        validate = getattr(head, "_validate_params", None)  # sklearn's parameter constraints
        if validate is not None:
            try:
                validate()
            except ValueError as exc:
                raise HeadError(f"{source}: {exc}") from None
        for name in cls._state_arrays:
            if name in state.arrays:
                setattr(head, name, state.arrays[name])
            elif isinstance(state.values.get(name), list):
                setattr(head, name, np.asarray(state.values[name]))
            else:
                raise HeadError(f"{source}: the file lacks the array '{name}'")
        for name in cls._state_array_lists:
            count = state.values.get(f"{name}#count")
            if not isinstance(count, int) or count < 0:
                raise HeadError(f"{source}: the file lacks the length of '{name}'")
            missing = [f"{name}.{i}" for i in range(count) if f"{name}.{i}" not in state.arrays]
            if missing:
                raise HeadError(f"{source}: the file lacks the array '{missing[0]}'")
            setattr(head, name, [state.arrays[f"{name}.{i}"] for i in range(count)])
        for name in cls._state_values:
            if name not in state.values:
                raise HeadError(f"{source}: the file lacks the value '{name}'")
            setattr(head, name, state.values[name])
        try:
            head._check_state()
        except (ValueError, TypeError, IndexError) as exc:
            raise HeadError(f"{source}: {exc}") from None
        return head

    def _check_state(self) -> None:
        """Raise ValueError if the learned attributes do not fit together (a crafted or
        damaged file); rebuild derived attributes."""


def _plain(value: Any, name: str) -> Any:
    """`value` as JSON data (tuples become lists, NumPy scalars Python numbers)."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if isinstance(value, list | tuple):
        return [_plain(v, name) for v in value]
    raise HeadError(f"head attribute '{name}' holds {type(value).__name__}, not JSON data")


def _plain_param(value: Any) -> Any:
    # A RandomState instance cannot be saved as data; a loaded head never fits again.
    if isinstance(value, np.random.RandomState):
        return None
    if isinstance(value, dict):
        return {str(k): _plain(v, "param") for k, v in value.items()}
    return _plain(value, "param")


def encode_head(state: HeadState) -> bytes:
    """The bytes of a head file holding `state`."""
    from safetensors.numpy import save  # imported here: only saving and loading need it

    header = {
        "format": FORMAT_VERSION,
        "kind": state.kind,
        "params": state.params,
        "values": state.values,
    }
    payload: bytes = save(dict(state.arrays), metadata={_META_KEY: json.dumps(header)})
    return payload


def is_legacy_pickle(payload: bytes) -> bool:
    """True for a head file written by featcache before heads were data (a joblib pickle)."""
    # Pickle protocols 2 to 5 open with PROTO (0x80); a safetensors file opens with its
    # header's length (little-endian: 0x80 whenever length % 256 == 128), then "{" at byte 8.
    return payload[:1] == b"\x80" and payload[8:9] != b"{"


def decode_head(payload: bytes, source: str) -> HeadState:
    """Parse a head file's bytes into a `HeadState`; never runs code.

    `HeadError` names `source` for a file that is not a featcache head file.
    """
    from safetensors import SafetensorError
    from safetensors.numpy import load

    if len(payload) < 8:
        raise HeadError(f"{source}: not a head file ({len(payload)} bytes)")
    size = int.from_bytes(payload[:8], "little")
    if size > min(_MAX_HEADER, len(payload) - 8):
        raise HeadError(f"{source}: not a head file (header of {size} bytes)")
    try:
        header = json.loads(payload[8 : 8 + size])
        meta = json.loads(header["__metadata__"][_META_KEY])
        arrays: Mapping[str, np.ndarray] = load(payload)
    except (ValueError, KeyError, TypeError, SafetensorError, RecursionError) as exc:
        raise HeadError(
            f"{source}: not a featcache head file ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_VERSION:
        raise HeadError(
            f"{source}: head file format {meta.get('format') if isinstance(meta, dict) else '?'}"
            f" is not {FORMAT_VERSION}; was it written by a newer featcache?"
        )
    kind, params, values = meta.get("kind"), meta.get("params"), meta.get("values")
    if not isinstance(kind, str) or not isinstance(params, dict) or not isinstance(values, dict):
        raise HeadError(f"{source}: the head file's header lacks its kind, params or values")
    try:
        return HeadState(kind, params, dict(arrays), values)
    except HeadError as exc:
        raise HeadError(f"{source}: {exc}") from None
