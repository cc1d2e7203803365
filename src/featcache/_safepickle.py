"""Unpickle plain data only: arrays, dicts, lists, tuples, strings and numbers.

Pickles run code when loaded. `safe_unpickle` refuses every global outside a short list of
what NumPy arrays need, before that global is looked up or called, so a crafted file cannot
execute anything. Used for weights files (``bvlc_alexnet.npy``) and ``train.p`` datasets.
"""

from __future__ import annotations

import io
import pickle
from pathlib import Path
from typing import Any, BinaryIO

from featcache.errors import UnsafePickleError

__all__ = ["UnpicklingFailed", "safe_unpickle"]

_ADMITTED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # protocol-2 pickles spell bytes as _codecs.encode(str, "latin1")
}


class UnpicklingFailed(Exception):
    """The stream is not a complete pickle (truncated or corrupt); the caller words the error."""


class _PlainDataUnpickler(pickle.Unpickler):
    def __init__(self, file: BinaryIO, source: Path | str) -> None:
        super().__init__(file, encoding="latin1")  # Python 2 pickles (the original weights)
        self._source = source

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ADMITTED_GLOBALS:
            raise UnsafePickleError(
                f"{self._source}: refused to load '{module}.{name}': this file may hold only "
                "arrays, dicts, lists and strings. It is not plain data and may try to run "
                "code; do not open it with numpy or pickle either."
            )
        if module == "numpy.core.multiarray":  # numpy 2 moved it; avoid the deprecated alias
            module = "numpy._core.multiarray"
        return super().find_class(module, name)


def safe_unpickle(stream: BinaryIO | io.BytesIO, source: Path | str) -> Any:
    """Load one pickle of plain data from `stream`.

    Raises `UnsafePickleError` for a forbidden global and `UnpicklingFailed` for a truncated
    or corrupt stream.
    """
    try:
        return _PlainDataUnpickler(stream, source).load()
    except UnsafePickleError:
        raise
    except (
        EOFError,
        pickle.UnpicklingError,
        ValueError,
        TypeError,
        AttributeError,
        IndexError,
        KeyError,
        MemoryError,
    ) as exc:
        raise UnpicklingFailed(f"{type(exc).__name__}: {exc}") from exc
