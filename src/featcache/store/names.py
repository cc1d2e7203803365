"""The names a store accepts: dataset and head names, and splits. Checked before any work.

Dataset and head names: 1 to 64 characters from ``A-Z a-z 0-9 . _ -``, starting with a
letter or a digit (a head's name is also a folder name under ``STORE/heads/``). Splits are
``train``, ``val`` and ``test``; ``valid`` and ``validation`` read as ``val``. Names are
data: they are never used as format strings.

A head is referred to the same way everywhere (library, CLI, service): ``NAME`` (its newest
version), ``NAME@promoted`` (the version ``heads promote`` chose) or ``NAME@N`` (version N).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from featcache.errors import ConfigError

__all__ = [
    "NAME_RULE",
    "SPLITS",
    "HeadSpec",
    "normalize_split",
    "validate_dataset_name",
    "validate_head_name",
]

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"valid": "val", "validation": "val"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"
_SPEC = re.compile(r"^(?P<name>[^@/]+)(@(?P<follow>promoted|[1-9][0-9]*))?$")


def _check(kind: str, flag: str, name: object) -> str:
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ConfigError(f"The {kind} name ({flag}) must be {NAME_RULE}. Got {name!r}.")
    return name


def validate_dataset_name(name: object) -> str:
    """Return `name` if it is a valid dataset name; else raise `ConfigError` saying the rule."""
    return _check("dataset", "--dataset", name)


def validate_head_name(name: object) -> str:
    """Return `name` if it is a valid head name; else raise `ConfigError` saying the rule."""
    return _check("head", "--name", name)


def normalize_split(split: str | None, *, where: str = "") -> str | None:
    """``train``/``val``/``test`` (case-insensitive; ``valid``/``validation`` → ``val``).

    None and the empty string stay None (no split). Anything else raises `ConfigError`
    naming the allowed values (and `where` the value came from, if given).
    """
    if split is None:
        return None
    text = split.strip().lower()
    if not text:
        return None
    text = _SPLIT_ALIASES.get(text, text)
    if text not in SPLITS:
        origin = f"{where}: " if where else ""
        raise ConfigError(
            f"{origin}The split must be one of {list(SPLITS)} ('valid' and 'validation' read "
            f"as 'val'). Got {split!r}."
        )
    return text


@dataclass(frozen=True)
class HeadSpec:
    """Which version of head `name`: the newest (``follow='newest'``), the promoted one
    (``'promoted'``), or one version for good (``'pinned'`` with `version`)."""

    name: str
    follow: str = "newest"
    version: int | None = None

    def __post_init__(self) -> None:
        if self.follow not in ("newest", "promoted", "pinned"):
            raise ConfigError(
                f"The head 'follow' must be newest, promoted or pinned. Got {self.follow!r}."
            )
        if (self.follow == "pinned") != (self.version is not None):
            raise ConfigError("A head spec has a 'version' exactly when it is pinned.")

    @classmethod
    def parse(cls, text: str, version: int | None = None) -> HeadSpec:
        """``NAME`` (newest), ``NAME@promoted`` or ``NAME@N`` (version N for good).

        `version` (an older ``--version`` option) pins a plain ``NAME``; given with a
        ``NAME@...`` it is refused, so a version is never said twice in two ways.
        """
        found = _SPEC.match(text.strip())
        if found is None:
            raise ConfigError(
                f"--head {text!r}: expected NAME, NAME@promoted or NAME@VERSION (e.g. signs@3)"
            )
        name, follow = found["name"], found["follow"]
        if version is not None:
            if follow is not None:
                raise ConfigError(
                    f"--head {text!r} and --version {version}: say the version once, as "
                    f"{name}@{version} (or {name}@promoted)"
                )
            if version < 1:
                raise ConfigError(f"The 'version' must be >= 1. Got {version}.")
            return cls(name, "pinned", version)
        if follow is None:
            return cls(name)
        if follow == "promoted":
            return cls(name, "promoted")
        return cls(name, "pinned", int(follow))

    def __str__(self) -> str:
        if self.follow == "newest":
            return self.name
        return f"{self.name}@{self.version if self.follow == 'pinned' else 'promoted'}"
