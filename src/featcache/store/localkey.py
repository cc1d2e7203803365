"""This user's secret on this machine, which binds the runtime models converted here.

A store is data from whoever wrote it: a manifest that lists the right fingerprint and the
digests of its own (wrong) ``model.bin`` is self-consistent, so digests alone cannot tell a
model converted here from one planted by the store's author. Each manifest converted here
is therefore signed with an HMAC-SHA256 under a key that never leaves the user's config
folder; a model without a valid signature is foreign: it is never loaded, and converted
again from the weights (then signed) on its next use.

The key is 32 random bytes in ``$FEATCACHE_KEY_FILE``, else
``$XDG_CONFIG_HOME/featcache/local.key``, else ``~/.config/featcache/local.key``; it is
created on first use with mode 0600 (written whole under a temporary name, then linked into
place, so two processes creating it at once end up with the same key). A key file that
others may read, that is not a regular file or that is not 32 bytes is refused: whoever
reads it could sign a model. Hosts of one Ray cluster that share a store folder share its
models only if they share the key (point ``FEATCACHE_KEY_FILE`` at one copy on each).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from featcache._io import temporary_name
from featcache.errors import ConfigError

__all__ = ["KEY_ENV", "LocalKey", "canonical_json", "key_file", "local_key"]

KEY_ENV = "FEATCACHE_KEY_FILE"
_KEY_BYTES = 32


def key_file() -> Path:
    """Where this user's key lives (see the module's docstring)."""
    given = os.environ.get(KEY_ENV)
    if given:
        return Path(given).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "featcache" / "local.key"


def canonical_json(value: Any) -> bytes:
    """`value` as the one byte string its signature covers (sorted keys, no spaces)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()


@dataclass(frozen=True, repr=False)
class LocalKey:
    """A secret and the file it came from; signs and checks payloads (HMAC-SHA256).

    `repr` shows only the key's id, never the secret.
    """

    secret: bytes
    path: Path

    def __post_init__(self) -> None:
        if len(self.secret) != _KEY_BYTES:
            raise ConfigError(
                f"{self.path}: a featcache key is {_KEY_BYTES} bytes; got {len(self.secret)}"
            )

    def __repr__(self) -> str:
        return f"LocalKey(id={self.id}, path={str(self.path)!r})"

    @property
    def id(self) -> str:
        """A public name for the key (a digest of it), so a message can tell keys apart."""
        return hashlib.sha256(b"featcache key id\x00" + self.secret).hexdigest()[:16]

    def sign(self, payload: bytes) -> str:
        """The hex HMAC-SHA256 of `payload`."""
        return hmac.new(self.secret, payload, hashlib.sha256).hexdigest()

    def signs(self, payload: bytes, mac: object) -> bool:
        """True if `mac` is this key's signature of `payload` (compared in constant time)."""
        return isinstance(mac, str) and hmac.compare_digest(self.sign(payload), mac)


def local_key(path: Path | None = None) -> LocalKey:
    """This user's key (at `path`, default `key_file()`), created on first use.

    Raises `ConfigError` naming the file and the fix when it cannot be read or created, or
    is readable by others.
    """
    path = key_file() if path is None else path
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staged = temporary_name(path)
        fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(_KEY_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(staged, path)  # fails if another process created it first: theirs wins
        except FileExistsError:
            pass
        finally:
            staged.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot create featcache's local key ({exc.strerror or exc}); set "
            f"{KEY_ENV} to a file this user may write"
        ) from exc
    return _read(path)


def _read(path: Path) -> LocalKey:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ConfigError(
            f"{path}: cannot read featcache's local key ({exc.strerror or exc}); it must be a "
            f"regular file (not a symlink) this user may read, or set {KEY_ENV}"
        ) from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{path}: featcache's local key is not a regular file; remove it")
        if info.st_mode & 0o077:
            raise ConfigError(
                f"{path}: featcache's local key may be read by others (mode "
                f"{stat.S_IMODE(info.st_mode):o}); run 'chmod 600 {path}'"
            )
        secret = os.read(fd, _KEY_BYTES + 1)
    finally:
        os.close(fd)
    return LocalKey(secret, path)
