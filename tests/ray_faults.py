"""Fake networks that make a Ray worker die, for the Ray engine's fault tests.

They compute what `CountingNetwork` computes, so their vectors can be compared with a local
run. Ray workers import this module by name (the driver's ``sys.path`` reaches them).
"""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from conftest import CountingNetwork


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


class DiesOnBlankImage(CountingNetwork):
    """Kills its own process whenever a batch holds a blank (single-colour) image."""

    def forward(self, batch: np.ndarray, layers: Sequence[str] = ("fc7",)) -> dict[str, np.ndarray]:
        if (batch.std(axis=(1, 2)).max(axis=1) < 1.0).any():  # resizing leaves a little noise
            _die()
        return super().forward(batch, layers)


class _DiesAfterWriting(CountingNetwork):
    def __init__(self, marker: Path, *_: Any) -> None:
        from featcache.store import shards

        original = shards.ShardFiles.write

        def write(files: Any, *args: Any, **kwargs: Any) -> Any:
            written = original(files, *args, **kwargs)
            try:  # the first writer of the run only: the marker says it happened
                os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
            except FileExistsError:
                return written
            _die()
            return written

        shards.ShardFiles.write = write  # type: ignore[method-assign]


def dies_after_first_shard(marker: Path) -> Any:
    """A network factory whose first worker to write a shard dies right after writing it
    (before it can report the shard); `marker` is created then."""
    return functools.partial(_DiesAfterWriting, marker)
