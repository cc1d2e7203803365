"""One atomic write for every file featcache produces (shards, heads, exports, weights).

The content goes to a temporary name unique per process, thread and call, in the target's
own folder; it is flushed and fsynced, renamed over the target, and the folder is fsynced,
so a reader (or a crash) sees either the old file or the whole new one. On any error the
temporary file is removed and the target is left as it was. Reading them back: one
`file_sha256` for the weights, shards and runtime models.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "TMP_PREFIX",
    "atomic_write",
    "atomic_write_bytes",
    "describe_failure",
    "file_sha256",
    "fsync_dir",
    "fsync_tree",
    "is_disk_full",
    "move_file",
    "move_into",
    "rename_folder",
    "replace_folder",
    "temporary_name",
]

#: Every temporary file starts with this (``featcache store gc`` knows them by it).
TMP_PREFIX = ".tmp-"


_CHUNK = 1 << 22


def file_sha256(path: str | Path) -> str:
    """The hex SHA-256 of a file, read in 4 MB chunks (`OSError` if it cannot be read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def temporary_name(path: Path) -> Path:
    """A name beside `path` that no other process, thread or call uses."""
    return path.with_name(f"{TMP_PREFIX}{os.getpid()}-{uuid.uuid4().hex[:12]}-{path.name}")


@contextmanager
def atomic_write(path: str | Path) -> Iterator[BinaryIO]:
    """Yield a binary file that becomes `path` only when the block ends without an error.

    The yielded file's ``name`` is the temporary path, so a caller may check what it wrote
    (after ``flush()``) before the rename; raising inside the block discards it.
    """
    path = Path(path)
    tmp = temporary_name(path)
    try:
        with open(tmp, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_bytes(path: str | Path, payload: bytes) -> None:
    """Write `payload` to `path` atomically (see `atomic_write`)."""
    with atomic_write(path) as f:
        f.write(payload)


def rename_folder(staged: Path, final: Path) -> bool:
    """Move a folder (its files written and fsynced) to `final` in one step; fsync the parent.

    Return False, leaving `staged` where it is, when `final` already exists (another process
    published it first). Used for folders written whole, like converted runtime models.
    """
    try:
        os.rename(staged, final)
    except OSError as exc:
        if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and final.exists():
            return False
        raise
    fsync_dir(final.parent)
    return True


def replace_folder(staged: Path, final: Path) -> bool:
    """`rename_folder`, replacing a `final` that exists: it is first moved aside and removed
    only once `staged` is in place (restored if that rename fails), so a crash leaves the
    old folder or the new one, each whole (the old one, at worst, under a temporary name
    beside it). False as `rename_folder` when another process published `final` meanwhile."""
    aside = None
    if final.exists():
        aside = temporary_name(final)
        os.rename(final, aside)
    try:
        published = rename_folder(staged, final)
    except BaseException:
        if aside is not None and not final.exists():
            os.rename(aside, final)
        raise
    if aside is not None:
        shutil.rmtree(aside, ignore_errors=True)
    return published


def move_file(path: Path, target: Path) -> Path:
    """Move the file `path` to `target` without replacing anything: to ``target.1``,
    ``target.2``... when that name is taken (a hard link, which fails on an existing name,
    then the unlink); both folders fsynced. Return where it went."""
    candidate, n = target, 0
    while True:
        try:
            os.link(path, candidate)
            break
        except FileExistsError:
            n += 1
            candidate = target.with_name(f"{target.name}.{n}")
    os.unlink(path)
    fsync_dir(candidate.parent)
    fsync_dir(path.parent)
    return candidate


def move_into(staged: Path, folder: Path, last: Sequence[str] = ()) -> None:
    """Move every entry of the temporary folder `staged` (files another library wrote there)
    into `folder`, after fsyncing them, one rename each; the entries named in `last` go
    last, in that order (the file a reader opens first, once what it points to is there)."""
    fsync_tree(staged)
    names = sorted(p.name for p in staged.iterdir())
    for name in [n for n in names if n not in last] + [n for n in last if n in names]:
        os.replace(staged / name, folder / name)
    fsync_dir(folder)


def fsync_dir(folder: str | Path) -> None:
    """Make a rename in `folder` durable (a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some filesystems refuse fsync on a directory; the rename still happened
        pass
    finally:
        os.close(fd)


def fsync_tree(root: str | Path) -> None:
    """Fsync every file and folder under `root` (and `root`): for files another library
    wrote (a converter's model files) before they are renamed into place."""
    root = Path(root)
    for folder, _, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(folder, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(folder)


def is_disk_full(exc: BaseException) -> bool:
    """True for "no space left on device" and "quota exceeded" errors."""
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def describe_failure(path: str | Path, action: str, exc: BaseException) -> str:
    """The message for a failed write; a full disk says so and that nothing was registered."""
    text = str(exc)
    if is_disk_full(exc) or "disk is full" in text:
        return (
            f"{path}: the disk is full while {action} ({text}); nothing half-written was kept "
            "or registered. Free some space and run the command again: it resumes where it stopped."
        )
    return f"{path}: {action} failed ({text})"
