"""Models converted for other runtimes, cached under ``STORE/runtimes/``, one folder each::

    STORE/runtimes/FP/NAME/manifest.json   the full fingerprint, what it is, each file's SHA-256
    STORE/runtimes/FP/NAME/checked.json    the files' size, mtime, inode when last hashed sound
    STORE/runtimes/FP/NAME/*               the model's files (OpenVINO: model.xml, model.bin)

FP is the extractor fingerprint's first 16 characters (as for shards); NAME says runtime,
layers and precision (``openvino-fc7-bf16``). A folder is filled under a temporary name, its
files fsynced and hashed into the manifest, then renamed into place in one step: a reader
sees a complete folder or none. The digests let a user tell a damaged model (a truncated or
changed file) from a good one before trusting its numbers. The store keeps the files; what
they mean belongs to the runtime that wrote them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featcache._io import (
    TMP_PREFIX,
    atomic_write,
    describe_failure,
    file_sha256,
    fsync_dir,
    rename_folder,
    temporary_name,
)
from featcache.errors import ConfigError, StoreError

__all__ = ["RUNTIMES_FOLDER", "RuntimeAudit", "RuntimeFiles", "RuntimeModel"]

RUNTIMES_FOLDER = "runtimes"
MANIFEST = "manifest.json"
CHECKED = "checked.json"  # the files' (size, mtime, inode) when they last hashed sound
_FORMAT = 1


@dataclass(frozen=True)
class RuntimeModel:
    """A cached runtime model: its folder and what its manifest records."""

    folder: Path
    fingerprint: str
    name: str
    files: dict[str, str]  # file name → SHA-256
    meta: dict[str, Any]


def _stamps(folder: Path, files: Mapping[str, str]) -> dict[str, list[int]] | None:
    """(size, mtime, inode) of each file, or None if one cannot be read."""
    try:
        return {
            file: [st.st_size, st.st_mtime_ns, st.st_ino]
            for file in sorted(files)
            for st in [(folder / file).stat()]
        }
    except OSError:
        return None


def _write_stamps(folder: Path, stamps: dict[str, list[int]]) -> None:
    """Remember that these files hashed sound (best effort: a read-only store cannot)."""
    try:
        with atomic_write(folder / CHECKED) as out:
            out.write(json.dumps(stamps, sort_keys=True).encode())
    except OSError:
        pass


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(frozen=True)
class RuntimeAudit:
    """What `RuntimeFiles.audit` found: sound models, problems, and the damaged folders."""

    models: int
    problems: list[str]
    damaged: list[Path]


class RuntimeFiles:
    """The ``runtimes/`` folder of one store: find, publish, check and remove model folders."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @classmethod
    def in_store(cls, store_dir: str | Path) -> RuntimeFiles:
        """The runtime-model folder of the store in `store_dir` (for users outside the store)."""
        return cls(Path(store_dir) / RUNTIMES_FOLDER)

    def folder(self, fingerprint: str, name: str) -> Path:
        if not name or "/" in name or name.startswith("."):
            raise ConfigError(f"The runtime model 'name' must be a plain name. Got {name!r}.")
        return self.root / fingerprint[:16] / name

    def find(self, fingerprint: str, name: str) -> RuntimeModel | None:
        """The published folder for (fingerprint, name) with its manifest, or None.

        Reading the manifest is cheap; the files' digests are checked by `check`.
        """
        folder = self.folder(fingerprint, name)
        try:
            manifest = json.loads((folder / MANIFEST).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise StoreError(
                f"{folder / MANIFEST}: unreadable ({exc}); 'featcache store gc' removes the folder"
            ) from exc
        return RuntimeModel(
            folder, manifest["fingerprint"], manifest["name"], manifest["files"], manifest["meta"]
        )

    def publish(
        self,
        fingerprint: str,
        name: str,
        write: Callable[[Path], None],
        meta: Mapping[str, Any],
    ) -> RuntimeModel:
        """Build a model folder with `write(folder)` under a temporary name, record the
        digests, fsync, and rename it into place. If another process published the same
        folder first, theirs is kept and returned."""
        final = self.folder(fingerprint, name)
        staged = temporary_name(final)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            staged.mkdir()
            write(staged)
            files = {p.name: file_sha256(p) for p in sorted(staged.iterdir()) if p.is_file()}
            stamps = _stamps(staged, files)  # just hashed: the first use need not again
            if stamps is not None:
                _write_stamps(staged, stamps)
            manifest = {
                "format": _FORMAT,
                "fingerprint": fingerprint,
                "name": name,
                "files": files,
                "meta": dict(meta),
                "created": time.time(),
            }
            (staged / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True))
            for path in staged.iterdir():
                _fsync_file(path)
            fsync_dir(staged)
            if not rename_folder(staged, final):
                shutil.rmtree(staged, ignore_errors=True)  # a concurrent run published first
        except OSError as exc:
            shutil.rmtree(staged, ignore_errors=True)
            raise StoreError(describe_failure(final, "writing the runtime model", exc)) from exc
        except BaseException:
            shutil.rmtree(staged, ignore_errors=True)
            raise
        found = self.find(fingerprint, name)
        if found is None:
            raise StoreError(f"{final}: runtime model vanished right after it was written")
        return found

    def check(self, model: RuntimeModel, *, rehash: bool = False) -> list[str]:
        """Problems with a model folder: missing, extra-short or changed files (by SHA-256).

        As for shards, a model whose files are unchanged (size, mtime, inode) since they were
        last hashed sound is not hashed again (a 244 MB model cost 0.13 s of CPU on every run);
        ``rehash=True`` (``store verify``) always hashes.
        """
        stamps = _stamps(model.folder, model.files)
        if not rehash and stamps is not None and stamps == self._read_stamps(model):
            return []
        problems = []
        for file, expected in sorted(model.files.items()):
            path = model.folder / file
            try:
                actual = file_sha256(path)
            except OSError as exc:
                problems.append(f"{path}: unreadable ({exc})")
                continue
            if actual != expected:
                problems.append(
                    f"{path}: SHA-256 {actual[:16]}... does not match the recorded "
                    f"{expected[:16]}... (truncated or changed; it is rebuilt on next use)"
                )
        if not problems and stamps is not None and stamps == _stamps(model.folder, model.files):
            _write_stamps(model.folder, stamps)
        return problems

    @staticmethod
    def _read_stamps(model: RuntimeModel) -> dict[str, list[int]] | None:
        try:
            found = json.loads((model.folder / CHECKED).read_text())
        except (OSError, ValueError):
            return None
        return found if isinstance(found, dict) else None

    def remove(self, folder: Path) -> int:
        """Delete a model folder (a damaged one before it is rebuilt, a stale one); it is
        renamed aside first, so readers never see half of it. Return the bytes freed."""
        if not folder.exists():
            return 0
        size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        doomed = temporary_name(folder)
        try:
            rename_folder(folder, doomed)
        except FileNotFoundError:  # another process removed it first
            return 0
        shutil.rmtree(doomed, ignore_errors=True)
        return size

    def folders(self) -> Iterator[tuple[str, Path, float]]:
        """Yield (fingerprint prefix, folder, mtime) for every folder, temporaries too."""
        if not self.root.exists():
            return
        for by_fp in sorted(self.root.iterdir()):
            if not by_fp.is_dir():
                continue
            for folder in sorted(by_fp.iterdir()):
                if folder.is_dir():
                    yield by_fp.name, folder, folder.stat().st_mtime

    @staticmethod
    def is_temporary(folder: Path) -> bool:
        return folder.name.startswith(TMP_PREFIX)

    def audit(self) -> RuntimeAudit:
        """Check every model folder's files against its manifest (for `FeatureStore.verify`)."""
        models, problems, damaged = 0, [], []
        for _, folder, _ in self.folders():
            if self.is_temporary(folder):
                problems.append(
                    f"{folder}: left by an interrupted conversion ('featcache store gc' removes it)"
                )
                continue
            try:
                model = self.find(folder.parent.name, folder.name)
            except StoreError as exc:
                model, found = None, [str(exc)]
            else:
                found = (
                    [f"{folder}: runtime model without its {MANIFEST}"]
                    if model is None
                    else self.check(model, rehash=True)
                )
            if found:
                problems += found
                damaged.append(folder)
            else:
                models += 1
        return RuntimeAudit(models, problems, damaged)

    def collect(self, live: set[str], cutoff: float) -> tuple[int, int]:
        """Remove folders older than `cutoff` that are interrupted conversions or belong to a
        fingerprint not in `live` (full fingerprints); return (folders, bytes) removed."""
        prefixes = {fingerprint[:16] for fingerprint in live}
        removed = freed = 0
        for prefix, folder, mtime in list(self.folders()):
            if mtime < cutoff and (self.is_temporary(folder) or prefix not in prefixes):
                freed += self.remove(folder)
                removed += 1
        return removed, freed
