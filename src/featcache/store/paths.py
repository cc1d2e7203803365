"""Containment: every file name a store holds is resolved inside the store before use.

A store is data from whoever made it, and its catalog and manifests name files (shards,
heads, runtime models). A name is used only if it is a relative name without ``..`` whose
resolved path (symlinks followed) lies inside the folder it belongs to; anything else is
`UnsafePathError`, reported by ``store verify`` as damage and never opened, written or
deleted. `featcache_made` tells the files featcache writes from anything else, so that
only those are ever deleted.
"""

from __future__ import annotations

import json
import os
import re
import stat
from pathlib import Path

from featcache._io import TMP_PREFIX
from featcache.errors import StoreError, UnsafePathError

__all__ = [
    "JSON_LIMIT",
    "contained",
    "featcache_made",
    "featcache_name",
    "open_regular",
    "plain_name",
    "read_json",
    "recorded_path",
    "relative_name",
]

# What featcache names its files: hex digests and uuids, maybe a run's prefix, maybe a
# temporary's ".tmp-PID-RANDOM-" before it.
_MADE = re.compile(
    rf"^(?:{re.escape(TMP_PREFIX)}\d+-[0-9a-f]{{12}}-)?[A-Za-z0-9_.-]*[0-9a-f]{{16,32}}"
    r"\.(?:npy|safetensors|joblib)$"
)


def plain_name(name: str, what: str) -> str:
    """`name` if it is one path component (no ``/``, ``..``, NUL or leading dot)."""
    if not name or "/" in name or "\\" in name or "\x00" in name or name in (".", ".."):
        raise UnsafePathError(f"{what} {name!r}: not a plain file name; refused")
    return name


def relative_name(name: object, what: str, *, root: object, given: str | None = None) -> str:
    """`name` if it is a relative name of non-empty components without ``.``, ``..``,
    backslashes or control characters (NUL included); `UnsafePathError` naming `what`,
    `given` (the name as the store holds it, default `name`) and `root` otherwise. The one
    check of a stored name, for folders and object-storage prefixes alike."""
    text = name if isinstance(name, str) else ""
    parts = text.split("/")
    if (
        not text
        or any(part in ("", ".", "..") for part in parts)
        or "\\" in text
        or any(ord(c) < 32 or ord(c) == 127 for c in text)
        or Path(text).is_absolute()
    ):
        shown = given if given is not None else name
        raise UnsafePathError(
            f"{what} {shown!r}: not a relative name inside {root}; the store may "
            "have been crafted or damaged, so the file is never opened or deleted"
        )
    return text


def contained(root: Path, name: str, what: str, *, given: str | None = None) -> Path:
    """``root / name``, only if `name` is a `relative_name` and, resolved (symlinks
    followed), stays inside `root`; `UnsafePathError` naming `what` and `given` (the name
    as the store holds it, default `name`) otherwise."""
    relative_name(name, what, root=root, given=given)
    path = root / name
    real_root = root.resolve()
    real = path.resolve()
    if real_root not in real.parents:
        raise UnsafePathError(
            f"{what} {path}: leads outside {root} (to {real}, through a symlink); the store "
            "may have been crafted, so the file is never opened or deleted"
        )
    return path


def recorded_path(path: object, what: str) -> str:
    """A dataset row's or source's recorded path, only if it can be what it looks like: text
    without NUL or control characters (escape sequences, newlines) and without ``..``
    components (featcache records absolute paths, normalised); `UnsafePathError` naming
    `what` otherwise. The file it names is still opened only through the bounded readers."""
    text = path if isinstance(path, str) else ""
    if (
        not text
        or any(ord(c) < 32 or 127 <= ord(c) < 160 for c in text)
        or ".." in text.replace("\\", "/").split("/")
    ):
        raise UnsafePathError(
            f"{what} {path!r:.200}: not a path featcache records (NUL, control characters or "
            "'..'); the store may have been crafted, so it is never opened"
        )
    return text


def featcache_name(name: str) -> bool:
    """True if the last component of `name` is named as featcache names its files."""
    return _MADE.match(name.rsplit("/", 1)[-1]) is not None


def featcache_made(path: Path) -> bool:
    """True for a regular file (not a symlink) named as featcache names its files."""
    try:
        mode = path.lstat().st_mode
    except OSError:
        return False
    return stat.S_ISREG(mode) and featcache_name(path.name)


def open_regular(path: Path) -> int:
    """An O_RDONLY descriptor of `path`, only if it is a regular file (a device, FIFO or
    socket under a store name is refused without blocking: O_NONBLOCK, then fstat)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UnsafePathError(f"{path}: not a regular file; refused")
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


#: The largest JSON file (manifest, checked.json, report) a store may hand us to parse.
JSON_LIMIT = 1 << 20


def read_json(path: Path, what: str, limit: int = JSON_LIMIT) -> object:
    """Parse the JSON file `path` (a `what` of the store): only a regular file of at most
    `limit` bytes, nested less deeply than Python's recursion limit. `FileNotFoundError` if
    it is missing; `StoreError` naming the file and what is wrong otherwise."""
    try:
        fd = open_regular(path)
    except FileNotFoundError:
        raise
    except (OSError, UnsafePathError) as exc:
        raise StoreError(f"{what} {path}: unreadable ({exc})") from exc
    with os.fdopen(fd, "rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise StoreError(f"{what} {path}: larger than {limit} bytes; not read (crafted or damaged)")
    try:
        return json.loads(data)
    except RecursionError:
        raise StoreError(f"{what} {path}: JSON nested too deeply; not read (crafted)") from None
    except ValueError as exc:
        raise StoreError(f"{what} {path}: not JSON ({exc})") from exc
