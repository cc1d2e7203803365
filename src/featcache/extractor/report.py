"""`ExtractReport`: what one extraction run did, built once when the run ends."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from featcache.store import DatasetChange

if TYPE_CHECKING:  # imported only with engine="ray"
    from featcache.extractor.ray_connect import RayRunSummary

__all__ = ["ExtractReport"]


@dataclass
class ExtractReport:
    """What a run did. With ``store=None``, `vectors` holds the computed vectors by layer.

    `failures` lists ``(path, reason)`` for every image that was skipped; `timings` the
    seconds spent per stage (``hash``, ``decode_wait``, ``network``, ``write_wait``, ...).
    """

    total: int = 0
    extracted: int = 0
    cached: int = 0
    failed: int = 0
    duplicates: int = 0
    failures: list[tuple[str, str]] = field(default_factory=list)
    fingerprint: str = ""
    dataset: str | None = None
    weights_note: str | None = None
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    keys: list[str] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    rows: DatasetChange | None = None  # what writing the dataset changed, and its totals
    repairs: list[str] = field(default_factory=list)  # damaged shards found, recomputed
    ray: RayRunSummary | None = None  # engine "ray": batches per node, retries, nodes lost

    @property
    def images_per_second(self) -> float:
        compute = self.timings.get("network", 0.0)
        return self.extracted / compute if compute else 0.0
