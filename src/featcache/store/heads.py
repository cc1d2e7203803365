"""Head files: ``STORE/heads/NAME/DIGEST.safetensors``, written atomically, read if intact.

The store keeps a head's bytes and never interprets them (``featcache.classifier.persist``
owns the format: arrays plus JSON; older stores hold ``.joblib`` pickles, which only
``featcache heads upgrade`` reads). A file is named by its content's SHA-256, so two
versions with the same bytes share it, and it is handed back only when its bytes still
match the digest.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from pathlib import Path

from featcache._io import atomic_write_bytes, describe_failure
from featcache.errors import HeadError, StoreError, UnsafePathError
from featcache.store.paths import contained, featcache_made, open_regular

__all__ = ["HEADS_FOLDER", "HEAD_SUFFIX", "MAX_HEAD_BYTES", "HeadFiles"]

HEADS_FOLDER = "heads"
HEAD_SUFFIX = ".safetensors"
#: The largest head file read: a VGG16 fine-tuned top (fc1, fc2, a new last layer) is
#: ~0.5 GB in float32; a file past 2 GiB is refused before it is read.
MAX_HEAD_BYTES = 2 << 30


class HeadFiles:
    """The head folder of one store; file names are relative to the store's directory."""

    def __init__(self, store_dir: Path) -> None:
        self.store_dir = store_dir

    def path(self, file: str) -> Path:
        """The head file's path; `UnsafePathError` if `file` (from the catalog) would lead
        outside ``STORE/heads``."""
        prefix = f"{HEADS_FOLDER}/"
        if not isinstance(file, str) or not file.startswith(prefix):
            raise UnsafePathError(
                f"head file {file!r}: not under {HEADS_FOLDER}/; the store may have been "
                "crafted, so the file is never opened or deleted"
            )
        return contained(
            self.store_dir / HEADS_FOLDER, file[len(prefix) :], "head file", given=file
        )

    def write(self, name: str, payload: bytes) -> tuple[str, str]:
        """Write a head's bytes durably; return (file relative to the store, SHA-256)."""
        digest = hashlib.sha256(payload).hexdigest()
        folder = self.store_dir / HEADS_FOLDER / name
        file = f"{HEADS_FOLDER}/{name}/{digest[:16]}{HEAD_SUFFIX}"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(self.path(file), payload)
        except OSError as exc:
            raise StoreError(describe_failure(self.path(file), "writing a head", exc)) from exc
        return file, digest

    def read(self, file: str, sha256: str, label: str) -> bytes:
        """The file's bytes, only if their SHA-256 is `sha256` (`label` names the head)."""
        where, payload = self._fetch(file, label)
        digest = hashlib.sha256(payload).hexdigest()
        if digest != sha256:
            raise HeadError(
                f"{where}: SHA-256 {digest[:16]}... does not match the registered "
                f"{sha256[:16]}... for head {label}; the file was changed outside featcache "
                "and will not be loaded"
            )
        return payload

    def _fetch(self, file: str, label: str) -> tuple[str, bytes]:
        """Where the file is (for messages) and its bytes; `HeadError` if it is unsafe or
        unreadable."""
        try:
            path = self.path(file)
            with open(open_regular(path), "rb") as f:
                size = os.fstat(f.fileno()).st_size
                if size > MAX_HEAD_BYTES:
                    raise HeadError(
                        f"{path}: head file of {size} bytes, past the {MAX_HEAD_BYTES} bytes a "
                        f"head may have; not read (crafted or damaged)"
                    )
                payload = f.read(MAX_HEAD_BYTES + 1)
                if len(payload) > MAX_HEAD_BYTES:  # grew while read
                    raise HeadError(f"{path}: head file past {MAX_HEAD_BYTES} bytes; not read")
                return str(path), payload
        except UnsafePathError as exc:
            raise HeadError(f"head {label}: {exc}") from None
        except OSError as exc:
            raise HeadError(f"{self.store_dir / file}: head file unreadable ({exc})") from exc

    def delete(self, file: str) -> None:
        """Delete a head file featcache wrote; a name leading outside ``STORE/heads``, a
        symlink or a file featcache would not have named is left alone."""
        try:
            path = self.path(file)
        except UnsafePathError:
            return
        if featcache_made(path):
            path.unlink(missing_ok=True)
        if path.parent != self.store_dir / HEADS_FOLDER and not path.parent.is_symlink():
            with contextlib.suppress(OSError):  # the head's folder goes once it is empty
                path.parent.rmdir()
