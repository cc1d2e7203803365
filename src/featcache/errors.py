"""The one exception hierarchy of featcache.

::

    FeatcacheError                    anything featcache raises on purpose
    ├── ConfigError                   a bad argument or option (names it, the value, what is valid)
    ├── WeightsError                  a weights file that cannot be used (missing, truncated,
    │                                 wrong layout or shape)
    ├── UnsafePickleError             a pickle (weights, train.p) asks to build an object that
    │                                 is not plain data; refused before anything is built
    ├── ImageError                    one image that cannot be decoded or is out of limits
    │   └── ImageTooLargeError        more pixels or bytes than allowed (decompression bombs)
    ├── DataError                     a dataset source (folder, CSV, pickle, npz) that is malformed
    ├── StoreError                    the feature store is unreadable, inconsistent or busy
    │   ├── NotFoundError             a dataset, key, vector or head that is not in the store
    │   └── UnsafePathError           a name in the store (catalog, manifest, symlink) that
    │                                 would lead outside its folder; never opened or deleted
    ├── FingerprintMismatchError      vectors from one extractor handed to a head of another
    ├── HeadError                     a head file that is missing, tampered with or unfitted
    ├── DependencyError               an optional dependency (Ray, ...) is not installed
    ├── ExportError                   an exported model that cannot be loaded, changed since
    │                                 it was exported, or disagrees with predict past the tolerance
    └── ClusterError                  a Ray cluster that cannot be reached or refuses us, or a
                                      run on it whose work cannot be accounted for

Every message says what is wrong, where (file, row, key, field) and, where there is one,
how to fix it.
"""

from __future__ import annotations

__all__ = [
    "ClusterError",
    "ConfigError",
    "DataError",
    "DependencyError",
    "ExportError",
    "FeatcacheError",
    "FingerprintMismatchError",
    "HeadError",
    "ImageError",
    "ImageTooLargeError",
    "NotFoundError",
    "StoreError",
    "UnsafePathError",
    "UnsafePickleError",
    "WeightsError",
]


class FeatcacheError(Exception):
    """Base class of every error featcache raises on purpose."""


class ConfigError(FeatcacheError, ValueError):
    """An argument or option has a value that is not allowed."""


class WeightsError(FeatcacheError):
    """A weights file cannot be used."""


class UnsafePickleError(FeatcacheError):
    """A pickle asks for an object outside the admitted plain-data types."""


class ImageError(FeatcacheError):
    """One image cannot be decoded or preprocessed."""


class ImageTooLargeError(ImageError):
    """An image has more pixels or bytes than the configured limit."""


class DataError(FeatcacheError):
    """A dataset source is malformed."""


class StoreError(FeatcacheError):
    """The feature store cannot be read or written consistently."""


class NotFoundError(StoreError, KeyError):
    """A dataset, key, vector or head is not in the store."""

    def __str__(self) -> str:  # KeyError quotes its message; show it plainly
        return str(self.args[0]) if self.args else ""


class UnsafePathError(StoreError):
    """A file name the store holds would lead outside the store's folder."""


class FingerprintMismatchError(FeatcacheError):
    """Vectors from one extractor were given to a head trained on another."""


class HeadError(FeatcacheError):
    """A head cannot be loaded, saved or used."""


class DependencyError(FeatcacheError, ImportError):
    """An optional dependency is missing."""


class ClusterError(FeatcacheError):
    """A Ray cluster cannot be used, or a run on it left work that cannot be accounted for."""


class ExportError(FeatcacheError):
    """An exported model cannot be loaded, has changed, or disagrees with `predict`."""
