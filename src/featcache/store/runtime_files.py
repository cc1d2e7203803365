"""Models converted for other runtimes, cached under ``STORE/runtimes/``, one folder each::

    STORE/runtimes/FP/NAME/manifest.json   the full fingerprint, layers, precision, each file's
                                           SHA-256 (the exact list: no other file may be there),
                                           signed with this user's local key (HMAC-SHA256)
    STORE/runtimes/FP/NAME/checked.json    the files' size, mtime, ctime, inode when last hashed
                                           sound, signed too
    STORE/runtimes/FP/NAME/*               the model's files (OpenVINO: model.xml, model.bin)

FP is the extractor fingerprint's first 16 characters (as for shards); NAME says runtime,
layers and precision (``openvino-fc7-bf16``). A folder is filled under a temporary name, its
files fsynced and hashed into the manifest, then renamed into place in one step: a reader
sees a complete folder or none. The digests let a user tell a damaged model (a truncated or
changed file) from a good one before trusting its numbers. The store keeps the files; what
they mean belongs to the runtime that wrote them.

Digests alone prove only that a manifest matches its files, and whoever writes a store can
write both. So a manifest is used only if it carries a valid signature under this user's
local key (`featcache.store.localkey`): a model converted elsewhere, by another user, by a
featcache before signatures, or rewritten by hand is *foreign*: never loaded, reported by
``store verify``, and converted again from the weights (then signed) on its next use. The
stamps that let an unchanged file skip re-hashing include the inode's ctime, which no
user can set back (mtime can be, with ``touch``), and are signed as well.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
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
from featcache.errors import ConfigError, StoreError, UnsafePathError
from featcache.store.commands import store_command
from featcache.store.localkey import KEY_ENV, LocalKey, canonical_json, local_key
from featcache.store.paths import contained, plain_name, read_json

__all__ = ["RUNTIMES_FOLDER", "RuntimeAudit", "RuntimeFiles", "RuntimeModel"]

RUNTIMES_FOLDER = "runtimes"
MANIFEST = "manifest.json"
CHECKED = "checked.json"  # the files' (size, mtime, inode) when they last hashed sound
_FORMAT = 1
_MAX_CHECKED_BYTES = 1 << 20


@dataclass(frozen=True)
class RuntimeModel:
    """A cached runtime model: its folder and what its manifest records."""

    folder: Path
    fingerprint: str
    name: str
    files: dict[str, str]  # file name → SHA-256
    meta: dict[str, Any]
    mac: str = ""  # the manifest's signature (its checked.json is signed with it)


def _stamps(folder: Path, files: Mapping[str, str]) -> dict[str, list[int]] | None:
    """(size, mtime, ctime, inode) of each file, or None if one cannot be read. The ctime
    changes on every write and cannot be set back (``touch -d`` sets only mtime)."""
    try:
        return {
            file: [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]
            for file in sorted(files)
            for st in [(folder / file).stat()]
        }
    except OSError:
        return None


def _stamps_payload(stamps: Mapping[str, list[int]], manifest_mac: str) -> bytes:
    return canonical_json({"manifest": manifest_mac, "stamps": stamps})


def _write_stamps(
    folder: Path, stamps: dict[str, list[int]], key: LocalKey, manifest_mac: str
) -> None:
    """Remember that these files of the manifest signed `manifest_mac` hashed sound (best
    effort: a read-only store cannot)."""
    record = {"stamps": stamps, "mac": key.sign(_stamps_payload(stamps, manifest_mac))}
    try:
        with atomic_write(folder / CHECKED) as out:
            out.write(json.dumps(record, sort_keys=True).encode())
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
    """What `RuntimeFiles.audit` found: sound models, problems, and the damaged folders
    (removed, with `repair`: not problems any more)."""

    models: int
    problems: list[str]
    damaged: list[Path]


class RuntimeFiles:
    """The ``runtimes/`` folder of one store: find, publish, check and remove model folders."""

    def __init__(self, root: Path, key: LocalKey | None = None) -> None:
        """`key` signs and checks manifests; None (the default) is this user's local key
        (`local_key`, read when first needed and on each use: never pickled along)."""
        self.root = root
        self._given_key = key

    @classmethod
    def in_store(cls, store_dir: str | Path, key: LocalKey | None = None) -> RuntimeFiles:
        """The runtime-model folder of the store in `store_dir` (for users outside the store)."""
        return cls(Path(store_dir) / RUNTIMES_FOLDER, key)

    @property
    def key(self) -> LocalKey:
        """The key that signs this user's runtime models."""
        return self._given_key if self._given_key is not None else local_key()

    @staticmethod
    def _unsigned(manifest: Mapping[str, Any]) -> bytes:
        return canonical_json({k: v for k, v in manifest.items() if k != "mac"})

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
            contained(self.root, f"{fingerprint[:16]}/{name}/{MANIFEST}", "runtime model")
            manifest = read_json(folder / MANIFEST, "runtime model manifest")
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:  # UnsafePathError is a ValueError too
            raise StoreError(f"{folder / MANIFEST}: unreadable ({exc})") from exc
        return self._bound(folder, fingerprint, name, manifest)

    def _bound(self, folder: Path, fingerprint: str, name: str, manifest: Any) -> RuntimeModel:
        """The manifest as a `RuntimeModel`, only if it names this folder's extractor and
        model, lists plain file names and is signed with this user's key; `StoreError`
        otherwise (a model copied from another fingerprint's folder, a crafted manifest, a
        model converted elsewhere)."""
        where = f"{folder / MANIFEST}"
        if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
            raise StoreError(f"{where}: not a runtime-model manifest; it is rebuilt on next use")
        recorded = str(manifest.get("fingerprint"))
        # `fingerprint` is the full one, or (store verify, reading folder names) its prefix
        same = recorded == fingerprint if len(fingerprint) > 16 else recorded[:16] == fingerprint
        if not same or manifest.get("name") != name:
            raise StoreError(
                f"{where}: made for extractor {str(manifest.get('fingerprint'))[:16]} "
                f"({manifest.get('name')}), found in the folder of {fingerprint[:16]} ({name}): "
                "copied from elsewhere; it is never used, and rebuilt on next use"
            )
        meta = manifest.get("meta")
        if not isinstance(meta, dict):
            raise StoreError(f"{where}: no metadata; it is rebuilt on next use")
        layers, precision = manifest.get("layers"), manifest.get("precision")
        if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
            raise StoreError(f"{where}: no list of layers; it is rebuilt on next use")
        expected = f"{name.split('-', 1)[0]}-{'+'.join(layers)}-{precision}"
        if expected != name:
            raise StoreError(
                f"{where}: records a {expected} model in the folder of {name}; it is never "
                "used, and rebuilt on next use"
            )
        for file in manifest["files"]:
            try:
                plain_name(file, "runtime model file")
            except UnsafePathError as exc:
                raise StoreError(f"{where}: {exc}") from None
            if file in (MANIFEST, CHECKED):
                raise StoreError(f"{where}: lists {file} as a model file")
        mac = self._signature(where, manifest)
        return RuntimeModel(folder, recorded, name, dict(manifest["files"]), meta, mac)

    def _signature(self, where: str, manifest: dict[str, Any]) -> str:
        """The manifest's signature if this user's key made it; `StoreError` saying whose
        it is otherwise."""
        key = self.key
        signed = manifest.get("mac")
        value = signed.get("hmac_sha256") if isinstance(signed, dict) else None
        try:
            payload = self._unsigned(manifest)
        except ValueError:  # NaN or infinity somewhere: never written by featcache
            payload = b""
        if payload and key.signs(payload, value):
            return str(value)
        if not isinstance(signed, dict):
            whose = "is not signed (converted by a featcache before signatures, or written by hand)"
        elif signed.get("key") != key.id:
            whose = (
                f"is signed with another key ({str(signed.get('key'))[:16]}; this user's is "
                f"{key.id}, {KEY_ENV}): converted by another user or on another machine"
            )
        else:
            whose = "does not match its signature: changed after it was converted"
        raise StoreError(
            f"{where}: {whose}; a runtime model is used only if converted here, so it is "
            "never loaded, and converted again from the weights on next use"
        )

    def publish(
        self,
        fingerprint: str,
        name: str,
        write: Callable[[Path], None],
        meta: Mapping[str, Any],
        *,
        layers: Sequence[str],
        precision: str,
    ) -> RuntimeModel:
        """Build a model folder with `write(folder)` under a temporary name, record the
        digests, fsync, and rename it into place. If another process published the same
        folder first, theirs is kept and returned.

        The manifest binds the model to its extractor (full `fingerprint`), `layers` and
        `precision` (`name` must be ``RUNTIME-LAYER+LAYER-PRECISION``) and to its exact
        files: a model whose manifest names another extractor, or whose folder holds a
        file the manifest does not list, is never used."""
        expected = f"{name.split('-', 1)[0]}-{'+'.join(layers)}-{precision}"
        if expected != name:
            raise ConfigError(f"runtime model {name!r}: its layers and precision say {expected}")
        final = self.folder(fingerprint, name)
        staged = temporary_name(final)
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            staged.mkdir()
            write(staged)
            files = {p.name: file_sha256(p) for p in sorted(staged.iterdir()) if p.is_file()}
            manifest: dict[str, Any] = {
                "format": _FORMAT,
                "fingerprint": fingerprint,
                "name": name,
                "layers": list(layers),
                "precision": precision,
                "files": files,
                "meta": dict(meta),
                "created": time.time(),
            }
            key = self.key
            manifest["mac"] = {"key": key.id, "hmac_sha256": key.sign(self._unsigned(manifest))}
            stamps = _stamps(staged, files)  # just hashed: the first use need not again
            if stamps is not None:
                _write_stamps(staged, stamps, key, manifest["mac"]["hmac_sha256"])
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
        try:
            present = {p.name for p in model.folder.iterdir()} - {MANIFEST, CHECKED}
        except OSError as exc:
            return [f"{model.folder}: unreadable ({exc})"]
        extra = sorted(present - set(model.files))
        if extra:  # a file swapped in beside the listed ones, or dropped from the list
            return [
                f"{model.folder / extra[0]}: not in the manifest's file list ({len(extra)} "
                "such file(s)); the model is not used, and rebuilt on next use"
            ]
        if any((model.folder / file).is_symlink() for file in model.files):
            return [f"{model.folder}: a model file is a symlink; the model is rebuilt"]
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
            _write_stamps(model.folder, stamps, self.key, model.mac)
        return problems

    def _read_stamps(self, model: RuntimeModel) -> dict[str, list[int]] | None:
        """The stamps recorded when the files last hashed sound, if signed by this user's
        key for this very manifest (else None: hash them)."""
        try:
            with open(model.folder / CHECKED, "rb") as f:
                found = json.loads(f.read(_MAX_CHECKED_BYTES))
            stamps = found["stamps"]
            if self.key.signs(_stamps_payload(stamps, model.mac), found["mac"]):
                return dict(stamps)
        except (OSError, ValueError, TypeError, KeyError, RecursionError):
            pass
        return None

    def remove(self, folder: Path) -> int:
        """Delete a model folder (a damaged one before it is rebuilt, a stale one); it is
        renamed aside first, so readers never see half of it. Return the bytes freed."""
        if not folder.exists() or folder.is_symlink():
            return 0
        try:  # only a folder inside runtimes/ (a symlinked parent may lead elsewhere)
            contained(self.root, folder.relative_to(self.root).as_posix(), "runtime model")
        except (UnsafePathError, ValueError):
            return 0
        size = sum(p.lstat().st_size for p in folder.rglob("*") if not p.is_symlink())
        doomed = temporary_name(folder)
        try:
            rename_folder(folder, doomed)
        except OSError:  # another process removed it first, or the store is read-only
            return 0
        shutil.rmtree(doomed, ignore_errors=True)
        return size

    def folders(self) -> Iterator[tuple[str, Path, float]]:
        """Yield (fingerprint prefix, folder, mtime) for every folder, temporaries too."""
        if not self.root.is_dir() or self.root.is_symlink():
            return
        for by_fp in sorted(self.root.iterdir()):
            if not by_fp.is_dir() or by_fp.is_symlink():  # never follow a symlink out
                continue
            for folder in sorted(by_fp.iterdir()):
                if folder.is_dir() and not folder.is_symlink():
                    yield by_fp.name, folder, folder.stat().st_mtime

    @staticmethod
    def is_temporary(folder: Path) -> bool:
        return folder.name.startswith(TMP_PREFIX)

    def audit(self, store: str = "STORE", *, repair: bool = False) -> RuntimeAudit:
        """Check every model folder's files against its manifest (for `FeatureStore.verify`;
        `store` names the store in the commands suggested). With `repair`, a damaged folder
        is removed: the next run on that runtime converts the model again from the weights."""
        models, problems, damaged = 0, [], []
        for _, folder, _ in self.folders():
            if self.is_temporary(folder):
                problems.append(
                    f"{folder}: left by an interrupted conversion "
                    f"('{store_command('store gc', store)}' removes it once older than --grace)"
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
            if not found:
                models += 1
                continue
            damaged.append(folder)
            if repair:
                self.remove(folder)
            else:
                fix = store_command("store verify", store, "--repair")
                problems += [f"{problem} ('{fix}' removes the model)" for problem in found]
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
