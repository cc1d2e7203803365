"""Dataset readers: image folders, CSV manifests, pickled arrays, and the bundled sample."""

from __future__ import annotations

import os
from pathlib import Path

from featcache.data.arrays import read_arrays
from featcache.data.classnames import read_class_names
from featcache.data.decode import (
    DEFAULT_MAX_PIXELS,
    FORMATS,
    array_to_rgb,
    decode_image,
    image_errors,
    image_size,
)
from featcache.data.folder import SPLIT_FOLDERS, read_folder
from featcache.data.manifest import read_manifest
from featcache.data.phash import (
    HASH_BITS,
    HASH_BYTES,
    HASH_KIND,
    VARIANTS,
    base_hash,
    hash_distance,
    image_hash,
    image_hashes,
)
from featcache.data.sample import write_digits_folder
from featcache.data.source import (
    DEFAULT_MAX_FILE_BYTES,
    IMAGE_SUFFIXES,
    ImageItem,
    ImageSource,
    array_key,
    bytes_key,
    read_bounded,
)
from featcache.errors import DataError

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "FORMATS",
    "HASH_BITS",
    "HASH_BYTES",
    "HASH_KIND",
    "IMAGE_SUFFIXES",
    "SPLIT_FOLDERS",
    "VARIANTS",
    "ImageItem",
    "ImageSource",
    "array_key",
    "array_to_rgb",
    "base_hash",
    "bytes_key",
    "decode_image",
    "hash_distance",
    "image_errors",
    "image_hash",
    "image_hashes",
    "image_size",
    "open_source",
    "read_arrays",
    "read_bounded",
    "read_class_names",
    "read_folder",
    "read_manifest",
    "write_digits_folder",
]


def open_source(path: str | Path, *, class_names_file: str | Path | None = None) -> ImageSource:
    """Open a folder, ``.csv`` manifest, ``.p``/``.pkl``/``.pickle`` or ``.npz`` by its type.

    `path` is made absolute first (``os.path.abspath``: ``.`` and ``..`` folded, symlinks
    kept as named), so every image path a source yields is absolute: the same folder given
    as ``data`` or as ``/home/me/data`` yields the same rows.
    """
    path = Path(os.path.abspath(path))
    names = read_class_names(class_names_file) if class_names_file else None
    if path.is_dir():
        source = read_folder(path)
        if names is not None:
            raise DataError(f"{path}: an image folder names its classes; drop --class-names")
        return source
    if not path.exists():
        raise DataError(f"{path}: no such file or folder")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_manifest(path, names)
    if suffix in (".p", ".pkl", ".pickle", ".npz"):
        return read_arrays(path, names)
    raise DataError(
        f"{path}: unknown dataset type '{suffix}'; expected a folder, .csv, .p/.pkl or .npz"
    )
