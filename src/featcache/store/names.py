"""The names a store accepts: dataset and head names, and splits. Checked before any work.

Dataset and head names: 1 to 64 characters from ``A-Z a-z 0-9 . _ -``, starting with a
letter or a digit (a head's name is also a folder name under ``STORE/heads/``). Splits are
``train``, ``val`` and ``test``; ``valid`` and ``validation`` read as ``val``. Names are
data: they are never used as format strings.
"""

from __future__ import annotations

import re

from featcache.errors import ConfigError

__all__ = [
    "NAME_RULE",
    "SPLITS",
    "normalize_split",
    "validate_dataset_name",
    "validate_head_name",
]

SPLITS = ("train", "val", "test")
_SPLIT_ALIASES = {"valid": "val", "validation": "val"}
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_RULE = "1-64 characters from A-Z a-z 0-9 . _ -, starting with a letter or digit"


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
