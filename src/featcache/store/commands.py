"""The featcache commands that messages suggest, spelled so that they run as printed: the
store named with ``--store`` and every path quoted for a shell. A word in capitals
(``SOURCE``, ``WEIGHTS``, ``DATASET``) stands for what only the user knows."""

from __future__ import annotations

import re

from featcache.errors import UnsafePathError
from featcache.store.paths import recorded_path

__all__ = ["extract_command", "shell_word", "source_path", "store_command", "test_images_command"]

_PLAIN = re.compile(r"[\w@%+=:,./-]+")
# A dataset's source as the readers in featcache.data describe it: "folder PATH",
# "folder PATH (unlabelled)", "manifest PATH", "arrays PATH (how they were converted)".
_SOURCE = re.compile(r"(?:folder|manifest|arrays) (.+?)(?: \([^()]*\))?")


def source_path(description: str) -> str | None:
    """The path in a dataset's source description (what `extract` was given), or None."""
    found = _SOURCE.fullmatch(description)
    if found is None:
        return None
    try:  # a crafted source (control characters, '..') is never put in a command
        return recorded_path(found.group(1), "dataset source")
    except UnsafePathError:
        return None


def shell_word(text: str) -> str:
    """`text` as one word of a POSIX shell: as it is when it is plain, else in double quotes
    (messages quote whole commands in single quotes, so a path's quotes must not be those)."""
    if _PLAIN.fullmatch(text):
        return text
    return '"' + re.sub(r'(["\\$`])', r"\\\1", text) + '"'


def store_command(command: str, store: str, *rest: str) -> str:
    """``featcache COMMAND --store STORE REST...``, e.g. ``store_command("store gc", path)``."""
    return " ".join(["featcache", command, "--store", shell_word(store), *rest])


def extract_command(
    store: str,
    dataset: str,
    layers: str,
    *,
    source: str | None,
    network: str | None = None,
    weights: str = "WEIGHTS",
) -> str:
    """The ``extract`` that adds `layers` (comma-separated) to the rows of `dataset` from the
    path `source` (``SOURCE`` when unknown; `source_path` reads it from a dataset's
    description): ``--append`` keeps the dataset's other rows; `network` is named with
    ``--backbone`` when given."""
    backbone = ["--backbone", network] if network else []
    return " ".join(
        [
            "featcache extract",
            shell_word(source) if source else "SOURCE",
            "--store",
            shell_word(store),
            "--weights",
            shell_word(weights),
            *backbone,
            "--dataset",
            shell_word(dataset),
            "--layers",
            layers,
            "--append",
        ]
    )


def test_images_command(store: str, dataset: str, weights: str = "WEIGHTS") -> str:
    """The ``extract`` that gives `dataset` test images of its own (``TEST_IMAGES``: a folder
    of class subfolders, or a CSV of path,label), kept apart from training as ``test``."""
    return " ".join(
        [
            "featcache extract TEST_IMAGES --store",
            shell_word(store),
            "--weights",
            shell_word(weights),
            "--dataset",
            shell_word(dataset),
            "--split test --append",
        ]
    )
